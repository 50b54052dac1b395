//! HTTPS for the API: the rustls server configuration built from
//! `[http] tls_cert_file`, `tls_key_file` and `tls_client_ca_file`, read and
//! checked at start-up, and again on SIGHUP ([`ServerTls::reload`]) so that
//! a renewed certificate is served without a restart. The handshake itself
//! runs per connection in [`super::server`], inside its connection cap and
//! under its head deadline.
//!
//! Owns: reading the PEM files, what rustls is told, and which
//! configuration a new handshake gets. Must not: accept connections or time
//! them.

use std::{path::Path, sync::Arc};

use arc_swap::ArcSwap;
use rustls::{RootCertStore, ServerConfig, crypto::CryptoProvider, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::{
    config::{ConfigError, HttpConfig},
    pem_files,
};

/// The crypto provider of every TLS connection roster makes or accepts:
/// ring, which is already built for hickory and the ACL digests (rustls'
/// default, aws-lc-rs, needs cmake and a C toolchain to build).
///
/// rustls 0.23.48 deprecates ring's provider because ring has no
/// post-quantum key exchange; the classical groups it offers (X25519,
/// P-256, P-384) are what roster's clients negotiate today.
#[allow(deprecated)]
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's CA certificates (as `rustls-native-certs` finds them,
/// `SSL_CERT_FILE` included): what `https://` health checks and the
/// command line's `https://` addresses trust. Empty if there are none;
/// certificates that cannot be read are left out, with a warning.
pub(crate) fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (_, unparsable) = roots.add_parsable_certificates(found.certs);
    if unparsable > 0 || !found.errors.is_empty() {
        warn!(
            unparsable,
            errors = found.errors.len(),
            "some system CA certificates could not be read; the rest are trusted"
        );
    }
    roots
}

/// The API's TLS configuration in force. Each handshake takes the one in
/// force when it starts, so a reload reaches new connections while those
/// already open keep the certificate they were given (as nginx and Consul
/// do on a reload).
pub struct ServerTls {
    /// The configuration and its certificate's expiry, swapped together.
    in_force: ArcSwap<Built>,
}

impl ServerTls {
    /// The TLS of `http`: `None` when it names no certificate (plain HTTP),
    /// otherwise HTTPS only, requiring client certificates signed by
    /// `tls_client_ca_file` when it is set. A file that is missing,
    /// unreadable or not what its key says is an error naming the key and
    /// the file.
    pub fn from_config(http: &HttpConfig) -> Result<Option<Self>, ConfigError> {
        let Some(built) = server_config(http)? else {
            return Ok(None);
        };
        info!(
            client_certificates_required = !http.tls_client_ca_file.as_os_str().is_empty(),
            cert = %http.tls_cert_file.display(),
            "HTTPS on"
        );
        Ok(Some(Self {
            in_force: ArcSwap::from_pointee(built),
        }))
    }

    /// When the certificate in force expires, in seconds since the Unix
    /// epoch, if its DER could be read for it.
    pub fn not_after(&self) -> Option<u64> {
        self.in_force.load().not_after
    }

    /// What the next handshake is served with.
    pub(super) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.in_force.load().config.clone())
    }

    /// Reads `http`'s files again and serves what they now hold from the
    /// next handshake on. On an error, which names the key and the file as
    /// at start-up, the configuration in force stays. HTTPS cannot be turned
    /// off this way: the listener's clients would meet plain HTTP where
    /// they expect TLS, so that takes a restart.
    pub fn reload(&self, http: &HttpConfig) -> Result<(), ConfigError> {
        let Some(built) = server_config(http)? else {
            return Err(invalid(
                "http.tls_cert_file",
                "is now empty, but HTTPS is turned off only by a restart".into(),
            ));
        };
        self.in_force.store(Arc::new(built));
        Ok(())
    }
}

/// A rustls configuration and when its certificate expires (if its DER
/// could be read for it).
struct Built {
    config: Arc<ServerConfig>,
    not_after: Option<u64>,
}

/// The rustls configuration of `http` and when its certificate expires
/// (if its DER could be read for it): `None` when it names no certificate
/// (plain HTTP), otherwise HTTPS only, requiring client certificates signed
/// by `tls_client_ca_file` when it is set. A file that is missing,
/// unreadable or not what its key says is an error naming the key and the
/// file.
fn server_config(http: &HttpConfig) -> Result<Option<Built>, ConfigError> {
    if http.tls_cert_file.as_os_str().is_empty() {
        return Ok(None);
    }
    let provider = crypto_provider();
    let chain = certificates("http.tls_cert_file", &http.tls_cert_file)?;
    let not_after = chain.first().and_then(pem_files::not_after);
    let key = private_key("http.tls_key_file", &http.tls_key_file)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| invalid("http.tls_cert_file", error.to_string()))?;
    let client_certificates = !http.tls_client_ca_file.as_os_str().is_empty();
    let builder = if client_certificates {
        let key_name = "http.tls_client_ca_file";
        let path = &http.tls_client_ca_file;
        let roots = pem_files::roots(ORIGIN, key_name, path)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|error| invalid(key_name, format!("{}: {error}", path.display())))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|error| {
        pem_files::unpaired(
            ORIGIN,
            ("http.tls_cert_file", &http.tls_cert_file),
            ("http.tls_key_file", &http.tls_key_file),
            &error,
        )
    })?;
    // roster's server speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Built {
        config: Arc::new(config),
        not_after,
    }))
}

