//! The etcd calls roster makes, each bounded in time: a cluster node must
//! answer a write with 503 within seconds when etcd is gone, never hang.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use etcd_client::{Client, ConnectOptions, GetOptions, KeyValue, Txn};

use super::credentials::Credentials;
use crate::registry::{BackendError, StoreError};

/// How long one etcd request may take before the write it serves fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long connecting to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys read per page when listing the whole registry: a page stays far
/// below gRPC's 4 MiB message limit even with large metadata.
const PAGE: i64 = 500;

/// A handle to the etcd cluster; cheap to clone.
///
/// One client per endpoint, not one client balancing over all of them: the
/// balanced channel kept handing requests to a member that was down (a
/// quarter of writes failed with one member of three dead). Calls go to the
/// endpoint in use; a failure that proves the request never reached a
/// working member moves every caller on to the next endpoint and tries
/// again there, within the same time limit.
#[derive(Clone)]
pub struct Etcd {
    /// One per endpoint, in the order given; replaced whole by
    /// [`Etcd::reconnect`], while calls under way finish on the old ones.
    members: Arc<ArcSwap<Vec<Member>>>,
    /// Index into `members` of the endpoint in use.
    current: Arc<AtomicUsize>,
    /// The endpoints' URLs, as given.
    urls: Arc<[String]>,
    /// The same, comma-separated, for messages.
    endpoints: String,
    /// The etcd user roster signs in as, if any.
    credentials: Option<Arc<Credentials>>,
}

/// One endpoint's client, and whether it has signed in there.
struct Member {
    client: Client,
    /// Set once the client holds a token of this member's (etcd's simple
    /// tokens are each member's own). A member that was down at start-up
    /// is signed in to when first used. The etcd client then renews the
    /// token by itself when the member no longer knows it (a restart, the
    /// token's TTL).
    signed_in: tokio::sync::OnceCell<()>,
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
    /// unreachable etcd, or one that refuses `credentials`, shows in the
    /// first request. With `tls`, every endpoint is reached over it.
    pub async fn connect(
        endpoints: &[String],
        tls: Option<etcd_client::TlsOptions>,
        credentials: Option<Credentials>,
    ) -> Result<Self, StoreError> {
        let credentials = credentials.map(Arc::new);
        let members = open(endpoints, tls, credentials.is_some()).await?;
        Ok(Self {
            members: Arc::new(ArcSwap::from_pointee(members)),
            current: Arc::new(AtomicUsize::new(0)),
            urls: endpoints.into(),
            endpoints: endpoints.join(","),
            credentials,
        })
    }

    /// Connects to the same endpoints again with `tls` (renewed
    /// certificates, a new CA): every call from now on uses the new
    /// connections, and signs in again; calls and watches under way keep
    /// the old ones until they end. First one member must answer over the
    /// new connections, so that files etcd's certificate does not pass
    /// (or that etcd refuses) are refused and the connections in force
    /// stay.
    pub async fn reconnect(&self, tls: Option<etcd_client::TlsOptions>) -> Result<(), StoreError> {
        let members = open(&self.urls, tls, self.credentials.is_some()).await?;
        let start = self.current.load(Relaxed);
        let mut first = None;
        for i in 0..members.len() {
            let mut client = members[(start + i) % members.len()].client.clone();
            match tokio::time::timeout(REQUEST_TIMEOUT, client.status()).await {
                Ok(Err(error)) if !etcd_answered(&error) => {
                    first.get_or_insert(unreachable(&self.endpoints, error));
                }
                Err(_) => {
                    first.get_or_insert(self.timed_out());
                }
                // Any answer from etcd, a refusal of the user included,
                // means the TLS handshake passed.
                Ok(_) => {
                    self.members.store(Arc::new(members));
                    return Ok(());
                }
            }
        }
        Err(first.unwrap_or_else(|| self.timed_out()))
    }
}

/// A client per endpoint, connected lazily (see [`Etcd::connect`]).
async fn open(
    endpoints: &[String],
    tls: Option<etcd_client::TlsOptions>,
    signs_in: bool,
) -> Result<Vec<Member>, StoreError> {
    let joined = endpoints.join(",");
    let mut clients = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            // A member cut off from its leader refuses requests and
            // ends watches instead of serving a stale view.
            .with_require_leader(true)
            // Signing in is lazy (see `Member`), so the credentials
            // are not given here, where they would be used at once.
            .with_auto_token_refresh(signs_in);
        let options = match &tls {
            Some(tls) => options.with_tls(tls.clone()),
            None => options,
        };
        let client = Client::connect([endpoint], Some(options))
            .await
            .map_err(|e| unreachable(&joined, e))?;
        clients.push(Member {
            client,
            signed_in: tokio::sync::OnceCell::new(),
        });
    }
    if clients.is_empty() {
        return Err(StoreError::Unreachable {
            endpoints: joined,
            source: "no etcd endpoints are configured".into(),
        });
    }
    Ok(clients)
}

