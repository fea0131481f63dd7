//! What the sync badge says, and the rule that makes it trustworthy: **it is derived only from real
//! state**. "All saved on the borough server" appears only when every case on the device has zero
//! changes the server has not acknowledged as durable; the connection part comes from the
//! background sync's own view of its link; times come from syncs that completed.
//!
//! The trust hub is the second place, said the same way: "Records also on the trust hub" (attached
//! files are not sent to the hub yet) only when every
//! change here is on the borough server and the hub holds it too (as the borough last relayed
//! the hub's acknowledgement), and nothing at all about a hub when the borough has never said it
//! has one (a borough with no hub, or one too old to say).
//!
//! The badge is rendered into every page (so it is right without JavaScript) and served as JSON at
//! `/status.json` for the page script to keep it current.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use polyphony_core::model::LocalZone;
use polyphony_core::CaseId;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{mpsc, Notify};

use crate::dates;
use crate::html::esc;

/// The background sync's link to the borough server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Link {
    /// The device is not enrolled: there is no server to reach.
    NotEnrolled,
    /// Trying to reach the server.
    Connecting,
    /// The server cannot be reached (or refused); work stays on this device.
    Offline {
        /// Why, in words.
        reason: String,
    },
    /// Catching up with the server.
    Syncing {
        /// Cases settled.
        settled: usize,
        /// Cases in the session.
        total: usize,
    },
    /// Connected; changes go to the server as they are made.
    Live,
}

/// The link and what the background sync learned.
#[derive(Debug, Clone, Serialize)]
pub struct LinkState {
    /// The link.
    pub link: Link,
    /// When a sync last completed (every case settled with the server).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_synced_at: Option<OffsetDateTime>,
    /// Cases the server refused, with its reason.
    #[serde(skip)]
    pub refused: HashMap<CaseId, String>,
}

impl Default for LinkState {
    fn default() -> Self {
        LinkState {
            link: Link::Connecting,
            last_synced_at: None,
            refused: HashMap::new(),
        }
    }
}

/// One case's sync position.
#[derive(Debug, Clone, Serialize)]
pub struct CaseSyncLine {
    /// The case.
    pub case: CaseId,
    /// Changes the server has not acknowledged.
    pub unsynced: usize,
    /// Changes the borough's trust hub has not acknowledged, as the borough last said (these
    /// include the unsynced ones); None when the borough has never said it has a hub.
    pub not_on_hub: Option<usize>,
    /// Since when the case has had unacknowledged changes.
    #[serde(with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    /// True when they have waited longer than the warning threshold.
    pub stale: bool,
    /// The server's refusal, if it refused this case.
    pub refused: Option<String>,
}

impl CaseSyncLine {
    /// The case's sync position in words.
    pub fn words(&self) -> String {
        if let Some(r) = &self.refused {
            return format!("The borough server refused these changes: {r}");
        }
        match self.unsynced {
            0 if self.not_on_hub == Some(0) => {
                "All saved on the borough server; the record also on the trust hub".into()
            }
            0 => "All saved on the borough server".into(),
            1 => "1 change only on this device".into(),
            n => format!("{n} changes only on this device"),
        }
    }

    /// The case's sync position as a tag.
    pub fn tag(&self) -> String {
        let colour = if self.refused.is_some() || self.stale {
            "red"
        } else if self.unsynced > 0 {
            "orange"
        } else {
            "green"
        };
        crate::html::tag(&self.words(), colour)
    }
}

/// Where sync stands for the whole device.
#[derive(Debug, Clone, Serialize)]
pub struct SyncOverview {
    /// The background sync's link.
    pub link: LinkState,
    /// Every case held here.
    pub cases: Vec<CaseSyncLine>,
    /// Sum of unacknowledged changes.
    pub unsynced_total: usize,
    /// Sum of the changes not yet on the trust hub; None when the borough has never said it has
    /// a hub, when no case is held, or when a case's count is missing (then nothing is claimed
    /// about the hub).
    pub not_on_hub_total: Option<usize>,
    /// The warning threshold.
    #[serde(skip)]
    pub warning_after: time::Duration,
    /// When this was worked out.
    #[serde(skip)]
    pub now: OffsetDateTime,
    /// A failure reading the store, if any (then nothing is claimed as saved).
    pub error: Option<String>,
}