/// Where the errors of this module say they come from.
const ORIGIN: &str = "HTTPS set-up";

fn invalid(key: &'static str, message: String) -> ConfigError {
    pem_files::invalid(ORIGIN, key, message)
}

fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    pem_files::certificates(ORIGIN, key, path)
}

fn private_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    pem_files::private_key(ORIGIN, key, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate and its key for `localhost`, in files
    /// under a new directory, and `[http]` naming them.
    fn files() -> (tempfile::TempDir, HttpConfig) {
        let dir = tempfile::tempdir().expect("tempdir");
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).expect("write cert");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
        let http = HttpConfig {
            tls_cert_file: cert,
            tls_key_file: key,
            ..HttpConfig::default()
        };
        (dir, http)
    }

    /// An X.509 v1 certificate and its key, as `openssl x509 -req` makes
    /// one without extensions (made once for this test; it protects
    /// nothing).
    const V1_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBIzCBywIUImvTsX7HJ56Mk8gTD/zS2dM2v6QwCgYIKoZIzj0EAwIwFDESMBAG
A1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwODAyNTUyM1oYDzIxMjYxMTE0MDI1NTIz
WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AAQtyKTbNwKHM9EZWB+xxln62JriPxHOuPL9C4qCJ5SUrNe6LU5J5AuiB9tb1XC1
DimtRU+YUSkZ5geDCZsONIz/MAoGCCqGSM49BAMCA0cAMEQCIDdCnFPvh3565IPG
bN3LMx8umJ+HUlO1fAQ6VjAxBe7oAiBp+2jK5xhf2yOKx+Of8+5JnYoRaWmInNkU
LHAw9nhUXw==
-----END CERTIFICATE-----
";
    const V1_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgRxCBm5yCSr+hrmNW
dsJJ2oUx1LnEzF3pil9Z7QtWAC+hRANCAAQtyKTbNwKHM9EZWB+xxln62JriPxHO
uPL9C4qCJ5SUrNe6LU5J5AuiB9tb1XC1DimtRU+YUSkZ5geDCZsONIz/
-----END PRIVATE KEY-----
";

    /// A certificate and key that do not go together blame the key; a
    /// certificate rustls cannot use (v1) blames the certificate, not a
    /// key that matches it.
    #[test]
    fn a_refused_pair_names_the_file_at_fault() {
        let (dir, http) = files();
        let (_other_dir, other) = files();
        let mismatched = HttpConfig {
            tls_key_file: other.tls_key_file.clone(),
            ..http.clone()
        };
        let error = server_config(&mismatched)
            .err()
            .expect("another certificate's key")
            .to_string();
        assert!(error.contains("http.tls_key_file"), "{error}");
        assert!(error.contains("does not go with"), "{error}");

        let (cert, key) = (dir.path().join("v1.pem"), dir.path().join("v1-key.pem"));
        std::fs::write(&cert, V1_CERT).expect("write cert");
        std::fs::write(&key, V1_KEY).expect("write key");
        let v1 = HttpConfig {
            tls_cert_file: cert,
            tls_key_file: key,
            ..HttpConfig::default()
        };
        let error = server_config(&v1)
            .err()
            .expect("a v1 certificate")
            .to_string();
        assert!(error.contains("http.tls_cert_file"), "{error}");
        assert!(error.contains("X.509 v1"), "{error}");
        assert!(!error.contains("does not go with"), "{error}");
    }

    #[test]
    fn a_reload_cannot_turn_https_off_and_a_refused_one_changes_nothing() {
        let (_dir, http) = files();
        let tls = ServerTls::from_config(&http)
            .expect("valid files")
            .expect("HTTPS on");
        let before = tls.in_force.load_full();

        let error = tls
            .reload(&HttpConfig::default())
            .expect_err("HTTPS turned off by a reload")
            .to_string();
        assert!(error.contains("http.tls_cert_file"), "{error}");
        let broken = HttpConfig {
            tls_key_file: http.tls_cert_file.clone(),
            ..http.clone()
        };
        let error = tls
            .reload(&broken)
            .expect_err("a certificate as the key")
            .to_string();
        assert!(error.contains("http.tls_key_file"), "{error}");
        assert!(Arc::ptr_eq(&before, &tls.in_force.load_full()));

        tls.reload(&http).expect("the same files again");
        assert!(!Arc::ptr_eq(&before, &tls.in_force.load_full()));
    }
}
