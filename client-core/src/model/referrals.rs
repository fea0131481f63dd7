//! Referrals and episodes (schema 4): when a referral came in, from where and from whom, the
//! reason in the referrer's words, how urgent it is, and the letter that came with it; and the
//! episodes of care they open.
//!
//! Open Dialogue starts meeting at the onset of a crisis: the team aims for a first network
//! meeting within 24 hours. Each referral asks for its first meeting by its urgency (emergency
//! within 4 hours, urgent within 24, routine within 4 weeks); the caseload shows the time left
//! until then, and flags a first meeting past due ([`Episode::first_meeting_due`]).
//!
//! **Episodes.** A referral opens an episode of care; a re-referral of the same person (after a
//! closure, or while the team still meets them) opens a new one on the same case, so the network,
//! the plan and the whole history carry over while the figures are counted per episode
//! ([`super::figures`]). An episode runs from its referral until the next one; it is closed when
//! its `closed_at` (or, for a case from before referrals were recorded, the timeline's closure)
//! falls in it. A meeting belongs to the episode whose span holds it (one before the first
//! referral, to the first episode).
//!
//! A case opened before schema 4 has its referral only as the timeline's `referral` milestone:
//! that is its first episode ([`Episode::referral`] `None`, no urgency: the practice's own aim of
//! 24 hours applies). Its first recorded referral describes that same referral, unless network
//! meetings were already held (or the case closed) before it came in: then it is a re-referral,
//! and the earlier episode keeps the milestone's date.
//!
//! In the document: `referrals` at the root, entries keyed by id, each with `received_at`
//! (timestamp), `source`, `reason`, `urgency`, and optionally `referrer`, `letter` (the id of an
//! attachment) and `closed_at` (timestamp). A case created by schema 4 has the map from the
//! start; an older case gets it with its first referral, and every concurrent map is read.

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use serde::{Deserialize, Serialize};

use super::doc::CaseDoc;
use super::read::{get_str, instant, map_at, to_ms, ts};
use super::schema::keys;
use super::types::*;
use super::view::{CaseView, EntryMeta};
use super::ModelError;
use crate::EntryId;

/// The practice's aim for the first network meeting, in hours after the referral: the due time
/// of an episode whose urgency is not recorded (a case from before referrals were recorded).
pub const FIRST_MEETING_AIM_HOURS: i64 = 24;

/// How far ahead of this device's clock a referral may say it was received: clocks differ by
/// minutes, and a referral cannot come in from the future.
const RECEIVED_CLOCK_SKEW: time::Duration = time::Duration::minutes(10);

/// A referral to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReferral {
    /// When it came in (required).
    pub received_at: Instant,
    /// Where it came from.
    pub source: ReferralSource,
    /// Who referred (a name, and their role or service): required unless the person referred
    /// themselves.
    pub referrer: Option<String>,
    /// Why, in the referrer's words (required).
    pub reason: String,
    /// How soon the first meeting is due.
    pub urgency: Urgency,
    /// The referral letter, already attached to the case.
    pub letter: Option<EntryId>,
}

/// A referral, as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferralView {
    /// Attribution (who recorded it, when, and any mark of error).
    #[serde(flatten)]
    pub meta: EntryMeta,
    /// When it came in (RFC 3339, UTC; None when withheld or unreadable).
    pub received_at: Option<String>,
    /// Where it came from.
    pub source: Stored<ReferralSource>,
    /// Who referred.
    pub referrer: Option<String>,
    /// Why, in the referrer's words.
    pub reason: String,
    /// How soon the first meeting is due.
    pub urgency: Stored<Urgency>,
    /// The referral letter (an attachment's id).
    pub letter: Option<EntryId>,
    /// When the episode it opened was closed.
    pub closed_at: Option<String>,
}

