//! [`CaseView`]: a plain, serialisable snapshot of a case for display and for `--json` output.
//!
//! The view is what every client shows; its JSON shape is part of the CLI's stable interface
//! (documented in `docs/JSON.md`). Where a field holds concurrent values the view shows automerge's
//! deterministic winner *and* lists the field in [`CaseView::conflicts`], so a client can never show
//! one value without saying there is another.

use automerge::{AutoCommit, ObjId, ReadDoc, ROOT};
use serde::{Deserialize, Serialize};

use super::conflicts::Conflict;
use super::doc::CaseDoc;
use super::read::{author, get_bool, get_str, get_ts, instant, map_at, positions, ts};
use super::readback::LaterChange;
use super::schema::keys;
use super::types::*;
use crate::{EntryId, PractitionerId};

/// Who wrote something, and a participant's position: defined with the model's types (the
/// writer reads positions too), named here with the rest of the view.
pub use super::types::{AuthorView, PositionView};

/// An "entered in error" mark: the entry stays, shown struck through, with who, when and why.
/// An entry recorded on the wrong person's record keeps only its mark: the view holds none of
/// its content (see [`EntryMeta::withheld`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMark {
    /// `mistake` or `wrong_person` (schema 2; marks written before are mistakes). A newer
    /// schema's kind is shown as written, and its entry withheld: this code cannot know whether
    /// its content may be shown.
    pub kind: Stored<ErrorKind>,
    /// Why it was marked.
    pub reason: String,
    /// Who marked it.
    pub by: Option<AuthorView>,
    /// When (RFC 3339).
    pub at: Option<String>,
}

/// Attribution shared by every entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// The entry id.
    pub id: EntryId,
    /// When it was created (RFC 3339).
    pub created_at: Option<String>,
    /// Who created it.
    pub created_by: Option<AuthorView>,
    /// Set when the entry was marked entered in error.
    pub entered_in_error: Option<ErrorMark>,
}

impl ErrorMark {
    /// A plain mistake, corrected in the open: the entry stays readable, struck through.
    pub fn is_mistake(&self) -> bool {
        self.kind.is(ErrorKind::Mistake)
    }
}

impl EntryMeta {
    /// The entry was recorded on the wrong person's record (or marked with a kind this code does
    /// not know): the view carries none of its content, only the mark, so no screen, copy or
    /// export built from it can show another person's information.
    pub fn withheld(&self) -> bool {
        self.entered_in_error
            .as_ref()
            .is_some_and(|m| !m.is_mistake())
    }
}

/// The person's details.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonView {
    /// Full name.
    pub name: String,
    /// Preferred name.
    pub preferred_name: Option<String>,
    /// Pronouns.
    pub pronouns: Option<String>,
    /// Date of birth.
    pub date_of_birth: Option<String>,
    /// NHS number (10 digits).
    pub nhs_number: Option<String>,
    /// Telephone.
    pub phone: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Address.
    pub address: Option<String>,
    /// How they want to be contacted.
    pub contact_preference: Option<String>,
}

/// A consent event for a network member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentView {
    /// given or revoked.
    pub state: Stored<ConsentState>,
    /// The date it took effect.
    pub date: Option<String>,
    /// Who recorded it.
    pub recorded_by: Option<AuthorView>,
}

/// A member of the person's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Attribution.
    #[serde(flatten)]
    pub meta: EntryMeta,
    /// Name.
    pub name: String,
    /// Relationship, in the person's words.
    pub relationship: String,
    /// Broad role.
    pub role: Stored<Role>,
    /// Telephone.
    pub phone: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Who invited them.
    pub invited_by: Option<Stored<Participant>>,
    /// Consent history, oldest first.
    pub consent: Vec<ConsentView>,
    /// Whether consent to receive the record currently stands.
    pub consent_given: bool,
    /// When they joined.
    pub joined: Option<String>,
    /// When they left, if they did.
    pub left: Option<String>,
}

/// Where a member's consent to receive the record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentStanding {
    /// The person gave it, and has not taken it back since.
    Given,
    /// Given, then taken back.
    Withdrawn,
    /// Never asked, or never written down: not a refusal, which the record would hold as an event.
    NotRecorded,
}

