//! [`CaseDoc`]: the typed write API over a case's automerge document.
//!
//! Every public write is one automerge change: the actor is the device, the message names the
//! practitioner and the action, the time is the wall clock. A write that fails validation leaves
//! nothing behind (its pending operations are rolled back).

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{AutoCommit, ChangeHash, ObjId, ObjType, ReadDoc, ScalarValue, ROOT};
use serde::{Deserialize, Serialize};

use super::read::{from_ms, get_str, get_ts, map_at, to_ms};
use super::schema::{self, keys, SCHEMA_VERSION};
use super::types::*;
use super::{LocalZone, ModelError, MAX_LONG, MAX_SHORT};
use crate::{CaseId, EntryId, PractitionerId, TeamId};

/// How far ahead of this device's clock a meeting may be and still count as now: clocks of devices
/// differ by minutes.
const MEETING_CLOCK_SKEW: time::Duration = time::Duration::minutes(10);

/// What is needed to open a case.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewCase {
    /// The person's full name (required).
    pub name: String,
    /// NHS number, if known (validated).
    pub nhs_number: Option<String>,
    /// Date of birth, YYYY-MM-DD, if known.
    pub date_of_birth: Option<String>,
    /// When the referral came in (defaults to now).
    pub referral: Option<Instant>,
}

/// A new member of the person's network.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewMember {
    /// Their name (required).
    pub name: String,
    /// Their relationship to the person, in the person's words (required).
    pub relationship: String,
    /// Broad role; `other` if not given.
    pub role: Option<Role>,
    /// Telephone.
    pub phone: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Who invited them ("who is important to you?"); the person if not given.
    pub invited_by: Option<Participant>,
    /// Date they joined; today if not given.
    pub joined: Option<Date>,
}

/// A new meeting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewMeeting {
    /// When it took place.
    pub at: Instant,
    /// Where.
    pub place: Place,
    /// Who came (the person, members, practitioners).
    pub attendees: Vec<Participant>,
}

/// A case document with the author who signs the changes made through it.
#[derive(Debug, Clone)]
pub struct CaseDoc {
    pub(super) doc: AutoCommit,
    author: Option<Author>,
}

/// Now, in UTC, to the millisecond (the resolution stored). A stepped clock on a thread the
/// simulation test seeded (see [`crate::determinism`]).
pub(super) fn now() -> Instant {
    if let Some(ms) = crate::determinism::seeded_now_ms() {
        return from_ms(ms);
    }
    let t = time::OffsetDateTime::now_utc();
    t.replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t)
}

pub(super) fn check_short(field: &'static str, value: &str) -> Result<(), ModelError> {
    let len = value.chars().count();
    if len > MAX_SHORT {
        return Err(ModelError::TooLong {
            field,
            len,
            max: MAX_SHORT,
        });
    }
    Ok(())
}

fn check_required(field: &'static str, value: &str) -> Result<String, ModelError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(ModelError::Required { field });
    }
    check_short(field, v)?;
    Ok(v.to_string())
}

pub(super) fn check_long(field: &'static str, value: &str) -> Result<(), ModelError> {
    let len = value.chars().count();
    if len > MAX_LONG {
        return Err(ModelError::TooLong {
            field,
            len,
            max: MAX_LONG,
        });
    }
    Ok(())
}

impl CaseDoc {
    /// Open a new case for a person. The author's device becomes the document's actor.
    pub fn create(
        case_id: CaseId,
        team: TeamId,
        new: NewCase,
        author: Author,
    ) -> Result<CaseDoc, ModelError> {
        let name = check_required("name", &new.name)?;
        let nhs = new.nhs_number.as_deref().filter(|s| !s.trim().is_empty());
        let nhs = nhs.map(validate_nhs_number).transpose()?;
        let dob = new
            .date_of_birth
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(|s| parse_date("date of birth", s))
            .transpose()?;
        let doc = AutoCommit::new().with_actor(author.actor());
        let mut case = CaseDoc {
            doc,
            author: Some(author),
        };
        case.write("open case", |d, a, t| {
            d.put(ROOT, keys::SCHEMA_VERSION, SCHEMA_VERSION)?;
            d.put(ROOT, keys::CASE_ID, case_id.to_string())?;
            d.put(ROOT, keys::TEAM_ID, team.to_string())?;
            d.put(ROOT, keys::CREATED_AT, ScalarValue::Timestamp(to_ms(t)))?;
            let by = d.put_object(ROOT, keys::CREATED_BY, ObjType::Map)?;
            put_author(d, &by, a)?;
            d.put_object(ROOT, keys::ACTORS, ObjType::Map)?;
            let person = d.put_object(ROOT, keys::PERSON, ObjType::Map)?;
            d.put(&person, PersonField::Name.as_str(), name.as_str())?;
            if let Some(nhs) = &nhs {
                d.put(&person, PersonField::NhsNumber.as_str(), nhs.as_str())?;
            }
            if let Some(dob) = dob {
                d.put(&person, PersonField::DateOfBirth.as_str(), format_date(dob))?;
            }
            for coll in [
                keys::NETWORK,
                keys::CARE_TEAM,
                keys::MEETINGS,
                keys::DECISIONS,
            ] {
                d.put_object(ROOT, coll, ObjType::Map)?;
            }
            // Schema 3: the plan, made with the case so every device adds to one map.
            let plan = d.put_object(ROOT, keys::CRISIS_PLAN, ObjType::Map)?;
            d.put_object(&plan, keys::ITEMS, ObjType::Map)?;
            d.put_object(&plan, keys::REVIEWS, ObjType::List)?;
            d.put_object(ROOT, keys::TEAM_NOTES, ObjType::Map)?;
            d.put_object(ROOT, keys::ATTACHMENTS, ObjType::Map)?;
            // Schema 4: the referrals, made with the case for the same reason.
            d.put_object(ROOT, keys::REFERRALS, ObjType::Map)?;
            let timeline = d.put_object(ROOT, keys::TIMELINE, ObjType::Map)?;
            let referral = new.referral.unwrap_or(t);
            d.put(
                &timeline,
                TimelineField::Referral.as_str(),
                ScalarValue::Timestamp(to_ms(referral)),
            )?;
            Ok(())
        })?;
        Ok(case)
    }

