//! The case as a FHIR R4 Bundle, for the trust's electronic record.
//!
//! The Bundle is of type `collection`: a case holds one Composition per meeting, and a FHIR
//! `document` Bundle is built around exactly one Composition. Every entry's `fullUrl` is
//! `urn:uuid:<id>` and every reference inside the Bundle points at one of those URNs, so the Bundle
//! stands on its own and a receiving system can assign its own server ids.
//!
//! Ids are stable: a resource that stands for one record entry takes that entry's id (the
//! EpisodeOfCare takes the case id, a RelatedPerson the network member's id, an Encounter the
//! meeting's id, a CarePlan the decision's id, a Practitioner or Device its own id), and every
//! other resource takes a name-based UUID derived from the entry it comes from. Exporting the same
//! record twice gives the same Bundle, so the trust can recognise an update. The record's own id is
//! also carried as an `identifier` (`urn:ietf:rfc:3986`, `urn:uuid:<id>`), which [`ids`] reads
//! back.
//!
//! Resources are built as JSON (there is no maintained Rust FHIR crate for R4: `fhir-sdk` covers
//! STU3, R4B and R5 only) and checked in the tests against HL7's R4 JSON schema. The mapping of
//! every part of the record, including what has no FHIR home, is tabled in `docs/EXPORTS.md`.

use crate::model::Urgency;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{plain, Access, Names};
use crate::model::view::{CaseView, DecisionView, EntryMeta, ErrorMark, MeetingView};
use crate::model::LocalZone;
use crate::model::{
    AuthorView, ConsentState, DecisionStatus, MeetingState, Participant, Place, ReadbackResponse,
    Role, Stance, Stored,
};
use crate::EntryId;

/// The NHS number identifier system.
pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
/// The identifier system for ids that are URIs (here `urn:uuid:` of the record's own ids).
pub const URI_SYSTEM: &str = "urn:ietf:rfc:3986";
/// Where UK Core profiles live; a profile's canonical URL is this followed by its name.
pub const UK_CORE: &str = "https://fhir.hl7.org.uk/StructureDefinition/";
/// The FHIR core extension that records each stakeholder's acceptance of a Goal.
pub const GOAL_ACCEPTANCE: &str = "http://hl7.org/fhir/StructureDefinition/goal-acceptance";

const V3_ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const V3_ROLE_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";
const V3_PARTICIPATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const V3_DATA_OPERATION: &str = "http://terminology.hl7.org/CodeSystem/v3-DataOperation";
const PROVENANCE_AGENT: &str = "http://terminology.hl7.org/CodeSystem/provenance-participant-type";
const DICOM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const XHTML: &str = "http://www.w3.org/1999/xhtml";
/// The extension on a Composition's attester naming the version of the notes they heard at the
/// read-back (the document's heads then, as change hashes).
pub const HEARD_VERSION: &str = "urn:polyphony:fhir:extension:heard-version";

/// The case as a FHIR R4 `collection` Bundle.
///
/// `accesses` are the reads the server audited (empty when the device has not synced); each
/// becomes an AuditEvent.
pub fn bundle(view: &CaseView, accesses: &[Access]) -> Value {
    let accesses = &super::access::without_withheld_names(view, accesses);
    let mut b = Builder::new(view);
    b.case();
    b.network();
    b.care_team();
    b.meetings();
    b.decisions();
    b.crisis_plan();
    b.team_notes();
    b.attachments();
    b.referrals();
    b.accesses(accesses);
    let case = rid(&view.case_id);
    prune(json!({
        "resourceType": "Bundle",
        "id": derived(&case, "Bundle"),
        "identifier": { "system": URI_SYSTEM, "value": urn(&derived(&case, "Bundle")) },
        "type": "collection",
        "entry": b.entries,
    }))
    .unwrap_or(Value::Null)
}

/// The record ids a Bundle carries: what an importer matches an earlier export by.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleIds {
    /// The case (from the EpisodeOfCare).
    pub case: Option<String>,
    /// Network members (from the RelatedPersons), in Bundle order.
    pub members: Vec<String>,
    /// Meetings (from the Encounters), in Bundle order.
    pub meetings: Vec<String>,
    /// Decisions (from the CarePlans), in Bundle order.
    pub decisions: Vec<String>,
}

/// Why a Bundle could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    /// The JSON is not a FHIR Bundle of the shape this module writes.
    #[error("this is not a FHIR Bundle that can be read back: {0}")]
    NotABundle(#[from] serde_json::Error),
}

#[derive(Deserialize)]
struct BundleIn {
    #[serde(rename = "resourceType")]
    resource_type: String,
    #[serde(default)]
    entry: Vec<EntryIn>,
}

#[derive(Deserialize)]
struct EntryIn {
    resource: ResourceIn,
}

#[derive(Deserialize)]
struct ResourceIn {
    #[serde(rename = "resourceType")]
    resource_type: String,
    #[serde(default)]
    identifier: Vec<IdentifierIn>,
}

#[derive(Deserialize)]
struct IdentifierIn {
    system: Option<String>,
    value: Option<String>,
}