impl ConsentStanding {
    /// The words every screen and copy uses: "given", "withdrawn" or "not recorded".
    pub fn words(self) -> &'static str {
        match self {
            ConsentStanding::Given => "given",
            ConsentStanding::Withdrawn => "withdrawn",
            ConsentStanding::NotRecorded => "not recorded",
        }
    }
}

impl MemberView {
    /// Where their consent to receive the record stands.
    pub fn consent(&self) -> ConsentStanding {
        if self.consent_given {
            ConsentStanding::Given
        } else if self.consent.is_empty() {
            ConsentStanding::NotRecorded
        } else {
            ConsentStanding::Withdrawn
        }
    }

    /// [`MemberView::consent`] in the words every screen and copy uses.
    pub fn consent_words(&self) -> &'static str {
        self.consent().words()
    }
}

/// A care-team membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CareTeamView {
    /// Attribution.
    #[serde(flatten)]
    pub meta: EntryMeta,
    /// Practitioner id.
    pub practitioner: Stored<PractitionerId>,
    /// Their name.
    pub name: String,
    /// practitioner or peer_support.
    pub role: Stored<CareRole>,
    /// Start date.
    pub start: Option<String>,
    /// End date.
    pub end: Option<String>,
}

/// The episode's milestones (RFC 3339).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineView {
    /// Referral.
    pub referral: Option<String>,
    /// First contact.
    pub first_contact: Option<String>,
    /// First network meeting.
    pub first_network_meeting: Option<String>,
    /// Closure.
    pub closure: Option<String>,
}

/// A participant's read-back answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadbackView {
    /// Who.
    pub participant: Stored<Participant>,
    /// confirmed or added_words.
    pub response: Stored<ReadbackResponse>,
    /// Their words, if any.
    pub words: Option<String>,
    /// When.
    pub at: Option<String>,
    /// Who recorded it.
    pub recorded_by: Option<AuthorView>,
    /// The version of the document they heard (space-separated change hashes; schema 2, absent
    /// for read-backs recorded before).
    pub heard: Option<String>,
}

/// A meeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingView {
    /// Attribution.
    #[serde(flatten)]
    pub meta: EntryMeta,
    /// When (RFC 3339).
    pub at: Option<String>,
    /// Where.
    pub place: Stored<Place>,
    /// Who attended (participant keys).
    pub attendees: Vec<Stored<Participant>>,
    /// The notes.
    pub notes: String,
    /// The practitioners' reflections.
    pub reflections: String,
    /// What was agreed.
    pub agreed: String,
    /// Next meeting (RFC 3339).
    pub next_meeting: Option<String>,
    /// Read-back answers.
    pub readback: Vec<ReadbackView>,
    /// planned, held, cancelled or did_not_attend (schema 2; a meeting recorded before was
    /// held).
    pub state: Stored<MeetingState>,
    /// Whether the person was there. The practice holds that nothing is discussed behind their
    /// back, so every copy says so when they were not.
    pub person_present: bool,
    /// Changes to the notes, reflections or agreements made after the first read-back, oldest
    /// first: every copy shows them as added after the meeting, never as confirmed.
    pub changed_after_readback: Vec<LaterChange>,
    /// The name and role each member of staff noted at this meeting had on the team list
    /// (schema 3; none for meetings recorded before). Whether they were present is in
    /// `attendees`.
    #[serde(default)]
    pub staff: Vec<StaffView>,
}

/// A member of staff as a meeting noted them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffView {
    /// Their practitioner id.
    pub practitioner: Stored<PractitionerId>,
    /// Their name then.
    pub name: String,
    /// Their role then.
    pub role: Stored<StaffRole>,
}

impl CaseView {
    /// The role a member of staff attended a meeting in: as the meeting noted it; else their
    /// part in the care team (the newest membership not in error); else a practitioner, as every
    /// member of staff was recorded before roles. `None` for a role this version does not know.
    pub fn role_at(&self, m: &MeetingView, id: PractitionerId) -> Option<StaffRole> {
        if let Some(s) = m.staff.iter().find(|s| s.practitioner.is(id)) {
            return s.role.known();
        }
        let membership = self
            .care_team
            .iter()
            .rfind(|c| c.meta.entered_in_error.is_none() && c.practitioner.is(id));
        match membership {
            Some(c) => c.role.known().map(CareRole::staff_role),
            None => Some(StaffRole::Practitioner),
        }
    }
}

