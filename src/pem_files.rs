//! PEM files the configuration names (TLS certificates, keys and CA
//! bundles), read and parsed with errors that name the setting and the
//! file: for the API's HTTPS ([`crate::http::tls`]), the connection to
//! etcd ([`crate::cluster::tls`]) and the command line's HTTPS
//! ([`crate::client`]).
//!
//! Also reads a certificate's expiry ([`not_after`]), for the metric an
//! operator alerts on before a certificate runs out.
//!
//! Owns: reading and parsing. Must not: decide what a certificate is
//! trusted for.

use std::path::Path;

use rustls::RootCertStore;
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

/// Why rustls refused the certificate of the setting `cert_key` (file
/// `cert_path`) together with the key of `key_key` (file `key_path`), as
/// an error in the setting at fault: the key when it does not go with the
/// certificate, else the certificate, which rustls could not use (an
/// X.509 v1 certificate, as `openssl x509 -req` makes without extensions,
/// is the common case).
pub(crate) fn unpaired(
    origin: &str,
    (cert_key, cert_path): (&'static str, &Path),
    (key_key, key_path): (&'static str, &Path),
    error: &rustls::Error,
) -> ConfigError {
    match error {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => invalid(
            origin,
            key_key,
            format!(
                "{} does not go with the certificate in {}: {error}",
                key_path.display(),
                cert_path.display()
            ),
        ),
        _ => {
            let hint = match format!("{error:?}").contains("UnsupportedCertVersion") {
                true => {
                    " (an X.509 v1 certificate: make a v3 one, e.g. with `openssl x509 -req ... -extfile` naming a subjectAltName)"
                }
                false => "",
            };
            invalid(
                origin,
                cert_key,
                format!(
                    "the certificate in {} cannot be used: {error}{hint}",
                    cert_path.display()
                ),
            )
        }
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
    certificates_in(origin, key, path, &read(origin, key, path)?)
}

/// [`certificates`] of `bytes`, already read from `path`.
pub(crate) fn certificates_in(
    origin: &str,
    key: &'static str,
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let chain = CertificateDer::pem_slice_iter(bytes)
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

/// The CA certificates of the PEM bundle at `path`, as the only ones a
/// connection trusts.
pub(crate) fn roots(
    origin: &str,
    key: &'static str,
    path: &Path,
) -> Result<RootCertStore, ConfigError> {
    roots_in(origin, key, path, &read(origin, key, path)?)
}

/// [`roots`] of `bytes`, already read from `path`.
pub(crate) fn roots_in(
    origin: &str,
    key: &'static str,
    path: &Path,
    bytes: &[u8],
) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates_in(origin, key, path, bytes)? {
        roots.add(certificate).map_err(|error| {
            let message = format!("{}: a CA certificate: {error}", path.display());
            invalid(origin, key, message)
        })?;
    }
    Ok(roots)
}

/// The private key in the PEM file at `path` (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn private_key(
    origin: &str,
    key: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, ConfigError> {
    private_key_in(origin, key, path, &read(origin, key, path)?)
}

/// [`private_key`] of `bytes`, already read from `path`.
pub(crate) fn private_key_in(
    origin: &str,
    key: &'static str,
    path: &Path,
    bytes: &[u8],
) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|error| {
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

/// When `certificate` expires (its validity's notAfter), in seconds since
/// the Unix epoch; `None` if its DER is not the X.509 shape (RFC 5280 §4.1)
/// this reads. Only the path to the validity is walked: rustls checks the
/// rest.
pub(crate) fn not_after(certificate: &CertificateDer<'_>) -> Option<u64> {
    const SEQUENCE: u8 = 0x30;
    let (tag, certificate, _) = der(certificate.as_ref())?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, mut tbs, _) = der(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    // [0] version (absent for v1), serialNumber, signature, issuer; then
    // validity.
    let (tag, _, rest) = der(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
    }
    for _ in 0..3 {
        tbs = der(tbs)?.2;
    }
    let (tag, validity, _) = der(tbs)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _, validity) = der(validity)?;
    let (tag, time, _) = der(validity)?;
    // UTCTime YYMMDDHHMMSSZ (years 1950-2049) or GeneralizedTime
    // YYYYMMDDHHMMSSZ, as RFC 5280 §4.1.2.5 requires them.
    let year_digits = match (tag, time.len()) {
        (0x17, 13) => 2,
        (0x18, 15) => 4,
        _ => return None,
    };
    let (digits, zulu) = time.split_at(time.len() - 1);
    if zulu != b"Z" || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = |from: usize, len: usize| {
        digits[from..from + len]
            .iter()
            .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'))
    };
    let year = match year_digits {
        2 if number(0, 2) < 50 => 2000 + number(0, 2),
        2 => 1900 + number(0, 2),
        _ => number(0, 4),
    };
    let at = year_digits;
    let (month, day) = (number(at, 2), number(at + 2, 2));
    let (hour, minute, second) = (number(at + 4, 2), number(at + 6, 2), number(at + 8, 2));
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    u64::try_from(days * 86_400 + hour * 3_600 + minute * 60 + second).ok()
}

/// One DER element at the start of `input`: its tag, its contents and what
/// follows it. Definite lengths only, as DER has.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81..=0x84 => {
            let octets = usize::from(first & 0x7f);
            let (bytes, rest) = rest.split_at_checked(octets)?;
            let len = bytes
                .iter()
                .fold(0usize, |len, &b| (len << 8) | usize::from(b));
            (len, rest)
        }
        _ => return None,
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard
/// Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate_until(year: i32, month: u8, day: u8) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("certificate").der().clone()
    }

    #[test]
    fn the_expiry_is_read_in_both_time_forms() {
        // UTCTime before 2050, GeneralizedTime from 2050 (RFC 5280).
        assert_eq!(
            not_after(&certificate_until(2031, 5, 17)),
            Some(1_936_742_400)
        );
        assert_eq!(not_after(&certificate_until(2000, 3, 1)), Some(951_868_800));
        assert_eq!(
            not_after(&certificate_until(2050, 1, 1)),
            Some(2_524_608_000)
        );
        assert_eq!(
            not_after(&certificate_until(4096, 1, 1)),
            Some(67_090_118_400)
        );
    }

    #[test]
    fn anything_else_has_no_expiry() {
        let good = certificate_until(2031, 5, 17);
        for broken in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &good[..good.len() / 2],
        ] {
            assert_eq!(not_after(&CertificateDer::from(broken.to_vec())), None);
        }
        assert_eq!(
            not_after(&CertificateDer::from(vec![0x02, 0x01, 0x00])),
            None
        );
    }
}
