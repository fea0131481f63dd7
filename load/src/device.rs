//! A simulated practitioner's device: enrolled for real, syncing for real, holding its cases in
//! memory.
//!
//! It goes through the same enrolment exchange (a one-time code from the admin socket, a CSR, a
//! certificate from the borough CA) and the same [`ClientSession`] over QUIC with mutual TLS as the
//! app. What it leaves out is the device's own disk: received changes are counted, not written to an
//! encrypted sled store, so the numbers measure the server and the protocol, as the automerge-repo
//! peer's client driver (also in memory) does. Sync states are kept between sessions, as the app
//! keeps them, so a reconnect costs one small message per unchanged case.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use automerge::sync::State;
use automerge::{AutoCommit, ChangeHash};
use polyphony_core::identity::{DeviceKey, EnrolmentCode};
use polyphony_core::model::Author;
use polyphony_core::net::{self, SessionHost};
use polyphony_core::sync::{Action, ClientSession, DocSet, ErrorCode};
use polyphony_core::{CaseId, DeviceId, TeamId};

use crate::caseload::{self, Seed};

/// An enrolled device and the cases it holds.
pub struct Device {
    /// Signs the changes made here.
    pub author: Author,
    /// The team its cases belong to (its practitioner's first team).
    pub team: TeamId,
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: DeviceKey,
    /// The cases held, by id.
    pub docs: BTreeMap<CaseId, AutoCommit>,
    states: BTreeMap<CaseId, State>,
    /// The heads the server acknowledged as durable, per case.
    pub acked: BTreeMap<CaseId, Vec<ChangeHash>>,
}

/// What one sync session did.
#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    /// Wall time from connecting to the session's end (every case acknowledged and idle).
    pub elapsed: Duration,
    /// Cases in the session.
    pub cases: usize,
    /// Bytes of new changes received from the server.
    pub received_bytes: usize,
    /// Cases refused by the server (should be none).
    pub refused: Vec<(CaseId, String)>,
}

impl Device {
    /// Enrol a new device with `code` (from the admin socket) at `addr`.
    pub async fn enrol(addr: &str, code: &str, name: &str) -> Result<Device> {
        let code: EnrolmentCode = code.parse().context("enrolment code")?;
        let key = DeviceKey::generate()?;
        let id = DeviceId::random();
        // The server takes at most `MAX_ENROLMENTS_PER_WINDOW` enrolments a minute from one
        // address, and every simulated device enrols from this one: wait for the window (set-up
        // is not timed), as a trust enrolling 200 laptops would over days.
        let mut tries = 0;
        let enrolled = loop {
            match net::enrol(addr, &code, id, name, &key).await {
                Err(net::NetError::Refused { message, .. })
                    if message.contains("too many enrolment attempts") && tries < 60 =>
                {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
                other => break other.context("enrolment")?,
            }
        };
        let team = enrolled
            .teams
            .first()
            .ok_or_else(|| anyhow!("the practitioner has no team"))?
            .id;
        Ok(Device {
            author: Author {
                practitioner: enrolled.practitioner,
                practitioner_name: enrolled.practitioner_name,
                device: id,
            },
            team,
            ca: hex::decode(&enrolled.ca)?,
            cert: hex::decode(&enrolled.certificate)?,
            key,
            docs: BTreeMap::new(),
            states: BTreeMap::new(),
            acked: BTreeMap::new(),
        })
    }

    /// Open `n` new care records on this device (offline: nothing is sent).
    pub fn create_cases(&mut self, n: usize, seed: &mut Seed) -> Result<Vec<CaseId>> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let case = CaseId::random();
            let doc = caseload::care_record(case, self.team, &self.author, seed)?;
            self.docs.insert(case, doc);
            ids.push(case);
        }
        Ok(ids)
    }

    /// Edit `n` of the held cases offline (the first `n` in id order).
    pub fn edit_cases(&mut self, n: usize, seed: &mut Seed) -> Result<Vec<CaseId>> {
        let ids: Vec<CaseId> = self.docs.keys().take(n).copied().collect();
        for id in &ids {
            let doc = self.docs.get_mut(id).expect("listed above");
            caseload::edit_offline(doc, &self.author, seed)?;
        }
        Ok(ids)
    }

    /// Cases whose current heads the server has not acknowledged.
    pub fn unacknowledged(&mut self) -> usize {
        let mut n = 0;
        for (id, doc) in self.docs.iter_mut() {
            let heads = doc.get_heads();
            if self.acked.get(id).map(Vec::as_slice) != Some(&heads[..]) {
                n += 1;
            }
        }
        n
    }

    /// Run one sync session to its end (a one-shot sync, as the app's "sync now").
    pub async fn sync(&mut self, addr: &str) -> Result<SyncOutcome> {
        let started = Instant::now();
        let (endpoint, conn) = net::connect(addr, &self.ca, &self.cert, &self.key).await?;
        let mut session = ClientSession::new(false, Vec::new(), std::mem::take(&mut self.states));
        let mut host = Host {
            docs: &mut self.docs,
            acked: &mut self.acked,
            outcome: SyncOutcome::default(),
        };
        let ended = net::drive(addr, &conn, &mut session, &mut host, None).await;
        let mut outcome = host.outcome;
        outcome.elapsed = started.elapsed();
        // Saved as the app saves them (encoded), so a reconnect starts from what the app would have.
        self.states = session
            .states()
            .map(|(c, s)| (*c, crate::lower_bound::saved(s)))
            .collect();
        outcome.cases = self.states.len() + outcome.refused.len();
        endpoint.close(0u32.into(), b"");
        let (code, message) = ended?;
        if code != ErrorCode::Done {
            bail!("the session ended with {code:?}: {message}");
        }
        if let Some((case, why)) = outcome.refused.first() {
            bail!("the server refused case {case}: {why}");
        }
        Ok(outcome)
    }
}

struct Host<'a> {
    docs: &'a mut BTreeMap<CaseId, AutoCommit>,
    acked: &'a mut BTreeMap<CaseId, Vec<ChangeHash>>,
    outcome: SyncOutcome,
}

impl DocSet for Host<'_> {
    fn cases(&self) -> Vec<CaseId> {
        self.docs.keys().copied().collect()
    }
    fn doc(&mut self, case: &CaseId) -> Option<&mut AutoCommit> {
        self.docs.get_mut(case)
    }
    fn insert(&mut self, case: CaseId, doc: AutoCommit) {
        self.docs.insert(case, doc);
    }
    fn wipe(&mut self) -> Result<Vec<CaseId>, String> {
        self.docs.clear();
        Ok(Vec::new())
    }
}

impl SessionHost for Host<'_> {
    fn act(&mut self, action: &Action) -> Result<(), polyphony_core::store::StoreError> {
        match action {
            Action::Persist { chunk, .. } => self.outcome.received_bytes += chunk.len(),
            Action::Acknowledged { case, heads } => {
                self.acked.insert(*case, heads.clone());
            }
            Action::Refused { case, refusal } => {
                self.outcome.refused.push((*case, refusal.message.clone()))
            }
            _ => {}
        }
        Ok(())
    }
}
