//! What the administrator reads: an answer printed as bare ids (for scripts), tables, JSON, or (the
//! trust-wide figures) CSV.

use std::io::{self, Write};

use polyphony_core::model::LocalZone;
use polyphony_server::admin::{
    AdminRequest, BoroughView, CaseMoved, DeviceView, HubStatus, IssuedBoroughCode, IssuedCode,
    PractitionerView, TrustFigures,
};
use polyphony_server::audit::{AuditRecord, VerifyReport};
use polyphony_server::registry::{DeviceStatus, Team};
use serde::de::DeserializeOwned;

/// How to print an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Bare ids and tables.
    Text,
    /// The answer as the server gave it.
    Json,
    /// CSV (the trust-wide figures; other answers print as text).
    Csv,
}

/// What the administrator is told on stderr when the figures are written as CSV.
const FIGURES_CSV_NOTE: &str = "This CSV holds figures per case (by case id, no names) and \
per team and borough. It is not encrypted: keep it somewhere safe. Each case read for it is \
recorded in the hub's audit log (`polyphony-server audit`).";

/// Print an answer: for a creation, only the id or code on stdout; for a listing, a table.
pub(crate) fn show(req: &AdminRequest, value: serde_json::Value, format: Format) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if format == Format::Json {
        let text = serde_json::to_string_pretty(&value).map_err(io::Error::other)?;
        return writeln!(out, "{text}");
    }
    match req {
        AdminRequest::TeamAdd { .. } => {
            let team: Team = decode(value)?;
            eprintln!("added team '{}'", team.name);
            writeln!(out, "{}", team.id)
        }
        AdminRequest::Teams => teams(&mut out, decode(value)?),
        AdminRequest::PractitionerAdd { .. } => {
            let p: PractitionerView = decode(value)?;
            eprintln!("added practitioner '{}'", p.name);
            writeln!(out, "{}", p.id)
        }
        AdminRequest::PractitionerRemove { .. } => practitioner_removed(&mut out, decode(value)?),
        AdminRequest::PractitionerRole { .. } => {
            let p: PractitionerView = decode(value)?;
            eprintln!("'{}' is now a {}", p.name, p.role.label());
            writeln!(out, "{}", p.id)
        }
        AdminRequest::Practitioners => practitioners(&mut out, decode(value)?),
        AdminRequest::Enrol { .. } => issued_code(&mut out, decode(value)?),
        AdminRequest::Revoke { .. } => {
            revoked(&decode(value)?);
            Ok(())
        }
        AdminRequest::Devices => devices(&mut out, decode(value)?),
        AdminRequest::Audit { verify: true, .. } => {
            let report: VerifyReport = decode(value)?;
            writeln!(
                out,
                "audit log intact: {} entries, head {}",
                report.entries, report.head
            )
        }
        AdminRequest::AuditAnchors { anchors } => {
            let report: VerifyReport = decode(value)?;
            writeln!(
                out,
                "audit log intact: {} entries, head {}; it holds all {} anchored heads",
                report.entries,
                report.head,
                anchors.len()
            )
        }
        AdminRequest::AuditHead => {
            let text = serde_json::to_string_pretty(&value).map_err(io::Error::other)?;
            writeln!(out, "{text}")
        }
        AdminRequest::Audit { .. } => audit_records(&mut out, decode(value)?),
        AdminRequest::CaseMove { .. } => {
            let moved: CaseMoved = decode(value)?;
            eprintln!(
                "case {} moved from '{}' to '{}'",
                moved.case, moved.from.name, moved.to.name
            );
            Ok(())
        }
        AdminRequest::CaseTransfer { .. } => {
            let t: polyphony_server::hub_link::transfer::PendingTransfer = decode(value)?;
            eprintln!(
                "case {} goes to the {} borough's team '{}' once the trust hub confirms it (at once while the link is up; `polyphony-server hub status` shows it until then); this borough's devices then upload what they wrote and drop their copies",
                t.case, t.borough, t.team
            );
            Ok(())
        }
        AdminRequest::BoroughAdd { .. } => {
            let b: BoroughView = decode(value)?;
            eprintln!("added borough '{}'", b.borough.name);
            writeln!(out, "{}", b.borough.id)
        }
        AdminRequest::BoroughEnrol { .. } => {
            let c: IssuedBoroughCode = decode(value)?;
            eprintln!(
                "give this code to the administrator of the '{}' borough server, who runs `polyphony-server hub join HUB_ADDRESS CODE --recovery-key FILE` (or `hub restore`, to rebuild a lost borough server); it works once, until {}",
                c.name, c.expires_at
            );
            writeln!(out, "{}", c.code)
        }
        AdminRequest::BoroughRevoke { .. } => {
            let b: BoroughView = decode(value)?;
            eprintln!(
                "borough '{}' revoked: its link is refused; its {} case(s) stay on the hub",
                b.borough.name, b.cases
            );
            Ok(())
        }
        AdminRequest::Boroughs => boroughs(&mut out, decode(value)?),
        AdminRequest::HubJoined { .. } | AdminRequest::HubStatus => {
            hub_status(&mut out, decode(value)?)
        }
        AdminRequest::Figures { .. } => trust_figures(&mut out, decode(value)?, format),
    }
}

