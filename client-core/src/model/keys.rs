//! The keys of the case document, in one place: the record's shape as the validator
//! ([`super::schema`]), the writer ([`super::doc`]) and the readers name it.

#![allow(missing_docs)]
pub const SCHEMA_VERSION: &str = "schema_version";
pub const CASE_ID: &str = "case_id";
pub const TEAM_ID: &str = "team_id";
pub const CREATED_AT: &str = "created_at";
pub const CREATED_BY: &str = "created_by";
pub const ACTORS: &str = "actors";
pub const PERSON: &str = "person";
pub const NETWORK: &str = "network";
pub const CARE_TEAM: &str = "care_team";
pub const TIMELINE: &str = "timeline";
pub const MEETINGS: &str = "meetings";
pub const DECISIONS: &str = "decisions";
pub const PRACTITIONER: &str = "practitioner";
pub const PRACTITIONER_NAME: &str = "practitioner_name";
pub const DEVICE: &str = "device";
pub const NAME: &str = "name";
pub const ROLE: &str = "role";
pub const START: &str = "start";
pub const END: &str = "end";
pub const INVITED_BY: &str = "invited_by";
pub const JOINED: &str = "joined";
pub const LEFT: &str = "left";
pub const CONSENT: &str = "consent";
pub const STATE: &str = "state";
pub const DATE: &str = "date";
pub const RECORDED_BY: &str = "recorded_by";
pub const AT: &str = "at";
pub const BY: &str = "by";
pub const PLACE: &str = "place";
pub const ATTENDEES: &str = "attendees";
pub const NEXT_MEETING: &str = "next_meeting";
pub const READBACK: &str = "readback";
pub const RESPONSE: &str = "response";
pub const WORDS: &str = "words";
pub const TEXT: &str = "text";
pub const PROPOSED_BY: &str = "proposed_by";
pub const STATUS: &str = "status";
pub const STATUS_HISTORY: &str = "status_history";
pub const NOTE: &str = "note";
pub const POSITIONS: &str = "positions";
pub const STANCE: &str = "stance";
pub const ACTIONS: &str = "actions";
pub const OWNER: &str = "owner";
pub const DUE: &str = "due";
pub const DONE: &str = "done";
pub const ENTERED_IN_ERROR: &str = "entered_in_error";
pub const REASON: &str = "reason";
// Schema 2.
pub const KIND: &str = "kind";
pub const WRONG_PERSON: &str = "wrong_person";
pub const HEARD: &str = "heard";
pub const POSITION_HISTORY: &str = "position_history";
// Schema 3.
pub const STAFF: &str = "staff";
pub const CRISIS_PLAN: &str = "crisis_plan";
pub const ITEMS: &str = "items";
pub const SECTION: &str = "section";
pub const VERSIONS: &str = "versions";
pub const WORDS_OF: &str = "words_of";
pub const MEETING: &str = "meeting";
pub const REVIEWS: &str = "reviews";
pub const ON: &str = "on";
