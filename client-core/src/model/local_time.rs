//! Times as people in the service read and type them: UK local time.
//!
//! The record stores instants in UTC (RFC 3339), which never jump. People live in UK time, which
//! does: on the last Sunday of March the clocks go forward from 01:00 to 02:00 (an hour that never
//! happens), and on the last Sunday of October they go back from 02:00 to 01:00 (an hour that
//! happens twice). One fixed offset cannot convert both a winter and a summer date, so every
//! conversion here asks the IANA time-zone database for the offset *at that instant*.
//!
//! The database is bundled into the program (jiff's `tzdb-bundle-always`), never read from the
//! device: a device without `/usr/share/zoneinfo`, or with its clock set to UTC, converts a UK time
//! exactly as every other does. `Europe/London` is the default; [`LocalZone::named`] takes another
//! IANA zone for a service outside the UK.
//!
//! A typed time without an offset is UK local time. A time in the hour the clocks skip is refused,
//! and so is one in the hour that happens twice unless its offset says which (`+01:00`, the first,
//! in BST; `+00:00`, the second, in GMT): a meeting recorded an hour out is a clinical error, so the
//! person typing is asked rather than guessed for.

use std::sync::LazyLock;

use jiff::civil;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;

use super::{Date, Instant, ModelError};

/// The zone the service works in unless a profile says otherwise.
pub const DEFAULT_ZONE: &str = "Europe/London";

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A time zone people read and type times in.
#[derive(Debug, Clone)]
pub struct LocalZone {
    tz: TimeZone,
    name: String,
}

static UK: LazyLock<LocalZone> = LazyLock::new(|| {
    // The bundled database always holds Europe/London; a build without it is broken, not a
    // device's fault, so it fails loudly at the first time shown rather than showing UTC.
    LocalZone::named(DEFAULT_ZONE).expect("the bundled time-zone database holds Europe/London")
});

impl Default for LocalZone {
    fn default() -> Self {
        LocalZone::uk()
    }
}

impl LocalZone {
    /// UK time (`Europe/London`).
    pub fn uk() -> LocalZone {
        UK.clone()
    }

    /// The IANA zone `name` (e.g. `Europe/London`), from the bundled database.
    pub fn named(name: &str) -> Result<LocalZone, ModelError> {
        let tz = TimeZone::get(name).map_err(|_| ModelError::UnknownTimeZone(name.to_string()))?;
        Ok(LocalZone {
            tz,
            name: name.to_string(),
        })
    }

    /// The zone's IANA name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How a time in this zone is labelled for a reader: "UK time", or the zone's name.
    pub fn label(&self) -> String {
        if self.name == DEFAULT_ZONE {
            "UK time".to_string()
        } else {
            format!("{} time", self.name)
        }
    }

    /// The wall-clock date and time at `t`.
    pub fn civil(&self, t: Instant) -> civil::DateTime {
        self.tz.to_datetime(timestamp(t))
    }

    /// The offset from UTC in force at `t`, in seconds (3,600 in BST).
    pub fn offset_seconds(&self, t: Instant) -> i32 {
        self.tz.to_offset(timestamp(t)).seconds()
    }

    /// The local calendar date at `t` ("today" is `date(now)`: between midnight and 01:00 in
    /// summer it is already tomorrow here while UTC is still on yesterday).
    pub fn date(&self, t: Instant) -> Date {
        to_date(self.civil(t).date()).unwrap_or_else(|| t.date())
    }

    /// `t` with the local offset, as RFC 3339 (`2026-06-14T10:30:00+01:00`): what FHIR instants
    /// and other machine-read copies carry, so the reader sees the same clock time.
    pub fn rfc3339(&self, t: Instant) -> String {
        let offset = time::UtcOffset::from_whole_seconds(self.offset_seconds(t))
            .unwrap_or(time::UtcOffset::UTC);
        t.to_offset(offset)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    }