fn trust_figures(out: &mut impl Write, figures: TrustFigures, format: Format) -> io::Result<()> {
    if figures.boroughs.is_empty() {
        eprintln!("no boroughs yet: add one with `polyphony-server borough add NAME`");
    }
    if format == Format::Csv {
        let csv = figures.to_csv().map_err(io::Error::other)?;
        write!(out, "{csv}")?;
        if !figures.unreadable.is_empty() {
            eprintln!(
                "{} case(s) could not be read and are left out of the figures (the server's log says why): {}",
                figures.unreadable.len(),
                figures
                    .unreadable
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        eprintln!("{FIGURES_CSV_NOTE}");
        return Ok(());
    }
    // The table names the unreadable cases itself.
    write!(out, "{}", figures.render())
}

fn boroughs(out: &mut impl Write, boroughs: Vec<BoroughView>) -> io::Result<()> {
    if boroughs.is_empty() {
        eprintln!("no boroughs yet: add one with `polyphony-server borough add NAME`");
    }
    for b in boroughs {
        let teams: Vec<&str> = b.teams.iter().map(|t| t.name.as_str()).collect();
        writeln!(
            out,
            "{}  {}  {}  {} case(s)  teams: {}",
            b.borough.id,
            b.borough.name,
            match (b.borough.status, b.borough.enrolled_at) {
                (DeviceStatus::Revoked, _) => "revoked",
                (_, Some(_)) => "joined",
                (_, None) => "not joined yet",
            },
            b.cases,
            if teams.is_empty() {
                "(none yet)".to_string()
            } else {
                teams.join(", ")
            }
        )?;
    }
    Ok(())
}

fn hub_status(out: &mut impl Write, s: HubStatus) -> io::Result<()> {
    if !s.joined {
        return writeln!(
            out,
            "not joined to a trust hub: ask the hub's administrator for a code, then `polyphony-server hub join HUB_ADDRESS CODE --recovery-key FILE`"
        );
    }
    writeln!(
        out,
        "joined the trust hub at {} as '{}' ({}) since {}",
        s.hub.unwrap_or_default(),
        s.name.unwrap_or_default(),
        s.borough.map(|b| b.to_string()).unwrap_or_default(),
        s.joined_at.unwrap_or_default()
    )?;
    match &s.link {
        None => writeln!(out, "link: not running (the server is not running)")?,
        Some(l) if l.connected => writeln!(
            out,
            "link: connected since {}",
            l.connected_at.clone().unwrap_or_default()
        )?,
        Some(l) => writeln!(
            out,
            "link: not connected{}",
            l.last_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )?,
    }
    if let Some(l) = &s.link {
        for r in &l.refused {
            writeln!(out, "case {} refused by the hub: {}", r.case, r.message)?;
        }
    }
    writeln!(
        out,
        "{} case(s): {} also on the trust hub, {} with changes the hub has not saved yet",
        s.cases,
        s.cases - s.not_on_hub,
        s.not_on_hub
    )?;
    if s.files_not_on_hub > 0 {
        writeln!(
            out,
            "{} file(s) the records name are not on the trust hub yet (sent while the link is up; one no device has uploaded yet waits for it)",
            s.files_not_on_hub
        )?;
    }
    for t in &s.transfers {
        match &t.refused {
            None => writeln!(
                out,
                "case {}: transfer to the {} borough's team '{}' waits for the trust hub (asked {})",
                t.case,
                t.borough,
                t.team,
                minutes_text(&t.requested_at)
            )?,
            Some(why) => writeln!(
                out,
                "case {}: transfer to the {} borough's team '{}' refused by the trust hub: {why}",
                t.case, t.borough, t.team
            )?,
        }
    }
    match &s.safekeeping {
        None => Ok(()),
        Some(k) if !k.recovery_key => writeln!(
            out,
            "kept copy: none (this borough joined before the hub kept copies): join again to have its CA, registry and audit log kept on the hub"
        ),
        Some(k) => writeln!(
            out,
            "kept copy on the hub: registry {}, audit log {} of {} record(s)",
            match (&k.registry_kept_at, k.registry_changed_since) {
                (None, _) => "not yet".to_string(),
                (Some(at), false) => format!("as of {}", minutes_text(at)),
                (Some(at), true) => format!("as of {} (changed since; sent within a minute while the link is up)", minutes_text(at)),
            },
            k.audit_records_kept,
            k.audit_records
        ),
    }
}

/// An RFC 3339 time as UK local time to the minute, or as written if it does not read.
fn minutes_text(at: &str) -> String {
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .map(minutes)
        .unwrap_or_else(|_| at.to_string())
}

/// What `hub restore` rebuilt: the counts on stderr, the borough's id on stdout (JSON: all).
pub(crate) fn restored(r: polyphony_server::hub_link::Restored, format: Format) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if format == Format::Json {
        serde_json::to_writer_pretty(&mut out, &r).map_err(io::Error::other)?;
        return writeln!(out);
    }
    eprintln!(
        "restored from the trust hub: the CA, {} team(s), {} practitioner(s), {} device(s) and {} case registration(s) as of {}, and {} audit record(s) through head {}; start the server, and its link brings back every case of its teams (devices sync as before, without enrolling again, and send what the hub never had)",
        r.teams,
        r.practitioners,
        r.devices,
        r.cases,
        minutes_text(&r.registry_made_at),
        r.audit_records,
        r.audit_head
    );
    writeln!(out, "{}", r.borough)
}

fn teams(out: &mut impl Write, teams: Vec<Team>) -> io::Result<()> {
    if teams.is_empty() {
        eprintln!("no teams yet: add one with `polyphony-server team add NAME`");
    }
    let rows = teams
        .into_iter()
        .map(|t| vec![t.id.to_string(), t.name, minutes(t.created_at)])
        .collect();
    table(out, &["ID", "NAME", "ADDED (UK TIME)"], rows)
}

/// The teams a practitioner is left in, on stderr; their id on stdout.
fn practitioner_removed(out: &mut impl Write, p: PractitionerView) -> io::Result<()> {
    let teams: Vec<_> = p.teams.into_iter().map(|t| t.name).collect();
    eprintln!(
        "'{}' now works in: {}",
        p.name,
        if teams.is_empty() {
            "no team".to_string()
        } else {
            teams.join(", ")
        }
    );
    writeln!(out, "{}", p.id)
}

fn practitioners(out: &mut impl Write, all: Vec<PractitionerView>) -> io::Result<()> {
    if all.is_empty() {
        eprintln!(
            "no practitioners yet: add one with `polyphony-server practitioner add NAME --team TEAM`"
        );
    }
    let rows = all
        .into_iter()
        .map(|p| {
            let teams: Vec<_> = p.teams.into_iter().map(|t| t.name).collect();
            vec![
                p.id.to_string(),
                p.name,
                p.role.label().to_string(),
                teams.join(", "),
            ]
        })
        .collect();
    table(out, &["ID", "NAME", "ROLE", "TEAMS"], rows)
}

/// What to do with a new enrolment code, on stderr; the code alone on stdout.
fn issued_code(out: &mut impl Write, issued: IssuedCode) -> io::Result<()> {
    eprintln!(
        "enrolment code for {}, valid until {}. It is shown only this once: give it to them \
         to enter on their new device. It enrols one device.",
        issued.practitioner_name,
        uk_time(&issued.expires_at)
    );
    writeln!(out, "{}", issued.code)
}

/// What a revocation means for the device, on stderr.
fn revoked(view: &DeviceView) {
    let d = &view.device;
    match d.status {
        DeviceStatus::Revoked => eprintln!(
            "device {} ('{}', {}) is revoked: it is refused from now on",
            d.id, d.name, view.practitioner_name
        ),
        _ => eprintln!(
            "device {} ('{}', {}) is being revoked: at its next sync it uploads what it holds, \
             then is told to wipe its cases (use --now to refuse it at once)",
            d.id, d.name, view.practitioner_name
        ),
    }
}

fn devices(out: &mut impl Write, all: Vec<DeviceView>) -> io::Result<()> {
    if all.is_empty() {
        eprintln!("no devices enrolled yet: issue a code with `polyphony-server enrol NAME`");
    }
    let rows = all
        .into_iter()
        .map(|v| {
            vec![
                v.device.id.to_string(),
                v.device.name,
                v.practitioner_name,
                v.device.status.to_string(),
                minutes(v.device.enrolled_at),
            ]
        })
        .collect();
    table(
        out,
        &["ID", "NAME", "PRACTITIONER", "STATUS", "ENROLLED (UK TIME)"],
        rows,
    )
}

fn audit_records(out: &mut impl Write, records: Vec<AuditRecord>) -> io::Result<()> {
    let rows = records
        .into_iter()
        .map(|r| {
            vec![
                r.seq.to_string(),
                stored_minutes(&r.event.at),
                r.event.actor.to_string(),
                r.event.action.to_string(),
                r.event.case.map(|c| c.to_string()).unwrap_or_default(),
                r.event.detail,
            ]
        })
        .collect();
    table(
        out,
        &["SEQ", "AT (UK TIME)", "ACTOR", "ACTION", "CASE", "DETAIL"],
        rows,
    )
}

fn decode<T: DeserializeOwned>(value: serde_json::Value) -> io::Result<T> {
    serde_json::from_value(value).map_err(|e| {
        io::Error::other(format!(
            "unexpected answer from the server ({e}); are the server and this command the same version?"
        ))
    })
}

/// A stdout closed early (`| head`) is not a failure.
pub(crate) fn ignore_closed_stdout(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(e)
    }
}