impl SyncOverview {
    /// One case's line.
    pub fn case(&self, case: &CaseId) -> Option<&CaseSyncLine> {
        self.cases.iter().find(|c| &c.case == case)
    }

    /// The connection part, in words.
    pub fn link_words(&self) -> String {
        match &self.link.link {
            Link::NotEnrolled => "Not enrolled".into(),
            Link::Connecting => "Connecting to the borough server".into(),
            Link::Offline { .. } => "Offline".into(),
            Link::Syncing { settled, total } => format!("Syncing: {settled} of {total} cases"),
            Link::Live => "Connected".into(),
        }
    }

    /// The saved part, in words. Never says "all saved" unless nothing is unacknowledged.
    pub fn saved_words(&self) -> String {
        if let Some(e) = &self.error {
            return format!("Could not read this device's store: {e}");
        }
        match self.unsynced_total {
            0 if self.cases.is_empty() => "No case work on this device yet".into(),
            0 => "All saved on the borough server".into(),
            1 => "1 change only on this device".into(),
            n => format!("{n} changes only on this device"),
        }
    }

    /// The second place, in words: the trust hub. None when there is nothing to say (the
    /// borough has never said it has a hub, no case is held, the store could not be read, or
    /// changes are only on this device yet every one is counted as on the hub, which the hub
    /// could only say of changes it did not get from here). Never says "also on the trust hub"
    /// unless everything is saved on the borough server and the hub both.
    pub fn hub_words(&self) -> Option<String> {
        if self.error.is_some() || self.cases.is_empty() {
            return None;
        }
        match self.not_on_hub_total? {
            0 if self.unsynced_total == 0 => Some("Records also on the trust hub".into()),
            0 => None,
            1 => Some("1 change not yet on the trust hub".into()),
            n => Some(format!("{n} changes not yet on the trust hub")),
        }
    }

    /// Cases whose changes have waited past the threshold.
    pub fn stale(&self) -> Vec<&CaseSyncLine> {
        self.cases.iter().filter(|c| c.stale).collect()
    }

