//! TLS to etcd: what roster trusts etcd's certificate for, and the client
//! certificate it presents, from `[cluster] tls_ca_file`, `tls_cert_file`
//! and `tls_key_file`. Read and checked once at start-up, so that a bad
//! file stops roster naming the setting and the file instead of showing
//! as an unreachable etcd.
//!
//! Owns: reading the files and what the etcd client is told. Must not:
//! connect (see [`super::etcd`]).

use std::{path::Path, sync::Arc, time::Duration};

use etcd_client::{Certificate, Identity, TlsOptions};
use rustls_pki_types::ServerName;
use tokio::{io::AsyncReadExt, net::TcpStream, time::timeout};

use crate::{
    config::{ClusterConfig, ConfigError},
    http::tls::crypto_provider,
    pem_files,
};

/// Where the errors of this module say they come from.
const ORIGIN: &str = "etcd TLS set-up";

/// The etcd client's TLS and the files it came from.
pub struct Loaded {
    /// What the etcd client is told.
    pub options: TlsOptions,
    /// What the files held when read.
    pub files: Files,
    /// The same trust and certificate for a handshake of roster's own
    /// ([`handshake`]).
    pub probe: Arc<rustls::ClientConfig>,
}

/// The contents of the etcd TLS files, as read: a reload that reads the
/// same has nothing to change, and need not connect anew.
#[derive(PartialEq, Eq)]
pub struct Files {
    ca: Vec<u8>,
    /// The client certificate and its key, when roster presents one.
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// The etcd client's TLS: `None` for `http://` URLs; otherwise only the CA
/// of `tls_ca_file` is trusted for etcd's certificate (checked against the
/// URL's host), and the client certificate of `tls_cert_file` and
/// `tls_key_file` is presented if they are set. [`ClusterConfig`]'s
/// validation has made sure the settings go together.
pub fn load(config: &ClusterConfig) -> Result<Option<Loaded>, ConfigError> {
    if !config.tls() {
        return Ok(None);
    }
    // Each file is read once: parsed here, so that a bad one is named at
    // start-up, and handed as PEM to the etcd client, which parses it
    // again when it connects.
    let (ca_key, ca_path) = ("cluster.tls_ca_file", &config.tls_ca_file);
    let ca = read(ca_key, ca_path)?;
    let roots = pem_files::roots_in(ORIGIN, ca_key, ca_path, &ca)?;
    let mut options = TlsOptions::new().ca_certificate(Certificate::from_pem(ca.clone()));
    let mut identity = None;
    let builder = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| pem_files::invalid(ORIGIN, ca_key, error.to_string()))?
        .with_root_certificates(Arc::new(roots));
    let probe = if config.tls_cert_file.as_os_str().is_empty() {
        builder.with_no_client_auth()
    } else {
        let (cert_key, cert_path) = ("cluster.tls_cert_file", &config.tls_cert_file);
        let (key_key, key_path) = ("cluster.tls_key_file", &config.tls_key_file);
        let (cert, key) = (read(cert_key, cert_path)?, read(key_key, key_path)?);
        let chain = pem_files::certificates_in(ORIGIN, cert_key, cert_path, &cert)?;
        let private = pem_files::private_key_in(ORIGIN, key_key, key_path, &key)?;
        // The etcd client would report a key that does not go with its
        // certificate only when it connects, as an unreachable etcd.
        // rustls tells now.
        let probe = builder
            .with_client_auth_cert(chain, private)
            .map_err(|error| {
                pem_files::unpaired(ORIGIN, (cert_key, cert_path), (key_key, key_path), &error)
            })?;
        options = options.identity(Identity::from_pem(cert.clone(), key.clone()));
        identity = Some((cert, key));
        probe
    };
    Ok(Some(Loaded {
        options,
        files: Files { ca, identity },
        probe: Arc::new(probe),
    }))
}

/// How long [`handshake`] waits for each of connecting, the
/// handshake, and etcd's verdict on it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a handshake of roster's own with an etcd member came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    /// etcd refused it on a certificate, as rustls says.
    Refused(String),
    /// etcd took it: no verdict within 2 s of finishing.
    Taken,
    /// No TLS server was reached (nothing listening, no host in the URL,
    /// a failure that is not about a certificate).
    Unreached,
}

