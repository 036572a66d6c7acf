//! The internal CA: creates the EC P-256 root and the workload leaf certificates (one SPIFFE
//! ID each) under a PKI directory, keeping what is still valid unless asked to start over.
//! `ca.crt` is the trust bundle (one root, or two during a rollover); the signing root is the
//! one whose key is `ca.key`. Only the servers get server certificates (serverAuth, host
//! names); every other workload gets a client certificate (clientAuth, its SPIFFE ID only).

mod root;

pub(crate) use root::LoadedCa;

use crate::fsutil::{PUBLIC_MODE, ensure_private_dir, write_atomic};
pub(crate) use crate::x509::der_to_pem;
pub use crate::x509::{ca_verifies_leaf, is_certificate, read_cert_der, serial_hex, validity};
use certbind_core::binding::SpiffeId;
use der::Decode;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;
use x509_cert::Certificate;

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

#[cfg(test)]
mod tests;
