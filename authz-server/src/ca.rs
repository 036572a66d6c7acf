//! The internal CA: creates the EC P-256 root and the workload leaf certificates (one SPIFFE
//! ID each) under a PKI directory, keeping what is still valid unless asked to start over.

use crate::fsutil::{PRIVATE_MODE, PUBLIC_MODE, ensure_private_dir, write_atomic};
use certbind_core::binding::SpiffeId;
use der::{Decode, DecodePem};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, UnixTime};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::ext::pkix::BasicConstraints as BasicConstraintsExt;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

/// The trust domain of every identity this CA issues.
pub const TRUST_DOMAIN: &str = "certbind.test";
/// Workloads `pki init` issues for: the demo workloads of CONTRACT §2 plus the two servers'
/// own identities (`authz`, `pdp`) for their TLS certificates.
pub const DEFAULT_WORKLOADS: [&str; 8] = [
    "consumer",
    "inventory",
    "orders",
    "billing",
    "envoy",
    "authz",
    "pdp",
    // The operator of the admin API (revocations).
    "operator",
];
/// What `pki rotate` reissues by default: the consumer and the sidecar's identities (its
/// listeners' `orders`/`billing` and its clusters' `envoy`), all of which Envoy reads via SDS.
pub const ROTATE_DEFAULT: [&str; 4] = ["consumer", "orders", "billing", "envoy"];
/// The subdirectory of the PKI directory with Envoy's file-based SDS secrets (`<name>.yaml`).
pub const SDS_DIR: &str = "sds";
/// A certificate expiring sooner than this is renewed by `pki init` rather than kept.
const RENEW_MARGIN: Duration = Duration::from_secs(3600);
/// Certificates start slightly in the past so small clock differences do not reject them.
const BACKDATE: time::Duration = time::Duration::minutes(5);

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid workload name {0:?}: must be a SPIFFE path segment [A-Za-z0-9._-]")]
    BadName(String),
    #[error("--days must be between 1 and 3650")]
    BadDays,
    #[error("--server-dns {0:?}: expected <workload>=<DNS name> for a workload pki init issues")]
    BadServerDns(String),
    #[error("no usable CA in {0} (run `certbind-authz pki init` first)")]
    NoCa(PathBuf),
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// What `init` did with one file pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Kept,
    Created,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kept => "kept",
            Self::Created => "created",
        })
    }
}

/// The result of `pki init`: the CA's fate and each leaf's.
#[derive(Debug)]
pub struct InitReport {
    pub ca: Outcome,
    pub leaves: Vec<(String, Outcome)>,
}

/// The SPIFFE ID of a demo workload name; the name must be one valid path segment.
pub fn workload_id(name: &str) -> Result<SpiffeId, CaError> {
    if name.is_empty() || name.contains('/') {
        return Err(CaError::BadName(name.to_owned()));
    }
    SpiffeId::parse(&format!("spiffe://{TRUST_DOMAIN}/ns/demo/sa/{name}"))
        .map_err(|_| CaError::BadName(name.to_owned()))
}

