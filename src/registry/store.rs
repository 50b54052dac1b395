//! Where registrations persist. The registry is the store's only user: it
//! writes a batch of changes and waits for it to be durable before it
//! acknowledges any of them.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, sync::Mutex};

use serde::{Deserialize, Serialize};

use crate::model::{
    CheckDefinition, Instance, InstanceId, Meta, ServiceName, TaggedAddresses, ValidationError,
};

/// What a store's backend (redb today, etcd later) reported, kept whole as
/// the error's source so that a door or a log can walk the chain.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A store failure. Any of these stops the write; none is retried silently.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened at start-up.
    #[error("store {}: {problem}", path.display())]
    Open { path: PathBuf, problem: OpenProblem },
    /// A write failed: nothing of its batch is durable.
    #[error("store write failed: {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: BackendError,
    },
    /// After a failed write the store is reopened before the next one; that
    /// reopen failed too (the disk is still full, say).
    #[error(
        "store write failed: {} cannot be reopened after a failed write: {source}; it is retried with the next write",
        path.display()
    )]
    Reopen {
        path: PathBuf,
        #[source]
        source: BackendError,
    },
    /// A read failed.
    #[error("store read failed: {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: BackendError,
    },
    /// The store cannot be used at all for `operation`: its lock was
    /// poisoned by a panic, or it is closed.
    #[error("store {operation} failed: {reason}")]
    Unavailable {
        operation: StoreOperation,
        reason: &'static str,
    },
    /// The shared store (etcd, in cluster mode) did not answer: nothing of
    /// the change is known to be written, and roster is otherwise up, so
    /// doors answer 503 and clients retry.
    #[error("etcd ({endpoints}) is unreachable: {source}")]
    Unreachable {
        endpoints: String,
        #[source]
        source: BackendError,
    },
    /// A TLS handshake with the shared store (etcd) failed on a
    /// certificate: one side does not trust the other's, or roster has
    /// none where etcd wants one. Out of reach like [`Self::Unreachable`],
    /// but settings are the likely cause: a starting node stops at once.
    #[error(
        "etcd ({endpoints}) and roster do not trust each other's TLS certificates: {reason}; check cluster.tls_ca_file (the CA of etcd's certificate) and cluster.tls_cert_file and tls_key_file (roster's own, if etcd asks for one)"
    )]
    Untrusted { endpoints: String, reason: String },
    /// The shared store (etcd) answered, but refused roster for who it is:
    /// its credentials, or their permissions. Retrying will not help until
    /// an operator acts on `reason`.
    #[error("etcd ({endpoints}) refused roster: {reason}")]
    Refused { endpoints: String, reason: String },
    /// The thread that ran the store call panicked or was cancelled; the
    /// text is the runtime's own account of it.
    #[error("{0}")]
    Crashed(String),
    /// A record that does not decode: the file is damaged or from an
    /// incompatible version.
    #[error(
        "store {}: record {key:?} is unreadable ({source}); roster will not replace the file: move it aside and restore a backup with `roster import`, or start with an empty data directory",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

impl StoreError {
    /// Whether the store was only out of reach (a retry may succeed), as
    /// opposed to refusing or failing the write.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Untrusted { .. })
    }

    /// Whether a TLS handshake failed on a certificate
    /// ([`Self::Untrusted`]).
    pub fn is_untrusted(&self) -> bool {
        matches!(self, Self::Untrusted { .. })
    }
}

/// Which way a store call went, for [`StoreError::Unavailable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOperation {
    Read,
    Write,
}

impl std::fmt::Display for StoreOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Write => "write",
        })
    }
}

