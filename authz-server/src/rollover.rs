//! Applies the renewal schedule (`renew`) to a PKI directory: reads what it holds, takes the
//! steps one at a time, each file replaced by an atomic rename, and says what it did.
//! `pki renew --watch` runs this in a loop so a long-running system never sees a certificate
//! or a root expire.

use crate::ca::{
    self, BACKDATE, CaError, Lifetimes, LoadedCa, Profile, ca_verifies_leaf, der_to_pem,
    read_cert_der, validity, workload_id,
};
use crate::fsutil::{PRIVATE_MODE, PUBLIC_MODE, write_atomic};
use crate::renew::{Leaf, State, Step, Window, next_step};
use der::Encode;
use std::path::Path;
use time::{Duration, OffsetDateTime};
use x509_cert::Certificate;

/// The root waiting to sign, next to `ca.key`.
const NEXT_KEY: &str = "ca-next.key";
/// At most this many steps per pass (a full rollover of the default workloads takes ~12).
const MAX_STEPS: usize = 64;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_owned(),
        source,
    }
}

fn window_of(der: &[u8]) -> Option<Window> {
    let (not_before, not_after) = validity(der)?;
    Some(Window {
        issued: (not_before + BACKDATE).min(not_after),
        not_after,
    })
}

/// The bundle's roots as DER, in file order.
fn bundle(dir: &Path) -> Vec<Vec<u8>> {
    std::fs::read(dir.join("ca.crt"))
        .ok()
        .and_then(|pem| Certificate::load_pem_chain(&pem).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.to_der().ok())
        .collect()
}

fn write_bundle(dir: &Path, roots: &[Vec<u8>]) -> Result<(), CaError> {
    let pem: String = roots.iter().map(|der| der_to_pem(der)).collect();
    let path = dir.join("ca.crt");
    write_atomic(&path, pem.as_bytes(), PUBLIC_MODE).map_err(io(&path))
}

/// What the directory holds, as the schedule sees it.
pub fn read_state(dir: &Path, names: &[&str], now: OffsetDateTime) -> State {
    let roots = bundle(dir);
    let signing = LoadedCa::load_key(dir, "ca.key");
    let next = LoadedCa::load_key(dir, NEXT_KEY);
    let retired = roots
        .iter()
        .enumerate()
        .filter(|(_, der)| {
            signing.as_ref().is_none_or(|s| s.der() != der.as_slice())
                && next.as_ref().is_none_or(|n| n.der() != der.as_slice())
        })
        .filter_map(|(i, der)| Some((i, window_of(der)?)))
        .collect();
    let leaves = names
        .iter()
        .map(|name| {
            let der = read_cert_der(&dir.join(format!("{name}.crt")));
            let from_signing = match (&signing, &der) {
                (Some(s), Some(d)) => s.leaf_still_good_at(dir, name, d, now),
                _ => false,
            };
            let trusted = from_signing
                || der
                    .as_ref()
                    .is_some_and(|d| roots.iter().any(|root| ca_verifies_leaf(root, d, now)));
            Leaf {
                name: (*name).to_owned(),
                window: der.as_deref().filter(|_| trusted).and_then(window_of),
                from_signing,
            }
        })
        .collect();
    State {
        signing: signing.as_ref().and_then(|s| window_of(s.der())),
        next: next.as_ref().and_then(|n| window_of(n.der())),
        retired,
        leaves,
    }
}

fn apply(
    dir: &Path,
    names: &[&str],
    step: &Step,
    life: Lifetimes,
    dns: &[String],
    now: OffsetDateTime,
) -> Result<(), CaError> {
    match step {
        Step::Bootstrap => {
            let _ = std::fs::remove_file(dir.join(NEXT_KEY));
            ca::init_with(dir, names, life, dns, true, now)?;
        }
        Step::AddNextRoot => {
            let (root, key_pem) = LoadedCa::generate(life.ca, now)?;
            // Key first: the bundle never names a root whose key is missing.
            let key_path = dir.join(NEXT_KEY);
            write_atomic(&key_path, key_pem.as_bytes(), PRIVATE_MODE).map_err(io(&key_path))?;
            let mut roots = bundle(dir);
            roots.push(root.der().to_vec());
            write_bundle(dir, &roots)?;
        }
        Step::Promote => {
            let from = dir.join(NEXT_KEY);
            std::fs::rename(&from, dir.join("ca.key")).map_err(io(&from))?;
        }
        Step::Reissue(name) => {
            let signing =
                LoadedCa::load_key(dir, "ca.key").ok_or_else(|| CaError::NoCa(dir.to_owned()))?;
            let id = workload_id(name)?;
            signing.issue_leaf(
                dir,
                name,
                &id,
                &Profile::with_dns(name, dns),
                life.leaf,
                now,
            )?;
            ca::write_sds(dir, &[name.as_str()])?;
        }
        Step::Retire(index) => {
            let mut roots = bundle(dir);
            if *index < roots.len() {
                roots.remove(*index);
                write_bundle(dir, &roots)?;
            }
        }
    }
    Ok(())
}