impl Etcd {
    /// The client of the endpoint in use, signed in there if roster has
    /// credentials, and which endpoint it is (for [`Etcd::failed`]). The
    /// error is signing in's: etcd refuses the user ([`refusal`]), or the
    /// member did not sign roster in, and callers have been moved on to the
    /// next endpoint (nothing was written). Signing in is one request,
    /// bounded as every request of the client is ([`REQUEST_TIMEOUT`]).
    pub async fn client(&self) -> (usize, Result<Client, etcd_client::Error>) {
        let members = self.members.load_full();
        let which = self.current.load(Relaxed) % members.len();
        let member = &members[which];
        let Some(credentials) = &self.credentials else {
            return (which, Ok(member.client.clone()));
        };
        let signed_in = member
            .signed_in
            .get_or_try_init(|| async {
                // The clone shares the token and the credentials with
                // every other clone of this member's client.
                let mut client = member.client.clone();
                let user = (credentials.username.clone(), credentials.password.0.clone());
                client.update_user(Some(user)).await
            })
            .await;
        if let Err(error) = &signed_in
            && refusal(error, Some(credentials)).is_none()
        {
            self.failed(which);
        }
        (which, signed_in.map(|()| member.client.clone()))
    }

    /// Signs in again on `client`'s member, if roster has credentials: its
    /// token may be void. Best effort, bounded by [`REQUEST_TIMEOUT`].
    pub async fn sign_in_again(&self, client: &Client) {
        if self.credentials.is_some() {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, client.refresh_token()).await;
        }
    }

    /// Moves off endpoint `which` after a failure there (unless another
    /// caller already has).
    pub fn failed(&self, which: usize) {
        let next = (which + 1) % self.members.load().len();
        let _ = self.current.compare_exchange(which, next, Relaxed, Relaxed);
    }

    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// The endpoints' URLs, as given.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Runs `call` on the endpoint in use, moving on to the next ones while
    /// the failure shows the request went nowhere; bounded by
    /// [`REQUEST_TIMEOUT`] in all.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        let mut first = None;
        for _ in 0..self.members.load().len() * 2 {
            // The outer error is signing in's, the inner the call's.
            let attempt = async {
                let (which, client) = self.client().await;
                match client {
                    Ok(client) => (which, Ok(call(client).await)),
                    Err(error) => (which, Err(error)),
                }
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Err(_) => return Err(self.timed_out()),
                Ok((_, Ok(Ok(value)))) => return Ok(value),
                Ok((which, Ok(Err(error)))) if never_arrived(&error) => {
                    self.failed(which);
                    // The first failure says why (a refused connection, a
                    // TLS alert); a retry on the same broken channel may
                    // say only "operation was canceled".
                    first.get_or_insert(error);
                }
                Ok((_, Ok(Err(error)))) => return Err(self.failure(error)),
                // Signing in writes nothing, so any failure but a refusal
                // may be tried on the next endpoint, where `client` moved.
                Ok((_, Err(error))) if refusal(&error, self.credentials.as_deref()).is_none() => {
                    first.get_or_insert(error);
                }
                Ok((_, Err(error))) => return Err(self.failure(error)),
            }
        }
        Err(match first {
            Some(error) => unreachable(&self.endpoints, error),
            None => self.timed_out(),
        })
    }

    /// Every key under `prefix`, read page by page at one revision, so the
    /// listing is one consistent cut however large.
    pub async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let end = prefix_end(prefix);
        let mut from = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut kvs = Vec::new();
        loop {
            let response = self
                .call(|mut client| {
                    let mut options = GetOptions::new()
                        .with_range(end.clone())
                        .with_limit(PAGE)
                        .with_sort(etcd_client::SortTarget::Key, etcd_client::SortOrder::Ascend);
                    if revision > 0 {
                        options = options.with_revision(revision);
                    }
                    let from = from.clone();
                    async move { client.get(from, Some(options)).await }
                })
                .await?;
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
        let response = self
            .call(|mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        Ok(if response.succeeded() {
            TxnOutcome::Committed(revision)
        } else {
            TxnOutcome::Conflict(revision)
        })
    }

    /// A failed call as a store error: refused (the credentials, the
    /// user's permissions) or else unreachable.
    fn failure(&self, error: etcd_client::Error) -> StoreError {
        match refusal(&error, self.credentials.as_deref()) {
            Some(reason) => StoreError::Refused {
                endpoints: self.endpoints.clone(),
                reason,
            },
            None => unreachable(&self.endpoints, error),
        }
    }

    /// A failed call in words, for a log line: what [`refusal`] says of
    /// it, or the error itself.
    pub fn describe(&self, error: &etcd_client::Error) -> String {
        refusal(error, self.credentials.as_deref()).unwrap_or_else(|| error.to_string())
    }

    fn timed_out(&self) -> StoreError {
        StoreError::Unreachable {
            endpoints: self.endpoints.clone(),
            source: format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()).into(),
        }
    }
}

