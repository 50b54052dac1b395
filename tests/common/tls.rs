//! TLS for the tests, all made at test time: a CA with a server certificate
//! for 127.0.0.1 and localhost and a client certificate ([`Pki`]), an HTTPS
//! request that trusts it ([`https_request`]; roster's reqwest has no TLS), and a tiny HTTPS endpoint for health checks to
//! probe ([`TlsTarget`]), counting the connections it accepts.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::Value;
use tempfile::TempDir;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use super::DEADLINE;

/// ring, as roster uses (rustls deprecates it for lacking post-quantum key
/// exchange, which these loopback tests do not need).
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate and its private key, DER and PEM.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key_der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Identity {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// A test CA, a server certificate it signed for 127.0.0.1 and localhost,
/// a client certificate it signed, and the PEM files roster reads.
pub struct Pki {
    pub ca: CertificateDer<'static>,
    pub server: Identity,
    pub client: Identity,
    /// Holds the files below.
    pub dir: TempDir,
    pub ca_file: PathBuf,
    pub server_cert_file: PathBuf,
    pub server_key_file: PathBuf,
}

/// A CA-signed leaf for `names` (DNS names or IP addresses), valid until
/// `not_after` (year, month, day) if given, else rcgen's default.
fn leaf(
    issuer: &CertifiedIssuer<'_, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    not_after: Option<(i32, u8, u8)>,
) -> Identity {
    let key = KeyPair::generate().expect("leaf key");
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("leaf names");
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("client"),
    );
    params.extended_key_usages = vec![usage];
    if let Some((year, month, day)) = not_after {
        params.not_after = rcgen::date_time_ymd(year, month, day);
    }
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, issuer).expect("sign leaf");
    Identity {
        chain: vec![cert.der().clone()],
        key_der: key.serialize_der(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

impl Pki {
    pub fn new() -> Self {
        Self::with_server_not_after(None)
    }

    /// A new CA whose server certificate expires at 00:00 UTC on
    /// `not_after` (year, month, day) if given.
    pub fn with_server_not_after(not_after: Option<(i32, u8, u8)>) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "roster test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, ca_key).expect("CA certificate");
        let server = leaf(
            &issuer,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            not_after,
        );
        let client = leaf(
            &issuer,
            &["client.test"],
            ExtendedKeyUsagePurpose::ClientAuth,
            None,
        );
        let dir = tempfile::tempdir().expect("TLS directory");
        let ca_file = dir.path().join("ca.pem");
        let server_cert_file = dir.path().join("server.pem");
        let server_key_file = dir.path().join("server-key.pem");
        std::fs::write(&ca_file, issuer.pem()).expect("write CA");
        std::fs::write(&server_cert_file, &server.cert_pem).expect("write certificate");
        std::fs::write(&server_key_file, &server.key_pem).expect("write key");
        Self {
            ca: issuer.der().clone(),
            server,
            client,
            dir,
            ca_file,
            server_cert_file,
            server_key_file,
        }
    }

    /// A TLS client configuration that trusts this CA, presenting
    /// `identity` if given.
    pub fn client(&self, identity: Option<&Identity>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).expect("trust the test CA");
        client_config(roots, identity)
    }
}

/// A TLS client configuration trusting `roots`, presenting `identity` if
/// given.
pub fn client_config(
    roots: rustls::RootCertStore,
    identity: Option<&Identity>,
) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let config = match identity {
        Some(identity) => builder
            .with_client_auth_cert(identity.chain.clone(), identity.key())
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// One HTTPS request to `addr` (verified as `host`) with an optional JSON
/// body, on a connection of its own: the status and the body as JSON (or
/// as a JSON string), or why there is none. Within [`DEADLINE`].
pub async fn https_request(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let exchange = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .header("content-type", "application/json")
            .body(body.map(Value::to_string).unwrap_or_default())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e:?}"))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| {
            http_body::Body::poll_frame(std::pin::Pin::new(&mut body), cx)
        })
        .await
        {
            if let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() {
                bytes.extend_from_slice(&data);
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .map_err(|_| "no answer within the deadline".to_owned())?
}

/// A self-signed certificate for `names`, trusted by nobody.
pub fn self_signed(names: &[&str]) -> Identity {
    let certified =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("self-signed certificate");
    Identity {
        chain: vec![certified.cert.der().clone()],
        key_der: certified.signing_key.serialize_der(),
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
    }
}

/// An HTTPS endpoint on 127.0.0.1 answering every request `200 ok`, and
/// counting the TCP connections it accepted.
pub struct TlsTarget {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for TlsTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsTarget {
    pub async fn start(identity: &Identity) -> Self {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(identity.chain.clone(), identity.key())
            .expect("target certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind TLS target");
        let addr = listener.local_addr().expect("TLS target address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self {
            addr,
            accepted,
            task,
        }
    }

    /// `https://127.0.0.1:<port>/health`.
    pub fn url(&self) -> String {
        format!("https://{}/health", self.addr)
    }
}
