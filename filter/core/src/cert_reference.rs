//! x509-cert's reading of the facts `cert` reads, for the differential tests (cert/tests.rs)
//! and the fuzz target `binding`. Never built into the filter (feature `x509-reference`).

use crate::validity::CertValidity;
use der::Decode;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

/// The validity window and URI SANs of a DER certificate as x509-cert reads them; `None`
/// where it refuses the certificate or its subjectAltName extension (as the filter did when
/// it read certificates with it).
pub fn read(der: &[u8]) -> Option<(CertValidity, Vec<String>)> {
    let cert = Certificate::from_der(der).ok()?;
    let v = cert.tbs_certificate().validity();
    let validity = CertValidity::new(
        v.not_before.to_unix_duration().as_secs(),
        v.not_after.to_unix_duration().as_secs(),
    );
    let uris = match cert
        .tbs_certificate()
        .get_extension::<SubjectAltName>()
        .ok()?
    {
        Some((_, san)) => san
            .0
            .iter()
            .filter_map(|n| match n {
                GeneralName::UniformResourceIdentifier(u) => Some(u.to_string()),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    Some((validity, uris))
}

/// Whether the strict walk and x509-cert read the same facts wherever both accept `der`
/// (`true` when either refuses it).
pub fn agrees(der: &[u8]) -> bool {
    match (crate::cert::read(der), read(der)) {
        (Some(facts), Some((validity, uris))) => {
            facts.validity == validity && facts.uri_sans == uris
        }
        _ => true,
    }
}