/// Why a store could not be opened, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum OpenProblem {
    #[error("cannot create the data directory: {0}")]
    CreateDirectory(#[source] std::io::Error),
    #[error("cannot open the lock file: {0}")]
    OpenLockFile(#[source] std::io::Error),
    #[error("cannot lock: {0}")]
    Lock(#[source] std::io::Error),
    #[error("is in use by another roster process; stop it, or give this one its own --data-dir")]
    InUse,
    /// The backend refused to open the file.
    #[error("cannot be opened: {0}. It may be damaged: {DAMAGED_ADVICE}")]
    Unopenable(#[source] BackendError),
    /// The backend panicked reading the file; the panic's message.
    #[error("is damaged ({0}). {DAMAGED_ADVICE}")]
    Damaged(String),
}

/// What to do about a store file roster cannot read.
pub(crate) const DAMAGED_ADVICE: &str = "roster will not replace it: move it aside and restore a backup \
     with `roster import`, or start with an empty data directory";

/// An instance as it is written to disk and to exports: plain data, so the
/// format is stable across versions and readable by people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredInstance {
    pub service: String,
    pub id: String,
    pub address: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_as_given: Option<String>,
    pub port: u16,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub meta: Meta,
    pub weight: u16,
    pub priority: u16,
    #[serde(default)]
    pub checks: Vec<CheckDefinition>,
    /// `Some(reason)` while in maintenance.
    #[serde(default)]
    pub maintenance: Option<String>,
    #[serde(default)]
    pub create_index: u64,
    /// Consul's `EnableTagOverride`; absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable_tag_override: bool,
    /// Consul's service `TaggedAddresses`; absent when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tagged_addresses: Option<TaggedAddresses>,
}

impl StoredInstance {
    pub fn new(instance: &Instance, maintenance: Option<String>, create_index: u64) -> Self {
        Self {
            service: instance.service.as_str().to_owned(),
            id: instance.id.as_str().to_owned(),
            address: instance.address,
            address_as_given: instance.address_as_given.clone(),
            port: instance.port,
            tags: instance.tags.clone(),
            meta: instance.meta.clone(),
            weight: instance.weight,
            priority: instance.priority,
            checks: instance.checks.clone(),
            maintenance,
            create_index,
            enable_tag_override: instance.enable_tag_override,
            tagged_addresses: instance.tagged_addresses.as_deref().cloned(),
        }
    }

    /// Rebuilds the instance, validated by the same rules as every API
    /// registration ([`Instance::validate`]), so that an import, a store
    /// written by another version, or (later) a change from another node
    /// cannot smuggle in something the API would refuse.
    pub fn to_instance(&self) -> Result<Instance, ValidationError> {
        let instance = Instance {
            service: ServiceName::parse(&self.service)?,
            id: InstanceId::parse(&self.id)?,
            address: self.address,
            address_as_given: self.address_as_given.clone(),
            port: self.port,
            tags: crate::model::validate_tags(self.tags.clone())?,
            meta: self.meta.clone(),
            weight: self.weight,
            priority: self.priority,
            checks: self.checks.clone(),
            enable_tag_override: self.enable_tag_override,
            tagged_addresses: self.tagged_addresses.clone().map(Box::new),
        };
        instance.validate()?;
        if let Some(reason) = &self.maintenance {
            crate::model::validate_maintenance_reason(reason)
                .map_err(|e| ValidationError::new("maintenance", e.message))?;
        }
        Ok(instance)
    }
}

/// One durable change.
#[derive(Clone, Debug)]
pub enum Mutation {
    Put(StoredInstance),
    Delete { id: String },
}

/// Everything a store holds, as loaded at start-up.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// A ceiling above every registry index handed out before the stop.
    pub index: u64,
    pub instances: Vec<StoredInstance>,
}

/// The message a panic in a store's code carried, if it carried text:
/// the registry reports such a panic as an error, with this as its reason.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> Option<&str> {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
}

/// Durable storage for the registry. `commit` must not return before the
/// batch is on stable storage: the registry acknowledges writes after it.
/// The `index` it stores is the registry's index ceiling (see the writer).
pub trait Store: Send + Sync + 'static {
    fn load(&self) -> Result<Loaded, StoreError>;
    fn commit(&self, batch: &[Mutation], index: u64) -> Result<(), StoreError>;
    /// Whether a commit waits for the disk. The writer holds a batch open
    /// for company (the registry's `GroupCommit`) only where that saves
    /// syncs; on a store that keeps nothing it would only add latency.
    fn commit_syncs(&self) -> bool {
        true
    }
}

/// A store that keeps nothing across restarts; for tests and `--data-dir ""`.
#[derive(Default)]
pub struct MemoryStore {
    /// Guarded by a std mutex: held only for map updates, never across await.
    contents: Mutex<(u64, BTreeMap<String, StoredInstance>)>,
}

impl Store for MemoryStore {
    fn commit_syncs(&self) -> bool {
        false
    }

    fn load(&self) -> Result<Loaded, StoreError> {
        let contents = self.contents.lock().map_err(|_| StoreError::Unavailable {
            operation: StoreOperation::Read,
            reason: "memory store poisoned",
        })?;
        Ok(Loaded {
            index: contents.0,
            instances: contents.1.values().cloned().collect(),
        })
    }

