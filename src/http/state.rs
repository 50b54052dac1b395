//! The state every HTTP handler shares, native and Consul alike.
//!
//! Owns: the [`AppState`] handle. It lives in its own module so that the
//! handlers in `http/` and `http/consul/` import it from here rather than
//! from their parent modules, which import them back to route to them.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{config::ConsulConfig, metrics::Metrics, registry::Registry};

/// What every handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    /// The dynamic domain, for showing DNS names.
    pub domain: Arc<str>,
    pub include_warning: bool,
    pub metrics: Arc<Metrics>,
    /// How roster presents itself to Consul clients.
    pub consul: ConsulConfig,
    /// The ACL tokens in force; swapped whole on SIGHUP.
    pub acl: Arc<arc_swap::ArcSwap<super::acl::Acl>>,
    /// Whether the registry lives in etcd, shared with other nodes.
    pub cluster: bool,
    /// Cancelled when roster begins to shut down: blocked Consul queries
    /// answer at once instead of holding the shutdown up.
    pub shutting_down: CancellationToken,
}