impl MeetingView {
    /// The members of staff noted at this meeting who are marked present, with their roles.
    pub fn staff_present(&self) -> impl Iterator<Item = &StaffView> {
        self.staff.iter().filter(|s| {
            s.practitioner.known().is_some_and(|id| {
                self.attendees
                    .contains(&Stored::Known(Participant::Practitioner(id)))
            })
        })
    }

    /// The meeting took place (planned, cancelled and missed meetings did not).
    pub fn held(&self) -> bool {
        self.state.is(MeetingState::Held)
    }
}

/// A status change of a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChangeView {
    /// The new status.
    pub status: Stored<DecisionStatus>,
    /// A note on why.
    pub note: Option<String>,
    /// When.
    pub at: Option<String>,
    /// Who.
    pub by: Option<AuthorView>,
}

/// An action attached to a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionView {
    /// Attribution.
    #[serde(flatten)]
    pub meta: EntryMeta,
    /// What is to be done.
    pub text: String,
    /// Who owns it.
    pub owner: Option<Stored<Participant>>,
    /// Due date.
    pub due: Option<String>,
    /// Done yet.
    pub done: bool,
}

/// A decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionView {
    /// Attribution.
    #[serde(flatten)]
    pub meta: EntryMeta,
    /// The decision.
    pub text: String,
    /// Who proposed it.
    pub proposed_by: Option<Stored<Participant>>,
    /// Current status.
    pub status: Stored<DecisionStatus>,
    /// Every status change, oldest first.
    pub status_history: Vec<StatusChangeView>,
    /// Every participant's position.
    pub positions: Vec<PositionView>,
    /// Actions.
    pub actions: Vec<ActionView>,
    /// True when the status says agreed but the person's current position is not "agree" (possible
    /// after two offline edits merge): shown to users as a warning, never silently fixed.
    pub agreed_without_person: bool,
}

/// A whole case, ready to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseView {
    /// Case id.
    pub case_id: String,
    /// Team id.
    pub team_id: String,
    /// When the case was opened.
    pub created_at: Option<String>,
    /// Who opened it.
    pub created_by: Option<AuthorView>,
    /// The person.
    pub person: PersonView,
    /// Their network (including members who left and entries in error).
    pub network: Vec<MemberView>,
    /// The care team.
    pub care_team: Vec<CareTeamView>,
    /// Milestones.
    pub timeline: TimelineView,
    /// Meetings, earliest first.
    pub meetings: Vec<MeetingView>,
    /// Decisions, oldest first.
    pub decisions: Vec<DecisionView>,
    /// Fields with concurrent values that a user should choose between.
    pub conflicts: Vec<Conflict>,
    /// The safety and crisis plan (schema 3; empty for a case without one).
    #[serde(default)]
    pub crisis_plan: super::plan::CrisisPlanView,
    /// Home-visit safety notes and safeguarding concerns, oldest first (schema 3).
    #[serde(default)]
    pub team_notes: Vec<super::team_notes::TeamNoteView>,
    /// Letters and documents attached to the case or its meetings, oldest first (schema 3).
    #[serde(default)]
    pub attachments: Vec<super::attachments::AttachmentView>,
    /// The referrals, in the order they came in (schema 4).
    #[serde(default)]
    pub referrals: Vec<super::referrals::ReferralView>,
    /// The episodes of care the referrals opened, oldest first (a case from before schema 4
    /// has one, from its timeline's referral): see [`super::referrals`].
    #[serde(default)]
    pub episodes: Vec<super::referrals::Episode>,
}

