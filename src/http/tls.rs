//! HTTPS for the API: the rustls server configuration built from
//! `[http] tls_cert_file`, `tls_key_file` and `tls_client_ca_file`, read and
//! checked once at start-up. The handshake itself runs per connection in
//! [`super::server`], inside its connection cap and under its head deadline.
//!
//! Owns: reading the PEM files and what rustls is told. Must not: accept
//! connections or time them.

use std::{path::Path, sync::Arc};

use rustls::{RootCertStore, ServerConfig, crypto::CryptoProvider, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tracing::info;

use crate::config::{ConfigError, HttpConfig};

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

/// The API's TLS configuration: `None` when `[http]` names no certificate
/// (plain HTTP), otherwise HTTPS only, requiring client certificates signed
/// by `tls_client_ca_file` when it is set. A file that is missing,
/// unreadable or not what its key says is an error naming the key and the
/// file.
pub fn server_config(http: &HttpConfig) -> Result<Option<Arc<ServerConfig>>, ConfigError> {
    if http.tls_cert_file.as_os_str().is_empty() {
        return Ok(None);
    }
    let provider = crypto_provider();
    let chain = certificates("http.tls_cert_file", &http.tls_cert_file)?;
    let key = private_key("http.tls_key_file", &http.tls_key_file)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| invalid("http.tls_cert_file", error.to_string()))?;
    let client_certificates = !http.tls_client_ca_file.as_os_str().is_empty();
    let builder = if client_certificates {
        let key_name = "http.tls_client_ca_file";
        let path = &http.tls_client_ca_file;
        let mut roots = RootCertStore::empty();
        for certificate in certificates(key_name, path)? {
            roots.add(certificate).map_err(|error| {
                invalid(
                    key_name,
                    format!("{}: a CA certificate: {error}", path.display()),
                )
            })?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|error| invalid(key_name, format!("{}: {error}", path.display())))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|error| {
        invalid(
            "http.tls_key_file",
            format!(
                "{} does not go with the certificate in {}: {error}",
                http.tls_key_file.display(),
                http.tls_cert_file.display()
            ),
        )
    })?;
    // roster's server speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    info!(
        client_certificates_required = client_certificates,
        cert = %http.tls_cert_file.display(),
        "HTTPS on"
    );
    Ok(Some(Arc::new(config)))
}

fn invalid(key: &'static str, message: String) -> ConfigError {
    ConfigError::Invalid {
        origin: "HTTPS set-up".into(),
        key,
        message,
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|error| invalid(key, format!("cannot read {}: {error}", path.display())))
}

/// Every `CERTIFICATE` in the PEM file at `path`; at least one.
fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = read(key, path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(key, format!("{} is not valid PEM: {error}", path.display())))?;
    if chain.is_empty() {
        return Err(invalid(
            key,
            format!("{} holds no PEM CERTIFICATE", path.display()),
        ));
    }
    Ok(chain)
}

/// The private key in the PEM file at `path` (PKCS#8, PKCS#1 or SEC1).
fn private_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let bytes = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| {
        invalid(
            key,
            format!(
                "{} holds no usable PEM private key: {error}",
                path.display()
            ),
        )
    })
}