/// A stored RFC 3339 time to the minute in UK local time, for tables (the column says so).
fn stored_minutes(rfc3339: &str) -> String {
    stored(rfc3339, minutes)
}

/// A stored RFC 3339 time in UK local time, in words, for a sentence.
fn uk_time(rfc3339: &str) -> String {
    stored(rfc3339, |t| format!("{} UK time", LocalZone::uk().long(t)))
}

/// A stored RFC 3339 time shown with `show`; as stored if it does not parse.
fn stored(rfc3339: &str, show: impl Fn(time::OffsetDateTime) -> String) -> String {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(show)
        .unwrap_or_else(|_| rfc3339.to_string())
}

/// A time to the minute in UK local time, for tables (the column says so).
fn minutes(t: time::OffsetDateTime) -> String {
    LocalZone::uk().short(t)
}

/// Columns padded to their widest cell, two spaces apart.
fn table(out: &mut impl Write, headers: &[&str], rows: Vec<Vec<String>>) -> io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let mut out = Vec::new();
        table(
            &mut out,
            &["ID", "NAME", "TEAMS"],
            vec![
                vec!["1".into(), "Ana Silva".into(), "North, South".into()],
                vec!["22".into(), "Bo".into(), String::new()],
            ],
        )
        .expect("written");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(
            text,
            "ID  NAME       TEAMS\n1   Ana Silva  North, South\n22  Bo\n"
        );
    }
}
