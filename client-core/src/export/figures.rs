//! The team's fidelity figures: one row per case and a team summary, as a text table for the CLI
//! and the app, and as CSV for the team's own spreadsheets.
//!
//! The figures themselves are computed per case by [`CaseFigures`] (entries in error left out);
//! this module only gathers them. What the team watches:
//! - immediate help: hours from referral to the first network meeting (the aim is within 24 hours);
//! - psychological continuity: the share of meetings with two or more practitioners, and with the
//!   original pair;
//! - the social network: network members per meeting;
//! - meetings per episode.
//!
//! Each row is one episode of care (schema 4: a re-referral opens a new episode on the same
//! case, and its figures are its own); a case never re-referred is one row. The team rows
//! summarise the episodes.

use serde::{Deserialize, Serialize};

use super::ExportError;
use crate::model::CaseFigures;

/// The aim for the first network meeting, in hours after referral.
pub const FIRST_MEETING_AIM_HOURS: f64 = 24.0;

/// What a row describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowScope {
    /// One episode of a case (a case never re-referred has one).
    Case,
    /// The team: the mean of each figure over the cases that have it.
    TeamMean,
    /// The team: the median of each figure over the cases that have it.
    TeamMedian,
}

/// One row of the figures table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// What the row describes.
    pub scope: RowScope,
    /// The case id, or "team".
    pub label: String,
    /// How many episodes the row covers (1 for an episode's row).
    pub cases: usize,
    /// The episode's number on its case (None on the team rows).
    #[serde(default)]
    pub episode: Option<usize>,
    /// Hours from referral to the first network meeting.
    pub hours_to_first_meeting: Option<f64>,
    /// Share (0 to 1) of cases whose first meeting was within 24 hours of referral (for a case
    /// row, 1 or 0), over the cases where both times are known.
    pub within_24_hours: Option<f64>,
    /// Meetings in the episode.
    pub meetings: Option<f64>,
    /// Share of meetings with two or more practitioners.
    pub two_or_more_practitioners: Option<f64>,
    /// Share of meetings with the original pair.
    pub original_pair: Option<f64>,
    /// Network members per meeting.
    pub network_members_per_meeting: Option<f64>,
    /// Share of meetings a peer support worker attended.
    #[serde(default)]
    pub peer_support: Option<f64>,
    /// Share (0 to 1) of episodes whose first meeting was held by the time its referral's
    /// urgency asked (emergency 4 hours, urgent 24, routine 4 weeks; 24 hours when none was
    /// recorded), over the episodes whose first meeting was held (for an episode's row, 1 or 0).
    #[serde(default)]
    pub first_meeting_in_time: Option<f64>,
}

fn within(hours: Option<f64>) -> Option<f64> {
    hours.map(|h| {
        if h <= FIRST_MEETING_AIM_HOURS {
            1.0
        } else {
            0.0
        }
    })
}

/// The rows of a case: one per episode (figures computed before episodes were, with none, as
/// one row of the whole case).
fn case_rows(f: &CaseFigures) -> Vec<Row> {
    if f.episodes.is_empty() {
        return vec![Row {
            scope: RowScope::Case,
            label: f.case_id.clone(),
            cases: 1,
            episode: None,
            hours_to_first_meeting: f.hours_referral_to_first_meeting,
            within_24_hours: within(f.hours_referral_to_first_meeting),
            meetings: Some(f.meetings as f64),
            two_or_more_practitioners: f.share_two_or_more_practitioners,
            original_pair: f.share_with_original_pair,
            network_members_per_meeting: f.network_members_per_meeting,
            peer_support: f.share_with_peer_support,
            first_meeting_in_time: None,
        }];
    }
    f.episodes
        .iter()
        .map(|e| Row {
            scope: RowScope::Case,
            label: f.case_id.clone(),
            cases: 1,
            episode: Some(e.number),
            hours_to_first_meeting: e.hours_referral_to_first_meeting,
            within_24_hours: within(e.hours_referral_to_first_meeting),
            meetings: Some(e.meetings as f64),
            two_or_more_practitioners: e.share_two_or_more_practitioners,
            original_pair: e.share_with_original_pair,
            network_members_per_meeting: e.network_members_per_meeting,
            peer_support: e.share_with_peer_support,
            first_meeting_in_time: e.first_meeting_in_time.map(|ok| if ok { 1.0 } else { 0.0 }),
        })
        .collect()
}

fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

fn median(xs: &[f64]) -> Option<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn summary(scope: RowScope, rows: &[Row], f: fn(&[f64]) -> Option<f64>) -> Row {
    let col = |get: fn(&Row) -> Option<f64>| -> Option<f64> {
        let xs: Vec<f64> = rows.iter().filter_map(get).collect();
        f(&xs)
    };
    let within: Vec<f64> = rows.iter().filter_map(|r| r.within_24_hours).collect();
    let in_time: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.first_meeting_in_time)
        .collect();
    Row {
        scope,
        label: "team".into(),
        cases: rows.len(),
        episode: None,
        first_meeting_in_time: mean(&in_time),
        hours_to_first_meeting: col(|r| r.hours_to_first_meeting),
        // A share of cases either way: the median of 0s and 1s would say nothing.
        within_24_hours: mean(&within),
        meetings: col(|r| r.meetings),
        two_or_more_practitioners: col(|r| r.two_or_more_practitioners),
        original_pair: col(|r| r.original_pair),
        network_members_per_meeting: col(|r| r.network_members_per_meeting),
        peer_support: col(|r| r.peer_support),
    }
}

/// One row per episode of each case, then the team's mean and median rows over the episodes
/// (also for an empty team, with nothing known).
pub fn team_table(cases: &[CaseFigures]) -> Vec<Row> {
    let mut rows: Vec<Row> = cases.iter().flat_map(case_rows).collect();
    let team_mean = summary(RowScope::TeamMean, &rows, mean);
    let team_median = summary(RowScope::TeamMedian, &rows, median);
    rows.push(team_mean);
    rows.push(team_median);
    rows
}

const HEADERS: [&str; 12] = [
    "scope",
    "case",
    "cases",
    "hours_referral_to_first_meeting",
    "first_meeting_within_24h",
    "meetings",
    "share_two_or_more_practitioners",
    "share_with_original_pair",
    "network_members_per_meeting",
    "share_with_peer_support",
    "episode",
    "first_meeting_in_time",
];

fn scope_name(s: RowScope) -> &'static str {
    match s {
        RowScope::Case => "case",
        RowScope::TeamMean => "team_mean",
        RowScope::TeamMedian => "team_median",
    }
}

fn num(x: Option<f64>, places: usize) -> String {
    x.map(|x| format!("{x:.places$}")).unwrap_or_default()
}

/// The table as CSV: one header line, shares as fractions (0 to 1), unknown values empty.
pub fn to_csv(rows: &[Row]) -> Result<String, ExportError> {
    to_csv_led(&[], rows.iter().map(|r| (Vec::new(), r)))
}

