//! The CA on disk: the signing root (loaded from, or created in, the PKI directory) and the
//! leaf certificates it signs, checks and renews.

use super::{BACKDATE, CaError, Profile, RENEW_MARGIN, io_err, workload_id};
use crate::fsutil::{PRIVATE_MODE, PUBLIC_MODE, write_atomic};
use crate::x509::ca_verifies_leaf;
use crate::x509::der_to_pem;
use crate::x509::{hex_lower, key_matches, not_after, not_before};
use certbind_core::binding::SpiffeId;
use der::{Decode, DecodePem};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::ext::pkix::BasicConstraints as BasicConstraintsExt;

/// The CA certificate and key as loaded from (or just written to) the PKI directory.
pub(crate) struct LoadedCa {
    cert_der: Vec<u8>,
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
    issuer: Issuer<'static, KeyPair>,
}

impl LoadedCa {
    /// Loads the signing root: `ca.key` and the certificate of the bundle `ca.crt` it
    /// matches, if that describes a CA and stays valid for a while (the smaller of an hour and
    /// a third of its life).
    pub(super) fn load(dir: &Path, now: OffsetDateTime) -> Option<Self> {
        let ca = Self::load_key(dir, "ca.key")?;
        let life = ca.not_after - ca.not_before;
        let margin = time::Duration::try_from(RENEW_MARGIN)
            .unwrap_or(life)
            .min(life / 3);
        (ca.not_after >= now + margin).then_some(ca)
    }

