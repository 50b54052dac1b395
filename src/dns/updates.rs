//! Where the DNS server hands a verified UPDATE message: an
//! [`UpdateApplier`] the composition root provides (`crate::update`), so
//! the DNS module checks the wire and the signature and writes nothing
//! itself.

use std::{collections::BTreeSet, future::Future, pin::Pin};

use hickory_proto::{
    op::ResponseCode,
    rr::{Name, Record},
};

/// The answer an [`UpdateApplier`] gives, once the update is durable or
/// refused.
pub type UpdateFuture = Pin<Box<dyn Future<Output = ResponseCode> + Send + 'static>>;

/// Applies the prerequisite and update sections (RFC 2136 sections 2.4 and
/// 2.5) of an UPDATE to the dynamic domain, signed by `key`, which may
/// change the services in `scope`. Resolves to the RCODE to answer.
pub trait UpdateApplier: Send + Sync {
    fn apply(
        &self,
        key: &Name,
        scope: ServiceScope,
        prerequisites: Vec<Record>,
        updates: Vec<Record>,
    ) -> UpdateFuture;
}

/// Which services a TSIG key may change (`services` of a
/// `[[dns.update.keys]]` entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceScope {
    /// `["*"]`: every service.
    All,
    /// These services' DNS labels (lower case).
    Only(BTreeSet<String>),
}

impl ServiceScope {
    /// Whether the key may change the service with DNS label `label`.
    pub fn allows(&self, label: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(labels) => labels.contains(label),
        }
    }
}
