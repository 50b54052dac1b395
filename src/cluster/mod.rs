//! Cluster mode: several roster nodes share one registry kept in etcd v3,
//! and any of them can die.
//!
//! Every node keeps the whole registry and record table in memory, fed by
//! one etcd watch ([`feed`]); DNS reads only that table and never waits on
//! etcd. Writes are etcd transactions made by the registry's cluster writer
//! (`registry/cluster.rs`). Each node holds a lease-bound member key
//! ([`members`]), and each check runs on the one live member that
//! rendezvous hashing picks for it.
//!
//! Owns: the etcd connection, the key layout ([`keys`]), the feed, the
//! membership. Must not: apply changes to the registry itself (the writer
//! does, from the feed).

pub mod credentials;
pub mod etcd;
pub mod feed;
pub mod keys;
pub mod members;
pub mod tls;

use std::sync::Arc;

use crate::registry::StoreError;

/// What a node needs to take part in a cluster.
#[derive(Clone)]
pub struct Cluster {
    pub etcd: etcd::Etcd,
    pub keys: keys::Keys,
    /// This node's name among the members.
    pub node: String,
    /// Over TLS, the start-up's trust and certificate, for telling why a
    /// handshake fails ([`tls::handshake`]).
    pub tls_probe: Option<Arc<rustls::ClientConfig>>,
}

impl Cluster {
    /// Connects to etcd (lazily: an unreachable etcd shows in the first
    /// request), over TLS as `tls` says and with `tls_probe` kept for
    /// [`Cluster::tls_refusal`] (both from [`tls::load`]), signing in with
    /// `credentials` (see [`credentials::from_config`]).
    pub async fn connect(
        config: &crate::config::ClusterConfig,
        tls: Option<etcd_client::TlsOptions>,
        tls_probe: Option<Arc<rustls::ClientConfig>>,
        credentials: Option<credentials::Credentials>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            etcd: etcd::Etcd::connect(&config.etcd, tls, credentials).await?,
            keys: keys::Keys::new(&config.prefix),
            node: config.node_name(),
            tls_probe,
        })
    }

    /// Over TLS, one handshake of roster's own with each member at once:
    /// [`StoreError::Untrusted`] if one refuses this node's certificate
    /// (a setting to fix, which waiting for etcd will not mend), else
    /// whether any member was reached at all. `Ok(true)` without TLS: there
    /// is nothing to look for.
    pub async fn tls_refusal(&self) -> Result<bool, StoreError> {
        let Some(probe) = &self.tls_probe else {
            return Ok(true);
        };
        let mut handshakes = tokio::task::JoinSet::new();
        for url in self.etcd.urls() {
            let (url, probe) = (url.clone(), probe.clone());
            handshakes.spawn(async move { tls::handshake(&url, probe).await });
        }
        let mut reached = false;
        while let Some(done) = handshakes.join_next().await {
            match done.unwrap_or(tls::Handshake::Unreached) {
                tls::Handshake::Refused(reason) => {
                    return Err(StoreError::Untrusted {
                        endpoints: self.etcd.endpoints().to_owned(),
                        reason,
                    });
                }
                tls::Handshake::Taken => reached = true,
                tls::Handshake::Unreached => {}
            }
        }
        Ok(reached)
    }
}
