//! One probe of an HTTP or TCP check: what it found, as a status and the
//! output shown to operators. TTL checks have no probe: the service reports.
//!
//! The scheduler runs probes through the [`Prober`] seam, so its own tests
//! can script what probes find and run on a paused clock without a network.

use std::{
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tracing::warn;

use crate::{
    config::HealthConfig,
    model::{CheckKind, Status},
    resolve::Resolver,
};

/// The most of an HTTP check's response body a probe reads (Consul keeps
/// 4 KB of output); the rest is never read and the connection is closed.
const MAX_BODY_READ: usize = 4 * 1024;

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// The status this one result points to (before any threshold).
    pub status: Status,
    /// What the probe saw, as shown to operators in the check's output.
    pub output: String,
}

/// A probe in progress. Owns everything it needs (`'static`), so the
/// scheduler can run it in a task of its own.
pub type Probing = Pin<Box<dyn Future<Output = ProbeResult> + Send + 'static>>;

/// Runs one probe of a check. The scheduler's only way to reach a checked
/// endpoint: the network one in production, a scripted one in its tests.
pub trait Prober: Send + Sync + 'static {
    /// Probes `kind` (an HTTP or TCP check; never called for TTL checks)
    /// within `timeout`.
    fn probe(&self, kind: &CheckKind, timeout: Duration) -> Probing;
}

/// Idle keep-alive connections kept per endpoint host. Many instances often
/// share one host (a node, a sidecar, a test server): a pool smaller than
/// the probes in flight to it would close and reopen connections all the
/// time, which costs more than the probes themselves.
const POOL_PER_HOST: usize = 256;

/// How long an idle keep-alive connection to a checked endpoint is kept
/// (reqwest's own default, stated): longer than the usual check intervals,
/// so each probe reuses the connection the last one left.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The longest a probe's host-name lookup may take: its wait for a turn at
/// the shared resolver, and as long again for the lookup itself. The
/// probe's own timeout still applies on top.
const LOOKUP_TIMEOUT: Duration = crate::resolve::WAIT_LIMIT.saturating_mul(2);

/// The HTTP client could not be built, so HTTP checks cannot run.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client for health checks: {0}")]
pub struct ClientError(#[source] Box<dyn std::error::Error + Send + Sync>);

/// Probes over the network: `http://` through one shared client (so
/// connections to an endpoint are reused between probes), `https://` over
/// a fresh TLS connection each (as Consul's checks, which keep none
/// alive), TCP by connecting; all only to addresses `[health]
/// allowed_networks` includes, HTTP only with the methods
/// `allowed_methods` lists.
pub struct NetworkProber {
    /// Shared by every `http://` probe; cloning it clones a handle to one
    /// pool.
    client: reqwest::Client,
    tls: TlsConfigs,
    policy: Arc<HealthConfig>,
}

/// The TLS client settings of `https://` checks.
#[derive(Clone)]
struct TlsConfigs {
    /// Verifies against the system's CA certificates.
    verify: Arc<rustls::ClientConfig>,
    /// `tls_skip_verify`.
    skip: Arc<rustls::ClientConfig>,
}

impl NetworkProber {
    /// Builds the shared HTTP client and the TLS settings; `https://`
    /// endpoints are verified against the system's CA certificates
    /// (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured). Neither follows
    /// redirects: the README documents any non-2xx answer but 429 as
    /// critical, a redirect to a healthy page must not hide a moved or
    /// broken endpoint, and a redirect must not lead a probe to an address
    /// `policy` refuses. A failure is returned, never replaced by a default
    /// client, since that one would follow redirects and resolve names on
    /// its own.
    pub fn new(policy: &HealthConfig) -> Result<Self, ClientError> {
        let provider = crate::http::tls::crypto_provider();
        let verifier = system_verifier(&provider);
        Self::with_verifier(policy, provider, verifier)
    }

    fn with_verifier(
        policy: &HealthConfig,
        provider: Arc<CryptoProvider>,
        verifier: Arc<dyn ServerCertVerifier>,
    ) -> Result<Self, ClientError> {
        let policy = Arc::new(policy.clone());
        let tls_config = |verifier: Arc<dyn ServerCertVerifier>| {
            let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|error| ClientError(Box::new(error)))?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok::<_, ClientError>(Arc::new(config))
        };
        let tls = TlsConfigs {
            verify: tls_config(verifier)?,
            skip: tls_config(Arc::new(FixedVerdict {
                refusal: None,
                provider: provider.clone(),
            }))?,
        };
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(POOL_PER_HOST)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            // Host names go through the bounded resolver, not reqwest's own
            // getaddrinfo threads on the blocking pool (see crate::resolve),
            // and then through the address policy.
            .dns_resolver(PolicyResolver {
                timeout: LOOKUP_TIMEOUT,
                policy: policy.clone(),
            })
            .build()
            .map_err(|error| ClientError(Box::new(error)))?;
        Ok(Self {
            client,
            tls,
            policy,
        })
    }
}

