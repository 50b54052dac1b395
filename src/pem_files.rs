//! PEM files the configuration names (TLS certificates, keys and CA
//! bundles), read and parsed with errors that name the setting and the
//! file: for the API's HTTPS ([`crate::http::tls`]) and for the connection
//! to etcd ([`crate::cluster::etcd`]).
//!
//! Owns: reading and parsing. Must not: decide what a certificate is
//! trusted for.

use std::path::Path;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::config::ConfigError;

/// An error in the setting `key`, from `origin` ("HTTPS set-up").
pub(crate) fn invalid(origin: &str, key: &'static str, message: String) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.into(),
        key,
        message,
    }
}

/// The bytes of the file at `path`, named by the setting `key`.
pub(crate) fn read(origin: &str, key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|error| {
        invalid(
            origin,
            key,
            format!("cannot read {}: {error}", path.display()),
        )
    })
}

/// Every `CERTIFICATE` in the PEM file at `path`; at least one.
pub(crate) fn certificates(
    origin: &str,
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = read(origin, key, path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            invalid(
                origin,
                key,
                format!("{} is not valid PEM: {error}", path.display()),
            )
        })?;
    if chain.is_empty() {
        return Err(invalid(
            origin,
            key,
            format!("{} holds no PEM CERTIFICATE", path.display()),
        ));
    }
    Ok(chain)
}

/// The private key in the PEM file at `path` (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn private_key(
    origin: &str,
    key: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let bytes = read(origin, key, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| {
        invalid(
            origin,
            key,
            format!(
                "{} holds no usable PEM private key: {error}",
                path.display()
            ),
        )
    })
}