    /// Load a case from saved bytes (a full save, or a full save followed by incremental chunks),
    /// refusing anything that is not a valid case record.
    pub fn load(bytes: &[u8], author: Option<Author>) -> Result<CaseDoc, ModelError> {
        // automerge 0.12 can panic or exhaust memory on malformed bytes (see `sync::prepare`):
        // damaged data is an error to report, never a crash.
        if !super::only_document_and_change_chunks(bytes) {
            return Err(ModelError::Corrupt(
                "the bytes are not automerge documents and changes".into(),
            ));
        }
        let doc = std::panic::catch_unwind(|| AutoCommit::load(bytes))
            .map_err(|_| ModelError::Corrupt("automerge could not decode the case".into()))?
            .map_err(|e| ModelError::Corrupt(e.to_string()))?;
        Self::from_automerge(doc, author)
    }

    /// Wrap an automerge document after checking it is a valid case record.
    pub fn from_automerge(
        mut doc: AutoCommit,
        author: Option<Author>,
    ) -> Result<CaseDoc, ModelError> {
        schema::validate_document(&doc)?;
        if let Some(a) = &author {
            doc.set_actor(a.actor());
        }
        Ok(CaseDoc { doc, author })
    }

    /// The underlying automerge document (for sync and storage).
    pub fn automerge(&self) -> &AutoCommit {
        &self.doc
    }

    /// Mutable access to the underlying document, for the sync layer only: it must validate
    /// whatever it merges.
    pub fn automerge_mut(&mut self) -> &mut AutoCommit {
        &mut self.doc
    }

    /// Give up the wrapper, keeping the document.
    pub fn into_automerge(self) -> AutoCommit {
        self.doc
    }

    /// The author signing changes, if any.
    pub fn author(&self) -> Option<&Author> {
        self.author.as_ref()
    }

    /// The case id stored in the document.
    pub fn case_id(&self) -> CaseId {
        schema::read_case_id(&self.doc).unwrap_or(CaseId(uuid::Uuid::nil()))
    }

    /// The team the case belongs to, as stored in the document.
    pub fn team_id(&self) -> TeamId {
        schema::read_team_id(&self.doc).unwrap_or(TeamId(uuid::Uuid::nil()))
    }