/// The attribution of entry `id` at `o`, and its mark if it was entered in error.
pub(super) fn meta(d: &impl ReadDoc, id: EntryId, o: &ObjId) -> EntryMeta {
    EntryMeta {
        id,
        created_at: ts(d, o, keys::CREATED_AT),
        created_by: author(d, o, keys::CREATED_BY),
        // The wrong person's mark, where there is one, is the one that counts: it withholds.
        entered_in_error: map_at(d, o, keys::WRONG_PERSON)
            .map(|m| (m, Stored::Known(ErrorKind::WrongPerson)))
            .or_else(|| {
                // A mark without a kind is a mistake (schema 1). An empty kind is not: a newer
                // schema wrote it, and what this code cannot read it withholds.
                map_at(d, o, keys::ENTERED_IN_ERROR).map(|m| {
                    let kind = match get_str(d, &m, keys::KIND) {
                        None => Stored::Known(ErrorKind::Mistake),
                        written => Stored::read(written),
                    };
                    (m, kind)
                })
            })
            .map(|(m, kind)| ErrorMark {
                kind,
                reason: get_str(d, &m, keys::REASON).unwrap_or_default(),
                by: author(d, &m, keys::BY),
                at: ts(d, &m, keys::AT),
            }),
    }
}

/// Entries of a collection map, sorted by creation time then id (map order is by id, which is
/// random, and users expect the order things were added). Every schema's validation refuses a key
/// that is not an id, so none is passed over here on a stored case.
fn entries(d: &impl ReadDoc, parent: &ObjId, coll: &str) -> Vec<(EntryId, ObjId)> {
    let Some(c) = map_at(d, parent, coll) else {
        return vec![];
    };
    let mut v: Vec<(Option<i64>, String, ObjId)> = d
        .keys(&c)
        .filter_map(|k| {
            let o = map_at(d, &c, &k)?;
            let created = get_ts(d, &o, keys::CREATED_AT).map(super::read::to_ms);
            Some((created, k, o))
        })
        .collect();
    v.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    v.into_iter()
        .filter_map(|(_, k, o)| Some((k.parse().ok()?, o)))
        .collect()
}

fn list_maps(d: &impl ReadDoc, parent: &ObjId, key: &str) -> Vec<ObjId> {
    let Some(l) = map_at(d, parent, key) else {
        return vec![];
    };
    (0..d.length(&l))
        .filter_map(|i| match d.get(&l, i) {
            Ok(Some((automerge::Value::Object(_), o))) => Some(o),
            _ => None,
        })
        .collect()
}

/// An optional vocabulary field.
fn stored<T: std::str::FromStr + std::fmt::Display>(s: Option<String>) -> Option<Stored<T>> {
    s.map(|s| Stored::read(Some(s)))
}

fn text(d: &impl ReadDoc, o: &ObjId, k: &str) -> String {
    map_at(d, o, k)
        .and_then(|t| d.text(&t).ok())
        .unwrap_or_default()
}

impl CaseDoc {
    /// A snapshot of the whole case for display.
    pub fn view(&self) -> CaseView {
        let d = &self.doc;
        let mut view = CaseView {
            case_id: get_str(d, &ROOT, keys::CASE_ID).unwrap_or_default(),
            team_id: get_str(d, &ROOT, keys::TEAM_ID).unwrap_or_default(),
            created_at: ts(d, &ROOT, keys::CREATED_AT),
            created_by: author(d, &ROOT, keys::CREATED_BY),
            person: person(d),
            network: network(d),
            care_team: care_team(d),
            timeline: timeline(d),
            meetings: meetings(d),
            decisions: decisions(d),
            conflicts: self.conflicts(),
            crisis_plan: super::plan::crisis_plan(d),
            team_notes: super::team_notes::team_notes(d),
            attachments: super::attachments::attachments(d),
            referrals: super::referrals::referrals(d),
            episodes: Vec::new(),
        };
        withhold(&mut view);
        view.episodes = super::referrals::episodes(&view);
        view
    }
}

fn person(d: &impl ReadDoc) -> PersonView {
    let person = map_at(d, &ROOT, keys::PERSON);
    let p = |f: PersonField| person.as_ref().and_then(|o| get_str(d, o, f.as_str()));
    PersonView {
        name: p(PersonField::Name).unwrap_or_default(),
        preferred_name: p(PersonField::PreferredName),
        pronouns: p(PersonField::Pronouns),
        date_of_birth: p(PersonField::DateOfBirth),
        nhs_number: p(PersonField::NhsNumber),
        phone: p(PersonField::Phone),
        email: p(PersonField::Email),
        address: p(PersonField::Address),
        contact_preference: p(PersonField::ContactPreference),
    }
}

