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
    /// handshake fails ([`tls::handshake_refusal`]).
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

    /// Why etcd refuses this node's TLS handshakes, if one of its members
    /// does so on a certificate, as a [`StoreError::Untrusted`]: a setting
    /// to fix, which waiting for etcd will not mend.
    pub async fn tls_refusal(&self) -> Option<StoreError> {
        let probe = self.tls_probe.as_ref()?;
        for url in self.etcd.urls() {
            if let Some(reason) = tls::handshake_refusal(url, probe.clone()).await {
                return Some(StoreError::Untrusted {
                    endpoints: self.etcd.endpoints().to_owned(),
                    reason,
                });
            }
        }
        None
    }
}
