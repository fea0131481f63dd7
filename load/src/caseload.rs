//! Care-record-shaped documents, written through the real [`CaseDoc`] API.
//!
//! Every benchmark syncs the same shape of case, so numbers compare across workloads and against the
//! automerge-repo peer (whose driver, `automerge-repo-peer/driver.mjs`, builds the same shape in JS): a
//! person, 5 network members, 3 meetings with about 1.5 KB of notes each (written in three appends,
//! as a practitioner types them during and after the meeting), and 3 decisions with two positions
//! each. About 27 automerge changes per case. Text is real prose, varied per case, so compression and
//! text handling behave as they would with real notes.

use automerge::AutoCommit;
use polyphony_core::model::{
    Author, CaseDoc, NewCase, NewMeeting, NewMember, NoteKind, Participant, Place, Role, Stance,
};
use polyphony_core::{CaseId, EntryId, TeamId};

/// A small deterministic generator, so a run can be repeated exactly.
#[derive(Debug, Clone)]
pub struct Seed(u64);

impl Seed {
    /// A generator from a number.
    pub fn new(n: u64) -> Self {
        Seed(n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Pick one of `items`.
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
}

const GIVEN: &[&str] = &[
    "Maria", "Ade", "Siobhan", "Tomasz", "Priya", "Kwame", "Eleanor", "Yusuf", "Grace", "Dylan",
    "Aisha", "Callum", "Nia", "Oskar", "Ruth", "Imran",
];
const FAMILY: &[&str] = &[
    "Lopez", "Okafor", "Byrne", "Nowak", "Shah", "Mensah", "Hughes", "Ali", "Campbell", "Evans",
    "Rahman", "Fraser", "Jones", "Lind", "Cohen", "Patel",
];
const RELATIONSHIPS: &[(&str, Role)] = &[
    ("mother", Role::Family),
    ("brother", Role::Family),
    ("best friend from school", Role::Friend),
    ("GP", Role::Professional),
    ("neighbour who checks in", Role::Other),
];

/// Sentences of the kind written in network meeting notes: what was said, in people's own words.
const NOTES: &[&str] = &[
    "Maria said the nights have been the hardest part; she wakes around three and the thoughts start again. ",
    "Her mother described feeling shut out since the admission and wants to understand what happened in those weeks. ",
    "Ana said she is worried but did not want to speak over her sister, and asked that we slow down. ",
    "We talked about what a good week would look like, and Maria named walking the dog and seeing her cousin. ",
    "The GP joined by phone for twenty minutes and explained the medication review without pressing for a decision. ",
    "There was a long silence after the question about the future, and we let it stay rather than fill it. ",
    "Tomasz said the shouting at home has stopped since the last meeting, and that he noticed himself listening more. ",
    "The team reflected aloud that several voices in the room want the same thing but fear different things. ",
    "Maria asked that the word crisis not be used in the letter to her employer, and everyone agreed to that. ",
    "We agreed to meet again at home next Thursday, and that anyone can call the team before then if worried. ",
    "Her brother brought up money worries for the first time, and Maria said she had not known how bad it was. ",
    "The neighbour described the evenings she has seen Maria sitting outside and said she would keep knocking. ",
];

const DECISIONS: &[&str] = &[
    "Try a weekly walking group with her cousin",
    "Reduce the evening dose, reviewed in two weeks with the GP",
    "Write to the employer together, in Maria's words",
    "Meet at home rather than at the clinic for the next month",
    "Ana to be the first person called if things get worse",
];

const POSITION_WORDS: &[&str] = &[
    "I'd like to try it if I can stop when I want",
    "Too soon for me, but I won't stand in the way",
    "Yes, as long as we talk again before anything changes",
    "I'm not sure yet; I want to hear what the doctor thinks",
];

/// About `bytes` of meeting notes built from the sentences above.
pub fn notes(seed: &mut Seed, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 128);
    while s.len() < bytes {
        s.push_str(seed.pick(NOTES));
    }
    s.truncate(s.floor_char_boundary_compat(bytes));
    s
}

trait FloorBoundary {
    fn floor_char_boundary_compat(&self, at: usize) -> usize;
}

impl FloorBoundary for String {
    fn floor_char_boundary_compat(&self, at: usize) -> usize {
        let mut i = at.min(self.len());
        while !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

/// One case as a device would hold it after the first weeks of care.
pub fn care_record(
    case: CaseId,
    team: TeamId,
    author: &Author,
    seed: &mut Seed,
) -> anyhow::Result<AutoCommit> {
    let name = format!("{} {}", seed.pick(GIVEN), seed.pick(FAMILY));
    let mut doc = CaseDoc::create(
        case,
        team,
        NewCase {
            name,
            date_of_birth: Some(format!(
                "19{:02}-0{}-1{}",
                50 + seed.next_u64() % 50,
                1 + seed.next_u64() % 9,
                seed.next_u64() % 10
            )),
            ..Default::default()
        },
        author.clone(),
    )?;
    let mut members: Vec<EntryId> = Vec::new();
    for (relationship, role) in RELATIONSHIPS {
        members.push(doc.add_member(NewMember {
            name: format!("{} {}", seed.pick(GIVEN), seed.pick(FAMILY)),
            relationship: (*relationship).into(),
            role: Some(*role),
            ..Default::default()
        })?);
    }
    let start = time::macros::datetime!(2026-01-12 10:00 UTC);
    for week in 0..3i64 {
        let meeting = doc.add_meeting(NewMeeting {
            at: start + time::Duration::weeks(week),
            place: Place::Home,
            attendees: vec![
                Participant::Person,
                Participant::Member(members[(week as usize) % 5]),
                Participant::Member(members[(week as usize + 1) % 5]),
            ],
        })?;
        for _ in 0..3 {
            doc.append_text(&meeting, NoteKind::Notes, &notes(seed, 500))?;
        }
    }
    for (i, member) in members.iter().take(3).enumerate() {
        let decision = doc.propose_decision(seed.pick(DECISIONS), Participant::Person)?;
        doc.record_position(
            &decision,
            Participant::Person,
            Stance::Agree,
            Some(seed.pick(POSITION_WORDS)),
        )?;
        doc.record_position(
            &decision,
            Participant::Member(*member),
            if i == 1 {
                Stance::Disagree
            } else {
                Stance::Unsure
            },
            Some(seed.pick(POSITION_WORDS)),
        )?;
    }
    Ok(doc.into_automerge())
}

/// The kind of edit a practitioner makes to a case during a day offline: notes added to the latest
/// meeting (about 400 bytes) and a changed position on a decision. Two changes.
pub fn edit_offline(doc: &mut AutoCommit, author: &Author, seed: &mut Seed) -> anyhow::Result<()> {
    let mut cd = CaseDoc::from_automerge(std::mem::take(doc), Some(author.clone()))?;
    let view = cd.view();
    let meeting: EntryId = view
        .meetings
        .last()
        .ok_or_else(|| anyhow::anyhow!("a care record has meetings"))?
        .meta
        .id;
    let decision: EntryId = view
        .decisions
        .first()
        .ok_or_else(|| anyhow::anyhow!("a care record has decisions"))?
        .meta
        .id;
    cd.append_text(&meeting, NoteKind::Notes, &notes(seed, 400))?;
    cd.record_position(
        &decision,
        Participant::Person,
        Stance::Unsure,
        Some(seed.pick(POSITION_WORDS)),
    )?;
    *doc = cd.into_automerge();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use polyphony_core::{DeviceId, PractitionerId};

    #[test]
    fn a_care_record_has_the_documented_shape_and_size() {
        let author = Author {
            practitioner: PractitionerId::random(),
            practitioner_name: "Sam".into(),
            device: DeviceId::random(),
        };
        let mut seed = Seed::new(1);
        let mut doc =
            care_record(CaseId::random(), TeamId::random(), &author, &mut seed).expect("record");
        let view = CaseDoc::from_automerge(doc.clone(), None)
            .expect("valid")
            .view();
        assert_eq!(view.network.len(), 5);
        assert_eq!(view.meetings.len(), 3);
        assert_eq!(view.decisions.len(), 3);
        for m in &view.meetings {
            assert!((1400..=1600).contains(&m.notes.len()), "{}", m.notes.len());
        }
        assert!(view.decisions.iter().all(|d| d.positions.len() == 2));
        let before = doc.get_changes(&[]).len();
        edit_offline(&mut doc, &author, &mut seed).expect("edit");
        assert_eq!(doc.get_changes(&[]).len(), before + 2);
    }
}
