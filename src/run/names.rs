//! Run-time names: the run id, the names of the run's resources, and the labels they carry.
//!
//! Nothing here is in the store: one entry can run many times at once, so every value that two
//! runs must not share is chosen when a run starts.

use std::collections::BTreeMap;

use crate::manifest::BUNDLE_IP_TEMPLATE;

/// Label keys every resource of a run carries.
pub const LABEL_RUN: &str = "bottle.run";
pub const LABEL_HASH: &str = "bottle.hash";
/// The store's folder: `bottle down --all` with one store never touches another store's runs.
pub const LABEL_STORE: &str = "bottle.store";
/// What a container is to its run: `guest` or `bundle`.
pub const LABEL_ROLE: &str = "bottle.role";

/// A fresh run id: 10 hex digits from the clock, the pid and a counter, through blake3.
pub fn new_run_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = blake3::Hasher::new();
    h.update(&nanos.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.finalize().to_hex()[..10].to_string()
}

/// A number derived from the run id, to spread runs over the subnet pool.
pub fn seed_of(run_id: &str) -> u64 {
    let d = blake3::hash(run_id.as_bytes());
    u64::from_le_bytes(d.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Names of the run's resources; every one starts with `bottle-RUNID`.
#[derive(Debug, Clone)]
pub struct Names {
    pub run_id: String,
}

impl Names {
    pub fn new(run_id: &str) -> Names {
        Names {
            run_id: run_id.to_string(),
        }
    }
    fn name(&self, what: &str) -> String {
        format!("bottle-{}-{what}", self.run_id)
    }
    /// The guest's network: internal for a container guest, the bundle's only one for smolvm.
    pub fn guest_net(&self) -> String {
        self.name("net")
    }
    /// The bundle's way out (container guests only).
    pub fn outbound_net(&self) -> String {
        self.name("out")
    }
    pub fn bundle(&self) -> String {
        self.name("bundle")
    }
    pub fn guest(&self) -> String {
        self.name("guest")
    }
}

/// The guest env with [`BUNDLE_IP_TEMPLATE`] filled, as `(K, V)` entries in name order.
pub fn fill_guest_env(env: &BTreeMap<String, String>, bundle_ip: &str) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| (k.clone(), v.replace(BUNDLE_IP_TEMPLATE, bundle_ip)))
        .collect()
}

/// The label value naming a store: its absolute path.
pub fn store_label(store: &crate::store::Store) -> String {
    std::fs::canonicalize(store.root())
        .unwrap_or_else(|_| store.root().to_path_buf())
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_template() {
        let env = BTreeMap::from([
            ("A".to_string(), "http://{{bundle_ip}}:8888".to_string()),
            ("B".to_string(), "x".to_string()),
        ]);
        let f = fill_guest_env(&env, "10.0.0.2");
        assert_eq!(f[0].1, "http://10.0.0.2:8888");
        assert_eq!(f[1].1, "x");
    }

    #[test]
    fn run_ids_differ() {
        let a = new_run_id();
        let b = new_run_id();
        assert_eq!(a.len(), 10);
        assert_ne!(a, b);
    }
}
