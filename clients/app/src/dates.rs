//! Dates and times as practitioners read and type them.
//!
//! The record stores UTC (RFC 3339). People read and type UK local time, which the app converts
//! per instant with the time-zone database built into client-core (`model::local_time`): a summer
//! meeting booked in winter shows the summer clock time, whatever the device's own clock or zone.
//! Display is in the long form the NHS style guide uses, and says which time it is: "14 March 2026
//! at 10:30 UK time".

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

use polyphony_core::model::{Instant, LocalZone, ModelError};

/// Parse a stored RFC 3339 instant.
pub fn parse_stored(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// "14 March 2026 at 10:30 UK time".
pub fn long(t: OffsetDateTime, zone: &LocalZone) -> String {
    format!("{} {}", zone.long(t), zone.label())
}

/// A stored instant in long form; the stored text if it does not parse (never hide data).
pub fn long_stored(s: &str, zone: &LocalZone) -> String {
    parse_stored(s)
        .map(|t| long(t, zone))
        .unwrap_or_else(|| s.to_string())
}

/// A stored date (YYYY-MM-DD) as "14 March 2026".
pub fn long_date(s: &str) -> String {
    let fmt = format_description!("[year]-[month]-[day]");
    let out = format_description!("[day padding:none] [month repr:long] [year]");
    time::Date::parse(s, &fmt)
        .ok()
        .and_then(|d| d.format(&out).ok())
        .unwrap_or_else(|| s.to_string())
}

/// The value for a date-and-time field: local time, to the minute (YYYY-MM-DDTHH:MM).
pub fn input_value(t: OffsetDateTime, zone: &LocalZone) -> String {
    zone.short(t).replacen(' ', "T", 1)
}

/// Read a typed local date and time as an instant: a clear error for something that is not a
/// date and time, or for a time the clocks skip or repeat (see `model::local_time`).
pub fn parse_input(s: &str, zone: &LocalZone) -> Result<Instant, ModelError> {
    zone.parse("date and time", s)
}

/// How long ago, in words ("5 minutes", "2 hours").
pub fn duration_words(d: time::Duration) -> String {
    let mins = d.whole_minutes().max(0);
    match mins {
        0 => "less than a minute".into(),
        1 => "1 minute".into(),
        m if m < 120 => format!("{m} minutes"),
        m if m < 48 * 60 => format!("{} hours", m / 60),
        m => format!("{} days", m / (24 * 60)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_input_round_trips_through_utc_at_the_offset_of_its_own_date() {
        let uk = LocalZone::uk();
        let summer = parse_input("2026-06-01T10:30", &uk).unwrap();
        assert_eq!(summer.hour(), 9);
        assert_eq!(input_value(summer, &uk), "2026-06-01T10:30");
        assert_eq!(long(summer, &uk), "1 June 2026 at 10:30 UK time");
        let winter = parse_input("2026-12-01T10:30", &uk).unwrap();
        assert_eq!(winter.hour(), 10);
        assert_eq!(long(winter, &uk), "1 December 2026 at 10:30 UK time");
        assert!(parse_input("tomorrow", &uk).is_err());
        let twice = parse_input("2026-10-25T01:30", &uk)
            .unwrap_err()
            .to_string();
        assert!(twice.contains("happened twice"), "{twice}");
    }

    #[test]
    fn unreadable_stored_values_are_shown_as_they_are() {
        assert_eq!(long_stored("not a date", &LocalZone::uk()), "not a date");
        assert_eq!(long_date("2026-03-14"), "14 March 2026");
    }
}
