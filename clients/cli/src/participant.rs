//! Naming who takes part, the way a practitioner would type it.
//!
//! The record stores participants as `person`, `member:<id>` or `practitioner:<id>`. At the command
//! line a user may also write `me` (the enrolled practitioner), a network member's id or a unique
//! prefix of it, a member's name, or the id prefix of a care-team membership (meaning that
//! practitioner). Resolving against the case's current view keeps this a matter of parsing: the
//! record itself still checks that the participant exists when the change is written.

use polyphony_core::model::{short, CaseView, Participant};
use polyphony_core::sync::Colleague;
use polyphony_core::PractitionerId;

use crate::failure::Failure;

/// Shortest id prefix accepted, as for case and entry ids.
const MIN_PREFIX: usize = 4;

/// What `--member`, `--attendee`, `--owner` and `--by` accept, for help texts.
pub(crate) const HELP: &str =
    "`person`, `me`, a network member's name or id (a unique prefix is enough), a colleague's name (see `polyphony team`), or `practitioner:<id>`";

/// Resolve what the user typed into a participant of this case: the person, a network member,
/// or a member of staff (`me`, a care-team membership's id, or a colleague of the case's team
/// by name, from the team list the server sent).
pub(crate) fn resolve(
    view: &CaseView,
    colleagues: &[Colleague],
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
    // The full name, or else the first word(s) of one name only ("Sam" for "Sam Smith"), among
    // the network and, apart, among the colleagues: a name that finds someone in both is
    // ambiguous, however closely it matches either ("Sam" for a colleague Sam and a member Sam
    // Smith), since picking the wrong one would put words or presence on the wrong person.
    let members: Vec<(String, Participant)> = view
        .network
        .iter()
        .filter(|m| m.meta.entered_in_error.is_none())
        .map(|m| (m.name.to_lowercase(), Participant::Member(m.meta.id)))
        .collect();
    let staff: Vec<(String, Participant)> = colleagues
        .iter()
        .map(|c| {
            (
                c.name.to_lowercase(),
                Participant::Practitioner(c.practitioner),
            )
        })
        .collect();
    match (by_name(&members, &lower), by_name(&staff, &lower)) {
        (Named::One(p), Named::None) | (Named::None, Named::One(p)) => Ok(p),
        (Named::None, Named::None) => Err(unknown()),
        _ => Err(ambiguous(g)),
    }
}

enum Named {
    None,
    One(Participant),
    Several,
}

/// Who among `named` the name `lower` names: the full name, or else the first word(s) of one.
fn by_name(named: &[(String, Participant)], lower: &str) -> Named {
    let mut found: Vec<Participant> = named
        .iter()
        .filter(|(name, _)| *name == lower)
        .map(|(_, p)| *p)
        .collect();
    if found.is_empty() && !lower.is_empty() {
        found = named
            .iter()
            .filter(|(name, _)| {
                name.strip_prefix(lower)
                    .is_some_and(|rest| rest.starts_with(' '))
            })
            .map(|(_, p)| *p)
            .collect();
    }
    found.dedup();
    match found.as_slice() {
        [] => Named::None,
        [one] => Named::One(*one),
        _ => Named::Several,
    }
}

fn ambiguous(given: &str) -> Failure {
    Failure::user(format!(
        "'{given}' matches more than one person in this case: give more of the name, the member's id, or `practitioner:<id>` (see `polyphony team`)"
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
            crisis_plan: Default::default(),
            team_notes: vec![],
            attachments: vec![],
            referrals: vec![],
            episodes: vec![],
        }
    }

    #[test]
    fn names_ids_prefixes_and_words_resolve() {
        let me = PractitionerId::random();
        let v = view();
        assert_eq!(resolve(&v, &[], me, "person").unwrap(), Participant::Person);
        assert_eq!(
            resolve(&v, &[], me, "me").unwrap(),
            Participant::Practitioner(me)
        );
        let sam: Participant = "member:11111111-0000-4000-8000-000000000001"
            .parse()
            .unwrap();
        assert_eq!(resolve(&v, &[], me, "sam smith").unwrap(), sam);
        assert_eq!(resolve(&v, &[], me, "Sam").unwrap(), sam);
        assert!(
            resolve(&v, &[], me, "Smith").is_err(),
            "a surname alone is not a name"
        );
        assert!(
            resolve(&v, &[], me, "Sa").is_err(),
            "part of a word is not a name"
        );
        assert_eq!(resolve(&v, &[], me, "11111111").unwrap(), sam);
        assert!(
            resolve(&v, &[], me, "1111").is_err(),
            "a prefix of two members is ambiguous"
        );
        assert!(resolve(&v, &[], me, "Jo").is_err());
        assert!(resolve(&v, &[], me, "member:nonsense").is_err());
    }

    #[test]
    fn colleagues_resolve_by_name_and_a_name_shared_with_a_member_is_ambiguous() {
        let me = PractitionerId::random();
        let v = view();
        let colleague = |name: &str| Colleague {
            practitioner: PractitionerId::random(),
            name: name.into(),
            role: Stored::Known(polyphony_core::model::StaffRole::PeerSupport),
            teams: vec![],
        };
        let team = [colleague("Jo Peer"), colleague("Alex Byrne")];
        let jo = Participant::Practitioner(team[0].practitioner);
        assert_eq!(resolve(&v, &team, me, "Jo Peer").unwrap(), jo);
        assert_eq!(resolve(&v, &team, me, "jo").unwrap(), jo);
        assert!(
            resolve(&v, &[], me, "Jo").is_err(),
            "not on this device's team list"
        );
        let e = resolve(&v, &team, me, "Alex").unwrap_err().to_string();
        assert!(e.contains("more than one"), "{e}");
        // An exact colleague's name is still ambiguous with a member whose name it begins.
        let sam = [colleague("Sam")];
        let e = resolve(&v, &sam, me, "Sam").unwrap_err().to_string();
        assert!(e.contains("more than one"), "{e}");
        assert_eq!(
            resolve(&v, &sam, me, "Sam Smith").unwrap(),
            "member:11111111-0000-4000-8000-000000000001"
                .parse()
                .unwrap()
        );
        assert_eq!(
            resolve(&v, &team, me, "Alex Byrne").unwrap(),
            Participant::Practitioner(team[1].practitioner)
        );
    }
}
