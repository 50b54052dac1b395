//! DNS UPDATE (RFC 2136), the registry's third front door beside the
//! native and Consul HTTP APIs: what `nsupdate`, `knsupdate`, Kea's
//! DHCP-DDNS and external-dns send, mapped onto the names roster already
//! answers (`<id>.<service>`, `_<service>._tcp`, `_<service>._<tag>`,
//! `<service>`), and applied through the registry as one
//! [`Command::Transaction`]: the prerequisites are checked and the update
//! is made in one step of the writer, all or nothing, durable before the
//! answer. An instance registered this way is health-checked like any
//! other.
//!
//! The DNS module owns the wire: it verifies the TSIG, checks the zone,
//! and hands the prerequisite and update sections here
//! ([`crate::dns::UpdateApplier`]); this module owns what they mean.
//!
//! Owns: the mapping between RRsets and instances, and RFC 2136's
//! semantics over it. Must not: touch the wire or the socket threads.
//!
//! `engine` plans an update in RFC 2136's order: `prerequisites` (section
//! 3.2) against `view` (the registry read as RRsets at the names `names`
//! parses), the prescan (3.4.1), then the adds and deletes (3.4.2) applied
//! to `zone`'s drafts of the instances they touch, which `mapping` turns
//! back into instances.

mod engine;
#[doc(hidden)]
pub mod fuzzing;
mod mapping;
mod names;
mod prerequisites;
mod view;
mod zone;

use std::sync::Arc;

use hickory_proto::{
    op::ResponseCode,
    rr::{Name, Record},
};
use tracing::{debug, info, warn};

use crate::{
    dns::{ServiceScope, UpdateApplier, UpdateFuture},
    registry::{Command, Registry, RegistryError, RegistryState, Transaction, TransactionRefused},
};

/// What `[dns.update]` configures besides the keys.
#[derive(Clone, Debug)]
pub struct UpdateSettings {
    /// The dynamic domain (the zone updates may change), lower case and
    /// fully qualified.
    pub domain: Name,
    /// The port of an instance created from an A or AAAA record alone.
    pub default_port: u16,
    /// The check an instance gets when its update declares none.
    pub default_check: Option<DefaultCheck>,
}

/// `[dns.update.default_check]`: a check template whose strings may hold
/// `{address}` and `{port}`, filled in per instance. Validated when the
/// config is loaded.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultCheck {
    pub http: Option<String>,
    pub tcp: Option<String>,
    pub ttl: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub deregister_critical_after: Option<String>,
}

/// Why an update changed nothing, as DNS says it: the RCODE (NXDOMAIN,
/// YXDOMAIN, NXRRSET, YXRRSET, NOTZONE, FORMERR, REFUSED) and, for the
/// log, why.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct UpdateRefusal {
    pub rcode: ResponseCode,
    pub reason: String,
}

impl UpdateRefusal {
    pub fn new(rcode: ResponseCode, reason: impl Into<String>) -> Self {
        Self {
            rcode,
            reason: reason.into(),
        }
    }
}

/// One UPDATE message's prerequisite and update sections, planned against
/// the state when the registry's writer runs it.
#[derive(Debug)]
pub struct UpdatePlan {
    pub settings: Arc<UpdateSettings>,
    /// The services the signing key may change.
    pub scope: ServiceScope,
    /// The prerequisite section (RFC 2136 section 2.4).
    pub prerequisites: Vec<Record>,
    /// The update section (section 2.5).
    pub updates: Vec<Record>,
}

impl Transaction for UpdatePlan {
    fn plan(
        &self,
        state: &RegistryState,
    ) -> Result<Vec<crate::registry::Change>, TransactionRefused> {
        engine::plan(self, state).map_err(|refusal| Arc::new(refusal) as TransactionRefused)
    }
}

/// Applies updates through the registry: the [`UpdateApplier`] the DNS
/// server hands verified UPDATE messages to.
pub struct RegistryUpdates {
    registry: Registry,
    settings: Arc<UpdateSettings>,
}

impl RegistryUpdates {
    pub fn new(registry: Registry, settings: UpdateSettings) -> Self {
        Self {
            registry,
            settings: Arc::new(settings),
        }
    }

    async fn execute(registry: Registry, plan: UpdatePlan, key: Name) -> ResponseCode {
        match registry.execute(Command::Transaction(Arc::new(plan))).await {
            Ok(_) => {
                debug!(%key, "DNS UPDATE applied");
                ResponseCode::NoError
            }
            Err(RegistryError::Unmet(reason)) => match reason.downcast_ref::<UpdateRefusal>() {
                Some(refusal) => {
                    info!(%key, rcode = %refusal.rcode, "DNS UPDATE refused: {}", refusal.reason);
                    refusal.rcode
                }
                None => ResponseCode::Refused,
            },
            // The store failed or roster is stopping: nothing was changed,
            // and the client may try again.
            Err(error @ (RegistryError::Store(_) | RegistryError::Closed)) => {
                warn!(%key, "DNS UPDATE not applied: {error}");
                ResponseCode::ServFail
            }
            // The registry's own rules (a label taken, an ID in another
            // service, an invalid value): bad input, refused whole.
            Err(error) => {
                info!(%key, "DNS UPDATE refused: {error}");
                ResponseCode::Refused
            }
        }
    }
}

impl UpdateApplier for RegistryUpdates {
    fn apply(
        &self,
        key: &Name,
        scope: ServiceScope,
        prerequisites: Vec<Record>,
        updates: Vec<Record>,
    ) -> UpdateFuture {
        let plan = UpdatePlan {
            settings: self.settings.clone(),
            scope,
            prerequisites,
            updates,
        };
        Box::pin(Self::execute(self.registry.clone(), plan, key.clone()))
    }
}

#[cfg(test)]
mod tests;