/// One renewal pass: takes every step due at `now`; returns what it did, one line per step.
pub fn renew_once(
    dir: &Path,
    names: &[&str],
    life: Lifetimes,
    overlap: Duration,
    dns: &[String],
    now: OffsetDateTime,
) -> Result<Vec<String>, CaError> {
    let mut done = Vec::new();
    for _ in 0..MAX_STEPS {
        let state = read_state(dir, names, now);
        let Some(step) = next_step(&state, now, overlap) else {
            return Ok(done);
        };
        apply(dir, names, &step, life, dns, now)?;
        done.push(match &step {
            Step::Bootstrap => "no usable CA: new root, every leaf reissued".to_owned(),
            Step::AddNextRoot => "new root added to the bundle (not signing yet)".to_owned(),
            Step::Promote => "the new root signs from now on".to_owned(),
            Step::Reissue(name) => format!(
                "{name}: reissued (serial {})",
                ca::serial_hex(&dir.join(format!("{name}.crt"))).unwrap_or_default()
            ),
            Step::Retire(i) => format!("old root #{i} removed from the bundle"),
        });
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> Duration {
        Duration::seconds(s)
    }

    #[test]
    fn a_full_rollover_keeps_every_leaf_trusted_at_every_step() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["consumer", "authz"];
        let life = Lifetimes::new(secs(600), secs(120)).unwrap();
        let t0 = OffsetDateTime::now_utc();
        ca::init_with(dir.path(), &names, life, &[], false, t0).unwrap();
        let overlap = secs(10);
        let mut roots_seen = vec![bundle(dir.path())];
        // Step through 25 minutes in 5 s ticks; after each pass every leaf on disk must chain
        // to a root in the bundle and be valid.
        let mut t = t0;
        let mut log = Vec::new();
        while t < t0 + secs(1500) {
            t += secs(5);
            log.extend(renew_once(dir.path(), &names, life, overlap, &[], t).unwrap());
            let roots = bundle(dir.path());
            assert!(
                !roots.is_empty() && roots.len() <= 2,
                "{} roots",
                roots.len()
            );
            for name in names {
                let leaf = read_cert_der(&dir.path().join(format!("{name}.crt"))).unwrap();
                assert!(
                    roots.iter().any(|r| ca_verifies_leaf(r, &leaf, t)),
                    "{name} untrusted at +{}s after {log:?}",
                    (t - t0).whole_seconds()
                );
            }
            if roots_seen.last() != Some(&roots) {
                roots_seen.push(roots);
            }
        }
        let rollovers = log
            .iter()
            .filter(|l| l.contains("signs from now on"))
            .count();
        assert!(rollovers >= 2, "{log:?}");
        assert!(log.iter().any(|l| l.contains("removed from the bundle")));
        assert!(!log.iter().any(|l| l.contains("no usable CA")), "{log:?}");
    }

    #[test]
    fn only_servers_get_server_certificates_and_clients_pin_the_server_id() {
        use certbind_tls::SpiffeServerVerifier;
        use rustls::client::danger::ServerCertVerifier;
        use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
        let dir = tempfile::tempdir().unwrap();
        let t = OffsetDateTime::now_utc();
        ca::init(dir.path(), &["consumer", "authz", "pdp"], 1, false, t).unwrap();
        let verify = |presented: &str, expected: &str| {
            let verifier = SpiffeServerVerifier::from_file(
                &dir.path().join("ca.crt"),
                vec![workload_id(expected).unwrap()],
            )
            .unwrap();
            let der = read_cert_der(&dir.path().join(format!("{presented}.crt"))).unwrap();
            verifier.verify_server_cert(
                &CertificateDer::from(der),
                &[],
                &ServerName::try_from("localhost").unwrap(),
                &[],
                UnixTime::now(),
            )
        };
        assert!(
            verify("authz", "authz").is_ok(),
            "the right server is accepted"
        );
        // A workload certificate has no serverAuth and no host name: refused as a server.
        let err = verify("consumer", "authz").unwrap_err().to_string();
        assert!(
            !err.contains("WrongServer"),
            "refused by the WebPKI checks: {err}"
        );
        // Another server's certificate is a valid server certificate, but not the one asked for.
        let err = verify("pdp", "authz").unwrap_err().to_string();
        assert!(
            err.contains("WrongServer") && err.contains("sa/pdp"),
            "{err}"
        );
    }
}
