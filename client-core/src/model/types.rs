//! The vocabulary of the record: the small enums and value types that fields hold.
//!
//! Each enum is stored in the document as its lowercase name, so the record reads sensibly when
//! exported or inspected with any automerge tool, and so the server can validate it without this
//! crate's types.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use super::ModelError;
use crate::{DeviceId, EntryId, PractitionerId};

macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident, $field:literal, { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every allowed value, in the order shown to users.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored (and displayed) name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The allowed values, for error messages.
            pub fn allowed() -> String {
                [$($text),+].join(", ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ModelError;
            fn from_str(s: &str) -> Result<Self, ModelError> {
                match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ModelError::InvalidChoice {
                        field: $field,
                        value: s.to_string(),
                        allowed: Self::allowed(),
                    }),
                }
            }
        }
    };
}

vocabulary!(
    /// How a network member relates to the person, broadly (the relationship itself is free text).
    Role, "role", {
        /// Family, by birth, marriage or choice.
        Family => "family",
        /// A friend.
        Friend => "friend",
        /// A professional (GP, social worker, teacher...).
        Professional => "professional",
        /// Someone with lived experience supporting the person.
        Peer => "peer",
        /// Anyone else the person chose.
        Other => "other",
    }
);

vocabulary!(
    /// Where a meeting took place.
    Place, "place", {
        /// At the person's home (or wherever they chose to be met).
        Home => "home",
        /// In clinic.
        Clinic => "clinic",
        /// By video.
        Online => "online",
        /// By telephone.
        Phone => "phone",
    }
);

vocabulary!(
    /// A practitioner's part in the care team.
    CareRole, "care role", {
        /// One of the continuing pair of practitioners.
        Practitioner => "practitioner",
        /// A peer support worker.
        PeerSupport => "peer_support",
        /// A psychiatrist working with the person (schema 3): not one of the continuing pair.
        Psychiatrist => "psychiatrist",
    }
);

vocabulary!(
    /// What a member of staff is, as the borough server's administrator registered them
    /// (schema 3): the team list every device receives through sync, and the capacity in which a
    /// member of staff attended a meeting.
    StaffRole, "staff role", {
        /// A practitioner (nurse, social worker, therapist...).
        Practitioner => "practitioner",
        /// A peer support worker.
        PeerSupport => "peer_support",
        /// A psychiatrist.
        Psychiatrist => "psychiatrist",
        /// An administrator.
        Administrator => "administrator",
    }
);

impl StaffRole {
    /// A member of staff whose presence counts as a practitioner's in the figures (the pair,
    /// "two or more practitioners"): practitioners and psychiatrists; peer support workers are
    /// counted on their own and administrators not at all.
    pub fn is_clinical(self) -> bool {
        matches!(self, StaffRole::Practitioner | StaffRole::Psychiatrist)
    }

    /// The part in a case's care team a member of staff of this role takes by default, if any
    /// (an administrator is not in a care team).
    pub fn care_role(self) -> Option<CareRole> {
        match self {
            StaffRole::Practitioner => Some(CareRole::Practitioner),
            StaffRole::PeerSupport => Some(CareRole::PeerSupport),
            StaffRole::Psychiatrist => Some(CareRole::Psychiatrist),
            StaffRole::Administrator => None,
        }
    }

    /// As a person reads it.
    pub fn label(self) -> &'static str {
        match self {
            StaffRole::Practitioner => "practitioner",
            StaffRole::PeerSupport => "peer support worker",
            StaffRole::Psychiatrist => "psychiatrist",
            StaffRole::Administrator => "administrator",
        }
    }
}

/// A member of staff as the borough server's team list names them: who, and in what role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffMember {
    /// Their practitioner id.
    pub practitioner: PractitionerId,
    /// Their name.
    pub name: String,
    /// Their role.
    pub role: StaffRole,
}

impl Stored<StaffRole> {
    /// As a person reads it; a role a newer version added, as written.
    pub fn label(&self) -> String {
        match self.known() {
            Some(r) => r.label().to_string(),
            None => self.to_string(),
        }
    }
}