    /// The root of the bundle `ca.crt` whose key is `<key_file>`, however long it has left.
    pub(crate) fn load_key(dir: &Path, key_file: &str) -> Option<Self> {
        let bundle = std::fs::read(dir.join("ca.crt")).ok()?;
        let key_pem = std::fs::read_to_string(dir.join(key_file)).ok()?;
        let key = KeyPair::from_pem(&key_pem).ok()?;
        let cert = Certificate::load_pem_chain(&bundle)
            .ok()?
            .into_iter()
            .find(|cert| key_matches(cert, &key))?;
        let not_after = not_after(&cert)?;
        let not_before = not_before(&cert)?;
        // Only a CA certificate may sign: a leaf dropped in as ca.crt is not kept.
        let is_ca = cert
            .tbs_certificate()
            .get_extension::<BasicConstraintsExt>()
            .ok()
            .flatten()
            .is_some_and(|(_, bc)| bc.ca);
        if !is_ca {
            return None;
        }
        let cert_der = der::Encode::to_der(&cert).ok()?;
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(cert_der.clone()), key).ok()?;
        Some(Self {
            cert_der,
            not_before,
            not_after,
            issuer,
        })
    }

    /// A new root written as `ca.key` and the whole bundle `ca.crt` (init: a fresh start).
    pub(super) fn create(
        dir: &Path,
        life: time::Duration,
        now: OffsetDateTime,
    ) -> Result<Self, CaError> {
        let (ca, key_pem) = Self::generate(life, now)?;
        let ca_key_path = dir.join("ca.key");
        write_atomic(&ca_key_path, key_pem.as_bytes(), PRIVATE_MODE)
            .map_err(io_err(&ca_key_path))?;
        let ca_crt_path = dir.join("ca.crt");
        write_atomic(&ca_crt_path, ca.pem().as_bytes(), PUBLIC_MODE)
            .map_err(io_err(&ca_crt_path))?;
        Ok(ca)
    }

    /// The certificate as PEM.
    pub(crate) fn pem(&self) -> String {
        der_to_pem(&self.cert_der)
    }

    pub(crate) fn der(&self) -> &[u8] {
        &self.cert_der
    }

    /// A new self-signed root (nothing written) and its key as PEM.
    pub(crate) fn generate(
        life: time::Duration,
        now: OffsetDateTime,
    ) -> Result<(Self, String), CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "certbind demo");
        // A per-CA suffix: two demo CAs never share a subject, so a foreign leaf is reported
        // as "unknown CA" rather than as a bad signature from a same-named issuer.
        let mut tag = [0u8; 4];
        getrandom::fill(&mut tag).map_err(|e| CaError::Io {
            path: PathBuf::from("<getrandom>"),
            source: std::io::Error::other(e.to_string()),
        })?;
        let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        dn.push(DnType::CommonName, format!("certbind demo CA {tag}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - BACKDATE;
        params.not_after = now + life;
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok((
            Self {
                cert_der: cert.der().to_vec(),
                not_before: params.not_before,
                not_after: params.not_after,
                issuer: Issuer::new(params, key),
            },
            key_pem,
        ))
    }

    /// A leaf is kept if its key matches, it chains to this CA, stays valid past the renewal
    /// margin, and carries exactly the expected SPIFFE ID.
    /// A leaf on disk whose key matches, that carries the ID of `name` and that this root
    /// issued and still vouches for at `now`.
    pub(crate) fn leaf_still_good_at(
        &self,
        dir: &Path,
        name: &str,
        der: &[u8],
        now: OffsetDateTime,
    ) -> bool {
        let key_ok = std::fs::read_to_string(dir.join(format!("{name}.key")))
            .ok()
            .and_then(|pem| KeyPair::from_pem(&pem).ok())
            .zip(Certificate::from_der(der).ok())
            .is_some_and(|(key, cert)| key_matches(&cert, &key));
        key_ok
            && workload_id(name)
                .is_ok_and(|id| SpiffeId::from_cert_der(der).is_ok_and(|got| got == id))
            && ca_verifies_leaf(&self.cert_der, der, now)
    }

    pub(crate) fn leaf_still_good(
        &self,
        dir: &Path,
        name: &str,
        id: &SpiffeId,
        now: OffsetDateTime,
    ) -> bool {
        let (Ok(cert_pem), Ok(key_pem)) = (
            std::fs::read_to_string(dir.join(format!("{name}.crt"))),
            std::fs::read_to_string(dir.join(format!("{name}.key"))),
        ) else {
            return false;
        };
        let (Ok(cert), Ok(key)) = (
            Certificate::from_pem(cert_pem.as_bytes()),
            KeyPair::from_pem(&key_pem),
        ) else {
            return false;
        };
        let Ok(der) = der::Encode::to_der(&cert) else {
            return false;
        };
        // A leaf of the other profile (e.g. a client with serverAuth from an older `pki init`)
        // is replaced.
        let wants_server = matches!(Profile::for_name(name), Profile::Server { .. });
        key_matches(&cert, &key)
            && SpiffeId::from_cert_der(&der).is_ok_and(|got| &got == id)
            && has_server_auth(&cert) == wants_server
            && ca_verifies_leaf(&self.cert_der, &der, now)
            && ca_verifies_leaf(&self.cert_der, &der, now + RENEW_MARGIN)
    }

    pub(crate) fn issue_leaf(
        &self,
        dir: &Path,
        name: &str,
        id: &SpiffeId,
        profile: &Profile,
        life: time::Duration,
        now: OffsetDateTime,
    ) -> Result<String, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "certbind demo");
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(id.as_str().try_into()?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if let Profile::Server { extra_dns } = profile {
            params
                .subject_alt_names
                .push(SanType::DnsName("localhost".try_into()?));
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
            for dns in extra_dns {
                params
                    .subject_alt_names
                    .push(SanType::DnsName(dns.as_str().try_into()?));
            }
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = now - BACKDATE;
        // A leaf never outlives its CA.
        params.not_after = (now + life).min(self.not_after);
        let serial = random_serial()?;
        let serial_hex = hex_lower(serial.as_ref());
        params.serial_number = Some(serial);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        // Key first: a certificate is never on disk without its matching key.
        let key_path = dir.join(format!("{name}.key"));
        write_atomic(&key_path, key.serialize_pem().as_bytes(), PRIVATE_MODE)
            .map_err(io_err(&key_path))?;
        let crt_path = dir.join(format!("{name}.crt"));
        write_atomic(&crt_path, cert.pem().as_bytes(), PUBLIC_MODE).map_err(io_err(&crt_path))?;
        Ok(serial_hex)
    }
}

/// Whether the certificate's extended key usage includes serverAuth (1.3.6.1.5.5.7.3.1).
fn has_server_auth(cert: &Certificate) -> bool {
    const SERVER_AUTH: der::asn1::ObjectIdentifier =
        der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
    cert.tbs_certificate()
        .get_extension::<x509_cert::ext::pkix::ExtendedKeyUsage>()
        .ok()
        .flatten()
        .is_some_and(|(_, eku)| eku.0.contains(&SERVER_AUTH))
}

/// 16 random bytes, high bit cleared so the DER INTEGER stays positive (RFC 5280 §4.1.2.2).
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| CaError::Io {
        path: PathBuf::from("<getrandom>"),
        source: std::io::Error::other(e.to_string()),
    })?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}