fn check_days(days: u32) -> Result<(), CaError> {
    if (1..=3650).contains(&days) {
        Ok(())
    } else {
        Err(CaError::BadDays)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates (or keeps) the CA and a leaf for every name in `names`.
pub fn init(
    dir: &Path,
    names: &[&str],
    days: u32,
    force: bool,
    now: OffsetDateTime,
) -> Result<InitReport, CaError> {
    init_with_server_dns(dir, names, &[], days, force, now)
}

/// [`init`], and each `(workload, dns name)` of `server_dns` adds that DNS name to the
/// workload's certificate (`pki init --server-dns`: a server's host name where it is not
/// `localhost`, e.g. `authz` on a compose network). A kept leaf must already carry its names.
pub fn init_with_server_dns(
    dir: &Path,
    names: &[&str],
    server_dns: &[(String, String)],
    days: u32,
    force: bool,
    now: OffsetDateTime,
) -> Result<InitReport, CaError> {
    check_days(days)?;
    if let Some((workload, dns)) = server_dns.iter().find(|(w, d)| {
        !names.contains(&w.as_str()) || rustls_pki_types::DnsName::try_from(d.as_str()).is_err()
    }) {
        return Err(CaError::BadServerDns(format!("{workload}={dns}")));
    }
    let ids = names
        .iter()
        .map(|n| workload_id(n).map(|id| (*n, id)))
        .collect::<Result<Vec<_>, _>>()?;
    ensure_private_dir(dir).map_err(io_err(dir))?;

    let existing = if force {
        None
    } else {
        LoadedCa::load(dir, now)
    };
    let (ca, ca_outcome) = match existing {
        Some(ca) => (ca, Outcome::Kept),
        None => (LoadedCa::create(dir, days, now)?, Outcome::Created),
    };
    let mut leaves = Vec::with_capacity(ids.len());
    for (name, id) in ids {
        let dns: Vec<&str> = server_dns
            .iter()
            .filter(|(w, _)| w == name)
            .map(|(_, d)| d.as_str())
            .collect();
        let keep = ca_outcome == Outcome::Kept && ca.leaf_still_good(dir, name, &id, &dns, now);
        let outcome = if keep {
            Outcome::Kept
        } else {
            ca.issue_leaf(dir, name, &id, &dns, days, now)?;
            Outcome::Created
        };
        leaves.push((name.to_owned(), outcome));
    }
    write_sds(dir, names)?;
    Ok(InitReport {
        ca: ca_outcome,
        leaves,
    })
}

/// Issues one more leaf `<name>.crt`/`<name>.key` from the existing CA (replacing any old one).
pub fn issue(dir: &Path, name: &str, days: u32, now: OffsetDateTime) -> Result<PathBuf, CaError> {
    check_days(days)?;
    let id = workload_id(name)?;
    let ca = LoadedCa::load(dir, now).ok_or_else(|| CaError::NoCa(dir.to_owned()))?;
    ca.issue_leaf(dir, name, &id, &[], days, now)?;
    write_sds(dir, &[name])?;
    Ok(dir.join(format!("{name}.crt")))
}

/// Reissues the leaves `names` from the existing CA (new key, new serial), each pair replaced
/// key first, then certificate, each file by an atomic rename: a reader sees the old pair, the
/// new pair, or for a moment the new key with the old certificate, a mismatch that Envoy
/// (SDS, `key_rotation_failed`) and the consumer refuse, keeping the pair they had. Returns
/// each name with its new serial (hex).
pub fn rotate(
    dir: &Path,
    names: &[&str],
    days: u32,
    now: OffsetDateTime,
) -> Result<Vec<(String, String)>, CaError> {
    check_days(days)?;
    let ids = names
        .iter()
        .map(|n| workload_id(n).map(|id| (*n, id)))
        .collect::<Result<Vec<_>, _>>()?;
    let ca = LoadedCa::load(dir, now).ok_or_else(|| CaError::NoCa(dir.to_owned()))?;
    let mut out = Vec::with_capacity(ids.len());
    for (name, id) in ids {
        let serial = ca.issue_leaf(dir, name, &id, &[], days, now)?;
        out.push((name.to_owned(), serial));
    }
    write_sds(dir, names)?;
    Ok(out)
}

/// The serial number (lower-case hex, as Envoy's `/certs` prints it) of a PEM certificate.
pub fn serial_hex(cert_path: &Path) -> Option<String> {
    let pem = std::fs::read_to_string(cert_path).ok()?;
    let cert = Certificate::from_pem(pem.as_bytes()).ok()?;
    Some(hex_lower(cert.tbs_certificate().serial_number().as_bytes()))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes Envoy's file-based SDS secrets into `<dir>/sds/`: `<name>.yaml` (a `tls_certificate`
/// naming `<dir>/<name>.crt`/`.key`) per leaf and `ca.yaml` (a `validation_context` naming
/// `<dir>/ca.crt`), with absolute paths. Each secret watches `<dir>` itself
/// (`watched_directory`), so the atomic rename of a reissued file makes Envoy reread the pair;
/// the secret files themselves never change on rotation.
pub fn write_sds(dir: &Path, names: &[&str]) -> Result<(), CaError> {
    let abs = std::fs::canonicalize(dir).map_err(io_err(dir))?;
    let sds = abs.join(SDS_DIR);
    ensure_private_dir(&sds).map_err(io_err(&sds))?;
    let quoted = |p: &Path| -> Result<String, CaError> {
        let text = p.to_str().ok_or_else(|| CaError::Io {
            path: p.to_owned(),
            source: std::io::Error::other("path is not UTF-8"),
        })?;
        // A JSON string is a valid YAML flow scalar: any path is quoted safely.
        serde_json::to_string(text).map_err(|e| CaError::Io {
            path: p.to_owned(),
            source: std::io::Error::other(e.to_string()),
        })
    };
    let watched = quoted(&abs)?;
    for name in names {
        workload_id(name)?;
        let body = format!(
            "# Envoy SDS secret {name} (written by certbind-authz pki; rotation replaces the files it names)\n\
             resources:\n\
             - \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  \
             name: {name}\n  \
             tls_certificate:\n    \
             certificate_chain: {{ filename: {crt} }}\n    \
             private_key: {{ filename: {key} }}\n    \
             watched_directory: {{ path: {watched} }}\n",
            crt = quoted(&abs.join(format!("{name}.crt")))?,
            key = quoted(&abs.join(format!("{name}.key")))?,
        );
        let path = sds.join(format!("{name}.yaml"));
        write_atomic(&path, body.as_bytes(), PUBLIC_MODE).map_err(io_err(&path))?;
    }
    let body = format!(
        "# Envoy SDS secret ca: the trusted CA (written by certbind-authz pki)\n\
         resources:\n\
         - \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  \
         name: ca\n  \
         validation_context:\n    \
         trusted_ca: {{ filename: {ca} }}\n    \
         watched_directory: {{ path: {watched} }}\n",
        ca = quoted(&abs.join("ca.crt"))?,
    );
    let path = sds.join("ca.yaml");
    write_atomic(&path, body.as_bytes(), PUBLIC_MODE).map_err(io_err(&path))
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

/// The CA certificate and key as loaded from (or just written to) the PKI directory.
struct LoadedCa {
    cert_der: Vec<u8>,
    not_after: OffsetDateTime,
    issuer: Issuer<'static, KeyPair>,
}

impl LoadedCa {
    /// Loads `ca.crt`/`ca.key` if both exist, match, describe a CA and stay valid for a while.
    fn load(dir: &Path, now: OffsetDateTime) -> Option<Self> {
        let cert_pem = std::fs::read_to_string(dir.join("ca.crt")).ok()?;
        let key_pem = std::fs::read_to_string(dir.join("ca.key")).ok()?;
        let key = KeyPair::from_pem(&key_pem).ok()?;
        let cert = Certificate::from_pem(cert_pem.as_bytes()).ok()?;
        if !key_matches(&cert, &key) {
            return None;
        }
        let not_after = not_after(&cert)?;
        if not_after < now + RENEW_MARGIN {
            return None;
        }
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
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).ok()?;
        Some(Self {
            cert_der,
            not_after,
            issuer,
        })
    }

    fn create(dir: &Path, days: u32, now: OffsetDateTime) -> Result<Self, CaError> {
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
        params.not_after = now + time::Duration::days(i64::from(days));
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        let ca_key_path = dir.join("ca.key");
        write_atomic(&ca_key_path, key.serialize_pem().as_bytes(), PRIVATE_MODE)
            .map_err(io_err(&ca_key_path))?;
        let ca_crt_path = dir.join("ca.crt");
        write_atomic(&ca_crt_path, cert.pem().as_bytes(), PUBLIC_MODE)
            .map_err(io_err(&ca_crt_path))?;
        Ok(Self {
            cert_der: cert.der().to_vec(),
            not_after: params.not_after,
            issuer: Issuer::new(params, key),
        })
    }

    /// A leaf is kept if its key matches, it chains to this CA, stays valid past the renewal
    /// margin, and carries exactly the expected SPIFFE ID and every requested DNS name.
    fn leaf_still_good(
        &self,
        dir: &Path,
        name: &str,
        id: &SpiffeId,
        dns: &[&str],
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
        key_matches(&cert, &key)
            && has_dns_names(&cert, dns)
            && SpiffeId::from_cert_der(&der).is_ok_and(|got| &got == id)
            && ca_verifies_leaf(&self.cert_der, &der, now)
            && ca_verifies_leaf(&self.cert_der, &der, now + RENEW_MARGIN)
    }

    fn issue_leaf(
        &self,
        dir: &Path,
        name: &str,
        id: &SpiffeId,
        dns: &[&str],
        days: u32,
        now: OffsetDateTime,
    ) -> Result<String, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "certbind demo");
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![
            SanType::URI(id.as_str().try_into()?),
            SanType::DnsName("localhost".try_into()?),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ];
        for name in dns {
            params
                .subject_alt_names
                .push(SanType::DnsName((*name).try_into()?));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = now - BACKDATE;
        // A leaf never outlives its CA.
        params.not_after = (now + time::Duration::days(i64::from(days))).min(self.not_after);
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

/// Whether `cert` carries every DNS name of `dns` (its subject alternative names).
fn has_dns_names(cert: &Certificate, dns: &[&str]) -> bool {
    let sans = match cert.tbs_certificate().get_extension::<SubjectAltName>() {
        Ok(Some((_, sans))) => sans.0,
        _ => Vec::new(),
    };
    dns.iter().all(|want| {
        sans.iter()
            .any(|san| matches!(san, GeneralName::DnsName(got) if got.as_str() == *want))
    })
}

fn key_matches(cert: &Certificate, key: &KeyPair) -> bool {
    cert.tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .raw_bytes()
        == key.public_key_raw()
}

fn not_after(cert: &Certificate) -> Option<OffsetDateTime> {
    let secs = cert
        .tbs_certificate()
        .validity()
        .not_after
        .to_unix_duration()
        .as_secs();
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).ok()?).ok()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn workload_names_must_be_one_spiffe_path_segment() {
        assert_eq!(
            workload_id("consumer").unwrap().as_str(),
            "spiffe://certbind.test/ns/demo/sa/consumer"
        );
        for bad in ["", "a/b", "..", ".", "a b", "ü", "x?y"] {
            assert!(workload_id(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn init_writes_a_verifiable_leaf_per_workload_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let report = init(dir.path(), &["consumer", "orders"], 1, false, now()).unwrap();
        assert_eq!(report.ca, Outcome::Created);
        let ca = read_cert_der(&dir.path().join("ca.crt")).unwrap();
        for name in ["consumer", "orders"] {
            let leaf = read_cert_der(&dir.path().join(format!("{name}.crt"))).unwrap();
            assert!(ca_verifies_leaf(&ca, &leaf, now()));
            assert_eq!(
                SpiffeId::from_cert_der(&leaf).unwrap(),
                workload_id(name).unwrap()
            );
            let mode = std::fs::metadata(dir.path().join(format!("{name}.key")))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_leaf_from_another_ca_does_not_verify() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        init(a.path(), &["consumer"], 1, false, now()).unwrap();
        init(b.path(), &["consumer"], 1, false, now()).unwrap();
        let ca_a = read_cert_der(&a.path().join("ca.crt")).unwrap();
        let leaf_b = read_cert_der(&b.path().join("consumer.crt")).unwrap();
        assert!(!ca_verifies_leaf(&ca_a, &leaf_b, now()));
    }

    #[test]
    fn leaves_expire_after_the_requested_days_and_never_outlive_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let t = now();
        init(dir.path(), &["consumer"], 1, false, t).unwrap();
        let ca = read_cert_der(&dir.path().join("ca.crt")).unwrap();
        let leaf = read_cert_der(&dir.path().join("consumer.crt")).unwrap();
        assert!(ca_verifies_leaf(&ca, &leaf, t + time::Duration::hours(23)));
        assert!(!ca_verifies_leaf(&ca, &leaf, t + time::Duration::hours(25)));
        // Asking for 30 days from a 1-day CA still yields a leaf that ends with the CA.
        issue(dir.path(), "extra", 30, t).unwrap();
        let extra = read_cert_der(&dir.path().join("extra.crt")).unwrap();
        let cert = Certificate::from_der(&extra).unwrap();
        let ca_cert = Certificate::from_der(&ca).unwrap();
        assert!(not_after(&cert).unwrap() <= not_after(&ca_cert).unwrap());
    }

    #[test]
    fn issue_refuses_bad_names_days_and_a_missing_ca() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            issue(dir.path(), "x", 1, now()),
            Err(CaError::NoCa(_))
        ));
        init(dir.path(), &[], 1, false, now()).unwrap();
        assert!(matches!(
            issue(dir.path(), "../x", 1, now()),
            Err(CaError::BadName(_))
        ));
        assert!(matches!(
            issue(dir.path(), "x", 0, now()),
            Err(CaError::BadDays)
        ));
        assert!(issue(dir.path(), "x", 1, now()).is_ok());
    }

    #[test]
    fn init_replaces_a_leaf_whose_key_no_longer_matches() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &["consumer", "orders"], 1, false, now()).unwrap();
        std::fs::copy(
            dir.path().join("orders.key"),
            dir.path().join("consumer.key"),
        )
        .unwrap();
        let report = init(dir.path(), &["consumer", "orders"], 1, false, now()).unwrap();
        assert_eq!(report.ca, Outcome::Kept);
        assert_eq!(
            report.leaves,
            vec![
                ("consumer".to_owned(), Outcome::Created),
                ("orders".to_owned(), Outcome::Kept)
            ]
        );
    }

    #[test]
    fn a_leaf_posing_as_the_ca_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &["consumer"], 1, false, now()).unwrap();
        std::fs::copy(dir.path().join("consumer.crt"), dir.path().join("ca.crt")).unwrap();
        std::fs::copy(dir.path().join("consumer.key"), dir.path().join("ca.key")).unwrap();
        let report = init(dir.path(), &["consumer"], 1, false, now()).unwrap();
        assert_eq!(report.ca, Outcome::Created);
    }

    #[test]
    fn an_expiring_ca_is_replaced_together_with_its_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let t = now();
        init(dir.path(), &["consumer"], 1, false, t).unwrap();
        let later = t + time::Duration::hours(23) + time::Duration::minutes(30);
        let report = init(dir.path(), &["consumer"], 1, false, later).unwrap();
        assert_eq!(report.ca, Outcome::Created);
        assert_eq!(report.leaves[0].1, Outcome::Created);
    }

    #[test]
    fn rotate_reissues_each_leaf_with_a_new_key_and_serial_from_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &["consumer", "orders"], 1, false, now()).unwrap();
        let ca = read_cert_der(&dir.path().join("ca.crt")).unwrap();
        let old_key = std::fs::read(dir.path().join("consumer.key")).unwrap();
        let old_serial = serial_hex(&dir.path().join("consumer.crt")).unwrap();
        let orders_before = std::fs::read(dir.path().join("orders.crt")).unwrap();
        let rotated = rotate(dir.path(), &["consumer"], 1, now()).unwrap();
        assert_eq!(rotated.len(), 1);
        let new_serial = serial_hex(&dir.path().join("consumer.crt")).unwrap();
        assert_eq!(rotated[0], ("consumer".to_owned(), new_serial.clone()));
        assert_ne!(old_serial, new_serial);
        assert_ne!(
            old_key,
            std::fs::read(dir.path().join("consumer.key")).unwrap()
        );
        let leaf = read_cert_der(&dir.path().join("consumer.crt")).unwrap();
        assert!(ca_verifies_leaf(&ca, &leaf, now()));
        assert_eq!(
            read_cert_der(&dir.path().join("ca.crt")).unwrap(),
            ca,
            "the CA stays"
        );
        // Only the named leaf changes, and the new pair matches.
        assert_eq!(
            orders_before,
            std::fs::read(dir.path().join("orders.crt")).unwrap()
        );
        let report = init(dir.path(), &["consumer", "orders"], 1, false, now()).unwrap();
        assert!(report.leaves.iter().all(|(_, o)| *o == Outcome::Kept));
    }

    #[test]
    fn rotate_refuses_a_missing_ca_and_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            rotate(dir.path(), &["consumer"], 1, now()),
            Err(CaError::NoCa(_))
        ));
        init(dir.path(), &["consumer"], 1, false, now()).unwrap();
        assert!(matches!(
            rotate(dir.path(), &["../consumer"], 1, now()),
            Err(CaError::BadName(_))
        ));
    }

    #[test]
    fn init_writes_an_sds_secret_per_leaf_and_for_the_ca_with_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &["orders"], 1, false, now()).unwrap();
        let abs = std::fs::canonicalize(dir.path()).unwrap();
        let orders = std::fs::read_to_string(dir.path().join("sds/orders.yaml")).unwrap();
        assert!(orders.contains("name: orders\n"), "{orders}");
        assert!(
            orders.contains(&format!(
                "certificate_chain: {{ filename: \"{}/orders.crt\" }}",
                abs.display()
            )),
            "{orders}"
        );
        assert!(orders.contains(&format!(
            "private_key: {{ filename: \"{}/orders.key\" }}",
            abs.display()
        )));
        assert!(orders.contains(&format!(
            "watched_directory: {{ path: \"{}\" }}",
            abs.display()
        )));
        let ca = std::fs::read_to_string(dir.path().join("sds/ca.yaml")).unwrap();
        assert!(ca.contains("name: ca\n"), "{ca}");
        assert!(ca.contains(&format!(
            "trusted_ca: {{ filename: \"{}/ca.crt\" }}",
            abs.display()
        )));
    }
}