    /// The current heads (the version of the document).
    pub fn heads(&mut self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// A full save of the document.
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// The changes made since the last call to `save` or `save_incremental`.
    pub fn save_incremental(&mut self) -> Vec<u8> {
        self.doc.save_incremental()
    }

    /// Run one user action as one attributed change; roll everything back if it fails.
    pub(super) fn write<R>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut AutoCommit, &Author, Instant) -> Result<R, ModelError>,
    ) -> Result<R, ModelError> {
        let author = self.author.clone().ok_or(ModelError::NoAuthor)?;
        let t = now();
        let result = f(&mut self.doc, &author, t).and_then(|r| {
            register_actor(&mut self.doc, &author)?;
            raise_schema_version(&mut self.doc)?;
            Ok(r)
        });
        match result {
            Ok(r) => {
                let note = ChangeNote {
                    practitioner: author.practitioner,
                    practitioner_name: author.practitioner_name.clone(),
                    device: author.device,
                    what: what.to_string(),
                };
                let message = serde_json::to_string(&note).unwrap_or_default();
                self.doc.commit_with(
                    CommitOptions::default()
                        .with_message(message)
                        .with_time(to_ms(t)),
                );
                Ok(r)
            }
            Err(e) => {
                self.doc.rollback();
                Err(e)
            }
        }
    }

    // ---------------------------------------------------------------- person and timeline

    /// Set (or clear, with `None`) one of the person's details. The name cannot be cleared.
    pub fn set_person(
        &mut self,
        field: PersonField,
        value: Option<&str>,
    ) -> Result<(), ModelError> {
        let value = value.map(str::trim).filter(|v| !v.is_empty());
        let stored = match (field, value) {
            (PersonField::Name, None) => return Err(ModelError::Required { field: "name" }),
            (PersonField::NhsNumber, Some(v)) => Some(validate_nhs_number(v)?),
            (PersonField::DateOfBirth, Some(v)) => {
                Some(format_date(parse_date("date of birth", v)?))
            }
            (_, Some(v)) => {
                check_short(field.as_str(), v)?;
                Some(v.to_string())
            }
            (_, None) => None,
        };
        self.write(&format!("set person {}", field.as_str()), |d, _, _| {
            let person = obj_at(d, &ROOT, keys::PERSON)?;
            match stored {
                Some(v) => d.put(&person, field.as_str(), v)?,
                // A cleared field is stored as null, not deleted, so the history shows who cleared it.
                None => d.put(&person, field.as_str(), ScalarValue::Null)?,
            }
            Ok(())
        })
    }

    /// Record a milestone of the episode. A closure closes the episode it falls in
    /// ([`CaseDoc::close_episode`]).
    pub fn set_timeline(&mut self, field: TimelineField, at: Instant) -> Result<(), ModelError> {
        if field == TimelineField::Closure {
            return self.close_episode(at);
        }
        self.write(&format!("set timeline {}", field.as_str()), |d, _, _| {
            let tl = obj_at(d, &ROOT, keys::TIMELINE)?;
            d.put(&tl, field.as_str(), ScalarValue::Timestamp(to_ms(at)))?;
            Ok(())
        })
    }

    // ---------------------------------------------------------------- network

    /// Add a member to the person's network. Returns the member's id.
    pub fn add_member(&mut self, new: NewMember) -> Result<EntryId, ModelError> {
        let name = check_required("member name", &new.name)?;
        let relationship = check_required("relationship", &new.relationship)?;
        for (field, v) in [("phone", &new.phone), ("email", &new.email)] {
            if let Some(v) = v {
                check_short(field, v)?;
            }
        }
        if let Some(Participant::Member(id)) = new.invited_by {
            self.entry(keys::NETWORK, "network member", &id)?;
        }
        let id = EntryId::random();
        self.write("add network member", |d, a, t| {
            let network = obj_at(d, &ROOT, keys::NETWORK)?;
            let m = new_entry(d, &network, &id, a, t)?;
            d.put(&m, MemberField::Name.as_str(), name.as_str())?;
            d.put(
                &m,
                MemberField::Relationship.as_str(),
                relationship.as_str(),
            )?;
            d.put(
                &m,
                MemberField::Role.as_str(),
                new.role.unwrap_or(Role::Other).as_str(),
            )?;
            for (field, v) in [
                (MemberField::Phone, &new.phone),
                (MemberField::Email, &new.email),
            ] {
                if let Some(v) = v.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                    d.put(&m, field.as_str(), v)?;
                }
            }
            let invited = new.invited_by.unwrap_or(Participant::Person);
            d.put(&m, keys::INVITED_BY, invited.key())?;
            let joined = new.joined.unwrap_or(LocalZone::uk().date(t));
            d.put(&m, keys::JOINED, format_date(joined))?;
            d.put_object(&m, keys::CONSENT, ObjType::List)?;
            Ok(id)
        })
    }

    /// Change a member's details.
    pub fn set_member(
        &mut self,
        member: &EntryId,
        field: MemberField,
        value: Option<&str>,
    ) -> Result<(), ModelError> {
        let m = self.live_entry(keys::NETWORK, "network member", member)?;
        let value = value.map(str::trim).filter(|v| !v.is_empty());
        let stored = match (field, value) {
            (MemberField::Name | MemberField::Relationship, None) => {
                return Err(ModelError::Required {
                    field: "member name and relationship",
                })
            }
            (MemberField::Role, Some(v)) => Some(v.parse::<Role>()?.as_str().to_string()),
            (_, Some(v)) => {
                check_short(field.as_str(), v)?;
                Some(v.to_string())
            }
            (_, None) => None,
        };
        self.write(&format!("set member {}", field.as_str()), |d, _, _| {
            match stored {
                Some(v) => d.put(&m, field.as_str(), v)?,
                None => d.put(&m, field.as_str(), ScalarValue::Null)?,
            }
            Ok(())
        })
    }

    /// A member leaves the network (they are never removed: the record of them stays).
    pub fn member_leaves(&mut self, member: &EntryId, on: Option<Date>) -> Result<(), ModelError> {
        let m = self.live_entry(keys::NETWORK, "network member", member)?;
        if let Some(left) = get_str(&self.doc, &m, keys::LEFT) {
            return Err(ModelError::AlreadyLeft {
                id: member.to_string(),
                left,
            });
        }
        self.write("network member leaves", |d, _, t| {
            d.put(
                &m,
                keys::LEFT,
                format_date(on.unwrap_or(LocalZone::uk().date(t))),
            )?;
            Ok(())
        })
    }

    /// Record that the person gave or revoked consent for a member to receive the record.
    pub fn record_consent(
        &mut self,
        member: &EntryId,
        state: ConsentState,
        on: Option<Date>,
    ) -> Result<(), ModelError> {
        let m = self.live_entry(keys::NETWORK, "network member", member)?;
        self.write(&format!("consent {}", state.as_str()), |d, a, t| {
            let list = obj_at(d, &m, keys::CONSENT)?;
            let at = d.length(&list);
            let ev = d.insert_object(&list, at, ObjType::Map)?;
            d.put(&ev, keys::STATE, state.as_str())?;
            d.put(
                &ev,
                keys::DATE,
                format_date(on.unwrap_or(LocalZone::uk().date(t))),
            )?;
            stamp(d, &ev, keys::RECORDED_BY, keys::AT, a, t)?;
            Ok(())
        })
    }

    // ---------------------------------------------------------------- care team

    /// Add a practitioner or peer support worker to the care team. Returns the membership id.
    pub fn add_care_team(
        &mut self,
        practitioner: PractitionerId,
        name: &str,
        role: CareRole,
        start: Option<Date>,
    ) -> Result<EntryId, ModelError> {
        let name = check_required("practitioner name", name)?;
        let id = EntryId::random();
        self.write("add to care team", |d, a, t| {
            let team = obj_at(d, &ROOT, keys::CARE_TEAM)?;
            let e = new_entry(d, &team, &id, a, t)?;
            d.put(&e, keys::PRACTITIONER, practitioner.to_string())?;
            d.put(&e, keys::NAME, name.as_str())?;
            d.put(&e, keys::ROLE, role.as_str())?;
            d.put(
                &e,
                keys::START,
                format_date(start.unwrap_or(LocalZone::uk().date(t))),
            )?;
            Ok(id)
        })
    }

    /// A practitioner's part in the care team ends.
    pub fn end_care_team(
        &mut self,
        membership: &EntryId,
        on: Option<Date>,
    ) -> Result<(), ModelError> {
        let e = self.live_entry(keys::CARE_TEAM, "care team membership", membership)?;
        self.write("care team membership ends", |d, _, t| {
            d.put(
                &e,
                keys::END,
                format_date(on.unwrap_or(LocalZone::uk().date(t))),
            )?;
            Ok(())
        })
    }

    // ---------------------------------------------------------------- meetings

    /// Record a meeting. Returns the meeting id.
    pub fn add_meeting(&mut self, new: NewMeeting) -> Result<EntryId, ModelError> {
        self.add_meeting_with(new, &[])
    }

    /// Record a meeting, with the name and role of each member of staff among the attendees as
    /// the team list has them (schema 3), so the record says in what capacity each was there
    /// even after they leave the team. Members of `staff` who are not attendees are not written.
    pub fn add_meeting_with(
        &mut self,
        new: NewMeeting,
        staff: &[StaffMember],
    ) -> Result<EntryId, ModelError> {
        for p in &new.attendees {
            self.check_participant(p)?;
        }
        let staff: Vec<StaffMember> = staff
            .iter()
            .filter(|s| {
                new.attendees
                    .contains(&Participant::Practitioner(s.practitioner))
            })
            .map(checked_staff)
            .collect::<Result<_, _>>()?;
        let id = EntryId::random();
        self.write("add meeting", |d, a, t| {
            let meetings = obj_at(d, &ROOT, keys::MEETINGS)?;
            let m = new_entry(d, &meetings, &id, a, t)?;
            d.put(&m, keys::AT, ScalarValue::Timestamp(to_ms(new.at)))?;
            // A meeting booked for later is planned; one recorded afterwards was held.
            let state = if new.at > t + MEETING_CLOCK_SKEW {
                MeetingState::Planned
            } else {
                MeetingState::Held
            };
            d.put(&m, keys::STATE, state.as_str())?;
            d.put(&m, keys::PLACE, new.place.as_str())?;
            let att = d.put_object(&m, keys::ATTENDEES, ObjType::Map)?;
            for p in &new.attendees {
                d.put(&att, p.key(), true)?;
            }
            // Made with the meeting, so two devices adding staff later write into one map
            // (each making its own would leave one of the two maps a concurrent loser).
            let list = d.put_object(&m, keys::STAFF, ObjType::Map)?;
            for s in &staff {
                put_staff(d, &list, s)?;
            }
            for kind in NoteKind::ALL {
                d.put_object(&m, kind.as_str(), ObjType::Text)?;
            }
            d.put_object(&m, keys::READBACK, ObjType::Map)?;
            Ok(id)
        })
    }

    /// Say where a meeting stands: held, cancelled, missed (did not attend) or planned again. A
    /// meeting still in the future can only be planned or cancelled.
    pub fn set_meeting_state(
        &mut self,
        meeting: &EntryId,
        state: MeetingState,
    ) -> Result<(), ModelError> {
        let m = self.live_entry(keys::MEETINGS, "meeting", meeting)?;
        let at = get_ts(&self.doc, &m, keys::AT);
        let not_yet = at.is_some_and(|at| at > now() + MEETING_CLOCK_SKEW);
        if not_yet && matches!(state, MeetingState::Held | MeetingState::DidNotAttend) {
            return Err(ModelError::MeetingNotYet {
                at: at
                    .map(|at| format!("{} UK time", LocalZone::uk().long(at)))
                    .unwrap_or_default(),
            });
        }
        self.write(&format!("meeting {}", state.as_str()), |d, _, _| {
            d.put(&m, keys::STATE, state.as_str())?;
            Ok(())
        })
    }

    /// Mark someone as present at (or absent from) a meeting.
    pub fn set_attendance(
        &mut self,
        meeting: &EntryId,
        who: Participant,
        present: bool,
    ) -> Result<(), ModelError> {
        let m = self.live_entry(keys::MEETINGS, "meeting", meeting)?;
        self.check_participant(&who)?;
        self.write("set attendance", |d, _, _| {
            let att = obj_at(d, &m, keys::ATTENDEES)?;
            d.put(&att, who.key(), present)?;
            Ok(())
        })
    }

    /// Mark a member of staff as present at (or absent from) a meeting, noting their name and
    /// role as the team list has them (schema 3), unless the meeting noted them already: the
    /// record keeps the capacity they were there in.
    pub fn set_staff_attendance(
        &mut self,
        meeting: &EntryId,
        member: &StaffMember,
        present: bool,
    ) -> Result<(), ModelError> {
        let m = self.live_entry(keys::MEETINGS, "meeting", meeting)?;
        let member = checked_staff(member)?;
        // Noted already, in any of the meeting's staff maps (two devices may each have made one):
        // the role they were there in stays.
        let key = member.practitioner.to_string();
        let noted = self
            .doc
            .get_all(&m, keys::STAFF)
            .unwrap_or_default()
            .into_iter()
            .any(|(_, list)| map_at(&self.doc, &list, &key).is_some());
        self.write("set attendance", |d, _, _| {
            let att = obj_at(d, &m, keys::ATTENDEES)?;
            d.put(
                &att,
                Participant::Practitioner(member.practitioner).key(),
                present,
            )?;
            if noted {
                return Ok(());
            }
            let list = match map_at(d, &m, keys::STAFF) {
                Some(list) => list,
                None => d.put_object(&m, keys::STAFF, ObjType::Map)?,
            };
            put_staff(d, &list, &member)
        })
    }

    /// Set when the next meeting is planned.
    pub fn set_next_meeting(&mut self, meeting: &EntryId, at: Instant) -> Result<(), ModelError> {
        let m = self.live_entry(keys::MEETINGS, "meeting", meeting)?;
        self.write("set next meeting", |d, _, _| {
            d.put(&m, keys::NEXT_MEETING, ScalarValue::Timestamp(to_ms(at)))?;
            Ok(())
        })
    }

    /// Append text to a meeting's notes, reflections or agreements. Concurrent appends from two
    /// devices both survive the merge.
    pub fn append_text(
        &mut self,
        meeting: &EntryId,
        kind: NoteKind,
        text: &str,
    ) -> Result<(), ModelError> {
        let m = self.live_entry(keys::MEETINGS, "meeting", meeting)?;
        let t_obj = obj_at(&self.doc, &m, kind.as_str())?;
        let current = self.doc.text(&t_obj)?;
        check_long(kind.as_str(), &format!("{current}{text}"))?;
        let sep = if current.is_empty() || current.ends_with('\n') || text.is_empty() {
            ""
        } else {
            "\n"
        };
        let insert = format!("{sep}{text}");
        self.write(&format!("append {}", kind.as_str()), |d, _, _| {
            let at = d.length(&t_obj);
            d.splice_text(&t_obj, at, 0, &insert)?;
            Ok(())
        })
    }

    /// Replace a meeting text with an edited version. The edit is stored as the minimal
    /// insertions and deletions (a diff), so words another device typed concurrently elsewhere in
    /// the text are kept.
    pub fn edit_text(
        &mut self,
        meeting: &EntryId,
        kind: NoteKind,
        new_text: &str,
    ) -> Result<(), ModelError> {
        let m = self.live_entry(keys::MEETINGS, "meeting", meeting)?;
        check_long(kind.as_str(), new_text)?;
        let t_obj = obj_at(&self.doc, &m, kind.as_str())?;
        self.write(&format!("edit {}", kind.as_str()), |d, _, _| {
            d.update_text(&t_obj, new_text)?;
            Ok(())
        })
    }

    /// Record a participant's answer at the end-of-meeting read-back.
    pub fn record_readback(
        &mut self,
        meeting: &EntryId,
        who: Participant,
        response: ReadbackResponse,
        words: Option<&str>,
    ) -> Result<(), ModelError> {
        let m = self.live_entry(keys::MEETINGS, "meeting", meeting)?;
        self.check_participant(&who)?;
        let words = words.map(str::trim).filter(|w| !w.is_empty());
        if response == ReadbackResponse::AddedWords && words.is_none() {
            return Err(ModelError::Required {
                field: "the words they added",
            });
        }
        if let Some(w) = words {
            check_long("read-back words", w)?;
        }
        // The version they heard: what the notes said when they first answered. Anything written
        // after it is shown as added after the meeting; answering again (after the notes were
        // changed) keeps the first version, so the later words still show as not read back.
        let earlier = obj_at(&self.doc, &m, keys::READBACK)
            .ok()
            .and_then(|rb| map_at(&self.doc, &rb, &who.key()))
            .and_then(|r| get_str(&self.doc, &r, keys::HEARD));
        let heard = earlier.unwrap_or_else(|| super::readback::format_heads(&self.doc.get_heads()));
        // A read-back is the end of a meeting that took place: a planned one whose time has come
        // is now held.
        let planned = get_str(&self.doc, &m, keys::STATE).as_deref()
            == Some(MeetingState::Planned.as_str())
            && get_ts(&self.doc, &m, keys::AT).is_some_and(|at| at <= now() + MEETING_CLOCK_SKEW);
        self.write("record read-back", |d, a, t| {
            if planned {
                d.put(&m, keys::STATE, MeetingState::Held.as_str())?;
            }
            let rb = obj_at(d, &m, keys::READBACK)?;
            let r = d.put_object(&rb, who.key(), ObjType::Map)?;
            d.put(&r, keys::RESPONSE, response.as_str())?;
            d.put(&r, keys::HEARD, heard.as_str())?;
            if let Some(w) = words {
                d.put(&r, keys::WORDS, w)?;
            }
            stamp(d, &r, keys::RECORDED_BY, keys::AT, a, t)?;
            Ok(())
        })
    }

    // ---------------------------------------------------------------- decisions

    /// Propose a decision. Returns its id.
    pub fn propose_decision(
        &mut self,
        text: &str,
        proposed_by: Participant,
    ) -> Result<EntryId, ModelError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ModelError::Required {
                field: "decision text",
            });
        }
        check_long("decision text", text)?;
        self.check_participant(&proposed_by)?;
        let id = EntryId::random();
        self.write("propose decision", |d, a, t| {
            let decisions = obj_at(d, &ROOT, keys::DECISIONS)?;
            let e = new_entry(d, &decisions, &id, a, t)?;
            d.put(&e, keys::TEXT, text)?;
            d.put(&e, keys::PROPOSED_BY, proposed_by.key())?;
            d.put(&e, keys::STATUS, DecisionStatus::Proposed.as_str())?;
            let hist = d.put_object(&e, keys::STATUS_HISTORY, ObjType::List)?;
            let h = d.insert_object(&hist, 0, ObjType::Map)?;
            d.put(&h, keys::STATUS, DecisionStatus::Proposed.as_str())?;
            stamp(d, &h, keys::BY, keys::AT, a, t)?;
            d.put_object(&e, keys::POSITIONS, ObjType::Map)?;
            // Made with the decision, so two devices' first stances land in one history.
            d.put_object(&e, keys::POSITION_HISTORY, ObjType::Map)?;
            d.put_object(&e, keys::ACTIONS, ObjType::Map)?;
            Ok(id)
        })
    }

    /// Record a participant's position on a decision, in their own words. A later position from the
    /// same participant becomes their current one and keeps the earlier ones (a person changing
    /// their mind is clinically meaningful); positions of others are untouched.
    pub fn record_position(
        &mut self,
        decision: &EntryId,
        who: Participant,
        stance: Stance,
        words: Option<&str>,
    ) -> Result<(), ModelError> {
        let e = self.live_entry(keys::DECISIONS, "decision", decision)?;
        self.check_participant(&who)?;
        let words = words.map(str::trim).filter(|w| !w.is_empty());
        if let Some(w) = words {
            check_long("position words", w)?;
        }
        self.write("record position", |d, a, t| {
            // Appended, never replacing: every stance a participant took stays in the record.
            // Two devices creating the history at once each make a map (or a list); the view
            // reads every concurrent one, so neither device's stance is hidden.
            let history = match map_at(d, &e, keys::POSITION_HISTORY) {
                Some(h) => h,
                None => d.put_object(&e, keys::POSITION_HISTORY, ObjType::Map)?,
            };
            let list = match map_at(d, &history, &who.key()) {
                Some(l) => l,
                None => d.put_object(&history, who.key(), ObjType::List)?,
            };
            let at = d.length(&list);
            let p = d.insert_object(&list, at, ObjType::Map)?;
            d.put(&p, keys::STANCE, stance.as_str())?;
            if let Some(w) = words {
                d.put(&p, keys::WORDS, w)?;
            }
            stamp(d, &p, keys::RECORDED_BY, keys::AT, a, t)?;
            Ok(())
        })
    }

    /// Move a decision to a new status. `Agreed` is refused unless the person themself agreed.
    pub fn set_decision_status(
        &mut self,
        decision: &EntryId,
        status: DecisionStatus,
        note: Option<&str>,
    ) -> Result<(), ModelError> {
        let e = self.live_entry(keys::DECISIONS, "decision", decision)?;
        let positions = super::read::positions(&self.doc, &e);
        let person = positions
            .iter()
            .find(|p| p.participant.is(Participant::Person));
        let person_agrees = person.is_some_and(|p| p.stance.is(Stance::Agree));
        let person_disagrees = person.is_some_and(|p| p.stance.is(Stance::Disagree));
        let note = note.map(str::trim).filter(|n| !n.is_empty());
        match status {
            DecisionStatus::Agreed if !person_agrees => return Err(ModelError::PersonHasNotAgreed),
            DecisionStatus::TeamDecided if person.is_none() => {
                return Err(ModelError::TeamDecision(
                    "a decision the team takes while the person disagrees needs the person's \
                     position first, in their words: record it, then the team's decision",
                ))
            }
            DecisionStatus::TeamDecided if person_agrees => {
                return Err(ModelError::TeamDecision(
                    "the person agrees with this decision: record it as agreed",
                ))
            }
            DecisionStatus::TeamDecided if !person_disagrees => {
                return Err(ModelError::TeamDecision(
                    "the person has not said they disagree: a decision is taken by the team alone only while the person disagrees, in the open",
                ))
            }
            DecisionStatus::TeamDecided if note.is_none() => {
                return Err(ModelError::TeamDecision(
                    "say why the team is taking this decision while the person disagrees \
                     (for example, an assessment under the Mental Health Act)",
                ))
            }
            _ => {}
        }
        if let Some(n) = note {
            check_long("status note", n)?;
        }
        self.write(&format!("decision {}", status.as_str()), |d, a, t| {
            d.put(&e, keys::STATUS, status.as_str())?;
            let hist = obj_at(d, &e, keys::STATUS_HISTORY)?;
            let at = d.length(&hist);
            let h = d.insert_object(&hist, at, ObjType::Map)?;
            d.put(&h, keys::STATUS, status.as_str())?;
            if let Some(n) = note {
                d.put(&h, keys::NOTE, n)?;
            }
            stamp(d, &h, keys::BY, keys::AT, a, t)?;
            Ok(())
        })
    }

    /// Add an action to a decision, with an owner and an optional due date. Returns its id.
    pub fn add_action(
        &mut self,
        decision: &EntryId,
        text: &str,
        owner: Participant,
        due: Option<Date>,
    ) -> Result<EntryId, ModelError> {
        let e = self.live_entry(keys::DECISIONS, "decision", decision)?;
        let text = check_required("action", text)?;
        self.check_participant(&owner)?;
        let id = EntryId::random();
        self.write("add action", |d, a, t| {
            let actions = obj_at(d, &e, keys::ACTIONS)?;
            let act = new_entry(d, &actions, &id, a, t)?;
            d.put(&act, keys::TEXT, text.as_str())?;
            d.put(&act, keys::OWNER, owner.key())?;
            if let Some(due) = due {
                d.put(&act, keys::DUE, format_date(due))?;
            }
            d.put(&act, keys::DONE, false)?;
            Ok(id)
        })
    }

    /// Mark an action done (or not done).
    pub fn set_action_done(&mut self, action: &EntryId, done: bool) -> Result<(), ModelError> {
        let (obj, kind) = self.find_entry(action)?;
        if kind != "action" {
            // Only actions have a `done` field: writing it elsewhere would break the record.
            return Err(ModelError::UnknownEntry {
                kind: "action",
                id: action.to_string(),
            });
        }
        if self.in_error(&obj) {
            return Err(ModelError::EntryInError {
                kind: "action",
                id: action.to_string(),
            });
        }
        self.write("set action done", |d, _, _| {
            d.put(&obj, keys::DONE, done)?;
            Ok(())
        })
    }

    // ---------------------------------------------------------------- entered in error

    /// Mark any entry (network member, care-team membership, meeting, decision, action) as entered in
    /// error, with the reason. The entry stays in the record, readable, shown as struck through.
    pub fn mark_entered_in_error(
        &mut self,
        entry: &EntryId,
        reason: &str,
    ) -> Result<(), ModelError> {
        self.mark_error(entry, ErrorKind::Mistake, reason)
    }

    /// Mark an entry as entered in error of a kind. A mistake stays readable, struck through; an
    /// entry recorded on the wrong person's record keeps only the mark (its content is withheld from
    /// every screen, copy and export; automerge's history still holds the bytes). An entry marked
    /// a mistake can be marked again as on the wrong person's record, never the other way.
    pub fn mark_error(
        &mut self,
        entry: &EntryId,
        kind: ErrorKind,
        reason: &str,
    ) -> Result<(), ModelError> {
        let reason = check_required("reason", reason)?;
        let (obj, what_entry) = self.find_entry(entry)?;
        // A referral on the wrong person's record brought the wrong person's letter: it goes
        // with it, so nothing of the other person stays in this one's copy. Only a referral
        // letter that no other referral names (every value a device wrote counts): a document
        // of this person's, or another referral's letter, is never taken with it.
        let letter = (kind == ErrorKind::WrongPerson && what_entry == "referral")
            .then(|| get_str(&self.doc, &obj, keys::LETTER))
            .flatten()
            .and_then(|l| l.parse::<EntryId>().ok())
            .filter(|l| super::referrals::naming_letter(&self.doc, l, Some(&obj)) == 0)
            .and_then(|l| self.find_entry(&l).ok())
            .filter(|(o, k)| {
                *k == "attachment"
                    && get_str(&self.doc, o, keys::KIND).as_deref()
                        == Some(AttachmentKind::ReferralLetter.as_str())
            })
            .map(|(o, _)| o)
            .filter(|o| map_at(&self.doc, o, keys::WRONG_PERSON).is_none());
        // A mistake is the schema-1 mark; the wrong person's record has a mark of its own, added
        // beside an earlier mistake mark (marks are records as written: never replaced).
        let (key, what) = match kind {
            ErrorKind::Mistake => (keys::ENTERED_IN_ERROR, "mark entered in error"),
            ErrorKind::WrongPerson => (
                keys::WRONG_PERSON,
                "mark recorded on the wrong person's record",
            ),
        };
        let refused = match kind {
            ErrorKind::Mistake => self.in_error(&obj),
            ErrorKind::WrongPerson => map_at(&self.doc, &obj, keys::WRONG_PERSON).is_some(),
        };
        if refused {
            return Err(ModelError::AlreadyInError {
                id: entry.to_string(),
            });
        }
        self.write(what, |d, a, t| {
            for target in std::iter::once(&obj).chain(letter.as_ref()) {
                let mark = d.put_object(target, key, ObjType::Map)?;
                d.put(&mark, keys::REASON, reason.as_str())?;
                stamp(d, &mark, keys::BY, keys::AT, a, t)?;
            }
            Ok(())
        })
    }

    // ---------------------------------------------------------------- lookups

    /// Find an entry of any kind by id. Returns its object and a human name for its kind.
    pub(super) fn find_entry(&self, id: &EntryId) -> Result<(ObjId, &'static str), ModelError> {
        let key = id.to_string();
        for (coll, kind) in [
            (keys::NETWORK, "network member"),
            (keys::CARE_TEAM, "care team membership"),
            (keys::MEETINGS, "meeting"),
            (keys::DECISIONS, "decision"),
        ] {
            if let Some(c) = map_at(&self.doc, &ROOT, coll) {
                if let Some(e) = map_at(&self.doc, &c, &key) {
                    return Ok((e, kind));
                }
            }
        }
        for notes in super::team_notes::note_maps(&self.doc) {
            if let Some(e) = map_at(&self.doc, &notes, &key) {
                return Ok((e, "note"));
            }
        }
        for items in super::plan::plan_items(&self.doc) {
            if let Some(e) = map_at(&self.doc, &items, &key) {
                return Ok((e, "crisis plan item"));
            }
        }
        for files in super::attachments::attachment_maps(&self.doc) {
            if let Some(e) = map_at(&self.doc, &files, &key) {
                return Ok((e, "attachment"));
            }
        }
        for referrals in super::referrals::referral_maps(&self.doc) {
            if let Some(e) = map_at(&self.doc, &referrals, &key) {
                return Ok((e, "referral"));
            }
        }
        if let Some(decisions) = map_at(&self.doc, &ROOT, keys::DECISIONS) {
            for d in self.doc.keys(&decisions).collect::<Vec<_>>() {
                let action = map_at(&self.doc, &decisions, &d)
                    .and_then(|dec| map_at(&self.doc, &dec, keys::ACTIONS))
                    .and_then(|acts| map_at(&self.doc, &acts, &key));
                if let Some(a) = action {
                    return Ok((a, "action"));
                }
            }
        }
        Err(ModelError::UnknownEntry {
            kind: "entry",
            id: key,
        })
    }

    fn entry(&self, coll: &str, kind: &'static str, id: &EntryId) -> Result<ObjId, ModelError> {
        map_at(&self.doc, &ROOT, coll)
            .and_then(|c| map_at(&self.doc, &c, &id.to_string()))
            .ok_or(ModelError::UnknownEntry {
                kind,
                id: id.to_string(),
            })
    }

    pub(super) fn live_entry(
        &self,
        coll: &str,
        kind: &'static str,
        id: &EntryId,
    ) -> Result<ObjId, ModelError> {
        let e = self.entry(coll, kind, id)?;
        if self.in_error(&e) {
            return Err(ModelError::EntryInError {
                kind,
                id: id.to_string(),
            });
        }
        Ok(e)
    }

    pub(super) fn in_error(&self, obj: &ObjId) -> bool {
        map_at(&self.doc, obj, keys::ENTERED_IN_ERROR).is_some()
            || map_at(&self.doc, obj, keys::WRONG_PERSON).is_some()
    }

    pub(super) fn check_participant(&self, p: &Participant) -> Result<(), ModelError> {
        if let Participant::Member(id) = p {
            self.entry(keys::NETWORK, "network member", id)?;
        }
        Ok(())
    }
}

