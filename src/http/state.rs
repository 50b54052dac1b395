//! The state every HTTP handler shares, native and Consul alike.
//!
//! Owns: the [`AppState`] handle. It lives in its own module so that the
//! handlers in `http/` and `http/consul/` import it from here rather than
//! from their parent modules, which import them back to route to them.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{
    config::{ConsulConfig, HealthConfig},
    metrics::Metrics,
    model::{CheckDefinition, CheckKind, Instance, ValidationError},
    registry::Registry,
};

/// What every handler needs, behind one `Arc`: axum clones the state for
/// every middleware and extractor of every request, and cloning the fields
/// themselves raised several contended reference counts and copied the
/// Consul names and the allowed check methods each time.
#[derive(Clone)]
pub struct AppState(Arc<AppStateFields>);

impl AppState {
    pub fn new(fields: AppStateFields) -> Self {
        Self(Arc::new(fields))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateFields;

    fn deref(&self) -> &AppStateFields {
        &self.0
    }
}

/// The fields of an [`AppState`].
pub struct AppStateFields {
    pub registry: Registry,
    /// The dynamic domain, for showing DNS names.
    pub domain: Arc<str>,
    pub include_warning: bool,
    pub metrics: Arc<Metrics>,
    /// How roster presents itself to Consul clients.
    pub consul: ConsulConfig,
    /// What health checks may do (`[health]`).
    pub health: HealthConfig,
    /// The ACL tokens in force; swapped whole on SIGHUP.
    pub acl: Arc<arc_swap::ArcSwap<super::acl::Acl>>,
    /// Whether the registry lives in etcd, shared with other nodes.
    pub cluster: bool,
    /// Cancelled when roster begins to shut down: blocked Consul queries
    /// answer at once instead of holding the shutdown up.
    pub shutting_down: CancellationToken,
    /// One import at a time: each may hold a body of up to
    /// `backup::MAX_IMPORT_BYTES` and its parsed instances in memory.
    pub import_slot: tokio::sync::Semaphore,
    /// Places for blocked Consul queries: fewer than the HTTP connections,
    /// so that some are always left for writes ([`blocking_budget`]).
    pub blocking_slots: tokio::sync::Semaphore,
}

/// How many of `max_connections` blocked queries may hold: all but an
/// eighth (at least one, at most 256) kept for other requests, and at
/// least one.
pub fn blocking_budget(max_connections: usize) -> usize {
    let kept = (max_connections / 8).clamp(1, 256);
    max_connections.saturating_sub(kept).max(1)
}

impl AppStateFields {
    /// Refuses an instance whose checks the health policy forbids: an HTTP
    /// check with a method `health.allowed_methods` does not list. (Where a
    /// check may connect is decided when it runs, after its name resolves.)
    pub fn admit(&self, instance: &Instance) -> Result<(), ValidationError> {
        self.admit_checks(&instance.checks)
    }

    /// [`Self::admit`] for a list of checks (an imported instance's).
    pub fn admit_checks(&self, checks: &[CheckDefinition]) -> Result<(), ValidationError> {
        for (i, check) in checks.iter().enumerate() {
            if let CheckKind::Http { method, .. } = &check.kind
                && !self.health.allows_method(method)
            {
                return Err(ValidationError::new(
                    format!("checks[{i}].method"),
                    format!(
                        "{method} is not allowed for health checks here (health.allowed_methods: {}): a check is a request roster makes on the registrant's behalf",
                        self.health.allowed_methods.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}