impl Stored<TeamNoteKind> {
    /// As a person reads it; a kind a newer version added, as written.
    pub fn label(&self) -> String {
        match self.known() {
            Some(k) => k.label().to_string(),
            None => self.to_string(),
        }
    }
}

impl Stored<PlanSection> {
    /// The section's heading; a section a newer version added, as written.
    pub fn heading(&self) -> String {
        match self.known() {
            Some(s) => s.heading().to_string(),
            None => self.to_string(),
        }
    }
}

impl Stored<CareRole> {
    /// As a person reads it; a part a newer version added, as written.
    pub fn label(&self) -> String {
        match self.known() {
            Some(r) => r.label().to_string(),
            None => self.to_string(),
        }
    }
}

impl CareRole {
    /// The staff role this part in the care team stands for.
    pub fn staff_role(self) -> StaffRole {
        match self {
            CareRole::Practitioner => StaffRole::Practitioner,
            CareRole::PeerSupport => StaffRole::PeerSupport,
            CareRole::Psychiatrist => StaffRole::Psychiatrist,
        }
    }

    /// As a person reads it: the continuing pair are named as such.
    pub fn label(self) -> &'static str {
        match self {
            CareRole::Practitioner => "one of the pair",
            CareRole::PeerSupport => "peer support worker",
            CareRole::Psychiatrist => "psychiatrist",
        }
    }
}

vocabulary!(
    /// A note the team writes for safety (schema 3). Shown to the person unless withheld by two
    /// practitioners.
    TeamNoteKind, "note kind", {
        /// A home-visit safety note (lone working).
        HomeVisitSafety => "home_visit_safety",
        /// A safeguarding concern.
        Safeguarding => "safeguarding",
    }
);

impl TeamNoteKind {
    /// As a person reads it.
    pub fn label(self) -> &'static str {
        match self {
            TeamNoteKind::HomeVisitSafety => "Home-visit safety note",
            TeamNoteKind::Safeguarding => "Safeguarding concern",
        }
    }
}

vocabulary!(
    /// What an attached file is (schema 3).
    AttachmentKind, "attachment kind", {
        /// The letter that referred the person to the team.
        ReferralLetter => "referral_letter",
        /// A letter from or to the person's GP.
        GpLetter => "gp_letter",
        /// Another letter (a hospital, a school, a housing office).
        Letter => "letter",
        /// A document the person (or their network) brought.
        PersonsDocument => "persons_document",
        /// Anything else.
        Other => "other",
    }
);

impl AttachmentKind {
    /// As a person reads it.
    pub fn label(self) -> &'static str {
        match self {
            AttachmentKind::ReferralLetter => "Referral letter",
            AttachmentKind::GpLetter => "GP letter",
            AttachmentKind::Letter => "Letter",
            AttachmentKind::PersonsDocument => "Document the person brought",
            AttachmentKind::Other => "Other document",
        }
    }
}

vocabulary!(
    /// Where a referral came from (schema 4).
    ReferralSource, "referral source", {
        /// The person referred themselves.
        SelfReferral => "self",
        /// Their family, or someone close to them.
        Family => "family",
        /// Their GP.
        Gp => "gp",
        /// An emergency department (A&E).
        EmergencyDepartment => "emergency_department",
        /// Another team (a crisis team, a ward, a community team).
        OtherTeam => "other_team",
    }
);

impl ReferralSource {
    /// As a person reads it.
    pub fn label(self) -> &'static str {
        match self {
            ReferralSource::SelfReferral => "Self-referral",
            ReferralSource::Family => "Family",
            ReferralSource::Gp => "GP",
            ReferralSource::EmergencyDepartment => "A&E",
            ReferralSource::OtherTeam => "Another team",
        }
    }
}

vocabulary!(
    /// How soon a referral asks for the first meeting (schema 4): the NHS urgency bands for
    /// mental health referrals.
    Urgency, "urgency", {
        /// Seen within 4 hours.
        Emergency => "emergency",
        /// Seen within 24 hours.
        Urgent => "urgent",
        /// Seen within 4 weeks.
        Routine => "routine",
    }
);