const USER_AGENT: &str = concat!("roster-health-check/", env!("CARGO_PKG_VERSION"));

/// The verifier of `https://` checks: the system's CA certificates, or,
/// when there are none, one that refuses every certificate saying so
/// (checks with `tls_skip_verify` and plain `http://` checks still run).
fn system_verifier(provider: &Arc<CryptoProvider>) -> Arc<dyn ServerCertVerifier> {
    let roots = crate::http::tls::system_roots();
    match WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build() {
        Ok(verifier) => verifier,
        Err(error) => {
            let reason = format!(
                "no system CA certificates to verify https:// checks against ({error}); \
                 install them or set SSL_CERT_FILE"
            );
            warn!("{reason}");
            Arc::new(FixedVerdict {
                refusal: Some(reason),
                provider: provider.clone(),
            })
        }
    }
}

/// A verifier with a fixed verdict on certificates: every one accepted
/// (`tls_skip_verify`, as Consul does; the handshake's own signatures are
/// still checked, so the connection is encrypted to whoever holds the
/// certificate's key), or, with a `refusal`, every one refused saying why
/// (there is nothing to verify it against).
#[derive(Debug)]
struct FixedVerdict {
    refusal: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for FixedVerdict {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.refusal {
            None => Ok(ServerCertVerified::assertion()),
            Some(reason) => Err(rustls::Error::General(reason.clone())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// An address `[health] allowed_networks` does not include.
#[derive(Debug, thiserror::Error)]
#[error("health.allowed_networks does not include {0}")]
struct NotAllowed(IpAddr);

/// The addresses among `found` that `policy` allows; if none, the first
/// refused one as the error.
fn allowed_addresses(
    policy: &HealthConfig,
    found: Vec<SocketAddr>,
) -> Result<Vec<SocketAddr>, NotAllowed> {
    let first = found.first().copied();
    let allowed: Vec<SocketAddr> = found
        .into_iter()
        .filter(|addr| policy.allows_address(addr.ip()))
        .collect();
    match first {
        Some(refused) if allowed.is_empty() => Err(NotAllowed(refused.ip())),
        _ => Ok(allowed),
    }
}

/// reqwest's hook: an HTTP check's host name goes through the shared
/// bounded resolver, and only the addresses the policy allows come back,
/// so a name cannot lead a probe where an address could not.
struct PolicyResolver {
    timeout: Duration,
    policy: Arc<HealthConfig>,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let timeout = self.timeout;
        let policy = self.policy.clone();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port in.
            let found = Resolver::shared().lookup(&host, 0, timeout).await?;
            let allowed = allowed_addresses(&policy, found)?;
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

impl Prober for NetworkProber {
    fn probe(&self, kind: &CheckKind, timeout: Duration) -> Probing {
        match kind.clone() {
            CheckKind::Http {
                url,
                method,
                headers,
                tls_skip_verify,
                tls_server_name,
                ..
            } => {
                let client = self.client.clone();
                let tls = self.tls.clone();
                let policy = self.policy.clone();
                Box::pin(async move {
                    let target = Target {
                        client: &client,
                        tls: &tls,
                        policy: &policy,
                        skip_verify: tls_skip_verify,
                        server_name: &tls_server_name,
                    };
                    http(target, &method, &url, &headers, timeout).await
                })
            }
            CheckKind::Tcp { address, .. } => {
                let policy = self.policy.clone();
                Box::pin(async move { tcp(&policy, &address, timeout).await })
            }
            CheckKind::Ttl { .. } => Box::pin(std::future::ready(ProbeResult {
                status: Status::Critical,
                output: "a TTL check has no probe".into(),
            })),
        }
    }
}

/// What an HTTP probe goes through: the shared client (`http://`), the
/// TLS settings (`https://`), the policy, and the check's TLS options.
struct Target<'a> {
    client: &'a reqwest::Client,
    tls: &'a TlsConfigs,
    policy: &'a HealthConfig,
    skip_verify: bool,
    server_name: &'a str,
}

/// Stands in for the network prober when the HTTP client could not be
/// built: every HTTP check is critical with the reason as its output, so
/// operators see why, and TCP checks still run.
pub(super) struct WithoutHttp {
    /// Why HTTP checks cannot run, shown in each one's output.
    reason: String,
    policy: Arc<HealthConfig>,
}

impl WithoutHttp {
    pub(super) fn new(error: &ClientError, policy: &HealthConfig) -> Self {
        Self {
            reason: format!("{error}: {}", root_cause(error)),
            policy: Arc::new(policy.clone()),
        }
    }
}

impl Prober for WithoutHttp {
    fn probe(&self, kind: &CheckKind, timeout: Duration) -> Probing {
        match kind {
            CheckKind::Tcp { address, .. } => {
                let address = address.clone();
                let policy = self.policy.clone();
                Box::pin(async move { tcp(&policy, &address, timeout).await })
            }
            _ => Box::pin(std::future::ready(ProbeResult {
                status: Status::Critical,
                output: self.reason.clone(),
            })),
        }
    }
}

/// `GET url` (or another method) with `timeout`: 2xx passing, 429 warning,
/// anything else, a refused connection, a certificate that does not verify
/// or a timeout critical; a method or address the policy does not allow
/// critical without connecting.
async fn http(
    target: Target<'_>,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> ProbeResult {
    let outcome = |status: Status, what: String| ProbeResult {
        status,
        output: format!("HTTP {method} {url}: {what}"),
    };
    if !target.policy.allows_method(method) {
        return outcome(
            Status::Critical,
            format!("health.allowed_methods does not include {method}"),
        );
    }
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return outcome(Status::Critical, "not a URL".into());
    };
    let host = parsed
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    // A literal address never reaches the resolver, where names are judged.
    if let Ok(address) = host.parse::<IpAddr>()
        && !target.policy.allows_address(address)
    {
        return outcome(Status::Critical, NotAllowed(address).to_string());
    }
    let answered = if parsed.scheme() == "https" {
        tokio::time::timeout(
            timeout,
            https(&target, method, &parsed, &host, headers, timeout),
        )
        .await
        .unwrap_or_else(|_| Err(timed_out(timeout)))
    } else {
        plain_http(target.client, method, url, headers, timeout).await
    };
    match answered {
        Ok(code) => {
            let status = if code.is_success() {
                Status::Passing
            } else if code.as_u16() == 429 {
                Status::Warning
            } else {
                Status::Critical
            };
            outcome(status, code.to_string())
        }
        Err(reason) => outcome(Status::Critical, reason),
    }
}

fn timed_out(timeout: Duration) -> String {
    format!(
        "timed out after {}",
        crate::model::format_go_duration(timeout)
    )
}

/// An `http://` request through the shared client: the answer's status, or
/// why there is none. The client is shared, so connections to an endpoint
/// are reused between probes.
async fn plain_http(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<reqwest::StatusCode, String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut request = client.request(method, url).timeout(timeout);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    match request.send().await {
        Ok(mut response) => {
            let code = response.status();
            // Read a short body to its end so the connection can go back to
            // the pool, but never more than Consul keeps as output: an
            // endless or huge body would otherwise be buffered until the
            // timeout (62 MB/s for three checks). Dropping the response
            // unread closes that connection instead.
            let mut read = 0;
            while read < MAX_BODY_READ {
                match response.chunk().await {
                    Ok(Some(chunk)) => read += chunk.len(),
                    Ok(None) | Err(_) => break,
                }
            }
            drop(response);
            Ok(code)
        }
        Err(error) => Err(if error.is_timeout() {
            timed_out(timeout)
        } else if error.is_connect() {
            format!("connection failed: {}", root_cause(&error))
        } else {
            root_cause(&error)
        }),
    }
}

/// An `https://` request on a connection of its own: resolve (through the
/// bounded resolver and the policy), connect, TLS handshake verifying the
/// certificate for `tls_server_name` or the URL's host (unless
/// `tls_skip_verify`), one HTTP/1.1 exchange, close. The caller bounds it
/// with the check's timeout.
async fn https(
    target: &Target<'_>,
    method: &str,
    url: &reqwest::Url,
    host: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<hyper::StatusCode, String> {
    let port = url.port_or_known_default().unwrap_or(443);
    let addresses = match host.parse::<IpAddr>() {
        Ok(address) => vec![SocketAddr::new(address, port)],
        Err(_) => Resolver::shared()
            .lookup(host, port, timeout.min(LOOKUP_TIMEOUT))
            .await
            .map_err(|error| format!("connection failed: {error}"))?,
    };
    let addresses = allowed_addresses(target.policy, addresses)
        .map_err(|error| format!("connection failed: {error}"))?;
    let mut last = "the name resolves to no address".to_owned();
    let mut stream = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(connected) => {
                stream = Some(connected);
                break;
            }
            Err(error) => last = error.to_string(),
        }
    }
    let stream = stream.ok_or_else(|| format!("connection failed: {last}"))?;
    let name = if target.server_name.is_empty() {
        host
    } else {
        target.server_name
    };
    let name = ServerName::try_from(name.to_owned())
        .map_err(|error| format!("TLS server name {name:?}: {error}"))?;
    let config = if target.skip_verify {
        target.tls.skip.clone()
    } else {
        target.tls.verify.clone()
    };
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|error| format!("connection failed: TLS handshake: {error}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|error| root_cause(&error))?;
    let authority = url.authority().to_owned();
    let path = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, USER_AGENT)
        .header(hyper::header::CONNECTION, "close");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = request
        .body(String::new())
        .map_err(|error| format!("cannot build the request: {error}"))?;
    let mut connection = std::pin::pin!(connection);
    let mut answer = std::pin::pin!(sender.send_request(request));
    // The status is all a probe needs; the body is never read and the
    // connection closes with this function.
    let answered = tokio::select! {
        answered = &mut answer => answered,
        ended = &mut connection => match ended {
            // The server answered and closed: the answer is waiting.
            Ok(()) => answer.await,
            Err(error) => return Err(root_cause(&error)),
        },
    };
    answered
        .map(|response| response.status())
        .map_err(|error| root_cause(&error))
}

/// Connects to `address` within `timeout`: a completed connect is passing;
/// an address `policy` does not allow is critical without connecting.
pub(super) async fn tcp(policy: &HealthConfig, address: &str, timeout: Duration) -> ProbeResult {
    match tokio::time::timeout(timeout, connect(policy, address, timeout)).await {
        Ok(Ok(_stream)) => ProbeResult {
            status: Status::Passing,
            output: format!("TCP connect {address}: success"),
        },
        Ok(Err(error)) => ProbeResult {
            status: Status::Critical,
            output: format!("TCP connect {address}: {error}"),
        },
        Err(_) => ProbeResult {
            status: Status::Critical,
            output: format!(
                "TCP connect {address}: timed out after {}",
                crate::model::format_go_duration(timeout)
            ),
        },
    }
}

/// Connects to `host:port`, resolving a host name through the bounded
/// resolver (`TcpStream::connect` would run `getaddrinfo` on the blocking
/// pool the store's commits need), trying each address `policy` allows in
/// turn.
async fn connect(policy: &HealthConfig, address: &str, timeout: Duration) -> io::Result<TcpStream> {
    let not_allowed = |error: NotAllowed| io::Error::new(io::ErrorKind::PermissionDenied, error);
    if let Ok(literal) = address.parse::<SocketAddr>() {
        if !policy.allows_address(literal.ip()) {
            return Err(not_allowed(NotAllowed(literal.ip())));
        }
        return TcpStream::connect(literal).await;
    }
    let invalid = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid address: expected host:port",
        )
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    let found = Resolver::shared()
        .lookup(host, port, timeout)
        .await
        .map_err(io::Error::other)?;
    let found = allowed_addresses(policy, found).map_err(not_allowed)?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address");
    for addr in found {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last = error,
        }
    }
    Err(last)
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;
    use crate::model::GoDuration;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn policy(networks: &[&str], methods: &[&str]) -> HealthConfig {
        HealthConfig {
            allowed_networks: networks
                .iter()
                .map(|n| n.parse().expect("network"))
                .collect(),
            allowed_methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        }
    }

