//! Naming who takes part, the way a practitioner would type it.
//!
//! The record stores participants as `person`, `member:<id>` or `practitioner:<id>`. At the command
//! line a user may also write `me` (the enrolled practitioner), a network member's id or a unique
//! prefix of it, a member's name, or the id prefix of a care-team membership (meaning that
//! practitioner). Resolving against the case's current view keeps this a matter of parsing: the
//! record itself still checks that the participant exists when the change is written.

use polyphony_core::model::{short, CaseView, Participant};
use polyphony_core::{EntryId, PractitionerId};

use crate::failure::Failure;

/// Shortest id prefix accepted, as for case and entry ids.
const MIN_PREFIX: usize = 4;

/// What `--member`, `--attendee`, `--owner` and `--by` accept, for help texts.
pub(crate) const HELP: &str =
    "`person`, `me`, a network member's name or id (a unique prefix is enough), or `practitioner:<id>`";

/// Resolve what the user typed into a participant of this case.
pub(crate) fn resolve(
    view: &CaseView,
    me: PractitionerId,
    given: &str,
) -> Result<Participant, Failure> {
    let g = given.trim();
    let lower = g.to_lowercase();
    match lower.as_str() {
        "person" | "the person" => return Ok(Participant::Person),
        "me" => return Ok(Participant::Practitioner(me)),
        _ => {}
    }
    if lower.starts_with("member:") || lower.starts_with("practitioner:") {
        return lower.parse().map_err(Failure::from);
    }
    let unknown = || {
        Failure::user(format!(
            "no one in this case matches '{g}': use {HELP} (see `polyphony case show {}`)",
            short(&view.case_id)
        ))
    };
    if lower.len() >= MIN_PREFIX {
        let members = view
            .network
            .iter()
            .filter(|m| m.meta.id.to_string().starts_with(&lower))
            .map(|m| Participant::Member(m.meta.id));
        let carers = view
            .care_team
            .iter()
            .filter(|c| c.meta.id.to_string().starts_with(&lower))
            .filter_map(|c| c.practitioner.known().map(Participant::Practitioner));
        let by_id: Vec<Participant> = members.chain(carers).collect();
        match by_id.as_slice() {
            [one] => return Ok(*one),
            [] => {}
            _ => return Err(ambiguous(g)),
        }
    }
    // The full name, or else the first word(s) of one name only ("Sam" for "Sam Smith").
    let live = || {
        view.network
            .iter()
            .filter(|m| m.meta.entered_in_error.is_none())
    };
    let mut by_name: Vec<EntryId> = live()
        .filter(|m| m.name.to_lowercase() == lower)
        .map(|m| m.meta.id)
        .collect();
    if by_name.is_empty() && !lower.is_empty() {
        by_name = live()
            .filter(|m| {
                let name = m.name.to_lowercase();
                name.strip_prefix(&lower)
                    .is_some_and(|rest| rest.starts_with(' '))
            })
            .map(|m| m.meta.id)
            .collect();
    }
    match by_name.as_slice() {
        [one] => Ok(Participant::Member(*one)),
        [] => Err(unknown()),
        _ => Err(ambiguous(g)),
    }
}

fn ambiguous(given: &str) -> Failure {
    Failure::user(format!(
        "'{given}' matches more than one person in this case: give more of the member's id"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use polyphony_core::model::view::{EntryMeta, MemberView};
    use polyphony_core::model::{Role, Stored};

    fn member(id: &str, name: &str) -> MemberView {
        MemberView {
            meta: EntryMeta {
                id: id.parse().unwrap(),
                created_at: None,
                created_by: None,
                entered_in_error: None,
            },
            name: name.into(),
            relationship: "sister".into(),
            role: Stored::Known(Role::Family),
            phone: None,
            email: None,
            invited_by: None,
            consent: vec![],
            consent_given: false,
            joined: None,
            left: None,
        }
    }

    fn view() -> CaseView {
        CaseView {
            case_id: String::new(),
            team_id: String::new(),
            created_at: None,
            created_by: None,
            person: Default::default(),
            network: vec![
                member("11111111-0000-4000-8000-000000000001", "Sam Smith"),
                member("11112222-0000-4000-8000-000000000002", "Alex Smith"),
            ],
            care_team: vec![],
            timeline: Default::default(),
            meetings: vec![],
            decisions: vec![],
            conflicts: vec![],
        }
    }

    #[test]
    fn names_ids_prefixes_and_words_resolve() {
        let me = PractitionerId::random();
        let v = view();
        assert_eq!(resolve(&v, me, "person").unwrap(), Participant::Person);
        assert_eq!(
            resolve(&v, me, "me").unwrap(),
            Participant::Practitioner(me)
        );
        let sam: Participant = "member:11111111-0000-4000-8000-000000000001"
            .parse()
            .unwrap();
        assert_eq!(resolve(&v, me, "sam smith").unwrap(), sam);
        assert_eq!(resolve(&v, me, "Sam").unwrap(), sam);
        assert!(
            resolve(&v, me, "Smith").is_err(),
            "a surname alone is not a name"
        );
        assert!(
            resolve(&v, me, "Sa").is_err(),
            "part of a word is not a name"
        );
        assert_eq!(resolve(&v, me, "11111111").unwrap(), sam);
        assert!(
            resolve(&v, me, "1111").is_err(),
            "a prefix of two members is ambiguous"
        );
        assert!(resolve(&v, me, "Jo").is_err());
        assert!(resolve(&v, me, "member:nonsense").is_err());
    }
}