// -------------------------------------------------------------------- document helpers

/// The object under `key`, or an error naming the missing part of the record (a malformed
/// document; validation normally catches this first).
pub(super) fn obj_at(d: &impl ReadDoc, obj: &ObjId, key: &str) -> Result<ObjId, ModelError> {
    map_at(d, obj, key).ok_or_else(|| {
        ModelError::Schema(schema::SchemaError::single(
            key,
            "is missing from the record",
        ))
    })
}

/// A member of staff with their name checked as any name the record holds.
fn checked_staff(s: &StaffMember) -> Result<StaffMember, ModelError> {
    Ok(StaffMember {
        practitioner: s.practitioner,
        name: check_required("staff name", &s.name)?,
        role: s.role,
    })
}

/// One member of staff under a meeting's `staff`: their name and role then, in a map of its
/// own. Noted once: ticking or unticking them later keeps the role they were there in, whatever
/// the team list says by then.
fn put_staff(d: &mut AutoCommit, list: &ObjId, s: &StaffMember) -> Result<(), ModelError> {
    let key = s.practitioner.to_string();
    if map_at(d, list, &key).is_some() {
        return Ok(());
    }
    let entry = d.put_object(list, &key, ObjType::Map)?;
    d.put(&entry, keys::NAME, s.name.as_str())?;
    d.put(&entry, keys::ROLE, s.role.as_str())?;
    Ok(())
}