/// Whether a failed call certainly did not reach a working member (so
/// trying another cannot apply it twice): the connection could not be
/// made, or the member has no leader and refused it.
fn never_arrived(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            status.code() == tonic::Code::Unavailable
                && (message.contains("connect") || message.contains("no leader"))
        }
        _ => false,
    }
}

/// What to tell the operator when etcd refused roster for who it is rather
/// than failing: wrong credentials, none where etcd wants some, some where
/// it has authentication off, or a user without permission for roster's
/// keys. `None` for any other failure.
pub fn refusal(error: &etcd_client::Error, credentials: Option<&Credentials>) -> Option<String> {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return None;
    };
    let message = status.message();
    let user = || match credentials {
        Some(credentials) => format!("etcd user {:?}", credentials.username),
        None => "no etcd user".to_owned(),
    };
    let hint = match status.code() {
        tonic::Code::InvalidArgument if message.contains("user name is empty") => {
            "etcd has authentication on: give roster a user with cluster.username and \
             cluster.password_file"
                .to_owned()
        }
        tonic::Code::InvalidArgument if message.contains("authentication failed") => {
            format!(
                "check cluster.username and cluster.password_file ({})",
                user()
            )
        }
        tonic::Code::FailedPrecondition if message.contains("authentication is not enabled") => {
            "etcd has authentication off: leave cluster.username unset, or run \
             `etcdctl auth enable`"
                .to_owned()
        }
        // Not `Unauthenticated` ("invalid auth token"): the client signs in
        // again on it, and one left over means the token was voided again
        // meanwhile, which a retry gets past (503, not 500).
        tonic::Code::PermissionDenied => format!(
            "{} needs a role with readwrite permission on roster's prefix \
             (etcdctl role grant-permission --prefix=true ROLE readwrite PREFIX)",
            user()
        ),
        _ => return None,
    };
    Some(format!("{message}: {hint}"))
}

