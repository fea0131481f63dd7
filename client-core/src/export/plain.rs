//! Dates and words as a person reads them: "14 March 2026 at 10:30 UK time", not
//! `2026-03-14T09:30:00Z`.
//!
//! The record stores UTC; every copy shows UK local time at the offset in force on that date (see
//! `model::local_time`), and says so, so the person's copy, the PDF and the FHIR narrative agree
//! with the screen the practitioner typed it on.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::model::local_time::date_words;
use crate::model::LocalZone;

/// "14 March 2026" from an RFC 3339 timestamp (its UK date) or a YYYY-MM-DD date; the input
/// itself if neither.
pub(crate) fn date(s: &str) -> String {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return LocalZone::uk().long_date(t);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    match time::Date::parse(s, &fmt) {
        Ok(d) => date_words(d),
        Err(_) => s.to_string(),
    }
}

/// "14 March 2026 at 10:30 UK time" from an RFC 3339 timestamp; falls back to [`date`].
pub(crate) fn datetime(s: &str) -> String {
    match OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => {
            let uk = LocalZone::uk();
            format!("{} {}", uk.long(t), uk.label())
        }
        Err(_) => date(s),
    }
}

/// [`date`] of an optional value, or "date not recorded".
pub(crate) fn date_or(s: &Option<String>) -> String {
    s.as_deref()
        .map(date)
        .unwrap_or_else(|| "date not recorded".into())
}

/// [`datetime`] of an optional value, or "time not recorded".
pub(crate) fn datetime_or(s: &Option<String>) -> String {
    s.as_deref()
        .map(datetime)
        .unwrap_or_else(|| "time not recorded".into())
}

/// How a stance reads in a sentence.
pub(crate) fn stance(s: &str) -> &str {
    match s {
        "agree" => "agrees",
        "disagree" => "disagrees",
        "unsure" => "is not sure yet",
        other => other,
    }
}

/// How a decision's status reads.
pub(crate) fn decision_status(s: &str) -> &str {
    match s {
        "proposed" => "suggested, still being talked about",
        "agreed" => "agreed",
        "revisited" => "being looked at again",
        "withdrawn" => "no longer going ahead",
        other => other,
    }
}

/// How a change of a decision's status reads, as the start of a sentence.
pub(crate) fn status_event(s: &str) -> &str {
    match s {
        "proposed" => "Suggested",
        "agreed" => "Agreed",
        "revisited" => "Opened again",
        "withdrawn" => "Dropped",
        other => other,
    }
}

/// How a meeting place reads.
pub(crate) fn place(s: &str) -> &str {
    match s {
        "home" => "at home",
        "clinic" => "at the clinic",
        "online" => "by video",
        "phone" => "by phone",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_dates_read_as_words() {
        assert_eq!(
            datetime("2026-03-14T10:30:00Z"),
            "14 March 2026 at 10:30 UK time"
        );
        // In summer the UK clock is an hour ahead of the stored UTC time, and its date may be
        // the next day.
        assert_eq!(
            datetime("2026-06-14T09:30:00Z"),
            "14 June 2026 at 10:30 UK time"
        );
        assert_eq!(date("2026-06-30T23:30:00Z"), "1 July 2026");
        assert_eq!(date("2026-03-14T10:30:00.123Z"), "14 March 2026");
        assert_eq!(date("2026-12-01"), "1 December 2026");
        assert_eq!(date("sometime"), "sometime");
        assert_eq!(date_or(&None), "date not recorded");
    }
}