fn put_author(d: &mut AutoCommit, obj: &ObjId, a: &Author) -> Result<(), ModelError> {
    d.put(obj, keys::PRACTITIONER, a.practitioner.to_string())?;
    d.put(obj, keys::PRACTITIONER_NAME, a.practitioner_name.as_str())?;
    d.put(obj, keys::DEVICE, a.device.to_string())?;
    Ok(())
}

/// Write `who` and `when` onto an object (a position, a read-back, an error mark).
pub(super) fn stamp(
    d: &mut AutoCommit,
    obj: &ObjId,
    by_key: &str,
    at_key: &str,
    a: &Author,
    t: Instant,
) -> Result<(), ModelError> {
    let by = d.put_object(obj, by_key, ObjType::Map)?;
    put_author(d, &by, a)?;
    d.put(obj, at_key, ScalarValue::Timestamp(to_ms(t)))?;
    Ok(())
}

/// Create an entry map with its attribution.
pub(super) fn new_entry(
    d: &mut AutoCommit,
    coll: &ObjId,
    id: &EntryId,
    a: &Author,
    t: Instant,
) -> Result<ObjId, ModelError> {
    let e = d.put_object(coll, id.to_string(), ObjType::Map)?;
    stamp(d, &e, keys::CREATED_BY, keys::CREATED_AT, a, t)?;
    Ok(e)
}

/// Raise the document's schema version to this code's, never lower it: a change this code makes
/// may hold fields of its version, and a device that knows an older one must be told it is
/// reading a newer record rather than refuse the fields it does not know.
fn raise_schema_version(d: &mut AutoCommit) -> Result<(), ModelError> {
    let current = schema::schema_version(d).ok().flatten().unwrap_or(0);
    if current < SCHEMA_VERSION {
        d.put(ROOT, keys::SCHEMA_VERSION, SCHEMA_VERSION)?;
    }
    Ok(())
}

/// Make sure the document names the device behind the author's actor, so any reader can attribute
/// every change (including conflicting values) without asking the server.
fn register_actor(d: &mut AutoCommit, a: &Author) -> Result<(), ModelError> {
    let actors = obj_at(d, &ROOT, keys::ACTORS)?;
    let key = a.actor().to_hex_string();
    if map_at(d, &actors, &key).is_none() {
        let e = d.put_object(&actors, key, ObjType::Map)?;
        put_author(d, &e, a)?;
    }
    Ok(())
}
