//! The internal CA: creates the EC P-256 root and the workload leaf certificates (one SPIFFE
//! ID each) under a PKI directory, keeping what is still valid unless asked to start over.
//! `ca.crt` is the trust bundle (one root, or two during a rollover); the signing root is the
//! one whose key is `ca.key`. Only the servers get server certificates (serverAuth, host
//! names); every other workload gets a client certificate (clientAuth, its SPIFFE ID only).

use crate::fsutil::{PRIVATE_MODE, PUBLIC_MODE, ensure_private_dir, write_atomic};
pub(crate) use crate::x509::der_to_pem;
pub use crate::x509::{ca_verifies_leaf, is_certificate, read_cert_der, serial_hex, validity};
use crate::x509::{hex_lower, key_matches, not_after, not_before};
use certbind_core::binding::SpiffeId;
use der::{Decode, DecodePem};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::ext::pkix::BasicConstraints as BasicConstraintsExt;

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
/// The identities that serve TLS: the authz-server, the PDP and the sidecar listeners. Only
/// these get serverAuth and host names (`localhost`, `127.0.0.1`, plus any extra DNS names).
pub use certbind_tls::SERVERS;
/// Default lifetimes: the CA lives 30 days, leaves 1 day (`pki init --ca-days/--days`).
pub const DEFAULT_CA_DAYS: u32 = 30;
/// The subdirectory of the PKI directory with Envoy's file-based SDS secrets (`<name>.yaml`).
pub const SDS_DIR: &str = "sds";
/// A certificate expiring sooner than this is renewed by `pki init` rather than kept.
const RENEW_MARGIN: Duration = Duration::from_secs(3600);
/// Certificates start slightly in the past so small clock differences do not reject them.
pub const BACKDATE: time::Duration = time::Duration::minutes(5);

/// How long the CA and the leaves it issues live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub ca: time::Duration,
    pub leaf: time::Duration,
}

impl Lifetimes {
    /// Leaves of `days`, the CA of `ca_days`.
    pub fn days(ca_days: u32, days: u32) -> Result<Self, CaError> {
        check_days(days)?;
        check_days(ca_days)?;
        Self::new(
            time::Duration::days(i64::from(ca_days)),
            time::Duration::days(i64::from(days)),
        )
    }

    /// A CA must outlive several leaf generations, or a rollover has no room to happen.
    pub fn new(ca: time::Duration, leaf: time::Duration) -> Result<Self, CaError> {
        if leaf < time::Duration::seconds(10) || ca < leaf * 3 {
            return Err(CaError::BadLifetimes);
        }
        Ok(Self { ca, leaf })
    }
}

/// What a leaf certificate may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// clientAuth only, the SPIFFE ID as the only name.
    Client,
    /// serverAuth and clientAuth, with `localhost`, `127.0.0.1` and these extra DNS names.
    Server { extra_dns: Vec<String> },
}

impl Profile {
    /// The profile of `name`, a server's with these extra DNS names: `NAME` goes to every
    /// server, `WORKLOAD=NAME` only to that workload (so one server's certificate never
    /// carries another server's host name).
    pub fn with_dns(name: &str, dns: &[String]) -> Self {
        match Self::for_name(name) {
            Self::Server { .. } => Self::Server {
                extra_dns: dns
                    .iter()
                    .filter_map(|entry| match entry.split_once('=') {
                        Some((workload, host)) => (workload == name).then(|| host.to_owned()),
                        None => Some(entry.clone()),
                    })
                    .collect(),
            },
            client => client,
        }
    }

    /// The profile `pki` gives a workload name by default.
    pub fn for_name(name: &str) -> Self {
        if SERVERS.contains(&name) {
            Self::Server {
                extra_dns: Vec::new(),
            }
        } else {
            Self::Client
        }
    }
}

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
    #[error("lifetimes: a leaf lives at least 10 s and the CA at least 3 leaf lifetimes")]
    BadLifetimes,
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

/// Creates (or keeps) the CA and a leaf for every name in `names`: leaves of `days`, the CA
/// of the default 30 days (or three leaf lifetimes if longer).
pub fn init(
    dir: &Path,
    names: &[&str],
    days: u32,
    force: bool,
    now: OffsetDateTime,
) -> Result<InitReport, CaError> {
    let ca_days = DEFAULT_CA_DAYS.max(days.saturating_mul(3)).min(3650);
    init_with(dir, names, Lifetimes::days(ca_days, days)?, &[], force, now)
}

/// Creates (or keeps) the CA and a leaf for every name in `names` (profile by name).
pub fn init_with(
    dir: &Path,
    names: &[&str],
    life: Lifetimes,
    dns: &[String],
    force: bool,
    now: OffsetDateTime,
) -> Result<InitReport, CaError> {
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
        None => (LoadedCa::create(dir, life.ca, now)?, Outcome::Created),
    };
    let mut leaves = Vec::with_capacity(ids.len());
    for (name, id) in ids {
        let keep = ca_outcome == Outcome::Kept
            && ca.leaf_still_good(dir, name, &id, now)
            && carries_dns(dir, &Profile::with_dns(name, dns), name);
        let outcome = if keep {
            Outcome::Kept
        } else {
            ca.issue_leaf(
                dir,
                name,
                &id,
                &Profile::with_dns(name, dns),
                life.leaf,
                now,
            )?;
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
    let life = time::Duration::days(i64::from(days));
    ca.issue_leaf(dir, name, &id, &Profile::for_name(name), life, now)?;
    write_sds(dir, &[name])?;
    Ok(dir.join(format!("{name}.crt")))
}

/// Issues `<name>.crt`/`.key` living `life` from now (e.g. seconds, for expiry tests).
pub fn issue_for(
    dir: &Path,
    name: &str,
    life: time::Duration,
    now: OffsetDateTime,
) -> Result<PathBuf, CaError> {
    let id = workload_id(name)?;
    let ca = LoadedCa::load(dir, now).ok_or_else(|| CaError::NoCa(dir.to_owned()))?;
    ca.issue_leaf(dir, name, &id, &Profile::for_name(name), life, now)?;
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
    let life = time::Duration::days(i64::from(days));
    let mut out = Vec::with_capacity(ids.len());
    for (name, id) in ids {
        let serial = ca.issue_leaf(dir, name, &id, &Profile::for_name(name), life, now)?;
        out.push((name.to_owned(), serial));
    }
    write_sds(dir, names)?;
    Ok(out)
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
    fn load(dir: &Path, now: OffsetDateTime) -> Option<Self> {
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
    fn create(dir: &Path, life: time::Duration, now: OffsetDateTime) -> Result<Self, CaError> {
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

/// Whether `<name>.crt` carries every extra DNS name its profile asks for (a kept server
/// certificate missing a newly requested host name is reissued).
fn carries_dns(dir: &Path, profile: &Profile, name: &str) -> bool {
    let Profile::Server { extra_dns } = profile else {
        return true;
    };
    if extra_dns.is_empty() {
        return true;
    }
    let Some(cert) = crate::x509::read_cert_der(&dir.join(format!("{name}.crt")))
        .and_then(|der| Certificate::from_der(&der).ok())
    else {
        return false;
    };
    let names: Vec<String> = cert
        .tbs_certificate()
        .get_extension::<x509_cert::ext::pkix::SubjectAltName>()
        .ok()
        .flatten()
        .map(|(_, san)| {
            san.0
                .iter()
                .filter_map(|n| match n {
                    x509_cert::ext::pkix::name::GeneralName::DnsName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    extra_dns.iter().all(|d| names.contains(d))
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

#[cfg(test)]
#[path = "ca_tests.rs"]
mod tests;
