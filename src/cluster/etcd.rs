//! The etcd calls roster makes, each bounded in time: a cluster node must
//! answer a write with 503 within seconds when etcd is gone, never hang.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, KeyValue, Txn};

use crate::registry::{BackendError, StoreError};

/// How long one etcd request may take before the write it serves fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long connecting to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys read per page when listing the whole registry: a page stays far
/// below gRPC's 4 MiB message limit even with large metadata.
const PAGE: i64 = 500;

/// A handle to the etcd cluster; cheap to clone.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    endpoints: String,
}

/// Every key under a prefix at one revision.
pub struct Listing {
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
}

/// How a transaction ended.
pub enum TxnOutcome {
    /// Committed at this revision.
    Committed(i64),
    /// A comparison failed at this revision: someone else changed what the
    /// transaction read. Nothing was written.
    Conflict(i64),
}

impl Etcd {
    /// Connects lazily: this fails only on malformed endpoints; an
    /// unreachable etcd shows in the first request.
    pub async fn connect(endpoints: &[String]) -> Result<Self, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            // A member cut off from its leader refuses requests and ends
            // watches instead of serving a stale view.
            .with_require_leader(true);
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| unreachable(&endpoints.join(","), e))?;
        Ok(Self {
            client,
            endpoints: endpoints.join(","),
        })
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// Every key under `prefix`, read page by page at one revision, so the
    /// listing is one consistent cut however large.
    pub async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let mut client = self.client.clone();
        let end = prefix_end(prefix);
        let mut from = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut kvs = Vec::new();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE)
                .with_sort(etcd_client::SortTarget::Key, etcd_client::SortOrder::Ascend);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let response =
                tokio::time::timeout(REQUEST_TIMEOUT, client.get(from.clone(), Some(options)))
                    .await
                    .map_err(|_| self.timed_out())?
                    .map_err(|e| unreachable(&self.endpoints, e))?;
            if revision == 0 {
                revision = response.header().map_or(0, |h| h.revision());
            }
            let more = response.more();
            let page = response.kvs();
            if let Some(last) = page.last() {
                from = last.key().to_vec();
                from.push(0);
            }
            let done = !more || page.is_empty();
            kvs.extend_from_slice(page);
            if done {
                return Ok(Listing { revision, kvs });
            }
        }
    }

    /// Runs a transaction, bounded by [`REQUEST_TIMEOUT`].
    pub async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let mut client = self.client.clone();
        let response = tokio::time::timeout(REQUEST_TIMEOUT, client.txn(txn))
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| unreachable(&self.endpoints, e))?;
        let revision = response.header().map_or(0, |h| h.revision());
        Ok(if response.succeeded() {
            TxnOutcome::Committed(revision)
        } else {
            TxnOutcome::Conflict(revision)
        })
    }

    fn timed_out(&self) -> StoreError {
        StoreError::Unreachable {
            endpoints: self.endpoints.clone(),
            source: format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()).into(),
        }
    }
}

/// The first key after every key that starts with `prefix` (etcd's range
/// end for a prefix).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A failed etcd call as a store error. gRPC's own account of a transport
/// failure is a paragraph of nested Debug output; its message ("tcp
/// connect error", "etcdserver: no leader") is what a user can act on.
pub fn unreachable(endpoints: &str, error: etcd_client::Error) -> StoreError {
    let source: BackendError = match &error {
        etcd_client::Error::GRpcStatus(status) if !status.message().is_empty() => {
            status.message().to_owned().into()
        }
        _ => Box::new(error),
    };
    StoreError::Unreachable {
        endpoints: endpoints.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_end_of_a_prefix_is_its_successor() {
        assert_eq!(prefix_end("/roster/"), b"/roster0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