fn timeline(d: &impl ReadDoc) -> TimelineView {
    let timeline = map_at(d, &ROOT, keys::TIMELINE);
    let tl = |f: TimelineField| timeline.as_ref().and_then(|o| ts(d, o, f.as_str()));
    TimelineView {
        referral: tl(TimelineField::Referral),
        first_contact: tl(TimelineField::FirstContact),
        first_network_meeting: tl(TimelineField::FirstNetworkMeeting),
        closure: tl(TimelineField::Closure),
    }
}

fn network(d: &impl ReadDoc) -> Vec<MemberView> {
    entries(d, &ROOT, keys::NETWORK)
        .into_iter()
        .map(|(id, m)| member(d, id, &m))
        .collect()
}

fn member(d: &impl ReadDoc, id: EntryId, m: &ObjId) -> MemberView {
    let consent: Vec<ConsentView> = list_maps(d, m, keys::CONSENT)
        .iter()
        .map(|c| ConsentView {
            state: Stored::read(get_str(d, c, keys::STATE)),
            date: get_str(d, c, keys::DATE),
            recorded_by: author(d, c, keys::RECORDED_BY),
        })
        .collect();
    // Where consent stands: the event written last (the date typed may be backdated, and the
    // person's latest word is what counts). Two devices recording at once leave list order to
    // chance, so this reads the time each was written, and on a tie a withdrawal wins (giving a
    // copy nobody may have is the worse mistake).
    let consent_given = list_maps(d, m, keys::CONSENT)
        .iter()
        .map(|c| {
            let state = Stored::<ConsentState>::read(get_str(d, c, keys::STATE));
            let revoked = !state.is(ConsentState::Given);
            (get_ts(d, c, keys::AT), revoked)
        })
        .max()
        .is_some_and(|(_, revoked)| !revoked);
    MemberView {
        meta: meta(d, id, m),
        name: get_str(d, m, keys::NAME).unwrap_or_default(),
        relationship: get_str(d, m, "relationship").unwrap_or_default(),
        role: Stored::read(get_str(d, m, keys::ROLE)),
        phone: get_str(d, m, "phone"),
        email: get_str(d, m, "email"),
        invited_by: stored(get_str(d, m, keys::INVITED_BY)),
        consent,
        consent_given,
        joined: get_str(d, m, keys::JOINED),
        left: get_str(d, m, keys::LEFT),
    }
}

fn care_team(d: &impl ReadDoc) -> Vec<CareTeamView> {
    entries(d, &ROOT, keys::CARE_TEAM)
        .into_iter()
        .map(|(id, e)| CareTeamView {
            meta: meta(d, id, &e),
            practitioner: Stored::read(get_str(d, &e, keys::PRACTITIONER)),
            name: get_str(d, &e, keys::NAME).unwrap_or_default(),
            role: Stored::read(get_str(d, &e, keys::ROLE)),
            start: get_str(d, &e, keys::START),
            end: get_str(d, &e, keys::END),
        })
        .collect()
}

/// The meetings, by time (then id).
fn meetings(d: &AutoCommit) -> Vec<MeetingView> {
    let mut meetings: Vec<MeetingView> = entries(d, &ROOT, keys::MEETINGS)
        .into_iter()
        .map(|(id, m)| meeting(d, id, &m))
        .collect();
    meetings.sort_by(|a, b| (instant(&a.at), &a.meta.id).cmp(&(instant(&b.at), &b.meta.id)));
    meetings
}

fn meeting(d: &AutoCommit, id: EntryId, m: &ObjId) -> MeetingView {
    let attendees: Vec<Stored<Participant>> = map_at(d, m, keys::ATTENDEES)
        .map(|a| {
            d.keys(&a)
                .filter(|k| get_bool(d, &a, k).unwrap_or(false))
                .map(|k| Stored::read(Some(k)))
                .collect()
        })
        .unwrap_or_default();
    let readback = readback(d, m);
    MeetingView {
        meta: meta(d, id, m),
        at: ts(d, m, keys::AT),
        place: Stored::read(get_str(d, m, keys::PLACE)),
        notes: text(d, m, NoteKind::Notes.as_str()),
        reflections: text(d, m, NoteKind::Reflections.as_str()),
        agreed: text(d, m, NoteKind::Agreed.as_str()),
        next_meeting: ts(d, m, keys::NEXT_MEETING),
        // A version the record does not hold (a forged or damaged value) is no version: better to
        // list nothing than to call every word "later".
        changed_after_readback: first_heard(&readback)
            .filter(|heads| heads.iter().all(|h| d.get_change_by_hash(h).is_some()))
            .map(|heads| super::readback::changes_after(d, m, &heads))
            .unwrap_or_default(),
        readback,
        // A meeting without a state was held (schema 1 recorded only those); an empty state is a
        // newer schema's, and is not taken as held.
        state: match get_str(d, m, keys::STATE) {
            None => Stored::Known(MeetingState::Held),
            written => Stored::read(written),
        },
        person_present: attendees.iter().any(|a| a.is(Participant::Person)),
        attendees,
        staff: staff(d, m),
    }
}

