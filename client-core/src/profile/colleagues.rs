//! The team list the borough server sends at every sync: who works in this practitioner's teams
//! and in what role, so a colleague can be ticked as present at a meeting or added to a care
//! team by name, and the record says in what capacity they were there.

use super::{Profile, ProfileError};
use crate::model::StaffMember;
use crate::sync::Colleague;
use crate::TeamId;

impl Profile {
    /// Everyone in this practitioner's teams (themselves included), with their roles, as the
    /// server last sent them, by name; empty before the first sync with a server that sends the
    /// list (or on a device enrolled on paper).
    pub fn colleagues(&self) -> Result<Vec<Colleague>, ProfileError> {
        Ok(self.books().colleagues()?)
    }

    /// The colleagues who work in `team`: whom a case of that team can name.
    pub fn colleagues_in(&self, team: TeamId) -> Result<Vec<Colleague>, ProfileError> {
        Ok(self
            .colleagues()?
            .into_iter()
            .filter(|c| c.teams.contains(&team))
            .collect())
    }

    /// Every colleague whose role this version knows, as a meeting notes staff
    /// ([`crate::model::CaseDoc::add_meeting_with`]).
    pub fn staff_members(&self) -> Result<Vec<StaffMember>, ProfileError> {
        Ok(self
            .colleagues()?
            .iter()
            .filter_map(Colleague::staff_member)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{StaffRole, Stored};
    use crate::store::{MemoryStore, Store};
    use crate::sync::Action;
    use crate::PractitionerId;
    use std::sync::Arc;

    fn colleague(name: &str, role: &str, teams: Vec<TeamId>) -> Colleague {
        Colleague {
            practitioner: PractitionerId::random(),
            name: name.into(),
            role: Stored::read(Some(role.into())),
            teams,
        }
    }

    /// The list a sync brings is kept in the store, replaced by the next one, read back after
    /// the profile is opened again, and filtered by team; a role a newer server added is listed
    /// but not offered as a staff role this version would write.
    #[test]
    fn the_team_list_is_kept_replaced_and_read_back() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let home = tempfile::tempdir().unwrap();
        let profile = Profile::from_store(home.path(), store.clone()).unwrap();
        assert!(profile.colleagues().unwrap().is_empty());
        let north = TeamId::random();
        let south = TeamId::random();
        let first = vec![
            colleague("Jo", "peer_support", vec![north]),
            colleague("Ade", "psychiatrist", vec![north, south]),
            colleague("Lee", "chaplain", vec![south]),
        ];
        profile
            .books()
            .record(&Action::Colleagues(first.clone()))
            .unwrap();
        let again = Profile::from_store(home.path(), store.clone()).unwrap();
        assert_eq!(again.colleagues().unwrap(), first);
        let in_north: Vec<String> = again
            .colleagues_in(north)
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(in_north, ["Jo", "Ade"]);
        let staff = again.staff_members().unwrap();
        assert_eq!(
            staff.len(),
            2,
            "a role this version does not know is not written"
        );
        assert_eq!(staff[0].role, StaffRole::PeerSupport);

        let second = vec![colleague("Jo", "practitioner", vec![north])];
        again
            .books()
            .record(&Action::Colleagues(second.clone()))
            .unwrap();
        let last = Profile::from_store(home.path(), store.clone()).unwrap();
        assert_eq!(last.colleagues().unwrap(), second);

        // A device that forgets its enrolment (revoked) forgets the team list with it.
        last.books().forget_enrolment().unwrap();
        let wiped = Profile::from_store(home.path(), store).unwrap();
        assert!(wiped.colleagues().unwrap().is_empty());
    }
}