    fn http_check(url: String, method: &str, skip_verify: bool, server_name: &str) -> CheckKind {
        CheckKind::Http {
            url,
            method: method.into(),
            headers: Vec::new(),
            interval: GoDuration(TIMEOUT),
            timeout: GoDuration(TIMEOUT),
            tls_skip_verify: skip_verify,
            tls_server_name: server_name.into(),
        }
    }

    /// A listener on 127.0.0.1 counting connections, serving `200 ok` over
    /// TLS with `config` if given (plain otherwise).
    async fn endpoint(config: Option<rustls::ServerConfig>) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let acceptor = config.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let Some(acceptor) = acceptor.clone() else {
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(mut stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        (addr, accepted)
    }

    /// A CA, and a server certificate it signed for `svc.internal` only.
    fn ca_and_server() -> (CertificateDer<'static>, rustls::ServerConfig) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["svc.internal".to_owned()]).expect("params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca).expect("sign");
        let server =
            rustls::ServerConfig::builder_with_provider(crate::http::tls::crypto_provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .expect("server config");
        (ca.der().clone(), server)
    }

    fn prober_trusting(ca: CertificateDer<'static>, policy: &HealthConfig) -> NetworkProber {
        let provider = crate::http::tls::crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).expect("root");
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .expect("verifier");
        NetworkProber::with_verifier(policy, provider, verifier).expect("prober")
    }

    #[tokio::test]
    async fn tls_server_name_is_the_name_the_certificate_is_verified_for() {
        let (ca, server) = ca_and_server();
        let (addr, _) = endpoint(Some(server)).await;
        let prober = prober_trusting(ca, &HealthConfig::default());
        let url = format!("https://{addr}/health");
        let by_host = prober
            .probe(&http_check(url.clone(), "GET", false, ""), TIMEOUT)
            .await;
        assert_eq!(by_host.status, Status::Critical, "{by_host:?}");
        assert!(
            by_host.output.contains("invalid peer certificate"),
            "{by_host:?}"
        );
        let named = prober
            .probe(
                &http_check(url.clone(), "GET", false, "svc.internal"),
                TIMEOUT,
            )
            .await;
        assert_eq!(named.status, Status::Passing, "{named:?}");
        assert!(named.output.ends_with("200 OK"), "{named:?}");
        let wrong = prober
            .probe(&http_check(url, "GET", false, "other.internal"), TIMEOUT)
            .await;
        assert_eq!(wrong.status, Status::Critical, "{wrong:?}");
    }

    #[tokio::test]
    async fn a_method_outside_allowed_methods_is_refused_without_connecting() {
        let (addr, accepted) = endpoint(None).await;
        let prober =
            NetworkProber::new(&policy(&["127.0.0.0/8"], &["GET", "HEAD"])).expect("prober");
        for url in [format!("http://{addr}/"), format!("https://{addr}/")] {
            let refused = prober
                .probe(&http_check(url, "DELETE", false, ""), TIMEOUT)
                .await;
            assert_eq!(refused.status, Status::Critical, "{refused:?}");
            assert!(
                refused
                    .output
                    .ends_with("health.allowed_methods does not include DELETE"),
                "{refused:?}"
            );
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn names_and_addresses_outside_allowed_networks_are_refused_without_connecting() {
        let (addr, accepted) = endpoint(None).await;
        let port = addr.port();
        let prober = NetworkProber::new(&policy(&["127.0.0.2/32"], &["GET"])).expect("prober");
        let kinds = [
            http_check(format!("http://127.0.0.1:{port}/"), "GET", false, ""),
            http_check(format!("http://localhost:{port}/"), "GET", false, ""),
            http_check(format!("https://localhost:{port}/"), "GET", true, ""),
            http_check(
                format!("https://[::ffff:127.0.0.1]:{port}/"),
                "GET",
                true,
                "",
            ),
            CheckKind::Tcp {
                address: format!("localhost:{port}"),
                interval: GoDuration(TIMEOUT),
                timeout: GoDuration(TIMEOUT),
            },
            CheckKind::Tcp {
                address: addr.to_string(),
                interval: GoDuration(TIMEOUT),
                timeout: GoDuration(TIMEOUT),
            },
        ];
        for kind in kinds {
            let refused = prober.probe(&kind, TIMEOUT).await;
            assert_eq!(refused.status, Status::Critical, "{refused:?}");
            assert!(
                refused
                    .output
                    .contains("health.allowed_networks does not include"),
                "{refused:?}"
            );
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn only_allowed_addresses_are_kept_and_the_first_refused_is_named() {
        let policy = policy(&["10.0.0.0/8"], &["GET"]);
        let found: Vec<SocketAddr> = vec![
            "192.168.1.1:80".parse().expect("addr"),
            "10.1.2.3:80".parse().expect("addr"),
        ];
        assert_eq!(
            allowed_addresses(&policy, found).expect("one allowed"),
            vec!["10.1.2.3:80".parse::<SocketAddr>().expect("addr")]
        );
        let refused = allowed_addresses(&policy, vec!["192.168.1.1:80".parse().expect("addr")])
            .expect_err("none allowed");
        assert_eq!(
            refused.to_string(),
            "health.allowed_networks does not include 192.168.1.1"
        );
    }
}