    /// `2026-03-14 10:30`, local, for tables.
    pub fn short(&self, t: Instant) -> String {
        let c = self.civil(t);
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            c.year(),
            c.month(),
            c.day(),
            c.hour(),
            c.minute()
        )
    }

    /// `14 March 2026`, the local date in words.
    pub fn long_date(&self, t: Instant) -> String {
        date_words(self.date(t))
    }

    /// `14 March 2026 at 10:30`, local, as the NHS style guide writes a date and time.
    pub fn long(&self, t: Instant) -> String {
        let c = self.civil(t);
        format!("{} at {:02}:{:02}", self.long_date(t), c.hour(), c.minute())
    }

    /// Read a date and time a person typed: `YYYY-MM-DDTHH:MM` (or with a space, or seconds) is
    /// local time in this zone; a time with an offset or `Z` (RFC 3339) is taken as it says. A
    /// local time in the hour the clocks skip, or (without an offset) in the hour that happens
    /// twice, is refused with words that say which and what to type.
    pub fn parse(&self, field: &'static str, input: &str) -> Result<Instant, ModelError> {
        let typed = input.trim();
        if let Ok(t) = typed.parse::<Timestamp>() {
            return instant(t).ok_or_else(|| invalid(field, input));
        }
        let local: civil::DateTime = typed.parse().map_err(|_| invalid(field, input))?;
        let date = to_date(local.date()).map(date_words).unwrap_or_default();
        let clock = format!("{:02}:{:02}", local.hour(), local.minute());
        match self.tz.to_ambiguous_zoned_datetime(local).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset
                .to_timestamp(local)
                .ok()
                .and_then(instant)
                .ok_or_else(|| invalid(field, input)),
            AmbiguousOffset::Gap { before, after } => Err(ModelError::LocalTime {
                field,
                input: input.to_string(),
                reason: format!(
                    "{clock} did not happen on {date} in {}: the clocks went forward an hour (from {} to {}). Check the time",
                    self.label(),
                    offset_words(before),
                    offset_words(after)
                ),
            }),
            AmbiguousOffset::Fold { before, after } => Err(ModelError::LocalTime {
                field,
                input: input.to_string(),
                reason: format!(
                    "{clock} happened twice on {date} in {}, because the clocks went back an hour: say which by adding the offset, {}{} for the first ({}) or {}{} for the second ({})",
                    self.label(),
                    typed,
                    offset_suffix(before),
                    offset_words(before),
                    typed,
                    offset_suffix(after),
                    offset_words(after)
                ),
            }),
        }
    }
}

fn invalid(field: &'static str, input: &str) -> ModelError {
    ModelError::InvalidDate {
        field,
        input: input.to_string(),
        expected: "YYYY-MM-DDTHH:MM in UK time, e.g. 2026-03-14T10:30",
    }
}

