//! Where the app is found: the same origin after a restart.
//!
//! A tab left open when the app stopped (a crash, a flat battery, a kill) holds what the
//! practitioner was typing, and a page can only send to the origin it was loaded from,
//! `http://<label>.localhost:<port>` (see [`crate::auth`]). Had the app come back on a new port
//! or under a new name, that tab could never reach it and its words would be stranded. So the
//! app keeps the label and the port of its last run in the profile's encrypted store and comes
//! back at the same origin.
//!
//! If another program has taken the port meanwhile, the app refuses to start and says so
//! ([`crate::AppError::PortTaken`]) rather than silently moving: moving strands the tab without
//! a word. `--new-port` moves deliberately. The label stays secret as before: it is sealed in the
//! store, which only the passphrase opens, like the launch link's file is the owner's alone.

use polyphony_core::store::{Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::state::NS_APP;

/// The store key (in [`NS_APP`]) of the remembered address.
const KEY: &str = "address";

/// The origin of the app's last run on this profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    /// The host label under `.localhost` (hex, as [`crate::auth::Gate`] makes it).
    pub label: String,
    /// The port it listened on.
    pub port: u16,
}

impl Remembered {
    /// Whether this could have been made by the app: a stored value that fails is ignored.
    fn is_valid(&self) -> bool {
        self.port != 0
            && self.label.len() == 32
            && self.label.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

/// The address of the last run, if there is a usable one.
pub fn load(store: &dyn Store) -> Option<Remembered> {
    let bytes = match store.get_meta(NS_APP, KEY) {
        Ok(b) => b?,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the app's last address: using a new one");
            return None;
        }
    };
    serde_json::from_slice::<Remembered>(&bytes)
        .ok()
        .filter(Remembered::is_valid)
}

/// Remember `address` for the next run, durably: a crash right after start must not lose it.
pub fn save(store: &dyn Store, address: &Remembered) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(address).unwrap_or_default();
    store.put_meta(NS_APP, KEY, &bytes)?;
    store.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use polyphony_core::store::MemoryStore;

    #[test]
    fn an_address_is_remembered_and_a_damaged_one_ignored() {
        let store = MemoryStore::new();
        assert_eq!(load(&store), None);
        let a = Remembered {
            label: "0123456789abcdef0123456789abcdef".into(),
            port: 41234,
        };
        save(&store, &a).unwrap();
        assert_eq!(load(&store), Some(a));
        store
            .put_meta(NS_APP, KEY, b"{\"label\":\"x.evil\",\"port\":1}")
            .unwrap();
        assert_eq!(load(&store), None);
        store.put_meta(NS_APP, KEY, b"not json").unwrap();
        assert_eq!(load(&store), None);
    }
}