/// The table as CSV with columns of the caller's before the device's own (the trust hub leads
/// with the borough and the team each row is of): `lead` names them, and each row comes with its
/// values for them. The device's columns follow exactly as [`to_csv`] writes them, so a
/// spreadsheet made for a team's file reads the hub's too.
pub fn to_csv_led<'r>(
    lead: &[&str],
    rows: impl IntoIterator<Item = (Vec<String>, &'r Row)>,
) -> Result<String, ExportError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(lead.iter().copied().chain(HEADERS))?;
    for (led, r) in rows {
        w.write_record(led.into_iter().chain([
            scope_name(r.scope).to_string(),
            r.label.clone(),
            r.cases.to_string(),
            num(r.hours_to_first_meeting, 1),
            num(r.within_24_hours, 3),
            num(r.meetings, 1),
            num(r.two_or_more_practitioners, 3),
            num(r.original_pair, 3),
            num(r.network_members_per_meeting, 2),
            num(r.peer_support, 3),
            r.episode.map(|e| e.to_string()).unwrap_or_default(),
            num(r.first_meeting_in_time, 3),
        ]))?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| ExportError::Csv(e.into_error().into()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn pct(x: Option<f64>) -> String {
    x.map(|x| format!("{:.0}%", x * 100.0))
        .unwrap_or_else(|| "-".into())
}

/// One line of the text table: the first column left-aligned, numbers right-aligned.
fn line<S: AsRef<str>>(cells: &[S], widths: &[usize]) -> String {
    let mut s = String::new();
    for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
        let cell = cell.as_ref();
        let pad = " ".repeat(w - cell.chars().count());
        if i == 0 {
            s.push_str(cell);
            s.push_str(&pad);
        } else {
            s.push_str("  ");
            s.push_str(&pad);
            s.push_str(cell);
        }
    }
    s.trim_end().to_string() + "\n"
}

/// The table as aligned text for a terminal. Case ids are shortened to their first 8 characters;
/// the CSV keeps them whole.
pub fn render_table(rows: &[Row]) -> String {
    render_table_of(rows, "Team")
}

/// [`render_table`], with the summary rows named for what they summarise (`of`: "Team", or
/// "Borough" for the trust hub's rows over all of a borough's teams).
pub fn render_table_of(rows: &[Row], of: &str) -> String {
    let head = [
        "Case",
        "Hours to 1st meeting",
        "Within 24 h",
        "Meetings",
        "2+ practitioners",
        "Original pair",
        "Network per meeting",
        "Peer support",
    ];
    let body: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let label = match r.scope {
                RowScope::Case => {
                    let short: String = r.label.chars().take(8).collect();
                    match r.episode {
                        Some(n) if n > 1 => format!("{short} (episode {n})"),
                        _ => short,
                    }
                }
                RowScope::TeamMean => format!("{of} mean ({} episodes)", r.cases),
                RowScope::TeamMedian => format!("{of} median ({} episodes)", r.cases),
            };
            let within = match (r.scope, r.within_24_hours) {
                (RowScope::Case, Some(w)) => if w >= 1.0 { "yes" } else { "no" }.to_string(),
                (_, w) => pct(w),
            };
            [
                label,
                r.hours_to_first_meeting
                    .map(|h| format!("{h:.1}"))
                    .unwrap_or_else(|| "-".into()),
                within,
                r.meetings
                    .map(|m| {
                        if r.scope == RowScope::Case {
                            format!("{m:.0}")
                        } else {
                            format!("{m:.1}")
                        }
                    })
                    .unwrap_or_else(|| "-".into()),
                pct(r.two_or_more_practitioners),
                pct(r.original_pair),
                r.network_members_per_meeting
                    .map(|n| format!("{n:.1}"))
                    .unwrap_or_else(|| "-".into()),
                pct(r.peer_support),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in &body {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let rule = line(&dashes, &widths);
    let mut out = line(&head, &widths);
    out.push_str(&rule);
    for (i, row) in body.iter().enumerate() {
        let first_summary =
            rows[i].scope != RowScope::Case && (i == 0 || rows[i - 1].scope == RowScope::Case);
        if first_summary {
            out.push_str(&rule);
        }
        out.push_str(&line(row, &widths));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testcase::rich_case;

    fn fig(id: &str, hours: Option<f64>, meetings: usize, two: Option<f64>) -> CaseFigures {
        CaseFigures {
            case_id: id.into(),
            hours_referral_to_first_meeting: hours,
            meetings,
            share_two_or_more_practitioners: two,
            share_with_peer_support: None,
            share_with_original_pair: two,
            network_members_per_meeting: Some(meetings as f64 / 2.0),
            episodes: vec![],
        }
    }

    #[test]
    fn export_figures_summarise_the_team() {
        let rows = team_table(&[
            fig("aaaaaaaa-1", Some(10.0), 4, Some(1.0)),
            fig("bbbbbbbb-2", Some(30.0), 2, Some(0.5)),
            fig("cccccccc-3", None, 0, None),
            fig("dddddddd-4", Some(20.0), 6, Some(0.0)),
        ]);
        assert_eq!(rows.len(), 6);
        let mean = &rows[4];
        let median = &rows[5];
        assert_eq!(mean.scope, RowScope::TeamMean);
        assert_eq!(mean.cases, 4);
        assert_eq!(mean.hours_to_first_meeting, Some(20.0));
        assert_eq!(median.hours_to_first_meeting, Some(20.0));
        let share = mean.within_24_hours.unwrap();
        assert!((share - 2.0 / 3.0).abs() < 1e-9, "2 of the 3 known cases");
        assert_eq!(mean.meetings, Some(3.0));
        assert_eq!(median.meetings, Some(3.0));
        assert_eq!(mean.two_or_more_practitioners, Some(0.5));
        assert_eq!(rows[1].within_24_hours, Some(0.0));

        let empty = team_table(&[]);
        assert_eq!(empty.len(), 2);
        assert_eq!(empty[0].hours_to_first_meeting, None);
    }

    #[test]
    fn export_figures_as_csv_and_text() {
        let rich = rich_case();
        let f = CaseFigures::from_view(&rich.view);
        assert_eq!(
            f.meetings, 3,
            "the meeting on the wrong record and the planned one are left out; the one where Ana \
             met the team without María counts (her network was there)"
        );
        assert_eq!(f.hours_referral_to_first_meeting, Some(19.5));
        let rows = team_table(&[f, fig("x,\"quoted\"", Some(40.0), 1, None)]);
        let csv = to_csv(&rows).unwrap();
        let mut r = csv::Reader::from_reader(csv.as_bytes());
        assert_eq!(r.headers().unwrap().len(), HEADERS.len());
        let recs: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(recs.len(), 4);
        assert_eq!(&recs[0][0], "case");
        assert_eq!(&recs[0][3], "19.5");
        assert_eq!(&recs[0][4], "1.000");
        assert_eq!(&recs[1][1], "x,\"quoted\"", "labels are quoted, not split");
        assert_eq!(&recs[1][6], "", "unknown is empty");
        assert_eq!(&recs[2][0], "team_mean");
        assert_eq!(&recs[2][4], "0.500");

        let table = render_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("Case"));
        assert!(table.contains("Team mean (2 episodes)"));
        assert!(table.contains("19.5"));
        assert!(table.contains(" yes"));
        assert!(table.contains(" 50%"));
        let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|w| *w <= widths[0] + 1), "{table}");
    }

    /// The hub's CSV is the device's with its own columns first: the same header after them, and
    /// the same cells.
    #[test]
    fn export_figures_as_csv_led_by_other_columns() {
        let rows = team_table(&[fig("aaaaaaaa-1", Some(10.0), 4, Some(1.0))]);
        let plain = to_csv(&rows).unwrap();
        let led = to_csv_led(
            &["borough", "team"],
            rows.iter()
                .map(|r| (vec!["North".to_string(), "Crisis, East".to_string()], r)),
        )
        .unwrap();
        let plain: Vec<csv::StringRecord> = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(plain.as_bytes())
            .records()
            .map(Result::unwrap)
            .collect();
        let led: Vec<csv::StringRecord> = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(led.as_bytes())
            .records()
            .map(Result::unwrap)
            .collect();
        assert_eq!(led.len(), plain.len());
        assert_eq!(&led[0][0], "borough");
        assert_eq!(&led[1][1], "Crisis, East", "quoted, not split");
        for (l, p) in led.iter().zip(&plain) {
            assert_eq!(
                l.iter().skip(2).collect::<Vec<_>>(),
                p.iter().collect::<Vec<_>>()
            );
        }
        assert!(render_table_of(&rows, "Borough").contains("Borough mean (1 episodes)"));
    }
}