impl Urgency {
    /// As a person reads it, with its time ("Urgent (24 hours)").
    pub fn label(self) -> &'static str {
        match self {
            Urgency::Emergency => "Emergency (4 hours)",
            Urgency::Urgent => "Urgent (24 hours)",
            Urgency::Routine => "Routine (4 weeks)",
        }
    }

    /// Hours from the referral by which the first meeting is due.
    pub fn hours(self) -> i64 {
        match self {
            Urgency::Emergency => 4,
            Urgency::Urgent => 24,
            Urgency::Routine => 28 * 24,
        }
    }
}

impl Stored<ReferralSource> {
    /// As a person reads it; a source a newer version added, as written.
    pub fn label(&self) -> String {
        match self.known() {
            Some(k) => k.label().to_string(),
            None => self.to_string(),
        }
    }
}

impl Stored<Urgency> {
    /// As a person reads it; an urgency a newer version added, as written.
    pub fn label(&self) -> String {
        match self.known() {
            Some(k) => k.label().to_string(),
            None => self.to_string(),
        }
    }
}

impl Stored<AttachmentKind> {
    /// As a person reads it; a kind a newer version added, as written.
    pub fn label(&self) -> String {
        match self.known() {
            Some(k) => k.label().to_string(),
            None => self.to_string(),
        }
    }
}

vocabulary!(
    /// What happened to a request to withhold a note from the person's copy (schema 3).
    WithholdingEvent, "withholding event", {
        /// A practitioner asked, with the reason.
        Ask => "ask",
        /// A second practitioner confirmed a request.
        Confirm => "confirm",
        /// A practitioner lifted a withholding, with the reason.
        Lift => "lift",
    }
);

vocabulary!(
    /// A section of the safety and crisis plan, after the PRSB crisis-plan standard (schema 3).
    PlanSection, "crisis plan section", {
        /// Early signs that a crisis may be coming.
        EarlySigns => "early_signs",
        /// What helps.
        WhatHelps => "what_helps",
        /// What does not help.
        WhatDoesNotHelp => "what_does_not_help",
        /// Who to call.
        WhoToCall => "who_to_call",
        /// Who not to call.
        WhoNotToCall => "who_not_to_call",
        /// The person's preferences if in crisis (where to go, who looks after the cat...).
        Preferences => "preferences",
        /// Practical matters.
        PracticalMatters => "practical_matters",
        /// Contacts out of hours.
        OutOfHours => "out_of_hours",
    }
);

impl PlanSection {
    /// The section's heading, as a person reads it.
    pub fn heading(self) -> &'static str {
        match self {
            PlanSection::EarlySigns => "Early signs",
            PlanSection::WhatHelps => "What helps",
            PlanSection::WhatDoesNotHelp => "What does not help",
            PlanSection::WhoToCall => "Who to call",
            PlanSection::WhoNotToCall => "Who not to call",
            PlanSection::Preferences => "Preferences if in crisis",
            PlanSection::PracticalMatters => "Practical matters",
            PlanSection::OutOfHours => "Contacts out of hours",
        }
    }
}

vocabulary!(
    /// A participant's position on a decision. Disagreement is recorded, never overwritten.
    Stance, "position", {
        /// Agrees.
        Agree => "agree",
        /// Disagrees.
        Disagree => "disagree",
        /// Not sure yet.
        Unsure => "unsure",
    }
);

vocabulary!(
    /// Where a decision stands.
    DecisionStatus, "decision status", {
        /// Proposed, positions being gathered.
        Proposed => "proposed",
        /// Agreed: only possible when the person themself agreed.
        Agreed => "agreed",
        /// Being looked at again.
        Revisited => "revisited",
        /// No longer pursued.
        Withdrawn => "withdrawn",
        /// Taken by the team in the open while the person disagrees (for example an assessment
        /// under the Mental Health Act), with why (schema 3). Every position stays in the record.
        TeamDecided => "team_decided",
    }
);