/// An episode of care: a referral and what followed it, until the next referral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episode {
    /// Its number on the case, from 1.
    pub number: usize,
    /// The referral that opened it; None for a case's first episode from before referrals were
    /// recorded (its start is the timeline's referral milestone).
    pub referral: Option<EntryId>,
    /// When the referral came in (RFC 3339, UTC).
    pub received_at: String,
    /// Its urgency, if recorded.
    pub urgency: Option<Stored<Urgency>>,
    /// When the first meeting is due: the referral's time plus its urgency's hours (the
    /// practice's 24 hours when no urgency is recorded, or one a newer version added).
    pub first_meeting_due: String,
    /// The first network meeting held in it (with the person or their network), if any.
    pub first_meeting: Option<String>,
    /// Network meetings held in it.
    pub meetings: usize,
    /// When it was closed, if it was.
    pub closed_at: Option<String>,
    /// When the next referral opened the next episode, if one did.
    pub ended_by_referral_at: Option<String>,
}

/// How close together two referrals must be to be asked about as perhaps the same one (two
/// practitioners logging one telephone call).
pub const SAME_REFERRAL_WINDOW: time::Duration = time::Duration::hours(24);

impl CaseView {
    /// Another referral (not in error) that came in within [`SAME_REFERRAL_WINDOW`] of
    /// `referral`'s time: perhaps the same referral recorded twice. Said when one is recorded, so
    /// the second can be marked in error rather than open an episode of its own.
    pub fn referral_near(&self, referral: EntryId) -> Option<&ReferralView> {
        let at = self
            .referrals
            .iter()
            .find(|r| r.meta.id == referral)
            .and_then(|r| instant(&r.received_at))?;
        self.referrals
            .iter()
            .filter(|r| r.meta.id != referral && r.meta.entered_in_error.is_none())
            .find(|r| {
                instant(&r.received_at).is_some_and(|t| (t - at).abs() <= SAME_REFERRAL_WINDOW)
            })
    }
}

impl Episode {
    /// When its referral came in.
    pub fn received(&self) -> Option<Instant> {
        at(&self.received_at)
    }

    /// When its first meeting is due.
    pub fn due(&self) -> Option<Instant> {
        at(&self.first_meeting_due)
    }

    /// Whether the episode is still open: not closed, and no referral has come after it.
    pub fn open(&self) -> bool {
        self.closed_at.is_none() && self.ended_by_referral_at.is_none()
    }

    /// When the first meeting is due, if it is still awaited: the episode is open and no network
    /// meeting has been held in it.
    pub fn awaiting_first_meeting(&self) -> Option<Instant> {
        (self.open() && self.first_meeting.is_none())
            .then(|| self.due())
            .flatten()
    }

    /// Whether a meeting at `at` belongs to this episode: from its referral (for the first
    /// episode, anything before as well) until the next referral.
    pub fn holds(&self, at: Instant) -> bool {
        let start = self.received();
        let next = instant(&self.ended_by_referral_at);
        (self.number == 1 || start.is_some_and(|s| at >= s)) && next.is_none_or(|n| at < n)
    }

    /// Hours from the referral to the first meeting, if it was held.
    pub fn hours_to_first_meeting(&self) -> Option<f64> {
        let r = self.received()?;
        let m = instant(&self.first_meeting)?;
        Some((m - r).whole_seconds() as f64 / 3600.0)
    }

    /// Whether the first meeting was held by its due time (None until it is held).
    pub fn met_in_time(&self) -> Option<bool> {
        let due = self.due()?;
        instant(&self.first_meeting).map(|m| m <= due)
    }
}

/// Who referred, as it is kept: trimmed, and none when nothing was given.
fn referrer_of(new: &NewReferral) -> Option<&str> {
    new.referrer
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
}

