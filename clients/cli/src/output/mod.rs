//! Printing what the profile returns: for people (sections, short ids, names instead of
//! participant keys) or as JSON whose shape is documented in `docs/JSON.md` and kept stable.
//!
//! Data goes to stdout; explanations, progress and errors go to stderr, so `$(polyphony ...)`
//! captures only what a script asked for.

pub(crate) mod case;
pub(crate) mod status;
pub(crate) mod today;

use std::fmt::Display;

use polyphony_core::model::{Instant, LocalZone};
use time::format_description::well_known::Rfc3339;

use crate::failure::Failure;

/// Logs (from `RUST_LOG`, default warnings only) go to stderr, never into the data on stdout.
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Write to stdout. A reader that went away (`polyphony case list | head -1`) is not an error
/// worth a panic: the output is simply cut short, as with any Unix tool.
pub(crate) fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

/// Print a value as pretty JSON on stdout.
pub(crate) fn json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::user(format!("could not write JSON: {e}")))?;
    emit(&format!("{text}\n"));
    Ok(())
}

/// Text being laid out, printed in one go.
#[derive(Default)]
pub(crate) struct Page(String);

impl Page {
    /// Add text (each of its lines indented), or an empty line for empty text.
    pub(crate) fn line(&mut self, indent: usize, text: impl Display) {
        let text = text.to_string();
        let pad = " ".repeat(indent);
        for l in text.lines() {
            self.0.push_str(&pad);
            self.0.push_str(l);
            self.0.push('\n');
        }
        if text.is_empty() {
            self.0.push('\n');
        }
    }

    /// Start a section.
    pub(crate) fn heading(&mut self, title: &str) {
        self.0.push('\n');
        self.0.push_str(title);
        self.0.push('\n');
    }

    /// Write the page to stdout.
    pub(crate) fn print(self) {
        emit(&self.0);
    }
}

pub(crate) use polyphony_core::model::short;

/// An RFC 3339 time as people read it: `2026-03-14 10:30 UK time` (the UK clock time then).
pub(crate) fn when(rfc3339: &str) -> String {
    match Instant::parse(rfc3339, &Rfc3339) {
        Ok(t) => when_instant(t),
        Err(_) => rfc3339.to_string(),
    }
}

/// An optional time, or a dash.
pub(crate) fn when_opt(rfc3339: Option<&str>) -> String {
    rfc3339.map(when).unwrap_or_else(|| "-".to_string())
}

/// The zone this device shows and reads times in (the profile's setting, UK time unless chosen
/// otherwise), set once the profile is open.
static ZONE: std::sync::OnceLock<LocalZone> = std::sync::OnceLock::new();

/// Show and read times in `zone` from now on (once, when the profile is open).
pub(crate) fn use_zone(zone: LocalZone) {
    let _ = ZONE.set(zone);
}

/// The zone times are shown and read in.
pub(crate) fn zone() -> &'static LocalZone {
    ZONE.get_or_init(LocalZone::uk)
}

/// An instant as people read it, in the device's zone (UK time) and saying so.
pub(crate) fn when_instant(t: Instant) -> String {
    let zone = zone();
    format!("{} {}", zone.short(t), zone.label())
}

/// The UK date of an RFC 3339 time (YYYY-MM-DD); a stored date as it is.
pub(crate) fn day(rfc3339: &str) -> String {
    match Instant::parse(rfc3339, &Rfc3339) {
        Ok(t) => polyphony_core::model::format_date(zone().date(t)),
        Err(_) => rfc3339.get(..10).unwrap_or(rfc3339).to_string(),
    }
}