/// Read the record's ids back out of a Bundle written by [`bundle`].
pub fn ids(bundle: &Value) -> Result<BundleIds, FhirError> {
    let b: BundleIn = serde_json::from_value(bundle.clone())?;
    if b.resource_type != "Bundle" {
        return Err(FhirError::NotABundle(serde::de::Error::custom(format!(
            "its resourceType is {}",
            b.resource_type
        ))));
    }
    let mut out = BundleIds::default();
    for e in b.entry {
        let record_id = e.resource.identifier.iter().find_map(|i| {
            (i.system.as_deref() == Some(URI_SYSTEM))
                .then(|| i.value.as_deref()?.strip_prefix("urn:uuid:"))
                .flatten()
                .map(str::to_string)
        });
        let Some(id) = record_id else { continue };
        match e.resource.resource_type.as_str() {
            // The case's own EpisodeOfCare comes first; later episodes (re-referrals) follow.
            "EpisodeOfCare" => {
                out.case.get_or_insert(id);
            }
            "RelatedPerson" => out.members.push(id),
            "Encounter" => out.meetings.push(id),
            "CarePlan" => out.decisions.push(id),
            _ => {}
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------ ids

/// `urn:uuid:<id>`.
fn urn(id: &str) -> String {
    format!("urn:uuid:{id}")
}

/// A name-based UUID for a resource derived from a record entry (UUID version 8: the first 16
/// bytes of SHA-256 over the entry id and the kind), so exports are reproducible.
fn derived(seed: &str, kind: &str) -> String {
    let digest = Sha256::digest(format!("polyphony-fhir\0{seed}\0{kind}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// A record id as a resource id: record ids are UUIDs already; anything else (a malformed
/// record) is mapped to a derived UUID so the Bundle stays valid.
fn rid(id: impl std::fmt::Display) -> String {
    let id = id.to_string();
    match uuid::Uuid::parse_str(&id) {
        Ok(u) => u.hyphenated().to_string(),
        Err(_) => derived(&id, "record-id"),
    }
}

/// The record's id as a FHIR Identifier.
fn identifier(id: impl std::fmt::Display) -> Value {
    json!({ "system": URI_SYSTEM, "value": urn(&rid(id)) })
}

/// The record's id as a resource's `identifier` list.
fn record_identifier(id: impl std::fmt::Display) -> Value {
    json!([identifier(id)])
}

fn profile(name: &str) -> Value {
    json!({ "profile": [format!("{UK_CORE}UKCore-{name}")] })
}

fn reference(id: &str, display: impl Into<String>) -> Value {
    json!({ "reference": urn(id), "display": display.into() })
}

/// An RFC 3339 time as a FHIR `instant` (which needs seconds and a zone), if it is one, at the
/// UK offset in force then: a reader's system shows the clock time the person saw.
fn instant(s: &str) -> Option<String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| LocalZone::uk().rfc3339(t))
}

/// A stored time as a FHIR `dateTime`: an instant at its UK offset (see [`instant`]); a plain
/// date (or anything else) as stored.
fn date_time(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(|v| instant(v).unwrap_or_else(|| v.to_string()))
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({ "coding": [{ "system": system, "code": code, "display": display }] })
}

/// A FHIR Narrative: one paragraph per line, escaped. `status` is `generated` when the narrative
/// only restates the structured data and `additional` when it says more.
fn narrative(status: &str, lines: &[String]) -> Value {
    let body: String = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("<p>{}</p>", super::escape_html(l)))
        .collect();
    if body.is_empty() {
        return Value::Null;
    }
    json!({ "status": status, "div": format!("<div xmlns=\"{XHTML}\">{body}</div>") })
}

/// Drop nulls, empty strings, empty arrays and empty objects: FHIR allows none of them, and
/// building resources with `json!` over optional fields produces them.
/// What an entry's error mark says, in every narrative: the correction of a mistake, or the
/// tombstone of an entry recorded on the wrong person's record. Empty when not in error.
fn error_line(meta: &EntryMeta, what: &str) -> String {
    meta.entered_in_error
        .as_ref()
        .map(|m| plain::error_note(m, what))
        .unwrap_or_default()
}

fn prune(v: Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::Array(a) => {
            let a: Vec<Value> = a.into_iter().filter_map(prune).collect();
            (!a.is_empty()).then_some(Value::Array(a))
        }
        Value::Object(o) => {
            let o: Map<String, Value> = o
                .into_iter()
                .filter_map(|(k, v)| prune(v).map(|v| (k, v)))
                .collect();
            (!o.is_empty()).then_some(Value::Object(o))
        }
        other => Some(other),
    }
}

/// The Encounter class of a meeting at `place`: (code, display).
fn encounter_class(place: &Stored<Place>) -> (&'static str, &'static str) {
    match place.known() {
        Some(Place::Home) => ("HH", "home health"),
        Some(Place::Online | Place::Phone) => ("VR", "virtual"),
        _ => ("AMB", "ambulatory"),
    }
}

/// A meeting's Composition sections: notes, reflections, what was agreed, the read-back
/// (`readback_lines`) and what changed after it, each only if it says something.
fn meeting_sections(m: &MeetingView, readback_lines: &[String]) -> Vec<Value> {
    let later: Vec<String> = m
        .changed_after_readback
        .iter()
        .map(plain::later_change)
        .collect();
    let section = |title: &str, text: &str| {
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        json!({ "title": title, "text": narrative("generated", &lines) })
    };
    [
        ("Notes", m.notes.as_str()),
        ("Reflections", m.reflections.as_str()),
        ("What was agreed", m.agreed.as_str()),
        ("Read-back", readback_lines.join("\n").as_str()),
        (
            "Changed after the meeting, not read back",
            later.join("\n").as_str(),
        ),
    ]
    .iter()
    .filter(|(_, t)| !t.trim().is_empty())
    .map(|(title, t)| section(title, t))
    .collect()
}

// ------------------------------------------------------------------------------- building

struct Builder<'a> {
    view: &'a CaseView,
    names: Names,
    entries: Vec<Value>,
    full_urls: BTreeSet<String>,
    patient: String,
    episode: String,
    care_team: String,
    team: String,
}

impl<'a> Builder<'a> {
    fn new(view: &'a CaseView) -> Self {
        let case = rid(&view.case_id);
        Builder {
            view,
            names: Names::of(view),
            entries: Vec::new(),
            full_urls: BTreeSet::new(),
            patient: derived(&case, "Patient"),
            care_team: derived(&case, "CareTeam"),
            team: rid(&view.team_id),
            episode: case,
        }
    }

    /// Add a resource once (Practitioners and Devices are met many times).
    fn add(&mut self, resource: Value) {
        let Some(id) = resource.get("id").and_then(Value::as_str) else {
            return;
        };
        let full_url = urn(id);
        if self.full_urls.insert(full_url.clone()) {
            if let Some(resource) = prune(resource) {
                self.entries
                    .push(json!({ "fullUrl": full_url, "resource": resource }));
            }
        }
    }

    fn patient_ref(&self) -> Value {
        reference(&self.patient, self.view.person.name.clone())
    }

    fn practitioner_ref(&mut self, id: &str, name: &str) -> Value {
        let pid = rid(id);
        self.add(json!({
            "resourceType": "Practitioner",
            "id": pid,
            "meta": profile("Practitioner"),
            "identifier": record_identifier(id),
            "name": [{ "text": name }],
        }));
        reference(&pid, name)
    }

    fn device_ref(&mut self, id: &str) -> Value {
        let did = rid(id);
        self.add(json!({
            "resourceType": "Device",
            "id": did,
            "meta": profile("Device"),
            "identifier": record_identifier(id),
            "type": { "text": "Polyphony device (an enrolled laptop or tablet)" },
        }));
        reference(&did, "Polyphony device")
    }

    fn author_ref(&mut self, a: &AuthorView) -> Value {
        let name = match a.practitioner.parse() {
            Ok(id) => self
                .names
                .name(&Stored::Known(Participant::Practitioner(id))),
            Err(_) => format!("a practitioner ({})", a.practitioner),
        };
        let name = if a.practitioner_name.is_empty() {
            name
        } else {
            a.practitioner_name.clone()
        };
        self.practitioner_ref(&a.practitioner, &name)
    }

    /// A participant as a Reference: the Patient, a RelatedPerson or a Practitioner.
    fn participant_ref(&mut self, who: &Stored<Participant>) -> Option<Value> {
        match who.known()? {
            Participant::Person => Some(self.patient_ref()),
            Participant::Member(id) => self
                .view
                .network
                .iter()
                .any(|m| m.meta.id == id)
                .then(|| reference(&rid(id), self.names.name(who))),
            Participant::Practitioner(id) => {
                let name = self.names.name(who);
                Some(self.practitioner_ref(&id.to_string(), &name))
            }
        }
    }

    /// A Provenance: who (practitioner, through which device) did what to which resources, when.
    fn provenance(
        &mut self,
        seed: &str,
        targets: Vec<Value>,
        at: Option<&str>,
        by: Option<&AuthorView>,
        activity: (&str, &str),
        reason: Option<String>,
    ) {
        let (Some(recorded), Some(by)) = (at.and_then(instant), by) else {
            return;
        };
        let practitioner = self.author_ref(by);
        let device = self.device_ref(&by.device);
        self.add(json!({
            "resourceType": "Provenance",
            "id": derived(seed, "Provenance"),
            "meta": profile("Provenance"),
            "target": targets,
            "recorded": recorded,
            "activity": coding(V3_DATA_OPERATION, activity.0, activity.1),
            "reason": reason.map(|r| json!([{ "text": r }])),
            "agent": [
                {
                    "type": coding(PROVENANCE_AGENT, "author", "Author"),
                    "who": practitioner,
                },
                { "who": device, "onBehalfOf": practitioner },
            ],
        }));
    }

    /// The Provenance of an entry's creation and, if it was marked entered in error, of that.
    fn entry_provenance(&mut self, meta: &EntryMeta, targets: Vec<Value>, what: &str) {
        self.provenance(
            &format!("{}:create", meta.id),
            targets.clone(),
            meta.created_at.as_deref(),
            meta.created_by.as_ref(),
            ("CREATE", "create"),
            None,
        );
        if let Some(mark) = &meta.entered_in_error {
            self.nullify(&meta.id, targets, mark, what);
        }
    }

    fn nullify(&mut self, id: &EntryId, targets: Vec<Value>, mark: &ErrorMark, what: &str) {
        self.provenance(
            &format!("{id}:nullify"),
            targets,
            mark.at.as_deref(),
            mark.by.as_ref(),
            ("NULLIFY", "nullify"),
            Some(format!("{what} entered in error: {}", mark.reason)),
        );
    }

    // --------------------------------------------------------------------------- the case

    fn case(&mut self) {
        let v = self.view;
        let p = &v.person;
        let mut extra = Vec::new();
        if let Some(pr) = &p.pronouns {
            extra.push(format!("Pronouns: {pr}"));
        }
        if let Some(c) = &p.contact_preference {
            extra.push(format!("How they want to be contacted: {c}"));
        }
        let mut names = vec![json!({ "use": "official", "text": p.name })];
        if let Some(n) = p.preferred_name.as_ref().filter(|n| **n != p.name) {
            names.push(json!({ "use": "usual", "text": n }));
        }
        self.add(json!({
            "resourceType": "Patient",
            "id": self.patient,
            "meta": profile("Patient"),
            "text": narrative("additional", &extra),
            "identifier": p.nhs_number.as_ref().map(|n| json!([{ "system": NHS_NUMBER_SYSTEM, "value": n }])),
            "name": names,
            "telecom": [
                p.phone.as_ref().map(|t| json!({ "system": "phone", "value": t })),
                p.email.as_ref().map(|e| json!({ "system": "email", "value": e })),
            ],
            "birthDate": p.date_of_birth,
            "address": p.address.as_ref().map(|a| json!([{ "text": a }])),
        }));

        self.add(json!({
            "resourceType": "Organization",
            "id": self.team,
            "meta": profile("Organization"),
            "identifier": record_identifier(&v.team_id),
            "active": true,
            "name": "Open Dialogue team",
        }));

        let tl = &v.timeline;
        let mut lines = vec![
            format!("Referral: {}", plain::datetime_or(&tl.referral)),
            format!("First contact: {}", plain::datetime_or(&tl.first_contact)),
            format!(
                "First network meeting: {}",
                plain::datetime_or(&tl.first_network_meeting)
            ),
        ];
        if let Some(c) = &tl.closure {
            lines.push(format!("Closure: {}", plain::datetime(c)));
        }
        for c in &v.conflicts {
            let values: Vec<String> = c.values.iter().map(|x| x.value.clone()).collect();
            lines.push(format!(
                "Unresolved: '{}' holds more than one value ({}); the last is exported.",
                c.field,
                values.join(" / ")
            ));
        }
        let episode = self.episode.clone();
        // The case's EpisodeOfCare is its first episode (a re-referral's are added with the
        // referrals); a case from before episodes reads as one, from the timeline.
        let first = v.episodes.first();
        let (start, end) = match first {
            Some(e) => (
                Some(e.received_at.clone()),
                e.closed_at.clone().or(e.ended_by_referral_at.clone()),
            ),
            None => (tl.referral.clone(), tl.closure.clone()),
        };
        self.add(json!({
            "resourceType": "EpisodeOfCare",
            "id": episode,
            "meta": profile("EpisodeOfCare"),
            "text": narrative("additional", &lines),
            "identifier": record_identifier(&v.case_id),
            "status": if end.is_some() { "finished" } else { "active" },
            "type": [{ "text": "Open Dialogue" }],
            "patient": self.patient_ref(),
            "managingOrganization": reference(&self.team, "Open Dialogue team"),
            "referralRequest": first
                .and_then(|e| e.referral)
                .map(|r| json!([reference(&rid(r), "Referral")])),
            "period": { "start": date_time(&start), "end": date_time(&end) },
            "team": [reference(&self.care_team, "Care team")],
        }));
        let targets = vec![reference(&episode, "Episode of care"), self.patient_ref()];
        self.provenance(
            &format!("{episode}:create"),
            targets,
            v.created_at.as_deref(),
            v.created_by.as_ref(),
            ("CREATE", "create"),
            None,
        );
    }

    // ------------------------------------------------------------------------ the network

    fn network(&mut self) {
        let v = self.view;
        for m in &v.network {
            let id = rid(m.meta.id);
            // The person's own words always; a code only where the broad role has an exact one.
            let mut relationship = match m.role.known() {
                Some(Role::Family) => coding(V3_ROLE_CODE, "FAMMEMB", "family member"),
                Some(Role::Friend) => coding(V3_ROLE_CODE, "FRND", "unrelated friend"),
                _ => json!({}),
            };
            relationship["text"] = json!(m.relationship);
            self.add(json!({
                "resourceType": "RelatedPerson",
                "id": id,
                "meta": profile("RelatedPerson"),
                "text": narrative("additional", &if m.meta.withheld() {
                    vec![error_line(&m.meta, "person in the network")]
                } else {
                    vec![
                        format!("In the network as: {} ({})", m.relationship, m.role),
                        m.invited_by.as_ref().map(|i| format!("Invited by {}", self.names.describe(i))).unwrap_or_default(),
                        error_line(&m.meta, "person in the network"),
                    ]
                }),
                "identifier": record_identifier(m.meta.id),
                "active": m.left.is_none() && m.meta.entered_in_error.is_none(),
                "patient": self.patient_ref(),
                "relationship": [relationship],
                "name": [{ "text": m.name }],
                "telecom": [
                    m.phone.as_ref().map(|t| json!({ "system": "phone", "value": t })),
                    m.email.as_ref().map(|e| json!({ "system": "email", "value": e })),
                ],
                "period": { "start": m.joined, "end": m.left },
            }));
            let me = reference(&id, m.name.clone());
            self.entry_provenance(&m.meta, vec![me.clone()], "network member");

            // Consent to receive the record: one Consent per event; the latest is active.
            let last = m.consent.len().saturating_sub(1);
            for (i, c) in m.consent.iter().enumerate() {
                let permit = c.state.is(ConsentState::Given);
                self.add(json!({
                    "resourceType": "Consent",
                    "id": derived(&id, &format!("Consent-{i}")),
                    "meta": profile("Consent"),
                    "status": if i == last { "active" } else { "inactive" },
                    "scope": coding("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy", "Privacy Consent"),
                    "category": [coding("http://loinc.org", "59284-0", "Patient Consent")],
                    "patient": self.patient_ref(),
                    "dateTime": c.date,
                    "performer": [self.patient_ref()],
                    "organization": [reference(&self.team, "Open Dialogue team")],
                    "policyRule": { "text": "Open Dialogue: the person chooses who in their network receives their record" },
                    "provision": {
                        "type": if permit { "permit" } else { "deny" },
                        "actor": [{
                            "role": coding(V3_PARTICIPATION, "IRCP", "information recipient"),
                            "reference": me,
                        }],
                    },
                }));
            }
        }
    }

    fn care_team(&mut self) {
        let v = self.view;
        let mut participants = Vec::new();
        let ct = reference(&self.care_team, "Care team");
        for c in &v.care_team {
            if c.meta.entered_in_error.is_none() {
                let member = self.practitioner_ref(&c.practitioner.to_string(), &c.name);
                let role = c.role.label();
                participants.push(json!({
                    "role": [{ "text": role }],
                    "member": member,
                    "period": { "start": c.start, "end": c.end },
                }));
            }
            self.entry_provenance(
                &c.meta,
                vec![ct.clone()],
                &format!("care-team membership of {}", c.name),
            );
        }
        self.add(json!({
            "resourceType": "CareTeam",
            "id": self.care_team,
            "meta": profile("CareTeam"),
            "status": if v.timeline.closure.is_some() { "inactive" } else { "active" },
            "name": format!("Open Dialogue care team for {}", v.person.name),
            "subject": self.patient_ref(),
            "participant": participants,
            "managingOrganization": [reference(&self.team, "Open Dialogue team")],
        }));
    }

    // ------------------------------------------------------------------------- meetings

    fn location_ref(&mut self, place: &Stored<Place>) -> Value {
        let written = place.to_string();
        let (name, kind) = match place.known() {
            Some(Place::Home) => (
                "Where the person lives (or chose to be met)",
                coding(V3_ROLE_CODE, "PTRES", "Patient's Residence"),
            ),
            Some(Place::Clinic) => ("Clinic", json!({ "text": "clinic" })),
            Some(Place::Online) => ("Video call", json!({ "text": "video call" })),
            Some(Place::Phone) => ("Telephone", json!({ "text": "telephone" })),
            None => (written.as_str(), json!({ "text": written })),
        };
        let id = derived(&self.episode, &format!("Location-{place}"));
        self.add(json!({
            "resourceType": "Location",
            "id": id,
            "meta": profile("Location"),
            "status": "active",
            "name": name,
            "mode": "kind",
            "type": [kind],
        }));
        reference(&id, name)
    }

    fn meetings(&mut self) {
        let v = self.view;
        for m in &v.meetings {
            self.meeting(m);
        }
    }

    /// One meeting: an Encounter, its notes as a Composition (attested by those who confirmed
    /// them at the read-back) and the Provenance of both. A meeting on the wrong person's record
    /// is an Encounter tombstone and its Provenance, nothing else.
    fn meeting(&mut self, m: &MeetingView) {
        let id = rid(m.meta.id);
        let class = encounter_class(&m.place);
        let participants: Vec<Value> = m
            .attendees
            .iter()
            .filter(|a| !a.is(Participant::Person))
            .filter_map(|a| {
                let r = self.participant_ref(a)?;
                let mut types = vec![coding(V3_PARTICIPATION, "PART", "Participation")];
                // A member of staff's role at the meeting (schema 3's note, else their part in
                // the care team), in words: UK Core has no value set for these roles.
                if let Some(Participant::Practitioner(id)) = a.known() {
                    if let Some(role) = self.view.role_at(m, id) {
                        types.push(json!({ "text": role.label() }));
                    }
                }
                Some(json!({ "type": types, "individual": r }))
            })
            .collect();
        if m.meta.withheld() {
            // Recorded on the wrong person's record: a tombstone, and nothing else of it.
            self.add(json!({
                "resourceType": "Encounter",
                "id": id,
                "meta": profile("Encounter"),
                "text": narrative("additional", &[error_line(&m.meta, "meeting")]),
                "identifier": record_identifier(m.meta.id),
                "status": "entered-in-error",
                "class": { "system": V3_ACT_CODE, "code": class.0, "display": class.1 },
                "subject": self.patient_ref(),
            }));
            self.entry_provenance(&m.meta, vec![reference(&id, "Network meeting")], "meeting");
            return;
        }
        let title = format!("Network meeting on {}", plain::datetime_or(&m.at));
        self.encounter(m, &id, class, participants, &title);
        let composition = derived(&id, "Composition");
        self.meeting_notes(m, &id, &composition, &title);
        let targets = vec![
            reference(&id, "Network meeting"),
            reference(&composition, "Meeting notes"),
        ];
        self.entry_provenance(&m.meta, targets, "meeting");
        for r in &m.readback {
            self.provenance(
                &format!("{id}:readback:{}", r.participant),
                vec![reference(&composition, "Meeting notes")],
                r.at.as_deref(),
                r.recorded_by.as_ref(),
                ("UPDATE", "revise"),
                Some(format!(
                    "read-back of {}",
                    self.names.describe(&r.participant)
                )),
            );
        }
    }

    /// A meeting (not withheld) as an Encounter, `id`, with its Location; `participants` are
    /// those present other than the person.
    fn encounter(
        &mut self,
        m: &MeetingView,
        id: &str,
        class: (&str, &str),
        participants: Vec<Value>,
        title: &str,
    ) {
        let present: Vec<String> = m.attendees.iter().map(|a| self.names.describe(a)).collect();
        let person_there = m.attendees.iter().any(|a| a.is(Participant::Person));
        let location = self.location_ref(&m.place);
        // Only a held meeting is a finished Encounter; a planned one is still to come.
        let status = match (m.meta.entered_in_error.is_some(), m.state.known()) {
            (true, _) => "entered-in-error",
            (false, Some(MeetingState::Held)) => "finished",
            (false, Some(MeetingState::Planned)) => "planned",
            (false, Some(MeetingState::Cancelled | MeetingState::DidNotAttend)) => "cancelled",
            (false, _) => "unknown",
        };
        self.add(json!({
            "resourceType": "Encounter",
            "id": id,
            "meta": profile("Encounter"),
            "text": narrative("additional", &[
                format!("{title}, {}.", plain::place(&m.place)),
                plain::meeting_heading(m),
                format!("Present: {}.", present.join(", ")),
                if person_there || !m.held() { String::new() } else { format!("{} was not present.", self.names.person()) },
                m.next_meeting.as_ref().map(|n| format!("Next meeting: {}", plain::datetime(n))).unwrap_or_default(),
                error_line(&m.meta, "meeting"),
            ]),
            "identifier": record_identifier(m.meta.id),
            "status": status,
            "class": { "system": V3_ACT_CODE, "code": class.0, "display": class.1 },
            "type": [{ "text": "Open Dialogue network meeting" }],
            "subject": self.patient_ref(),
            "episodeOfCare": [self.episode_of(m.at.as_deref())],
            "participant": participants,
            "period": { "start": date_time(&m.at) },
            "location": [{ "location": location }],
            "serviceProvider": reference(&self.team, "Open Dialogue team"),
        }));
    }

    /// A meeting's notes, reflections, agreements, read-back and later changes as the
    /// Composition `composition` of the Encounter `id`.
    fn meeting_notes(&mut self, m: &MeetingView, id: &str, composition: &str, title: &str) {
        let in_error = m.meta.entered_in_error.is_some();
        let (attesters, readback_lines) = self.readback(m);
        let sections = meeting_sections(m, &readback_lines);
        let author = match &m.meta.created_by {
            Some(a) => self.author_ref(a),
            None => reference(&self.team, "Open Dialogue team"),
        };
        self.add(json!({
            "resourceType": "Composition",
            "id": composition,
            "meta": profile("Composition"),
            "status": match (in_error, m.held()) {
                (true, _) => "entered-in-error",
                (false, true) => "final",
                (false, false) => "preliminary",
            },
            "type": {
                "coding": [{ "system": "http://loinc.org", "code": "11506-3", "display": "Progress note" }],
                "text": "Open Dialogue network meeting: notes and reflections",
            },
            "subject": self.patient_ref(),
            "encounter": reference(id, title),
            "date": date_time(&m.at).or_else(|| date_time(&m.meta.created_at)),
            "author": [author],
            "title": title,
            "attester": attesters,
            "custodian": reference(&self.team, "Open Dialogue team"),
            "section": sections,
        }));
    }

    /// The read-back: an attester for each person who confirmed the notes (with the version they
    /// heard), and a line for each answer.
    fn readback(&mut self, m: &MeetingView) -> (Vec<Value>, Vec<String>) {
        let mut attesters = Vec::new();
        let mut lines = Vec::new();
        for r in &m.readback {
            let who = self.names.describe(&r.participant);
            let confirmed = r.response.is(ReadbackResponse::Confirmed);
            match (confirmed, &r.words) {
                (true, _) => lines.push(format!("{who} confirmed the notes.")),
                (false, Some(w)) => lines.push(format!("{who} added: {w}")),
                (false, None) => lines.push(format!("{who}: {}", r.response)),
            }
            if confirmed {
                if let Some(party) = self.participant_ref(&r.participant) {
                    let mode =
                        if matches!(r.participant.known(), Some(Participant::Practitioner(_))) {
                            "professional"
                        } else {
                            "personal"
                        };
                    // The attester attests the version of the notes they heard.
                    let heard = r
                        .heard
                        .as_ref()
                        .map(|h| json!([{ "url": HEARD_VERSION, "valueString": h }]));
                    attesters.push(json!({ "extension": heard, "mode": mode, "time": date_time(&r.at), "party": party }));
                }
            }
        }
        (attesters, lines)
    }

    // ------------------------------------------------------------------------ team notes

    /// Each home-visit safety note and safeguarding concern as a `Flag` (category text
    /// "Safety"): the kind and the words as its code text, who wrote it as author; a note in
    /// error is `entered-in-error`, one on the wrong person's record holds only its mark. A note
    /// withheld from the person's copy says so, with who asked and who confirmed, in its
    /// narrative (the trust's record holds it in full).
    fn team_notes(&mut self) {
        let v = self.view;
        for n in &v.team_notes {
            let id = rid(n.meta.id);
            let kind = n.kind.label();
            let mut lines = vec![error_line(&n.meta, "note")];
            if n.meta.withheld() {
                self.add(json!({
                    "resourceType": "Flag",
                    "id": id,
                    "meta": profile("Flag"),
                    "text": narrative("additional", &lines),
                    "identifier": record_identifier(n.meta.id),
                    "status": "entered-in-error",
                    "code": { "text": "note" },
                    "subject": self.patient_ref(),
                }));
                continue;
            }
            if let Some(w) = n.in_force() {
                lines.push(format!(
                    "Withheld from the person's copy: asked by {} ({}), confirmed by {}.",
                    w.by.as_ref()
                        .map(|a| a.practitioner_name.as_str())
                        .unwrap_or("?"),
                    w.reason,
                    w.confirmed_by
                        .as_ref()
                        .map(|a| a.practitioner_name.as_str())
                        .unwrap_or("?")
                ));
            }
            let author = n.meta.created_by.as_ref().map(|a| self.author_ref(a));
            let status = if n.meta.entered_in_error.is_some() {
                "entered-in-error"
            } else {
                "active"
            };
            self.add(json!({
                "resourceType": "Flag",
                "id": id,
                "meta": profile("Flag"),
                "text": narrative("additional", &lines),
                "identifier": record_identifier(n.meta.id),
                "status": status,
                "category": [{ "text": "Safety" }],
                "code": { "text": format!("{kind}: {}", n.text) },
                "subject": self.patient_ref(),
                "period": { "start": date_time(&n.meta.created_at) },
                "author": author,
            }));
        }
    }

    // ------------------------------------------------------------------------ attachments

    /// Each attached letter or document as a `DocumentReference`: what it is (`type.text`), its
    /// title, who attached it and when, the meeting it belongs to, and the file described
    /// (`content.attachment`: media type, size, name). The bytes are not in the Bundle: they are
    /// kept beside the record, addressed by the SHA-256 in the second identifier. One in error
    /// is `entered-in-error`; one on the wrong person's record holds only its mark.
    fn attachments(&mut self) {
        let v = self.view;
        for a in &v.attachments {
            let id = rid(a.meta.id);
            let lines = vec![error_line(&a.meta, "document")];
            if a.meta.withheld() {
                self.add(json!({
                    "resourceType": "DocumentReference",
                    "id": id,
                    "meta": profile("DocumentReference"),
                    "text": narrative("additional", &lines),
                    "identifier": record_identifier(a.meta.id),
                    "status": "entered-in-error",
                    "subject": self.patient_ref(),
                    "content": [{ "attachment": { "title": "withheld" } }],
                }));
                continue;
            }
            let status = if a.meta.entered_in_error.is_some() {
                "entered-in-error"
            } else {
                "current"
            };
            let author = a.meta.created_by.as_ref().map(|x| vec![self.author_ref(x)]);
            let encounter = a
                .meeting
                .filter(|m| v.meetings.iter().any(|x| x.meta.id == *m))
                .map(|m| json!({ "encounter": [{ "reference": urn(&rid(m)) }] }));
            // One list of identifiers: the record's id, then the address of the bytes.
            let mut identifiers = vec![identifier(a.meta.id)];
            if let Some(h) = a.sha256 {
                identifiers.push(
                    json!({ "system": "urn:ietf:rfc:3986", "value": format!("urn:sha256:{h}") }),
                );
            }
            self.add(json!({
                "resourceType": "DocumentReference",
                "id": id,
                "meta": profile("DocumentReference"),
                "text": narrative("additional", &lines),
                "identifier": identifiers,
                "status": status,
                "type": { "text": a.kind.label() },
                "subject": self.patient_ref(),
                "date": a.meta.created_at.as_deref().and_then(instant),
                "author": author,
                "description": a.title,
                "content": [{
                    "attachment": {
                        "contentType": a.media_type,
                        "size": a.size,
                        "title": a.file_name,
                        "creation": date_time(&a.meta.created_at),
                    }
                }],
                "context": encounter,
            }));
        }
    }

    // ------------------------------------------------------------------------ referrals

    /// The EpisodeOfCare of an episode: the first is the case's own; a later one's id is derived
    /// from its referral's, so it stays the same from one export to the next. (A referral
    /// back-dated before the first, or the first marked in error, changes which episode is the
    /// case's own: that one then takes the case's id.)
    fn episode_id(&self, e: &crate::model::Episode) -> String {
        match e.referral {
            Some(r) if e.number > 1 => derived(&rid(r), "EpisodeOfCare"),
            _ => self.episode.clone(),
        }
    }

    /// A reference to the EpisodeOfCare a meeting at `at` belongs to.
    fn episode_of(&self, at: Option<&str>) -> Value {
        let at = at.and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        });
        let id = at
            .and_then(|at| self.view.episodes.iter().find(|e| e.holds(at)))
            .map_or_else(|| self.episode.clone(), |e| self.episode_id(e));
        reference(&id, "Episode of care")
    }

    /// Each referral as a UK Core `ServiceRequest`: when it came in (`authoredOn`), who referred
    /// (`requester`, by name), where from (the UK Core source-of-referral extension, as text),
    /// the reason in the referrer's words (`reasonCode.text`), its urgency (`priority`: an
    /// emergency is `stat`, urgent `urgent`, routine `routine`), the first meeting due
    /// (`occurrencePeriod.end`) and the letter (`supportingInfo`, its DocumentReference). A
    /// referral in error is `entered-in-error`; one on the wrong person's record holds only its
    /// mark. Each episode after the first (a re-referral) is an EpisodeOfCare of its own, its
    /// meetings' Encounters pointing to it.
    fn referrals(&mut self) {
        let v = self.view;
        for r in &v.referrals {
            let id = rid(r.meta.id);
            let lines = vec![error_line(&r.meta, "referral")];
            if r.meta.withheld() {
                self.add(json!({
                    "resourceType": "ServiceRequest",
                    "id": id,
                    "meta": profile("ServiceRequest"),
                    "text": narrative("additional", &lines),
                    "identifier": record_identifier(r.meta.id),
                    "status": "entered-in-error",
                    "intent": "order",
                    "subject": self.patient_ref(),
                }));
                continue;
            }
            let episode = v.episodes.iter().find(|e| e.referral == Some(r.meta.id));
            let status = match (&r.meta.entered_in_error, episode) {
                (Some(_), _) => "entered-in-error",
                (None, Some(e)) if e.awaiting_first_meeting().is_some() => "active",
                (None, _) => "completed",
            };
            let priority = match r.urgency.known() {
                Some(Urgency::Emergency) => Some("stat"),
                Some(Urgency::Urgent) => Some("urgent"),
                Some(Urgency::Routine) => Some("routine"),
                None => None,
            };
            let letter = r
                .letter
                .filter(|l| {
                    v.attachments
                        .iter()
                        .any(|a| a.meta.id == *l && !a.meta.withheld())
                })
                .map(|l| json!([reference(&rid(l), "Referral letter")]));
            self.add(json!({
                "resourceType": "ServiceRequest",
                "id": id,
                "meta": profile("ServiceRequest"),
                "text": narrative("additional", &lines),
                "extension": [{
                    "url": format!("{UK_CORE}Extension-UKCore-SourceOfServiceRequest"),
                    "valueCodeableConcept": { "text": r.source.label() },
                }],
                "identifier": record_identifier(r.meta.id),
                "status": status,
                "intent": "order",
                "category": [{ "text": "Referral to the Open Dialogue team" }],
                "priority": priority,
                "code": { "text": format!("Open Dialogue network meeting ({})", r.urgency.label()) },
                "subject": self.patient_ref(),
                "occurrencePeriod": episode.map(|e| json!({
                    "start": date_time(&r.received_at),
                    "end": date_time(&Some(e.first_meeting_due.clone())),
                })),
                "authoredOn": date_time(&r.received_at),
                "requester": r.referrer.as_ref().map(|who| json!({ "display": who })),
                "performer": [reference(&self.team, "Open Dialogue team")],
                "reasonCode": [{ "text": r.reason }],
                "supportingInfo": letter,
            }));
            self.entry_provenance(&r.meta, vec![reference(&id, "Referral")], "referral");
        }
        for e in v.episodes.iter().skip(1) {
            let end = e.closed_at.clone().or(e.ended_by_referral_at.clone());
            let id = self.episode_id(e);
            self.add(json!({
                "resourceType": "EpisodeOfCare",
                "id": id,
                "meta": profile("EpisodeOfCare"),
                "identifier": record_identifier(&id),
                "status": if end.is_some() { "finished" } else { "active" },
                "type": [{ "text": "Open Dialogue" }],
                "patient": self.patient_ref(),
                "managingOrganization": reference(&self.team, "Open Dialogue team"),
                "referralRequest": e.referral.map(|r| json!([reference(&rid(r), "Referral")])),
                "period": { "start": date_time(&Some(e.received_at.clone())), "end": date_time(&end) },
                "team": [reference(&self.care_team, "Care team")],
            }));
        }
    }

    // ------------------------------------------------------------------------ crisis plan

    /// The safety and crisis plan as one CarePlan (category: crisis plan): each item an activity
    /// whose detail is the section (`code.text`) and the words (`description`), with whose words
    /// they are and what they replaced as `progress` notes; an item in error is
    /// `entered-in-error`, and one on the wrong person's record holds only its mark. The review
    /// date is a note (FHIR has no element for it).
    fn crisis_plan(&mut self) {
        let v = self.view;
        let plan = &v.crisis_plan;
        if plan.items.is_empty() && plan.review_on.is_none() {
            return;
        }
        let id = derived(&v.case_id, "CrisisPlan");
        let mut activities = Vec::new();
        for item in &plan.items {
            activities.push(self.plan_activity(item));
            // Who wrote each item, and who marked it in error: as for every other entry.
            self.entry_provenance(
                &item.meta,
                vec![reference(&id, "Safety and crisis plan")],
                "crisis plan item",
            );
        }
        let mut notes = Vec::new();
        if let Some(on) = &plan.review_on {
            notes.push(json!({ "text": format!("To be reviewed with the person by {}.", plain::date(on)) }));
        }
        self.add(json!({
            "resourceType": "CarePlan",
            "id": id,
            "meta": profile("CarePlan"),
            "status": "active",
            "intent": "plan",
            "category": [{ "text": "Crisis plan" }],
            "title": "Safety and crisis plan",
            "description": format!("The safety and crisis plan, written with {} in their own words", self.names.person()),
            "subject": self.patient_ref(),
            "careTeam": [reference(&self.care_team, "Care team")],
            "activity": activities,
            "note": notes,
        }));
    }

    fn plan_activity(&mut self, item: &crate::model::PlanItemView) -> Value {
        if item.meta.withheld() {
            return json!({ "detail": {
                "status": "entered-in-error",
                "description": error_line(&item.meta, "crisis plan item"),
            }});
        }
        let section = item.section.heading();
        let mut progress = Vec::new();
        let versions = item.earlier.iter().chain(item.current.iter());
        for (n, x) in versions.enumerate() {
            let what = if n == item.earlier.len() {
                "Now"
            } else {
                "Before"
            };
            let written =
                x.by.as_ref()
                    .map(|a| format!("; written down by {}", a.practitioner_name))
                    .unwrap_or_default();
            let agreed = x
                .meeting
                .and_then(|m| self.view.meetings.iter().find(|mt| mt.meta.id == m))
                .map(|m| {
                    format!(
                        "; agreed at the network meeting on {} (Encounter {})",
                        plain::datetime_or(&m.at),
                        urn(&rid(m.meta.id))
                    )
                })
                .unwrap_or_default();
            let mut note = json!({
                "time": date_time(&x.at),
                "text": format!(
                    "{what}, in the words of {}{written}{agreed}: {}",
                    self.names.name(&x.words_of),
                    x.text
                ),
            });
            if let Some(r) = self.participant_ref(&x.words_of) {
                note["authorReference"] = r;
            }
            progress.push(note);
        }
        let mut detail = json!({
            "code": { "text": section },
            "status": if item.meta.entered_in_error.is_some() { "entered-in-error" } else { "in-progress" },
            "description": item.current.as_ref().map(|c| c.text.clone()).unwrap_or_default(),
        });
        if let Some(mark) = &item.meta.entered_in_error {
            detail["statusReason"] = json!({ "text": plain::error_note(mark, "crisis plan item") });
        }
        json!({ "progress": progress, "detail": detail })
    }

    // ------------------------------------------------------------------------ decisions

    fn decisions(&mut self) {
        let v = self.view;
        for d in &v.decisions {
            self.decision(d);
        }
    }

    /// One decision: a Goal holding everyone's positions, a CarePlan holding its status, notes and
    /// actions, and the Provenance of each change.
    fn decision(&mut self, d: &DecisionView) {
        let id = rid(d.meta.id);
        let goal = derived(&id, "Goal");
        let (plan_status, goal_status) = if d.meta.entered_in_error.is_some() {
            ("entered-in-error", "entered-in-error")
        } else {
            match d.status.known() {
                Some(DecisionStatus::Agreed) => ("active", "accepted"),
                // Carried out, but not accepted by the person: their disagreement stays in the
                // Goal's positions and the status note says why the team went ahead.
                Some(DecisionStatus::TeamDecided) => ("active", "active"),
                Some(DecisionStatus::Revisited) => ("on-hold", "on-hold"),
                Some(DecisionStatus::Withdrawn) => ("revoked", "cancelled"),
                _ => ("draft", "proposed"),
            }
        };
        let proposer = d.proposed_by.as_ref().and_then(|p| self.participant_ref(p));
        let text = if d.meta.withheld() {
            error_line(&d.meta, "decision")
        } else {
            d.text.clone()
        };
        let contributors = self.goal(d, &goal, goal_status, &text, &proposer);
        let notes = self.decision_notes(d);
        let activities = self.activities(d);
        self.add(json!({
            "resourceType": "CarePlan",
            "id": id,
            "meta": profile("CarePlan"),
            "identifier": record_identifier(d.meta.id),
            "status": plan_status,
            "intent": "plan",
            "title": "Decision made with the network",
            "description": text,
            "subject": self.patient_ref(),
            "created": d.meta.created_at,
            "author": proposer,
            "contributor": contributors,
            "careTeam": [reference(&self.care_team, "Care team")],
            "goal": [reference(&goal, text.clone())],
            "activity": activities,
            "note": notes,
        }));
        self.decision_provenance(d, &id, &goal);
    }

    /// A decision's Goal, `goal`: each participant's acceptance, and their words now and before.
    /// Returns those who took a position, the CarePlan's contributors.
    fn goal(
        &mut self,
        d: &DecisionView,
        goal: &str,
        status: &str,
        text: &str,
        proposer: &Option<Value>,
    ) -> Vec<Value> {
        let mut acceptance = Vec::new();
        let mut words = Vec::new();
        let mut contributors = Vec::new();
        for p in &d.positions {
            let Some(who) = self.participant_ref(&p.participant) else {
                continue;
            };
            let status = match p.stance.known() {
                Some(Stance::Agree) => "agree",
                Some(Stance::Disagree) => "disagree",
                _ => "pending",
            };
            acceptance.push(json!({
                "url": GOAL_ACCEPTANCE,
                "extension": [
                    { "url": "individual", "valueReference": who },
                    { "url": "status", "valueCode": status },
                ],
            }));
            // Earlier stances are kept: a person changing their mind is part of the record.
            for e in &p.earlier {
                let said = e
                    .words
                    .as_deref()
                    .map(|w| format!(": {w}"))
                    .unwrap_or_default();
                words.push(json!({
                    "authorReference": who,
                    "time": date_time(&e.at),
                    "text": format!("Earlier position ({}){said}", plain::stance_taken(&e.stance)),
                }));
            }
            if let Some(w) = &p.words {
                words.push(json!({ "authorReference": who, "time": date_time(&p.at), "text": w }));
            }
            contributors.push(who);
        }
        self.add(json!({
            "resourceType": "Goal",
            "id": goal,
            "extension": acceptance,
            "lifecycleStatus": status,
            "description": { "text": text },
            "subject": self.patient_ref(),
            "expressedBy": proposer,
            "note": words,
        }));
        contributors
    }

    /// A decision's CarePlan notes: each status with who set it and why, the warning of an
    /// agreement without the person, and its entered-in-error mark.
    fn decision_notes(&mut self, d: &DecisionView) -> Vec<Value> {
        let mut notes = Vec::new();
        for s in &d.status_history {
            let by = s.by.as_ref().map(|a| self.author_ref(a));
            let text = match &s.note {
                Some(n) => format!("Status: {}. {n}", s.status),
                None => format!("Status: {}.", s.status),
            };
            notes.push(json!({ "authorReference": by, "time": date_time(&s.at), "text": text }));
        }
        if d.agreed_without_person {
            notes.push(json!({
                "text": "Warning: marked agreed, but the person's current position is not 'agree' (two offline edits merged).",
            }));
        }
        if let Some(e) = &d.meta.entered_in_error {
            notes
                .push(json!({ "text": error_line(&d.meta, "decision"), "time": date_time(&e.at) }));
        }
        notes
    }

    /// A decision's actions as CarePlan activities.
    fn activities(&mut self, d: &DecisionView) -> Vec<Value> {
        let mut activities = Vec::new();
        for a in &d.actions {
            let performer = a.owner.as_ref().and_then(|o| self.participant_ref(o));
            let status = if a.meta.entered_in_error.is_some() {
                "entered-in-error"
            } else if a.done {
                "completed"
            } else {
                "not-started"
            };
            activities.push(json!({
                "id": rid(a.meta.id),
                "detail": {
                    "status": status,
                    "description": a.text,
                    "performer": [performer],
                    "scheduledPeriod": { "end": a.due },
                },
            }));
        }
        activities
    }

    /// The Provenance of a decision (the CarePlan `id` and Goal `goal`): its creation, each
    /// position, each change of status and each action.
    fn decision_provenance(&mut self, d: &DecisionView, id: &str, goal: &str) {
        let plan_ref = reference(id, "Decision");
        let goal_ref = reference(goal, "Decision (positions)");
        self.entry_provenance(
            &d.meta,
            vec![plan_ref.clone(), goal_ref.clone()],
            "decision",
        );
        for p in &d.positions {
            self.provenance(
                &format!("{id}:position:{}", p.participant),
                vec![goal_ref.clone()],
                p.at.as_deref(),
                p.recorded_by.as_ref(),
                ("UPDATE", "revise"),
                Some(format!(
                    "position of {}",
                    self.names.describe(&p.participant)
                )),
            );
        }
        // The first status is the proposal itself, covered by the creation's Provenance.
        for (i, s) in d.status_history.iter().enumerate().skip(1) {
            self.provenance(
                &format!("{id}:status:{i}"),
                vec![plan_ref.clone(), goal_ref.clone()],
                s.at.as_deref(),
                s.by.as_ref(),
                ("UPDATE", "revise"),
                Some(format!("status changed to {}", s.status)),
            );
        }
        for a in &d.actions {
            self.entry_provenance(
                &a.meta,
                vec![plan_ref.clone()],
                &format!("action '{}'", a.text),
            );
        }
    }

    // ------------------------------------------------------------------------- accesses

    fn accesses(&mut self, accesses: &[Access]) {
        for (i, a) in accesses.iter().enumerate() {
            let Some(recorded) = instant(&a.at) else {
                continue;
            };
            let device = a
                .device
                .as_deref()
                .filter(|d| uuid::Uuid::parse_str(d).is_ok())
                .map(|d| self.device_ref(d));
            let mut agents = vec![json!({ "who": { "display": a.who }, "requestor": true })];
            if let Some(d) = device {
                agents.push(json!({ "type": { "text": "device" }, "who": d, "requestor": false }));
            }
            self.add(json!({
                "resourceType": "AuditEvent",
                "id": derived(&self.episode, &format!("AuditEvent-{i}-{}", a.at)),
                "meta": profile("AuditEvent"),
                "type": { "system": DICOM, "code": "110110", "display": "Patient Record" },
                "action": "R",
                "recorded": recorded,
                "outcome": "0",
                "agent": agents,
                "source": { "observer": { "display": "Polyphony borough server audit log" } },
                "entity": [
                    { "what": reference(&self.episode, "Episode of care"), "description": a.what },
                    { "what": self.patient_ref() },
                ],
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testcase::{accesses, rich_case};

    fn resources<'a>(b: &'a Value, kind: &str) -> Vec<&'a Value> {
        b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .filter(|r| r["resourceType"] == kind)
            .collect()
    }

    fn by_id<'a>(b: &'a Value, id: &str) -> &'a Value {
        b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no resource {id}"))
    }

    #[test]
    fn export_fhir_bundle_has_every_part_of_the_case() {
        let rich = rich_case();
        let b = bundle(&rich.view, &accesses());
        assert_eq!(b["resourceType"], "Bundle");
        assert_eq!(b["type"], "collection");
        let patient = resources(&b, "Patient")[0];
        assert_eq!(patient["identifier"][0]["system"], NHS_NUMBER_SYSTEM);
        assert_eq!(patient["identifier"][0]["value"], "9991000003");
        assert_eq!(
            patient["meta"]["profile"][0],
            "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"
        );
        assert_eq!(resources(&b, "RelatedPerson").len(), 3);
        // Five meetings; the one on the wrong person's record is a tombstone Encounter without
        // notes, so four Compositions.
        assert_eq!(resources(&b, "Encounter").len(), 5);
        assert_eq!(resources(&b, "Composition").len(), 4);
        assert_eq!(resources(&b, "CarePlan").len(), 3);
        assert_eq!(resources(&b, "Goal").len(), 3);
        assert_eq!(resources(&b, "EpisodeOfCare").len(), 1);
        assert_eq!(resources(&b, "CareTeam").len(), 1);
        assert_eq!(resources(&b, "AuditEvent").len(), 2);
        assert_eq!(resources(&b, "Practitioner").len(), 2);
        assert_eq!(
            resources(&b, "Device").len(),
            3,
            "Sam's, Kit's and the audited device"
        );
        assert!(resources(&b, "Provenance").len() > 15);
        // Every fullUrl is the URN of its resource's id.
        for e in b["entry"].as_array().unwrap() {
            let id = e["resource"]["id"].as_str().unwrap();
            assert_eq!(e["fullUrl"], format!("urn:uuid:{id}"));
        }
    }

    #[test]
    fn export_fhir_marks_entries_in_error_with_fhirs_own_status() {
        let rich = rich_case();
        let b = bundle(&rich.view, &[]);
        let meeting = rich.wrong_meeting.to_string();
        assert_eq!(by_id(&b, &meeting)["status"], "entered-in-error");
        // A meeting still to come is a planned Encounter, never a finished one.
        let planned = by_id(&b, &rich.planned_meeting.to_string());
        assert_eq!(planned["status"], "planned");
        let absent = by_id(&b, &rich.without_person.to_string());
        assert!(absent["text"]["div"]
            .as_str()
            .unwrap()
            .contains("María was not present."));
        // It was recorded on the wrong person's record: no Composition carries its notes.
        let comp = derived(&meeting, "Composition");
        assert!(resources(&b, "Composition").iter().all(|c| c["id"] != comp));
        let decision = rich.wrong_decision.to_string();
        assert_eq!(by_id(&b, &decision)["status"], "entered-in-error");
        assert_eq!(
            by_id(&b, &derived(&decision, "Goal"))["lifecycleStatus"],
            "entered-in-error"
        );
        let member = by_id(&b, &rich.wrong_member.to_string());
        assert_eq!(member["active"], false);
        // ...and a NULLIFY Provenance says who marked it, when and why.
        let nullify: Vec<_> = resources(&b, "Provenance")
            .into_iter()
            .filter(|p| p["activity"]["coding"][0]["code"] == "NULLIFY")
            .collect();
        assert_eq!(nullify.len(), 3);
        assert!(nullify.iter().any(|p| p["reason"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Recorded on the wrong case")));
        // Live entries stay live.
        assert_eq!(
            by_id(&b, &rich.first_meeting.to_string())["status"],
            "finished"
        );
        assert_eq!(by_id(&b, &rich.walking.to_string())["status"], "active");
        assert_eq!(by_id(&b, &rich.withdrawn.to_string())["status"], "revoked");
        assert_eq!(
            by_id(&b, &rich.tom.to_string())["active"],
            false,
            "Tom left"
        );
        assert_eq!(by_id(&b, &rich.ana.to_string())["active"], true);
    }

    #[test]
    fn export_fhir_keeps_every_position_and_the_read_back() {
        let rich = rich_case();
        let b = bundle(&rich.view, &[]);
        let goal = by_id(&b, &derived(&rich.walking.to_string(), "Goal"));
        let acceptance = goal["extension"].as_array().unwrap();
        assert_eq!(acceptance.len(), 2);
        let stance_of = |who: &str| {
            acceptance
                .iter()
                .find(|e| e["extension"][0]["valueReference"]["reference"] == who)
                .map(|e| e["extension"][1]["valueCode"].clone())
        };
        let ana = format!("urn:uuid:{}", rich.ana);
        // Ana disagreed, then became unsure: her current stance, and the earlier one in a note.
        assert_eq!(stance_of(&ana), Some(json!("pending")));
        let words: Vec<&str> = goal["note"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["text"].as_str().unwrap())
            .collect();
        assert!(words.contains(&"Earlier position (disagreed): Too soon, she is exhausted"));
        assert!(words.contains(&"Maybe, if I go with her"));
        assert!(words.contains(&"I want to be outside with people"));

        let comp = by_id(&b, &derived(&rich.first_meeting.to_string(), "Composition"));
        let attesters = comp["attester"].as_array().unwrap();
        assert_eq!(
            attesters.len(),
            2,
            "the person and Sam confirmed; Ana added words"
        );
        assert!(attesters.iter().any(|a| a["mode"] == "personal"));
        assert!(attesters.iter().any(|a| a["mode"] == "professional"));
        // Each attests the version of the notes they heard.
        for a in attesters {
            assert_eq!(a["extension"][0]["url"], HEARD_VERSION);
            let heard = a["extension"][0]["valueString"].as_str().unwrap();
            assert!(crate::model::schema::is_heads(heard), "{heard}");
        }
        // Words written after the read-back are in their own section, never as confirmed.
        let later = comp["section"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["title"] == "Changed after the meeting, not read back")
            .expect("the later words' section");
        assert!(later.to_string().contains("She also mentioned her cat."));
        let text = comp.to_string();
        assert!(text.contains("She walks every morning with me."));
        assert!(
            text.contains("&lt;script&gt;"),
            "narrative is escaped XHTML"
        );
    }

    #[test]
    fn export_fhir_is_reproducible_and_ids_read_back() {
        let rich = rich_case();
        let audit = accesses();
        let a = bundle(&rich.view, &audit);
        let b = bundle(&rich.view, &audit);
        assert!(a == b, "the same record exports to the same Bundle");
        let got = ids(&a).unwrap();
        assert_eq!(got.case.as_deref(), Some(rich.view.case_id.as_str()));
        assert_eq!(got.members.len(), 3);
        assert!(got.members.contains(&rich.ana.to_string()));
        assert!(got.meetings.contains(&rich.second_meeting.to_string()));
        assert!(got.decisions.contains(&rich.walking.to_string()));
        assert!(ids(&json!({ "resourceType": "Patient" })).is_err());
        assert!(ids(&json!([1, 2])).is_err());
    }

    #[test]
    fn export_fhir_prunes_what_fhir_forbids() {
        assert_eq!(
            prune(json!({ "a": null, "b": "", "c": [], "d": {}, "e": [null, {"f": ""}], "g": 0 })),
            Some(json!({ "g": 0 }))
        );
        assert_eq!(rid("not-a-uuid"), derived("not-a-uuid", "record-id"));
        assert_eq!(instant("2026-03-14"), None);
    }
}
