//! Dates and times as practitioners read and type them.
//!
//! The record stores UTC (RFC 3339). People read and type local time, so the app converts with one
//! offset, found once at start-up (before any thread is spawned, the only time the platform lets
//! a Rust program read it safely) or given with `--utc-offset`. Display is in the long form the
//! NHS style guide uses: "14 March 2026 at 10:30".

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use polyphony_core::model::Instant;

/// Parse a stored RFC 3339 instant.
pub fn parse_stored(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// "14 March 2026 at 10:30" in local time.
pub fn long(t: OffsetDateTime, offset: UtcOffset) -> String {
    let t = t.to_offset(offset);
    let fmt = format_description!("[day padding:none] [month repr:long] [year] at [hour]:[minute]");
    t.format(&fmt).unwrap_or_default()
}

/// A stored instant in long form; the stored text if it does not parse (never hide data).
pub fn long_stored(s: &str, offset: UtcOffset) -> String {
    parse_stored(s)
        .map(|t| long(t, offset))
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

/// The value for an `<input type="datetime-local">`: local time, to the minute.
pub fn input_value(t: OffsetDateTime, offset: UtcOffset) -> String {
    let t = t.to_offset(offset);
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]");
    t.format(&fmt).unwrap_or_default()
}

/// Read a `datetime-local` value (local time) as an instant. `None` if it is not a date and time.
pub fn parse_input(s: &str, offset: UtcOffset) -> Option<Instant> {
    let s = s.trim();
    let with_minutes = format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let with_seconds = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    PrimitiveDateTime::parse(s, &with_minutes)
        .or_else(|_| PrimitiveDateTime::parse(s, &with_seconds))
        .ok()
        .map(|p| p.assume_offset(offset).to_offset(UtcOffset::UTC))
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
    fn local_input_round_trips_through_utc() {
        let bst = UtcOffset::from_hms(1, 0, 0).unwrap();
        let t = parse_input("2026-06-01T10:30", bst).unwrap();
        assert_eq!(t.hour(), 9);
        assert_eq!(input_value(t, bst), "2026-06-01T10:30");
        assert_eq!(long(t, bst), "1 June 2026 at 10:30");
        assert!(parse_input("tomorrow", bst).is_none());
    }

    #[test]
    fn unreadable_stored_values_are_shown_as_they_are() {
        assert_eq!(long_stored("not a date", UtcOffset::UTC), "not a date");
        assert_eq!(long_date("2026-03-14"), "14 March 2026");
    }
}