    fn commit(&self, batch: &[Mutation], index: u64) -> Result<(), StoreError> {
        let mut contents = self.contents.lock().map_err(|_| StoreError::Unavailable {
            operation: StoreOperation::Write,
            reason: "memory store poisoned",
        })?;
        contents.0 = index;
        for mutation in batch {
            match mutation {
                Mutation::Put(instance) => {
                    contents.1.insert(instance.id.clone(), instance.clone());
                }
                Mutation::Delete { id } => {
                    contents.1.remove(id);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{CheckKind, GoDuration, Status};

    fn check(id: &str, kind: CheckKind) -> CheckDefinition {
        CheckDefinition {
            id: id.into(),
            name: format!("{id} check"),
            notes: "see the runbook".into(),
            kind,
            success_before_passing: 2,
            failures_before_critical: 3,
            deregister_critical_after: Some(GoDuration(Duration::from_secs(90))),
            initial_status: Status::Warning,
        }
    }

    /// An instance with every field set and one check of each kind, in
    /// maintenance: what the store and exports hold at their fullest.
    pub(crate) fn representative() -> StoredInstance {
        StoredInstance {
            service: "Hello Service".into(),
            id: "web-1".into(),
            address: "10.0.0.1".parse().expect("ip"),
            address_as_given: Some("web-1.example".into()),
            port: 8080,
            tags: vec!["primary".into(), "v2".into()],
            meta: [("version".to_owned(), "1.2".to_owned())].into(),
            weight: 5,
            priority: 1,
            checks: vec![
                check(
                    "http",
                    CheckKind::Http {
                        url: "http://127.0.0.1:8080/health".into(),
                        method: "GET".into(),
                        headers: vec![("X-Probe".into(), "roster".into())],
                        interval: GoDuration(Duration::from_secs(10)),
                        timeout: GoDuration(Duration::from_millis(1500)),
                        tls_skip_verify: false,
                        tls_server_name: String::new(),
                    },
                ),
                check(
                    "tcp",
                    CheckKind::Tcp {
                        address: "127.0.0.1:8080".into(),
                        interval: GoDuration(Duration::from_secs(5)),
                        timeout: GoDuration(Duration::from_secs(1)),
                    },
                ),
                check(
                    "ttl",
                    CheckKind::Ttl {
                        ttl: GoDuration(Duration::from_secs(30)),
                    },
                ),
            ],
            maintenance: Some("deploy".into()),
            create_index: 42,
            enable_tag_override: false,
            tagged_addresses: None,
        }
    }

    /// The stored form of an instance, byte for byte. The store and every
    /// export hold this JSON, and `StoredInstance` embeds model types
    /// (`CheckDefinition`, `CheckKind`, `Status`, `GoDuration`), so renaming
    /// one of those would silently change the format that older files and
    /// other versions read. If this fails, the rename changed the format:
    /// keep the old name on the wire (`#[serde(rename = ...)]`) instead.
    pub(crate) const REPRESENTATIVE_JSON: &str = concat!(
        r#"{"service":"Hello Service","id":"web-1","address":"10.0.0.1","#,
        r#""address_as_given":"web-1.example","port":8080,"tags":["primary","v2"],"#,
        r#""meta":{"version":"1.2"},"weight":5,"priority":1,"checks":["#,
        r#"{"id":"http","name":"http check","notes":"see the runbook","#,
        r#""kind":{"http":{"url":"http://127.0.0.1:8080/health","method":"GET","#,
        r#""headers":[["X-Probe","roster"]],"interval":"10s","timeout":"1.5s"}},"#,
        r#""success_before_passing":2,"failures_before_critical":3,"#,
        r#""deregister_critical_after":"1m30s","initial_status":"warning"},"#,
        r#"{"id":"tcp","name":"tcp check","notes":"see the runbook","#,
        r#""kind":{"tcp":{"address":"127.0.0.1:8080","interval":"5s","timeout":"1s"}},"#,
        r#""success_before_passing":2,"failures_before_critical":3,"#,
        r#""deregister_critical_after":"1m30s","initial_status":"warning"},"#,
        r#"{"id":"ttl","name":"ttl check","notes":"see the runbook","#,
        r#""kind":{"ttl":{"ttl":"30s"}},"#,
        r#""success_before_passing":2,"failures_before_critical":3,"#,
        r#""deregister_critical_after":"1m30s","initial_status":"warning"}],"#,
        r#""maintenance":"deploy","create_index":42}"#,
    );

    #[test]
    fn the_stored_json_does_not_change_when_a_model_type_is_renamed() {
        let json = serde_json::to_string(&representative()).expect("serialises");
        assert_eq!(json, REPRESENTATIVE_JSON);
        let back: StoredInstance = serde_json::from_str(REPRESENTATIVE_JSON).expect("parses");
        assert_eq!(back, representative());
        back.to_instance()
            .expect("the representative instance is valid");
    }
}