vocabulary!(
    /// Consent for a network member to receive the record.
    ConsentState, "consent", {
        /// The person gave consent.
        Given => "given",
        /// The person revoked consent.
        Revoked => "revoked",
    }
);

vocabulary!(
    /// A participant's answer at the end-of-meeting read-back.
    ReadbackResponse, "read-back response", {
        /// Confirms the notes as read back.
        Confirmed => "confirmed",
        /// Adds their own words to the notes.
        AddedWords => "added_words",
    }
);

vocabulary!(
    /// The free-text parts of a meeting, each an automerge Text so concurrent typing merges.
    NoteKind, "note kind", {
        /// The notes of the meeting, written with the network.
        Notes => "notes",
        /// The practitioners' reflections, spoken aloud in front of the network.
        Reflections => "reflections",
        /// What was agreed.
        Agreed => "agreed",
    }
);

vocabulary!(
    /// Why an entry was marked entered in error (schema 2). A mark without a kind is a mistake.
    ErrorKind, "kind of error", {
        /// Written wrongly: it stays in every copy, struck through, with the correction.
        Mistake => "mistake",
        /// Recorded on the wrong person's record: its content is another person's information, so
        /// it is withheld from every copy, export and screen; a tombstone says what was removed.
        WrongPerson => "wrong_person",
    }
);

vocabulary!(
    /// Where a meeting stands (schema 2). A meeting without a state was held (schema 1 recorded
    /// only meetings that took place).
    MeetingState, "meeting state", {
        /// Booked for the future.
        Planned => "planned",
        /// It took place.
        Held => "held",
        /// Called off before it took place.
        Cancelled => "cancelled",
        /// The person did not come and the network did not meet.
        DidNotAttend => "did_not_attend",
    }
);

vocabulary!(
    /// The dated milestones of an episode of care.
    TimelineField, "timeline field", {
        /// When the referral came in.
        Referral => "referral",
        /// First contact with the person.
        FirstContact => "first_contact",
        /// The first network meeting.
        FirstNetworkMeeting => "first_network_meeting",
        /// Closure of the episode.
        Closure => "closure",
    }
);

vocabulary!(
    /// The person's own details that can be set after the case is opened.
    PersonField, "person field", {
        /// Full name (required).
        Name => "name",
        /// The name they like to be called.
        PreferredName => "preferred_name",
        /// Pronouns.
        Pronouns => "pronouns",
        /// Date of birth, YYYY-MM-DD.
        DateOfBirth => "date_of_birth",
        /// NHS number, 10 digits with a valid check digit.
        NhsNumber => "nhs_number",
        /// Telephone.
        Phone => "phone",
        /// Email.
        Email => "email",
        /// Address.
        Address => "address",
        /// How they want to be contacted.
        ContactPreference => "contact_preference",
    }
);

vocabulary!(
    /// A network member's details that can be edited.
    MemberField, "member field", {
        /// Their name.
        Name => "name",
        /// Their relationship to the person, in the person's words.
        Relationship => "relationship",
        /// Broad role.
        Role => "role",
        /// Telephone.
        Phone => "phone",
        /// Email.
        Email => "email",
    }
);

/// Someone who takes part in a meeting or a decision: the person, one of their network, or a
/// practitioner. Stored as `person`, `member:<id>` or `practitioner:<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Participant {
    /// The person at the centre of the case.
    Person,
    /// A member of their network.
    Member(EntryId),
    /// A practitioner.
    Practitioner(PractitionerId),
}

impl Participant {
    /// The key under which this participant is stored.
    pub fn key(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Participant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Participant::Person => f.write_str("person"),
            Participant::Member(id) => write!(f, "member:{id}"),
            Participant::Practitioner(id) => write!(f, "practitioner:{id}"),
        }
    }
}

impl FromStr for Participant {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        let bad = || ModelError::InvalidChoice {
            field: "participant",
            value: s.to_string(),
            allowed: "person, member:<id>, practitioner:<id>".into(),
        };
        let s = s.trim();
        if s == "person" {
            return Ok(Participant::Person);
        }
        if let Some(id) = s.strip_prefix("member:") {
            return id.parse().map(Participant::Member).map_err(|_| bad());
        }
        if let Some(id) = s.strip_prefix("practitioner:") {
            return id.parse().map(Participant::Practitioner).map_err(|_| bad());
        }
        Err(bad())
    }
}