/// Whether a failed call was answered by etcd itself (refused, say), as
/// opposed to failing on the way: no connection, a TLS handshake that
/// failed, a member that is unavailable.
fn etcd_answered(error: &etcd_client::Error) -> bool {
    use tonic::Code::{Cancelled, DeadlineExceeded, Unavailable, Unknown};
    match error {
        etcd_client::Error::GRpcStatus(status) => !matches!(
            status.code(),
            Unavailable | Unknown | DeadlineExceeded | Cancelled
        ),
        _ => false,
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
/// connect error", "etcdserver: no leader") and the innermost cause
/// ("Connection refused", "received fatal alert: BadCertificate") are what
/// a user can act on.
pub fn unreachable(endpoints: &str, error: etcd_client::Error) -> StoreError {
    let start: &(dyn std::error::Error + 'static) = match &error {
        etcd_client::Error::GRpcStatus(status) => status,
        other => other,
    };
    if let Some(tls) = certificate_failure(start) {
        return StoreError::Untrusted {
            endpoints: endpoints.to_owned(),
            reason: tls.to_string(),
        };
    }
    let source: BackendError = match &error {
        etcd_client::Error::GRpcStatus(status) if !status.message().is_empty() => {
            let mut innermost = None;
            let mut cause = std::error::Error::source(status);
            while let Some(error) = cause {
                innermost = Some(error);
                cause = error.source();
            }
            let message = status.message();
            match innermost.map(|cause| cause.to_string()) {
                // tonic often makes the message of the innermost cause's
                // text (a TLS handshake's `invalid peer certificate: ...`):
                // said once, not twice.
                Some(cause) if !message.contains(&cause) => format!("{message}: {cause}").into(),
                _ => message.to_owned().into(),
            }
        }
        _ => Box::new(error),
    };
    StoreError::Unreachable {
        endpoints: endpoints.to_owned(),
        source,
    }
}

/// The TLS error under `error` when a handshake failed on a certificate:
/// one side did not trust the other's, or roster presented none where etcd
/// wants one. tokio-rustls hands rustls' error up inside an `io::Error`,
/// whose `source()` skips it, so each link is also looked into.
pub(super) fn certificate_failure<'e>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e rustls::Error> {
    use rustls::AlertDescription as Alert;
    let mut link = Some(error);
    while let Some(error) = link {
        let tls = error.downcast_ref::<rustls::Error>().or_else(|| {
            error
                .downcast_ref::<std::io::Error>()?
                .get_ref()?
                .downcast_ref::<rustls::Error>()
        });
        if let Some(tls) = tls {
            return match tls {
                rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::AlertReceived(
                    Alert::BadCertificate
                    | Alert::UnsupportedCertificate
                    | Alert::CertificateRevoked
                    | Alert::CertificateExpired
                    | Alert::CertificateUnknown
                    | Alert::UnknownCA
                    | Alert::CertificateRequired,
                ) => Some(tls),
                _ => None,
            };
        }
        link = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handshake that failed on a certificate, however deep tonic and
    /// hyper bury it, says so and names the settings; other TLS failures
    /// and plain ones stay unreachable.
    #[test]
    fn a_certificate_failure_is_told_from_an_unreachable_etcd() {
        let buried = |tls: rustls::Error| {
            let mut status = tonic::Status::unavailable("tcp connect error");
            let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
            status.set_source(Arc::new(io));
            unreachable(
                "https://127.0.0.1:2379",
                etcd_client::Error::GRpcStatus(status),
            )
        };
        let untrusted = buried(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        assert!(
            matches!(&untrusted, StoreError::Untrusted { .. }),
            "{untrusted:?}"
        );
        assert!(untrusted.is_unreachable() && untrusted.is_untrusted());
        let said = untrusted.to_string();
        assert!(said.contains("UnknownIssuer"), "{said}");
        assert!(said.contains("cluster.tls_ca_file"), "{said}");
        let no_client_certificate = buried(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired,
        ));
        assert!(
            no_client_certificate.is_untrusted(),
            "{no_client_certificate}"
        );
        for plain in [
            buried(rustls::Error::AlertReceived(
                rustls::AlertDescription::HandshakeFailure,
            )),
            unreachable(
                "https://127.0.0.1:2379",
                etcd_client::Error::GRpcStatus(tonic::Status::unavailable("tcp connect error")),
            ),
        ] {
            assert!(plain.is_unreachable() && !plain.is_untrusted(), "{plain}");
        }
    }

    #[test]
    fn the_range_end_of_a_prefix_is_its_successor() {
        assert_eq!(prefix_end("/roster/"), b"/roster0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    /// A status whose message is its innermost cause's text says it once;
    /// one whose cause adds something says both.
    #[test]
    fn a_failure_names_its_innermost_cause_once() {
        #[derive(Debug)]
        struct Cause;
        impl std::fmt::Display for Cause {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("invalid peer certificate: BadSignature")
            }
        }
        impl std::error::Error for Cause {}
        let said = |status: tonic::Status| {
            let error = unreachable(
                "https://127.0.0.1:2379",
                etcd_client::Error::GRpcStatus(status),
            );
            let StoreError::Unreachable { source, .. } = error else {
                panic!("not unreachable: {error:?}");
            };
            source.to_string()
        };
        assert_eq!(
            said(tonic::Status::from_error(Box::new(Cause))),
            "invalid peer certificate: BadSignature"
        );
        let mut status = tonic::Status::unavailable("transport error");
        status.set_source(std::sync::Arc::new(Cause));
        assert_eq!(
            said(status),
            "transport error: invalid peer certificate: BadSignature"
        );
    }

    /// etcd 3.4's own codes and messages (`rpctypes`) for each refusal.
    #[test]
    fn each_refusal_says_what_to_do_and_other_failures_are_none() {
        let credentials = Credentials {
            username: "roster".into(),
            password: crate::config::Secret("pw".into()),
        };
        let refused = |code, message: &str| {
            let error = etcd_client::Error::GRpcStatus(tonic::Status::new(code, message));
            refusal(&error, Some(&credentials))
        };
        use tonic::Code::*;
        let cases = [
            (
                InvalidArgument,
                "etcdserver: user name is empty",
                "cluster.username",
            ),
            (
                InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
                "cluster.password_file (etcd user \"roster\")",
            ),
            (
                FailedPrecondition,
                "etcdserver: authentication is not enabled",
                "etcdctl auth enable",
            ),
            (
                PermissionDenied,
                "etcdserver: permission denied",
                "readwrite permission",
            ),
        ];
        for (code, message, hint) in cases {
            let said = refused(code, message).unwrap_or_else(|| panic!("{message}: no refusal"));
            assert!(said.starts_with(message), "{said}");
            assert!(said.contains(hint), "{hint:?} not in {said}");
        }
        for (code, message) in [
            (Unavailable, "etcdserver: no leader"),
            (Unauthenticated, "etcdserver: invalid auth token"),
            (InvalidArgument, "etcdserver: request is too large"),
            (
                FailedPrecondition,
                "etcdserver: mvcc: required revision has been compacted",
            ),
        ] {
            assert_eq!(refused(code, message), None, "{message}");
        }
    }
}