/// The members of staff a meeting noted, from every concurrent `staff` map (two devices that
/// noted staff on a meeting recorded before schema 3 may each have made one).
fn staff(d: &AutoCommit, m: &ObjId) -> Vec<StaffView> {
    let mut out: Vec<StaffView> = Vec::new();
    // The winning map first (automerge lists concurrent values oldest operation first), so a
    // practitioner noted in both shows as the winner has them.
    for (value, list) in d
        .get_all(m, keys::STAFF)
        .unwrap_or_default()
        .into_iter()
        .rev()
    {
        if !matches!(value, automerge::Value::Object(automerge::ObjType::Map)) {
            continue;
        }
        for k in d.keys(&list) {
            let practitioner = Stored::read(Some(k.clone()));
            if out.iter().any(|s| s.practitioner == practitioner) {
                continue;
            }
            if let Some(e) = map_at(d, &list, &k) {
                out.push(StaffView {
                    practitioner,
                    name: get_str(d, &e, keys::NAME).unwrap_or_default(),
                    role: Stored::read(get_str(d, &e, keys::ROLE)),
                });
            }
        }
    }
    out
}

/// Each person's answer at a meeting's read-back.
fn readback(d: &impl ReadDoc, m: &ObjId) -> Vec<ReadbackView> {
    map_at(d, m, keys::READBACK)
        .map(|rb| {
            d.keys(&rb)
                .filter_map(|k| {
                    let r = map_at(d, &rb, &k)?;
                    Some(ReadbackView {
                        participant: Stored::read(Some(k)),
                        response: Stored::read(get_str(d, &r, keys::RESPONSE)),
                        words: get_str(d, &r, keys::WORDS),
                        at: ts(d, &r, keys::AT),
                        recorded_by: author(d, &r, keys::RECORDED_BY),
                        heard: get_str(d, &r, keys::HEARD),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn decisions(d: &impl ReadDoc) -> Vec<DecisionView> {
    entries(d, &ROOT, keys::DECISIONS)
        .into_iter()
        .map(|(id, e)| decision(d, id, &e))
        .collect()
}

fn decision(d: &impl ReadDoc, id: EntryId, e: &ObjId) -> DecisionView {
    let positions = positions(d, e);
    let status = Stored::read(get_str(d, e, keys::STATUS));
    let person_agrees = positions
        .iter()
        .any(|p| p.participant.is(Participant::Person) && p.stance.is(Stance::Agree));
    DecisionView {
        meta: meta(d, id, e),
        text: get_str(d, e, keys::TEXT).unwrap_or_default(),
        proposed_by: stored(get_str(d, e, keys::PROPOSED_BY)),
        agreed_without_person: status.is(DecisionStatus::Agreed) && !person_agrees,
        status,
        status_history: list_maps(d, e, keys::STATUS_HISTORY)
            .iter()
            .map(|h| StatusChangeView {
                status: Stored::read(get_str(d, h, keys::STATUS)),
                note: get_str(d, h, keys::NOTE),
                at: ts(d, h, keys::AT),
                by: author(d, h, keys::BY),
            })
            .collect(),
        positions,
        actions: entries(d, e, keys::ACTIONS)
            .into_iter()
            .map(|(id, a)| ActionView {
                meta: meta(d, id, &a),
                text: get_str(d, &a, keys::TEXT).unwrap_or_default(),
                owner: stored(get_str(d, &a, keys::OWNER)),
                due: get_str(d, &a, keys::DUE),
                done: get_bool(d, &a, keys::DONE).unwrap_or(false),
            })
            .collect(),
    }
}

/// The version heard at the meeting's first read-back (by time), if it recorded one.
fn first_heard(readback: &[ReadbackView]) -> Option<Vec<automerge::ChangeHash>> {
    readback
        .iter()
        .filter(|r| r.heard.is_some())
        .min_by(|a, b| (instant(&a.at), &a.participant).cmp(&(instant(&b.at), &b.participant)))
        .and_then(|r| super::readback::parse_heads(r.heard.as_deref()?))
}

/// Empty every entry recorded on the wrong person's record, keeping its mark (who, when, why) and
/// what kind of entry it was, and drop the conflicts inside it: another person's information must
/// not reach any screen, copy or export, and every one of them is built from this view.
fn withhold(v: &mut CaseView) {
    let mut ids: Vec<String> = Vec::new();
    for m in v.network.iter_mut().filter(|m| m.meta.withheld()) {
        ids.push(m.meta.id.to_string());
        *m = MemberView {
            meta: m.meta.clone(),
            name: String::new(),
            relationship: String::new(),
            role: Stored::Missing,
            phone: None,
            email: None,
            invited_by: None,
            consent: vec![],
            consent_given: false,
            joined: None,
            left: None,
        };
    }
    for c in v.care_team.iter_mut().filter(|c| c.meta.withheld()) {
        ids.push(c.meta.id.to_string());
        *c = CareTeamView {
            meta: c.meta.clone(),
            practitioner: Stored::Missing,
            name: String::new(),
            role: Stored::Missing,
            start: None,
            end: None,
        };
    }
    for m in v.meetings.iter_mut().filter(|m| m.meta.withheld()) {
        ids.push(m.meta.id.to_string());
        *m = MeetingView {
            meta: m.meta.clone(),
            at: None,
            place: Stored::Missing,
            attendees: vec![],
            notes: String::new(),
            reflections: String::new(),
            agreed: String::new(),
            next_meeting: None,
            readback: vec![],
            state: m.state.clone(),
            person_present: false,
            changed_after_readback: vec![],
            staff: vec![],
        };
    }
    for dec in v.decisions.iter_mut() {
        if dec.meta.withheld() {
            ids.push(dec.meta.id.to_string());
            *dec = DecisionView {
                meta: dec.meta.clone(),
                text: String::new(),
                proposed_by: None,
                status: Stored::Missing,
                status_history: vec![],
                positions: vec![],
                actions: vec![],
                agreed_without_person: false,
            };
            continue;
        }
        for a in dec.actions.iter_mut().filter(|a| a.meta.withheld()) {
            ids.push(a.meta.id.to_string());
            *a = ActionView {
                meta: a.meta.clone(),
                text: String::new(),
                owner: None,
                due: None,
                done: false,
            };
        }
    }
    // A withheld member's own words elsewhere (their positions, their read-back answers) are
    // theirs: not shown either. Where they were present, copies name "someone removed from this
    // record".
    let members: Vec<Stored<Participant>> = v
        .network
        .iter()
        .filter(|m| m.meta.withheld())
        .map(|m| Stored::Known(Participant::Member(m.meta.id)))
        .collect();
    if !members.is_empty() {
        for m in v.meetings.iter_mut() {
            m.readback.retain(|r| !members.contains(&r.participant));
        }
        for d in v.decisions.iter_mut() {
            d.positions.retain(|p| !members.contains(&p.participant));
        }
        for i in v.crisis_plan.items.iter_mut() {
            i.earlier.retain(|x| !members.contains(&x.words_of));
            if i.current
                .as_ref()
                .is_some_and(|x| members.contains(&x.words_of))
            {
                i.current = None;
            }
        }
    }
    super::plan::withhold(&mut v.crisis_plan, &mut ids);
    super::team_notes::withhold(&mut v.team_notes, &mut ids);
    super::attachments::withhold(&mut v.attachments, &mut ids);
    super::referrals::withhold(&mut v.referrals, &mut ids);
    if !ids.is_empty() {
        v.conflicts.retain(|c| {
            !c.field.split('.').any(|part| {
                ids.iter().any(|id| id == part) || members.iter().any(|m| m.to_string() == part)
            })
        });
    }
}