/// A TLS handshake with etcd at `url` made with `probe`, then a read.
/// Under TLS 1.3 a server checks the client's certificate after the
/// client has finished its side of the handshake: one that wants a
/// certificate and got none sends its alert then, and the etcd client,
/// already writing, sees only a closed connection. A handshake of roster's
/// own that then reads reaches the alert. Each step is bounded by 2 s.
pub async fn handshake(url: &str, probe: Arc<rustls::ClientConfig>) -> Handshake {
    let Some((host, port, name)) = (|| {
        let uri: axum::http::Uri = url.parse().ok()?;
        let host = uri
            .host()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(2379);
        let name = ServerName::try_from(host.clone()).ok()?;
        Some((host, port, name))
    })() else {
        return Handshake::Unreached;
    };
    let Ok(Ok(tcp)) = timeout(PROBE_TIMEOUT, TcpStream::connect((host.as_str(), port))).await
    else {
        return Handshake::Unreached;
    };
    let connector = tokio_rustls::TlsConnector::from(probe);
    let mut stream = match timeout(PROBE_TIMEOUT, connector.connect(name, tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return refusal(&error),
        Err(_) => return Handshake::Unreached,
    };
    let mut byte = [0u8; 1];
    match timeout(PROBE_TIMEOUT, stream.read(&mut byte)).await {
        Ok(Err(error)) => match refusal(&error) {
            Handshake::Unreached => Handshake::Taken,
            refused => refused,
        },
        _ => Handshake::Taken,
    }
}

/// `error`'s certificate failure, said as rustls says it; else a failure
/// that says nothing about certificates.
fn refusal(error: &std::io::Error) -> Handshake {
    match super::etcd::certificate_failure(error) {
        Some(tls) => Handshake::Refused(tls.to_string()),
        None => Handshake::Unreached,
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    pem_files::read(ORIGIN, key, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a new self-signed certificate and its key as `name.pem` and
    /// `name-key.pem` in `dir`.
    fn identity(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}-key.pem")),
        );
        std::fs::write(&cert, certified.cert.pem()).expect("write certificate");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
        (cert, key)
    }

    fn config(ca: &Path, cert: &Path, key: &Path) -> ClusterConfig {
        ClusterConfig {
            etcd: vec!["https://127.0.0.1:2379".to_owned()],
            tls_ca_file: ca.to_owned(),
            tls_cert_file: cert.to_owned(),
            tls_key_file: key.to_owned(),
            ..ClusterConfig::default()
        }
    }

    /// Nothing to hear from: no host in the URL, or nothing listening.
    /// (etcd's alert to a node without a client certificate is heard in
    /// tests/cluster.rs, against a real etcd.)
    #[tokio::test]
    async fn a_handshake_that_reaches_no_one_tells_no_refusal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, _) = identity(dir.path(), "ca");
        let loaded = load(&config(&ca, Path::new(""), Path::new("")))
            .expect("a CA alone")
            .expect("TLS");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("address").port();
        drop(closed);
        for url in [
            "not a url",
            "https://",
            &format!("https://127.0.0.1:{port}"),
        ] {
            assert_eq!(
                handshake(url, loaded.probe.clone()).await,
                Handshake::Unreached,
                "{url}"
            );
        }
    }

    #[test]
    fn plain_urls_take_no_tls_and_good_files_do() {
        assert!(load(&ClusterConfig::default()).expect("no TLS").is_none());
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, _) = identity(dir.path(), "ca");
        let (cert, key) = identity(dir.path(), "client");
        assert!(load(&config(&ca, &cert, &key)).expect("valid").is_some());
        let without_client = config(&ca, Path::new(""), Path::new(""));
        assert!(load(&without_client).expect("a CA alone").is_some());
    }

    #[test]
    fn a_bad_file_is_named_with_its_setting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, _) = identity(dir.path(), "ca");
        let (cert, key) = identity(dir.path(), "client");
        let (_, other_key) = identity(dir.path(), "other");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not PEM at all").expect("write");
        let missing = dir.path().join("missing.pem");
        let cases = [
            (
                config(&missing, &cert, &key),
                "cluster.tls_ca_file",
                &missing,
            ),
            (
                config(&garbage, &cert, &key),
                "cluster.tls_ca_file",
                &garbage,
            ),
            (
                config(&ca, &garbage, &key),
                "cluster.tls_cert_file",
                &garbage,
            ),
            (
                config(&ca, &cert, &garbage),
                "cluster.tls_key_file",
                &garbage,
            ),
            (
                config(&ca, &cert, &other_key),
                "cluster.tls_key_file",
                &other_key,
            ),
        ];
        for (config, setting, file) in cases {
            let error = load(&config).err().expect(setting).to_string();
            assert!(error.contains(setting), "{setting}: {error}");
            assert!(
                error.contains(&file.display().to_string()),
                "{setting}: {error}"
            );
        }
    }
}