    /// The badge shown at the top of every page.
    pub fn badge_html(&self, names: &HashMap<CaseId, String>, zone: &LocalZone) -> String {
        let (state, colour) = match &self.link.link {
            Link::Live => ("live", "green"),
            Link::Syncing { .. } | Link::Connecting => ("syncing", "blue"),
            Link::Offline { .. } => ("offline", "grey"),
            Link::NotEnrolled => ("not-enrolled", "grey"),
        };
        let saved_colour = if self.error.is_some() {
            "red"
        } else if self.unsynced_total == 0 {
            "green"
        } else {
            "orange"
        };
        let last = self
            .link
            .last_synced_at
            .map(|t| {
                format!(
                    r#"<span class="app-sync__last">Last synced {}</span>"#,
                    esc(dates::long(t, zone))
                )
            })
            .unwrap_or_default();
        let reason = match &self.link.link {
            Link::Offline { reason } => {
                format!(r#"<span class="app-sync__reason">{}</span>"#, esc(reason))
            }
            _ => String::new(),
        };
        // Not on the hub yet is the borough's to pass on, not the practitioner's to act on: grey,
        // not orange.
        let hub = self
            .hub_words()
            .map(|words| {
                let colour = if self.not_on_hub_total == Some(0) {
                    "green"
                } else {
                    "grey"
                };
                format!(
                    r#" <strong class="nhsuk-tag nhsuk-tag--{colour}" id="sync-hub">{}</strong>"#,
                    esc(words)
                )
            })
            .unwrap_or_default();
        let warning = self.warning_html(names);
        format!(
            r#"<div class="app-sync" id="sync-status" role="status" aria-live="polite" data-state="{state}" data-unsynced="{unsynced}">
<p class="app-sync__line"><span class="nhsuk-u-visually-hidden">Sync status: </span><strong class="nhsuk-tag nhsuk-tag--{colour}" id="sync-link">{link}</strong> <strong class="nhsuk-tag nhsuk-tag--{saved_colour}" id="sync-saved">{saved}</strong>{hub} {last} {reason}</p>
{warning}
</div>"#,
            unsynced = self.unsynced_total,
            link = esc(self.link_words()),
            saved = esc(self.saved_words()),
        )
    }

    /// The warning shown when notes have stayed on the device too long, or the server refused a case.
    pub fn warning_html(&self, names: &HashMap<CaseId, String>) -> String {
        let mut items = Vec::new();
        for c in self.stale() {
            let name = names
                .get(&c.case)
                .cloned()
                .unwrap_or_else(|| "a case".into());
            let waited = c
                .since
                .map(|s| dates::duration_words(self.now - s))
                .unwrap_or_default();
            items.push(format!(
                "Changes to {} have been only on this device for {}.",
                esc(&name),
                esc(&waited)
            ));
        }
        for c in self.cases.iter().filter(|c| c.refused.is_some()) {
            let name = names
                .get(&c.case)
                .cloned()
                .unwrap_or_else(|| "a case".into());
            items.push(format!(
                "The borough server refused changes to {}: {}",
                esc(&name),
                esc(c.refused.as_deref().unwrap_or_default())
            ));
        }
        if items.is_empty() {
            return String::new();
        }
        let list: String = items.iter().map(|i| format!("<li>{i}</li>")).collect();
        format!(
            r#"<div class="nhsuk-card nhsuk-card--warning app-sync__warning" id="sync-warning"><div class="nhsuk-card__content"><h2 class="nhsuk-card__heading">Notes not yet on the borough server</h2><ul class="nhsuk-list nhsuk-list--bullet">{list}</ul><p class="nhsuk-card__description">They are saved on this device. Connect to a network the borough server can be reached from so they are kept safe there too.</p></div></div>"#
        )
    }
}

/// What the badge says when the app itself does not answer the page, and when it answers again
/// but no longer knows this tab (it was restarted: the session was in the old process). The page
/// script swaps one in at once when a poll, a save or a form gets no answer, and swaps the real
/// badge back when the app answers; no server can say "I have stopped", so the page must.
///
/// Sent in every page as inert `<template>`s so the words live here beside the badge's others.
pub fn app_stopped_templates() -> String {
    const STOPPED: &str = r#"<p class="app-sync__line"><span class="nhsuk-u-visually-hidden">Sync status: </span><strong class="nhsuk-tag nhsuk-tag--red" id="sync-link">The app has stopped</strong> <strong class="nhsuk-tag nhsuk-tag--orange" id="sync-saved">What you type now is not saved yet</strong></p>
<div class="nhsuk-warning-callout app-stopped" id="app-stopped"><h2 class="nhsuk-warning-callout__label"><span role="text"><span class="nhsuk-u-visually-hidden">Important: </span>The Polyphony app has stopped</span></h2><p>What you type is kept in this page until it is back; do not close this tab.</p><p>Start Polyphony again on this device, as you started it before. Everything saved before it stopped is safe on this device, and this page sends what it kept as soon as Polyphony is back.</p></div>"#;
    const LOCKED: &str = r#"<p class="app-sync__line"><span class="nhsuk-u-visually-hidden">Sync status: </span><strong class="nhsuk-tag nhsuk-tag--orange" id="sync-link">The app is running again</strong> <strong class="nhsuk-tag nhsuk-tag--orange" id="sync-saved">What you typed here is not saved yet</strong></p>
<div class="nhsuk-warning-callout app-stopped" id="app-stopped"><h2 class="nhsuk-warning-callout__label"><span role="text"><span class="nhsuk-u-visually-hidden">Important: </span>Let this tab back into Polyphony</span></h2><p>Polyphony is running again. What you typed is still kept in this page; do not close or reload this tab.</p><p>Open the link Polyphony gave when it started (it may have opened it in a new tab for you) in a new tab, not this one. As soon as it has let this browser in, this page sends what it kept.</p></div>"#;
    format!(
        r#"<template id="app-stopped-template">{STOPPED}</template><template id="app-locked-template">{LOCKED}</template>"#
    )
}

/// What the handlers and the background task share.
#[derive(Default)]
pub struct SyncShared {
    pub(crate) state: Mutex<LinkState>,
    /// Where a live session takes local changes to push (none while not live).
    pub(crate) local: Mutex<Option<mpsc::Sender<CaseId>>>,
    /// Cases changed on this device since the session last looked.
    pub(crate) dirty: Mutex<HashSet<CaseId>>,
    /// Cases changed (here or by the server) whose attachments' files may have to move.
    pub(crate) files_due: Mutex<HashSet<CaseId>>,
    /// Since when a pushed change has waited for the server's acknowledgement.
    pub(crate) awaiting_since: Mutex<Option<std::time::Instant>>,
    pub(crate) poke: Notify,
}

/// A lock that a panicked holder did not poison for good: what it guards is only shown.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SyncShared {
    /// The link as it stands.
    pub fn snapshot(&self) -> LinkState {
        lock(&self.state).clone()
    }