impl Serialize for Participant {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Participant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Who is writing: the practitioner and the device. Every change to a case carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Author {
    /// The practitioner.
    pub practitioner: PractitionerId,
    /// The practitioner's name as registered, for display.
    pub practitioner_name: String,
    /// The device the change was made on; also the automerge actor of its changes.
    pub device: DeviceId,
}

impl Author {
    /// The automerge actor id of this author's device. One actor per device, so the server can check
    /// that a change's actor belongs to an enrolled device.
    pub fn actor(&self) -> automerge::ActorId {
        actor_for_device(&self.device)
    }
}

/// The automerge actor id that a device writes with: the device id's 16 bytes.
pub fn actor_for_device(device: &DeviceId) -> automerge::ActorId {
    automerge::ActorId::from(device.0.as_bytes().as_slice())
}

/// The device a given actor id belongs to, if it is a device actor.
pub fn device_for_actor(actor: &automerge::ActorId) -> Option<DeviceId> {
    uuid::Uuid::from_slice(actor.to_bytes()).ok().map(DeviceId)
}

/// A calendar date, YYYY-MM-DD.
pub type Date = time::Date;

/// A point in time, stored as UTC milliseconds.
pub type Instant = time::OffsetDateTime;

/// Parse a YYYY-MM-DD date with a clear error naming the field.
pub fn parse_date(field: &'static str, input: &str) -> Result<Date, ModelError> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(input.trim(), &fmt).map_err(|_| ModelError::InvalidDate {
        field,
        input: input.to_string(),
        expected: "YYYY-MM-DD, e.g. 2026-03-14",
    })
}

/// Format a date as YYYY-MM-DD.
pub fn format_date(date: Date) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    date.format(&fmt).unwrap_or_default()
}

/// Parse a date and time a person typed: YYYY-MM-DDTHH:MM is UK local time (Europe/London, at
/// the offset in force on that date), a full RFC 3339 timestamp is taken as it says. The hour the
/// clocks skip is refused, and so is the hour that happens twice unless the offset says which (see
/// [`super::local_time`]).
pub fn parse_datetime(field: &'static str, input: &str) -> Result<Instant, ModelError> {
    super::LocalZone::uk().parse(field, input)
}

/// Format an instant as RFC 3339 (UTC).
pub fn format_instant(t: Instant) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Validate an NHS number: 10 digits (spaces allowed as `999 100 0003`), valid modulus-11 check
/// digit. Returns the canonical 10-digit form.
pub fn validate_nhs_number(input: &str) -> Result<String, ModelError> {
    let compact: String = input.chars().filter(|c| !c.is_whitespace()).collect();
    let err = |reason: &'static str| ModelError::InvalidNhsNumber {
        input: input.to_string(),
        reason,
    };
    if compact.len() != 10 || !compact.chars().all(|c| c.is_ascii_digit()) {
        return Err(err("an NHS number is exactly 10 digits"));
    }
    let number: nhs_number::NHSNumber = compact
        .parse()
        .map_err(|_| err("an NHS number is exactly 10 digits"))?;
    if !number.validate_check_digit() {
        return Err(err(
            "its check digit is wrong (modulus 11): check for a mistyped digit",
        ));
    }
    Ok(compact)
}

/// Who wrote something: practitioner and device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorView {
    /// Practitioner id.
    pub practitioner: String,
    /// Practitioner name.
    pub practitioner_name: String,
    /// Device id.
    pub device: String,
}

/// A participant's position on a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionView {
    /// Who.
    pub participant: Stored<Participant>,
    /// agree, disagree or unsure.
    pub stance: Stored<Stance>,
    /// Their own words.
    pub words: Option<String>,
    /// When.
    pub at: Option<String>,
    /// Who recorded it.
    pub recorded_by: Option<AuthorView>,
    /// The participant's earlier stances on this decision, oldest first (schema 2): a person
    /// changing their mind is kept, not overwritten.
    pub earlier: Vec<PositionView>,
}

