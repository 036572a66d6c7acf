//! Reading certificates: DER from PEM files, serial numbers, validity windows, PEM encoding,
//! and whether a root vouches for a leaf at a given time (rustls/webpki).

use der::{Decode, DecodePem};
use rcgen::KeyPair;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, UnixTime};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use x509_cert::Certificate;

/// The serial number (lower-case hex, as Envoy's `/certs` prints it) of a PEM certificate.
pub fn serial_hex(cert_path: &Path) -> Option<String> {
    let pem = std::fs::read_to_string(cert_path).ok()?;
    let cert = Certificate::from_pem(pem.as_bytes()).ok()?;
    Some(hex_lower(cert.tbs_certificate().serial_number().as_bytes()))
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Verifies that `leaf_der` chains to `ca_der`, is valid at `at`, and may act as a TLS client
/// (rustls/webpki, the same code the servers use to accept client certificates).
pub fn ca_verifies_leaf(ca_der: &[u8], leaf_der: &[u8], at: OffsetDateTime) -> bool {
    let mut roots = RootCertStore::empty();
    if roots.add(CertificateDer::from(ca_der.to_vec())).is_err() {
        return false;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(verifier) =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()
    else {
        return false;
    };
    let Ok(secs) = u64::try_from(at.unix_timestamp()) else {
        return false;
    };
    let when = UnixTime::since_unix_epoch(Duration::from_secs(secs));
    verifier
        .verify_client_cert(&CertificateDer::from(leaf_der.to_vec()), &[], when)
        .is_ok()
}

pub(crate) fn key_matches(cert: &Certificate, key: &KeyPair) -> bool {
    cert.tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .raw_bytes()
        == key.public_key_raw()
}

pub(crate) fn not_before(cert: &Certificate) -> Option<OffsetDateTime> {
    let secs = cert
        .tbs_certificate()
        .validity()
        .not_before
        .to_unix_duration()
        .as_secs();
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).ok()?).ok()
}

/// DER as one PEM `CERTIFICATE` block.
pub(crate) fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The validity window of a certificate (DER), as Unix seconds.
pub fn validity(der: &[u8]) -> Option<(OffsetDateTime, OffsetDateTime)> {
    let cert = Certificate::from_der(der).ok()?;
    Some((not_before(&cert)?, not_after(&cert)?))
}

pub(crate) fn not_after(cert: &Certificate) -> Option<OffsetDateTime> {
    let secs = cert
        .tbs_certificate()
        .validity()
        .not_after
        .to_unix_duration()
        .as_secs();
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).ok()?).ok()
}

/// Reads a PEM certificate file and returns its DER (used by tests and the server).
pub fn read_cert_der(path: &Path) -> Option<Vec<u8>> {
    let pem = std::fs::read_to_string(path).ok()?;
    let cert = Certificate::from_pem(pem.as_bytes()).ok()?;
    der::Encode::to_der(&cert).ok()
}

/// Parses DER as a certificate (sanity helper for tests of other modules).
pub fn is_certificate(der: &[u8]) -> bool {
    Certificate::from_der(der).is_ok()
}