/// An RFC 3339 time as an instant.
fn at(s: &str) -> Option<Instant> {
    Instant::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// The time left until `due`, or how long past it, in words ("3 hours 20 minutes left", "2 days
/// 4 hours past due"), and whether it is past.
pub fn time_left(due: Instant, now: Instant) -> (String, bool) {
    let past = now > due;
    let d = if past { now - due } else { due - now };
    let minutes = d.whole_minutes();
    let (days, hours, mins) = (minutes / (24 * 60), (minutes / 60) % 24, minutes % 60);
    let unit = |n: i64, one: &str| match n {
        1 => format!("1 {one}"),
        n => format!("{n} {one}s"),
    };
    let span = if days > 0 {
        if hours > 0 {
            format!("{} {}", unit(days, "day"), unit(hours, "hour"))
        } else {
            unit(days, "day")
        }
    } else if hours > 0 {
        if mins > 0 {
            format!("{} {}", unit(hours, "hour"), unit(mins, "minute"))
        } else {
            unit(hours, "hour")
        }
    } else {
        unit(mins, "minute")
    };
    if past {
        (format!("{span} past due"), true)
    } else {
        (format!("{span} left"), false)
    }
}

impl CaseDoc {
    /// Record a referral: on a new case, the one that opened it; on a case already met, a
    /// re-referral, which opens a new episode. Returns its id.
    pub fn add_referral(&mut self, new: &NewReferral) -> Result<EntryId, ModelError> {
        Self::check_referral(new)?;
        let reason = new.reason.trim();
        let referrer = referrer_of(new);
        if let Some(letter) = new.letter {
            self.letter_free(&letter, None)?;
        }
        let view = self.view();
        // The first recorded referral names the one that opened the case (and moves the
        // milestone older devices read to its time), unless the case was already met or closed
        // before it came in: a re-referral of a case from before referrals were recorded.
        let first = !view
            .referrals
            .iter()
            .any(|r| r.meta.entered_in_error.is_none());
        let earlier_episode = super::figures::network_meetings(&view)
            .iter()
            .filter_map(|m| instant(&m.at))
            .chain(instant(&view.timeline.closure))
            .any(|t| t < new.received_at);
        let opens_case = first && !earlier_episode;
        // A closure the timeline holds for the episode this referral ends (the only episode,
        // closed by a device that knows no episodes) is kept on that episode's referral: once
        // there are two, the timeline's closure closes no recorded episode.
        let closure_to_keep = view
            .episodes
            .last()
            .filter(|e| e.referral.is_some() && e.closed_at.is_some())
            .filter(|e| e.received() < Some(new.received_at))
            .and_then(|e| Some((e.referral?, instant(&e.closed_at)?)))
            // A referral back-dated before the closure falls inside the closed episode: the
            // closure is then the new episode's, and stays where it is.
            .filter(|(_, closed)| *closed < new.received_at);
        let id = EntryId::random();
        let what = format!("record {} referral", new.urgency.as_str());
        self.write(&what, |d, a, t| {
            let map = match map_at(d, &ROOT, keys::REFERRALS) {
                Some(m) => m,
                None => d.put_object(ROOT, keys::REFERRALS, ObjType::Map)?,
            };
            if let Some((previous, closed)) = closure_to_keep {
                if let Some(e) = entry_in(d, &referral_maps(d), &previous) {
                    if d.get(&e, keys::CLOSED_AT)?.is_none() {
                        d.put(&e, keys::CLOSED_AT, ScalarValue::Timestamp(to_ms(closed)))?;
                    }
                }
            }
            let e = super::doc::new_entry(d, &map, &id, a, t)?;
            d.put(
                &e,
                keys::RECEIVED_AT,
                ScalarValue::Timestamp(to_ms(new.received_at)),
            )?;
            d.put(&e, keys::SOURCE, new.source.as_str())?;
            if let Some(r) = referrer {
                d.put(&e, keys::REFERRER, r)?;
            }
            d.put(&e, keys::REASON, reason)?;
            d.put(&e, keys::URGENCY, new.urgency.as_str())?;
            if let Some(l) = new.letter {
                d.put(&e, keys::LETTER, l.to_string())?;
            }
            if opens_case {
                put_milestone(d, TimelineField::Referral, new.received_at)?;
            }
            Ok(id)
        })
    }

    /// Whether a referral can be recorded as given (its letter aside): a reason, a referrer
    /// unless the person referred themselves, lengths, and a time not in the future. Writes
    /// nothing.
    pub fn check_referral(new: &NewReferral) -> Result<(), ModelError> {
        let reason = new.reason.trim();
        if reason.is_empty() {
            return Err(ModelError::Required {
                field: "reason for the referral",
            });
        }
        super::doc::check_long("reason for the referral", reason)?;
        let referrer = referrer_of(new);
        if let Some(r) = referrer {
            super::doc::check_short("referrer", r)?;
        } else if new.source != ReferralSource::SelfReferral {
            return Err(ModelError::Required {
                field: "referrer (who referred, unless the person referred themselves)",
            });
        }
        if new.received_at > super::doc::now() + RECEIVED_CLOCK_SKEW {
            return Err(ModelError::Referral(
                "a referral cannot be received in the future: give the time it came in".into(),
            ));
        }
        Ok(())
    }

    /// Close the episode that `at` falls in (the timeline's closure milestone): on its referral
    /// (`closed_at`), and on the timeline that older versions read when it is the last episode
    /// or one from before referrals were recorded (whose only record the timeline is). A closure
    /// of the last episode leaves the timeline alone when the timeline's closure is the only
    /// record of such an earlier episode's end.
    pub fn close_episode(&mut self, at: Instant) -> Result<(), ModelError> {
        let view = self.view();
        let episode = view
            .episodes
            .iter()
            .rev()
            .find(|e| e.received().is_some_and(|r| r <= at))
            .or(view.episodes.first())
            .cloned();
        if let Some(e) = &episode {
            if e.received().is_some_and(|r| at < r) {
                return Err(ModelError::Referral(format!(
                    "the closure is before the referral came in ({})",
                    e.received_at
                )));
            }
        }
        let recorded = episode.as_ref().and_then(|e| e.referral);
        let last = episode
            .as_ref()
            .is_none_or(|e| Some(e.number) == view.episodes.last().map(|l| l.number));
        let keeps_earlier = recorded.is_some()
            && view.episodes.first().is_some_and(|first| {
                first.referral.is_none()
                    && first.closed_at.is_some()
                    && first.closed_at == view.timeline.closure
            });
        let on_timeline = (last || recorded.is_none()) && !keeps_earlier;
        self.write("close the episode", |d, _, _| {
            if let Some(r) = recorded {
                if let Some(e) = entry_in(d, &referral_maps(d), &r) {
                    d.put(&e, keys::CLOSED_AT, ScalarValue::Timestamp(to_ms(at)))?;
                }
            }
            if on_timeline {
                put_milestone(d, TimelineField::Closure, at)?;
            }
            Ok(())
        })
    }

    /// Name the referral letter of a referral recorded without one (a letter that followed a
    /// telephone referral): once; a referral's letter, once named, stays as written.
    pub fn set_referral_letter(
        &mut self,
        referral: &EntryId,
        letter: &EntryId,
    ) -> Result<(), ModelError> {
        let r = self.live_entry_in(&referral_maps(&self.doc), "referral", referral)?;
        self.letter_free(letter, Some(&r))?;
        if !self.doc.get_all(&r, keys::LETTER)?.is_empty() {
            return Err(ModelError::Referral(
                "this referral already names its letter: attach another document as a letter"
                    .into(),
            ));
        }
        self.write("name the referral letter", |d, _, _| {
            d.put(&r, keys::LETTER, letter.to_string())?;
            Ok(())
        })
    }

    /// Refuse as a referral's letter anything but a live attachment no other referral names:
    /// one letter, one referral (marking a referral as another person's takes its letter with
    /// it, and must never take a document of this person's or another referral's).
    fn letter_free(&self, letter: &EntryId, referral: Option<&ObjId>) -> Result<(), ModelError> {
        self.live_entry_in(
            &super::attachments::attachment_maps(&self.doc),
            "attachment",
            letter,
        )?;
        if naming_letter(&self.doc, letter, referral) > 0 {
            return Err(ModelError::Referral(
                "this document is already another referral's letter: attach the letter for this \
                 referral"
                    .into(),
            ));
        }
        Ok(())
    }

    /// A live (not in error) entry `id` in any of `maps`.
    fn live_entry_in(
        &self,
        maps: &[ObjId],
        kind: &'static str,
        id: &EntryId,
    ) -> Result<ObjId, ModelError> {
        let e = entry_in(&self.doc, maps, id).ok_or(ModelError::UnknownEntry {
            kind,
            id: id.to_string(),
        })?;
        if self.in_error(&e) {
            return Err(ModelError::EntryInError {
                kind,
                id: id.to_string(),
            });
        }
        Ok(e)
    }
}

/// Write a milestone on the timeline older versions read.
fn put_milestone(
    d: &mut automerge::AutoCommit,
    field: TimelineField,
    at: Instant,
) -> Result<(), ModelError> {
    let tl = match map_at(d, &ROOT, keys::TIMELINE) {
        Some(tl) => tl,
        None => d.put_object(ROOT, keys::TIMELINE, ObjType::Map)?,
    };
    d.put(&tl, field.as_str(), ScalarValue::Timestamp(to_ms(at)))?;
    Ok(())
}

/// Entry `id` in any of `maps`.
fn entry_in(d: &impl ReadDoc, maps: &[ObjId], id: &EntryId) -> Option<ObjId> {
    let key = id.to_string();
    maps.iter().find_map(|m| map_at(d, m, &key))
}

/// The referrals (every concurrent value, entries in error included) that name `letter` as their
/// letter, but the one at `except`.
pub(super) fn naming_letter(d: &impl ReadDoc, letter: &EntryId, except: Option<&ObjId>) -> usize {
    let want = letter.to_string();
    let mut n = 0;
    for m in referral_maps(d) {
        for k in d.keys(&m) {
            let Some(e) = map_at(d, &m, &k) else { continue };
            if Some(&e) == except {
                continue;
            }
            let names = d
                .get_all(&e, keys::LETTER)
                .unwrap_or_default()
                .into_iter()
                .any(|(v, _)| v.as_str() == Some(want.as_str()));
            if names {
                n += 1;
            }
        }
    }
    n
}

/// Every concurrent `referrals` map.
pub(crate) fn referral_maps(d: &impl ReadDoc) -> Vec<ObjId> {
    d.get_all(ROOT, keys::REFERRALS)
        .unwrap_or_default()
        .into_iter()
        .filter(|(v, _)| matches!(v, Value::Object(ObjType::Map)))
        .map(|(_, id)| id)
        .collect()
}

fn referral(d: &impl ReadDoc, id: EntryId, e: &ObjId) -> ReferralView {
    ReferralView {
        meta: super::view::meta(d, id, e),
        received_at: ts(d, e, keys::RECEIVED_AT),
        source: Stored::read(get_str(d, e, keys::SOURCE)),
        referrer: get_str(d, e, keys::REFERRER),
        reason: get_str(d, e, keys::REASON).unwrap_or_default(),
        urgency: Stored::read(get_str(d, e, keys::URGENCY)),
        letter: get_str(d, e, keys::LETTER).and_then(|l| l.parse().ok()),
        closed_at: ts(d, e, keys::CLOSED_AT),
    }
}

/// The referrals as the document holds them, in the order they came in.
pub(super) fn referrals(d: &impl ReadDoc) -> Vec<ReferralView> {
    let mut out: Vec<ReferralView> = Vec::new();
    for m in referral_maps(d) {
        for k in d.keys(&m) {
            let (Ok(id), Some(e)) = (k.parse::<EntryId>(), map_at(d, &m, &k)) else {
                continue;
            };
            if out.iter().any(|r| r.meta.id == id) {
                continue;
            }
            out.push(referral(d, id, &e));
        }
    }
    out.sort_by_key(|r| {
        (
            instant(&r.received_at),
            instant(&r.meta.created_at),
            r.meta.id,
        )
    });
    out
}

/// A referral on the wrong person's record (or with a mark this version cannot read): nothing of
/// it.
pub(super) fn withhold(items: &mut [ReferralView], ids: &mut Vec<String>) {
    for r in items.iter_mut().filter(|r| r.meta.withheld()) {
        ids.push(r.meta.id.to_string());
        r.received_at = None;
        r.source = Stored::Missing;
        r.referrer = None;
        r.reason.clear();
        r.urgency = Stored::Missing;
        r.letter = None;
        r.closed_at = None;
    }
}

/// The episodes of a case, oldest first, from its view (entries in error left out: a referral
/// recorded by mistake opened nothing).
pub(super) fn episodes(v: &CaseView) -> Vec<Episode> {
    let live: Vec<(&ReferralView, Instant)> = v
        .referrals
        .iter()
        .filter(|r| r.meta.entered_in_error.is_none())
        .filter_map(|r| Some((r, instant(&r.received_at)?)))
        .collect();
    let held: Vec<Instant> = super::figures::network_meetings(v)
        .iter()
        .filter_map(|m| instant(&m.at))
        .collect();
    let milestone = instant(&v.timeline.referral);
    let closure = instant(&v.timeline.closure);

    // (referral, start, urgency, closed_at as recorded)
    let mut starts: Vec<(Option<&ReferralView>, Instant)> = Vec::new();
    match (live.first(), milestone) {
        (None, Some(m)) => starts.push((None, m)),
        (Some((_, first)), Some(m))
            if m < *first && held.iter().copied().chain(closure).any(|t| t < *first) =>
        {
            starts.push((None, m))
        }
        _ => {}
    }
    starts.extend(live.iter().map(|(r, t)| (Some(*r), *t)));

    let mut out = Vec::new();
    for (i, (referral, start)) in starts.iter().enumerate() {
        let urgency = referral.map(|r| r.urgency.clone());
        let hours = urgency
            .as_ref()
            .and_then(|u| u.known())
            .map(Urgency::hours)
            .unwrap_or(FIRST_MEETING_AIM_HOURS);
        let mut e = Episode {
            number: i + 1,
            referral: referral.map(|r| r.meta.id),
            received_at: format_instant(*start),
            urgency,
            first_meeting_due: format_instant(*start + time::Duration::hours(hours)),
            first_meeting: None,
            meetings: 0,
            closed_at: None,
            ended_by_referral_at: starts.get(i + 1).map(|(_, t)| format_instant(*t)),
        };
        // A referral's own closure, when it falls in its episode (one written by a device that
        // had not yet seen the next referral falls after the episode, and closes nothing). The
        // timeline's closure closes an episode from before referrals were recorded, or the
        // case's only episode (closed by a device that knows no episodes); never one of
        // several recorded episodes, where it cannot say which it meant: an emergency
        // re-referral must not read as closed because someone closed the case before it came.
        let recorded_close = referral
            .and_then(|r| instant(&r.closed_at))
            .filter(|c| c >= start && e.holds(*c));
        let timeline_applies = referral.is_none() || starts.len() == 1;
        let closed =
            recorded_close.or(closure.filter(|c| timeline_applies && c >= start && e.holds(*c)));
        let mut mine: Vec<Instant> = held.iter().copied().filter(|t| e.holds(*t)).collect();
        mine.sort();
        e.first_meeting = mine.first().map(|t| format_instant(*t));
        e.meetings = mine.len();
        e.closed_at = closed.map(format_instant);
        out.push(e);
    }
    out
}