/// A value of the record's vocabulary as a view reads it: one this version knows, nothing, or one
/// it does not know (written by a newer schema: older devices keep it and show it as written).
/// Serialised as the stored string, `""` for nothing, so the view's JSON is the record's own words.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Stored<T> {
    /// A value this version knows.
    Known(T),
    /// Nothing recorded, or withheld (an entry on the wrong person's record).
    #[default]
    Missing,
    /// A value this version does not know, exactly as stored.
    Unknown(String),
}

impl<T: FromStr + fmt::Display> Stored<T> {
    /// Reads a stored string. A value is known when it parses as validation parses it (so
    /// `Agree` is agreement and `member:<ID IN CAPITALS>` is that member, on every screen as in
    /// every check, and a member withheld is withheld under any spelling of their id); it is then
    /// shown as this version writes it. Anything else is kept and shown as written.
    pub fn read(s: Option<String>) -> Self {
        match s {
            None => Stored::Missing,
            Some(s) if s.is_empty() => Stored::Missing,
            Some(s) => match s.parse::<T>() {
                Ok(t) => Stored::Known(t),
                Err(_) => Stored::Unknown(s),
            },
        }
    }
}

impl<T: Copy + PartialEq> Stored<T> {
    /// The value, when this version knows it.
    pub fn known(&self) -> Option<T> {
        match self {
            Stored::Known(t) => Some(*t),
            _ => None,
        }
    }

    /// Whether it is this known value.
    pub fn is(&self, t: T) -> bool {
        self.known() == Some(t)
    }
}

impl<T> Stored<T> {
    /// Nothing is recorded.
    pub fn is_missing(&self) -> bool {
        matches!(self, Stored::Missing)
    }
}

impl<T: fmt::Display> fmt::Display for Stored<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stored::Known(t) => t.fmt(f),
            Stored::Missing => Ok(()),
            Stored::Unknown(s) => f.write_str(s),
        }
    }
}

impl<T: fmt::Display> Serialize for Stored<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de, T: FromStr + fmt::Display> Deserialize<'de> for Stored<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Stored::read(Some(String::deserialize(d)?)))
    }
}

/// The commit message every change carries: who and what, machine-readable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChangeNote {
    pub practitioner: PractitionerId,
    pub practitioner_name: String,
    pub device: DeviceId,
    pub what: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nhs_numbers_are_checked() {
        assert_eq!(validate_nhs_number("999 100 0003").unwrap(), "9991000003");
        assert!(validate_nhs_number("9991000004")
            .unwrap_err()
            .to_string()
            .contains("check digit"));
        assert!(validate_nhs_number("12345")
            .unwrap_err()
            .to_string()
            .contains("10 digits"));
        assert!(validate_nhs_number("99910000a3").is_err());
    }

    #[test]
    fn vocabulary_parses_and_names_choices() {
        assert_eq!("Home".parse::<Place>().unwrap(), Place::Home);
        assert_eq!(
            "peer-support".parse::<CareRole>().unwrap(),
            CareRole::PeerSupport
        );
        let err = "garden".parse::<Place>().unwrap_err().to_string();
        assert!(err.contains("home, clinic, online, phone"), "{err}");
    }

    #[test]
    fn participants_round_trip() {
        let m = Participant::Member(EntryId::random());
        assert_eq!(m.to_string().parse::<Participant>().unwrap(), m);
        assert_eq!(
            "person".parse::<Participant>().unwrap(),
            Participant::Person
        );
        assert!("someone".parse::<Participant>().is_err());
    }

    #[test]
    fn dates_are_checked() {
        assert!(parse_date("date of birth", "1990-02-30").is_err());
        assert_eq!(
            format_date(parse_date("d", "1990-02-28").unwrap()),
            "1990-02-28"
        );
        assert!(parse_datetime("at", "2026-03-14T10:30").is_ok());
        assert!(parse_datetime("at", "14/03/2026").is_err());
    }
}