fn timestamp(t: Instant) -> Timestamp {
    Timestamp::from_nanosecond(t.unix_timestamp_nanos()).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn instant(t: Timestamp) -> Option<Instant> {
    Instant::from_unix_timestamp_nanos(t.as_nanosecond()).ok()
}

fn offset_suffix(o: jiff::tz::Offset) -> String {
    let s = o.seconds();
    let sign = if s < 0 { '-' } else { '+' };
    let s = s.abs();
    format!("{sign}{:02}:{:02}", s / 3600, (s % 3600) / 60)
}

fn offset_words(o: jiff::tz::Offset) -> String {
    match o.seconds() {
        0 => "GMT".to_string(),
        3600 => "BST".to_string(),
        _ => format!("UTC{}", offset_suffix(o)),
    }
}

/// "14 March 2026".
pub fn date_words(d: Date) -> String {
    format!(
        "{} {} {}",
        d.day(),
        MONTHS[usize::from(u8::from(d.month())) - 1],
        d.year()
    )
}

/// A jiff calendar date as the record's date type.
fn to_date(d: civil::Date) -> Option<Date> {
    let month = time::Month::try_from(u8::try_from(d.month()).ok()?).ok()?;
    Date::from_calendar_date(i32::from(d.year()), month, u8::try_from(d.day()).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Instant {
        Instant::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    }

    #[test]
    fn a_summer_meeting_typed_at_10_30_is_10_30_uk_time() {
        let uk = LocalZone::uk();
        let t = uk.parse("at", "2026-06-14T10:30").unwrap();
        assert_eq!(t, utc("2026-06-14T09:30:00Z"));
        assert_eq!(uk.short(t), "2026-06-14 10:30");
        assert_eq!(uk.long(t), "14 June 2026 at 10:30");
        assert_eq!(uk.rfc3339(t), "2026-06-14T10:30:00+01:00");
        let winter = uk.parse("at", "2026-01-14 10:30").unwrap();
        assert_eq!(winter, utc("2026-01-14T10:30:00Z"));
        assert_eq!(uk.rfc3339(winter), "2026-01-14T10:30:00Z");
    }

    #[test]
    fn explicit_offsets_and_z_are_taken_as_they_say() {
        let uk = LocalZone::uk();
        assert_eq!(
            uk.parse("at", "2026-06-14T10:30Z").unwrap(),
            utc("2026-06-14T10:30:00Z")
        );
        assert_eq!(
            uk.parse("at", "2026-06-14T10:30:00+02:00").unwrap(),
            utc("2026-06-14T08:30:00Z")
        );
        assert!(uk.parse("at", "14/06/2026 10:30").is_err());
        assert!(uk.parse("at", "2026-02-30T10:30").is_err());
    }

    #[test]
    fn the_hour_the_clocks_skip_in_march_is_refused() {
        let uk = LocalZone::uk();
        let err = uk.parse("at", "2026-03-29T01:30").unwrap_err().to_string();
        assert!(
            err.contains("01:30 did not happen on 29 March 2026") && err.contains("forward"),
            "{err}"
        );
        // Either side of the gap is fine, and an hour apart in UTC as on the clock.
        let before = uk.parse("at", "2026-03-29T00:59").unwrap();
        let after = uk.parse("at", "2026-03-29T02:00").unwrap();
        assert_eq!(before, utc("2026-03-29T00:59:00Z"));
        assert_eq!(after, utc("2026-03-29T01:00:00Z"));
    }

    #[test]
    fn the_hour_that_happens_twice_in_october_needs_its_offset() {
        let uk = LocalZone::uk();
        let err = uk.parse("at", "2026-10-25T01:30").unwrap_err().to_string();
        assert!(
            err.contains("happened twice on 25 October 2026")
                && err.contains("2026-10-25T01:30+01:00")
                && err.contains("2026-10-25T01:30+00:00"),
            "{err}"
        );
        let first = uk.parse("at", "2026-10-25T01:30+01:00").unwrap();
        let second = uk.parse("at", "2026-10-25T01:30+00:00").unwrap();
        assert_eq!(second - first, time::Duration::hours(1));
        assert_eq!(uk.short(first), "2026-10-25 01:30");
        assert_eq!(uk.short(second), "2026-10-25 01:30");
        assert_eq!(uk.rfc3339(first), "2026-10-25T01:30:00+01:00");
        assert_eq!(uk.rfc3339(second), "2026-10-25T01:30:00Z");
    }

    #[test]
    fn between_midnight_and_one_in_summer_today_is_already_the_next_day() {
        let uk = LocalZone::uk();
        let t = utc("2026-07-01T23:30:00Z");
        assert_eq!(t.date().to_string(), "2026-07-01");
        assert_eq!(uk.date(t).to_string(), "2026-07-02");
        assert_eq!(uk.long(t), "2 July 2026 at 00:30");
        // In winter UK time is UTC.
        assert_eq!(
            uk.date(utc("2026-12-01T23:30:00Z")).to_string(),
            "2026-12-01"
        );
    }

    #[test]
    fn each_instant_takes_the_offset_in_force_then_not_one_fixed_offset() {
        let uk = LocalZone::uk();
        // Booked in winter for a summer date: stored as the summer instant.
        let booked = uk.parse("at", "2027-06-10T14:00").unwrap();
        assert_eq!(booked, utc("2027-06-10T13:00:00Z"));
        assert_eq!(uk.long(booked), "10 June 2027 at 14:00");
        assert_eq!(uk.label(), "UK time");
        let other = LocalZone::named("America/New_York").unwrap();
        assert_eq!(other.long(booked), "10 June 2027 at 09:00");
        assert!(LocalZone::named("Mars/Olympus").is_err());
    }
}