    pub(crate) fn set_link(&self, link: Link) {
        let mut s = lock(&self.state);
        if s.link != link {
            tracing::debug!(?link, "sync link");
            s.link = link;
        }
    }

    pub(crate) fn synced_now(&self) {
        lock(&self.state).last_synced_at = Some(OffsetDateTime::now_utc());
    }

    /// A case changed on this device: push it now if live, else it goes at the next round.
    pub fn local_change(&self, case: CaseId) {
        lock(&self.dirty).insert(case);
        lock(&self.files_due).insert(case);
        let sent = lock(&self.local)
            .as_ref()
            .is_some_and(|tx| tx.try_send(case).is_ok());
        if sent {
            lock(&self.awaiting_since).get_or_insert_with(std::time::Instant::now);
        } else {
            self.poke.notify_one();
        }
    }

    /// Try to reach the server now rather than at the next scheduled attempt.
    pub fn try_now(&self) {
        self.poke.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overview(unsynced: &[usize], link: Link) -> SyncOverview {
        let now = OffsetDateTime::now_utc();
        let cases: Vec<CaseSyncLine> = unsynced
            .iter()
            .map(|n| CaseSyncLine {
                case: CaseId::random(),
                unsynced: *n,
                not_on_hub: None,
                since: (*n > 0).then_some(now - time::Duration::hours(3)),
                stale: *n > 0,
                refused: None,
            })
            .collect();
        SyncOverview {
            link: LinkState {
                link,
                ..Default::default()
            },
            unsynced_total: unsynced.iter().sum(),
            not_on_hub_total: None,
            cases,
            warning_after: time::Duration::hours(2),
            now,
            error: None,
        }
    }

    #[test]
    fn all_saved_only_when_nothing_is_unacknowledged() {
        assert_eq!(
            overview(&[0, 0], Link::Live).saved_words(),
            "All saved on the borough server"
        );
        assert_eq!(
            overview(&[0, 2], Link::Live).saved_words(),
            "2 changes only on this device"
        );
        assert_eq!(
            overview(&[1], Link::Live).saved_words(),
            "1 change only on this device"
        );
        let mut broken = overview(&[0], Link::Live);
        broken.error = Some("disk".into());
        assert!(!broken.saved_words().contains("All saved"));
    }

    /// An overview whose borough has a hub: per case (unsynced, not on the hub).
    fn with_hub(counts: &[(usize, usize)]) -> SyncOverview {
        let mut o = overview(
            &counts.iter().map(|(u, _)| *u).collect::<Vec<_>>(),
            Link::Live,
        );
        for (line, (_, off_hub)) in o.cases.iter_mut().zip(counts) {
            line.not_on_hub = Some(*off_hub);
        }
        o.not_on_hub_total = Some(counts.iter().map(|(_, h)| h).sum());
        o
    }

    #[test]
    fn also_on_the_trust_hub_only_when_the_hub_holds_everything_and_never_without_a_hub() {
        let all = with_hub(&[(0, 0), (0, 0)]);
        assert_eq!(all.saved_words(), "All saved on the borough server");
        assert_eq!(
            all.hub_words().as_deref(),
            Some("Records also on the trust hub")
        );
        assert_eq!(
            all.cases[0].words(),
            "All saved on the borough server; the record also on the trust hub"
        );
        let html = all.badge_html(&HashMap::new(), &LocalZone::uk());
        assert!(html.contains(
            r#"<strong class="nhsuk-tag nhsuk-tag--green" id="sync-hub">Records also on the trust hub</strong>"#
        ));
        // Inside the live region, after the borough's words.
        assert!(html.find("sync-saved").unwrap() < html.find("sync-hub").unwrap());
        assert!(html.find(r#"role="status""#).unwrap() < html.find("sync-hub").unwrap());

        let waiting = with_hub(&[(0, 2), (0, 0), (0, 1)]);
        assert_eq!(waiting.saved_words(), "All saved on the borough server");
        assert_eq!(
            waiting.hub_words().as_deref(),
            Some("3 changes not yet on the trust hub")
        );
        assert_eq!(waiting.cases[0].words(), "All saved on the borough server");
        assert_eq!(
            waiting.cases[1].words(),
            "All saved on the borough server; the record also on the trust hub"
        );
        assert!(waiting
            .badge_html(&HashMap::new(), &LocalZone::uk())
            .contains(r#"nhsuk-tag--grey" id="sync-hub">3 changes not yet on the trust hub<"#));
        assert_eq!(
            with_hub(&[(1, 1)]).hub_words().as_deref(),
            Some("1 change not yet on the trust hub")
        );
        // The hub cannot vouch for a change not yet on the borough server.
        assert_eq!(with_hub(&[(1, 0)]).hub_words(), None);
        let mut broken = with_hub(&[(0, 0)]);
        broken.error = Some("disk".into());
        assert_eq!(broken.hub_words(), None);

        for none in [overview(&[0, 0], Link::Live), overview(&[2], Link::Live)] {
            assert_eq!(none.hub_words(), None);
            assert!(!none.cases[0].words().contains("hub"));
            assert!(!none
                .badge_html(&HashMap::new(), &LocalZone::uk())
                .contains("hub"));
        }
        assert_eq!(with_hub(&[]).hub_words(), None);
    }

    #[test]
    fn the_badge_says_offline_and_warns_about_old_changes() {
        let o = overview(
            &[3],
            Link::Offline {
                reason: "cannot reach".into(),
            },
        );
        let names = HashMap::from([(o.cases[0].case, "Alex <Smith>".to_string())]);
        let html = o.badge_html(&names, &LocalZone::uk());
        assert!(html.contains(r#"data-state="offline""#));
        assert!(html.contains("3 changes only on this device"));
        assert!(html
            .contains("Changes to Alex &lt;Smith&gt; have been only on this device for 3 hours"));
    }

    #[test]
    fn the_stopped_badge_is_a_clear_warning_and_never_claims_saved() {
        let t = app_stopped_templates();
        assert!(t.contains(r#"<template id="app-stopped-template">"#));
        assert!(t.contains(r#"<template id="app-locked-template">"#));
        assert!(t.contains("nhsuk-warning-callout"));
        assert!(t.contains("The Polyphony app has stopped"));
        assert!(t.contains(
            "What you type is kept in this page until it is back; do not close this tab."
        ));
        assert!(!t.contains("All saved"));
        assert!(!t.contains(">Connected<"));
    }
}
