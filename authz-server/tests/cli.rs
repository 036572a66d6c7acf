//! The `certbind-authz` binary as scripts use it: `pki init` (checked independently with
//! x509 parsing and p256), its idempotence and `--force`, `pki issue`, `keys rotate`, and
//! `serve` announcing its address and exiting cleanly on SIGTERM.
// Helpers here run only inside tests: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Conn, ORDERS, client_config, token_body};
use der::{DecodePem, Encode};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, VerifyingKey};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName};

const BIN: &str = env!("CARGO_BIN_EXE_certbind-authz");
const NAMES: [&str; 8] = [
    "consumer",
    "inventory",
    "orders",
    "billing",
    "envoy",
    "authz",
    "pdp",
    "operator",
];

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn cert(path: &Path) -> Certificate {
    Certificate::from_pem(std::fs::read(path).unwrap()).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Independent check: the CA's P-256 key verifies the leaf's signature over its TBS bytes.
fn ca_signed(ca: &Certificate, leaf: &Certificate) -> bool {
    let ca_key = VerifyingKey::from_sec1_bytes(
        ca.tbs_certificate()
            .subject_public_key_info()
            .subject_public_key
            .raw_bytes(),
    )
    .unwrap();
    let tbs = leaf.tbs_certificate().to_der().unwrap();
    let Ok(sig) = DerSignature::from_bytes(leaf.signature().raw_bytes()) else {
        return false;
    };
    leaf.signature_algorithm().oid.to_string() == "1.2.840.10045.4.3.2"
        && ca_key.verify(&tbs, &sig).is_ok()
}

fn sans(c: &Certificate) -> Vec<GeneralName> {
    c.tbs_certificate()
        .get_extension::<SubjectAltName>()
        .unwrap()
        .map(|(_, san)| san.0)
        .unwrap_or_default()
}

#[test]
fn pki_init_creates_a_ca_and_one_spiffe_leaf_per_workload() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let (ok, out, err) = run(&["pki", "init", "--dir", pki.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(out.matches(": created").count(), 9, "{out}");

    let ca = cert(&pki.join("ca.crt"));
    let (_, bc) = ca
        .tbs_certificate()
        .get_extension::<BasicConstraints>()
        .unwrap()
        .unwrap();
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let (_, ku) = ca
        .tbs_certificate()
        .get_extension::<KeyUsage>()
        .unwrap()
        .unwrap();
    assert!(ku.key_cert_sign() && ku.crl_sign());
    assert_eq!(mode(&pki.join("ca.key")), 0o600);
    // The CA key is a P-256 point (ca_signed parses it as one for every leaf below).

    for name in NAMES {
        let leaf = cert(&pki.join(format!("{name}.crt")));
        assert!(ca_signed(&ca, &leaf), "{name} is not signed by the CA");
        let der = leaf.to_der().unwrap();
        let ca_der = ca.to_der().unwrap();
        assert!(certbind_authz::ca::ca_verifies_leaf(
            &ca_der,
            &der,
            time::OffsetDateTime::now_utc()
        ));
        let sans = sans(&leaf);
        let uris: Vec<String> = sans
            .iter()
            .filter_map(|g| match g {
                GeneralName::UniformResourceIdentifier(u) => Some(u.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(uris, [format!("spiffe://certbind.test/ns/demo/sa/{name}")]);
        // Only servers carry host names (and serverAuth, below); clients carry their ID only.
        let server = certbind_authz::ca::SERVERS.contains(&name);
        assert_eq!(
            sans.iter()
                .any(|g| matches!(g, GeneralName::DnsName(d) if d.to_string() == "localhost")),
            server,
            "{name}"
        );
        assert_eq!(
            sans.iter().any(
                |g| matches!(g, GeneralName::IpAddress(ip) if ip.as_bytes() == [127, 0, 0, 1])
            ),
            server,
            "{name}"
        );
        let (_, eku) = leaf
            .tbs_certificate()
            .get_extension::<ExtendedKeyUsage>()
            .unwrap()
            .unwrap();
        let ekus: Vec<String> = eku.0.iter().map(|o| o.to_string()).collect();
        assert!(
            ekus.contains(&"1.3.6.1.5.5.7.3.2".to_owned()),
            "{name}: clientAuth"
        );
        assert_eq!(
            ekus.contains(&"1.3.6.1.5.5.7.3.1".to_owned()),
            server,
            "{name}: serverAuth only for servers"
        );
        let (_, bc) = leaf
            .tbs_certificate()
            .get_extension::<BasicConstraints>()
            .unwrap()
            .unwrap();
        assert!(!bc.ca);
        let key = pki.join(format!("{name}.key"));
        assert_eq!(mode(&key), 0o600);
        assert!(
            std::fs::read_to_string(&key)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----"),
            "PKCS#8"
        );
    }
}

#[test]
fn pki_init_keeps_what_is_valid_and_force_regenerates_everything() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().to_str().unwrap();
    assert!(run(&["pki", "init", "--dir", pki]).0);
    let before: Vec<Vec<u8>> = NAMES
        .iter()
        .chain(["ca"].iter())
        .map(|n| std::fs::read(dir.path().join(format!("{n}.crt"))).unwrap())
        .collect();

    let (ok, out, _) = run(&["pki", "init", "--dir", pki]);
    assert!(ok);
    assert_eq!(out.matches(": kept").count(), 9, "{out}");
    let again: Vec<Vec<u8>> = NAMES
        .iter()
        .chain(["ca"].iter())
        .map(|n| std::fs::read(dir.path().join(format!("{n}.crt"))).unwrap())
        .collect();
    assert_eq!(before, again);

    // A deleted leaf is re-created, the rest kept.
    std::fs::remove_file(dir.path().join("billing.key")).unwrap();
    let (_, out, _) = run(&["pki", "init", "--dir", pki]);
    assert_eq!(out.matches(": kept").count(), 8, "{out}");
    assert!(out.contains("billing.crt: created"), "{out}");

    let (ok, out, _) = run(&["pki", "init", "--dir", pki, "--force"]);
    assert!(ok);
    assert_eq!(out.matches(": created").count(), 9, "{out}");
    assert_ne!(
        std::fs::read(dir.path().join("ca.crt")).unwrap(),
        before[NAMES.len()]
    );
    let ca = cert(&dir.path().join("ca.crt"));
    for name in NAMES {
        assert!(ca_signed(
            &ca,
            &cert(&dir.path().join(format!("{name}.crt")))
        ));
    }
}

fn dns_names(path: &Path) -> Vec<String> {
    sans(&cert(path))
        .into_iter()
        .filter_map(|san| match san {
            GeneralName::DnsName(name) => Some(name.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn pki_init_dns_for_one_workload_names_only_that_leaf_and_refuses_bad_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().to_str().unwrap();
    let leaf = |name: &str| dir.path().join(format!("{name}.crt"));
    let with = |extra: &[&str]| {
        let mut args = vec!["pki", "init", "--dir", pki];
        for pair in extra {
            args.extend(["--dns", pair]);
        }
        run(&args)
    };
    let (ok, _, err) = with(&["authz=authz", "orders=envoy"]);
    assert!(ok, "{err}");
    assert_eq!(dns_names(&leaf("authz")), ["localhost", "authz"]);
    assert_eq!(dns_names(&leaf("orders")), ["localhost", "envoy"]);
    assert!(
        dns_names(&leaf("consumer")).is_empty(),
        "a client certificate carries no host name"
    );
    assert!(ca_signed(
        &cert(&dir.path().join("ca.crt")),
        &cert(&leaf("authz"))
    ));

    // Kept while it carries its names; a leaf missing a requested name is reissued.
    let (_, out, _) = with(&["authz=authz", "orders=envoy"]);
    assert_eq!(out.matches(": kept").count(), 9, "{out}");
    let (ok, out, _) = with(&["authz=authz.certbind.test"]);
    assert!(ok);
    assert!(out.contains("authz.crt: created"), "{out}");
    assert_eq!(out.matches(": kept").count(), 8, "{out}");
    assert_eq!(
        dns_names(&leaf("authz")),
        ["localhost", "authz.certbind.test"]
    );

    for bad in [
        "nobody=x",
        "consumer=x",
        "authz=bad_name!",
        "authz=",
        "=authz",
        "authz=-bad",
    ] {
        let before = std::fs::read(leaf("authz")).unwrap();
        let (ok, _, err) = with(&[bad]);
        assert!(!ok, "accepted --dns {bad:?}");
        assert!(
            err.contains("--dns") || err.contains("WORKLOAD"),
            "{bad:?}: {err}"
        );
        assert_eq!(
            std::fs::read(leaf("authz")).unwrap(),
            before,
            "{bad:?} changed a leaf"
        );
    }
}

#[test]
fn pki_issue_adds_a_leaf_and_refuses_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().to_str().unwrap();
    let (ok, _, err) = run(&["pki", "issue", "--dir", pki, "--name", "extra"]);
    assert!(!ok, "issued without a CA");
    assert!(err.contains("pki init"), "{err}");
    assert!(run(&["pki", "init", "--dir", pki]).0);
    let (ok, out, err) = run(&[
        "pki", "issue", "--dir", pki, "--name", "extra", "--days", "2",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("extra.crt: created"));
    let leaf = cert(&dir.path().join("extra.crt"));
    assert!(ca_signed(&cert(&dir.path().join("ca.crt")), &leaf));
    assert_eq!(mode(&dir.path().join("extra.key")), 0o600);
    for bad in ["../evil", "a/b", "", "sp ace", "ümlaut"] {
        let (ok, _, _) = run(&["pki", "issue", "--dir", pki, "--name", bad]);
        assert!(!ok, "issued {bad:?}");
    }
}

#[test]
fn keys_rotate_adds_a_private_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let (ok, out, _) = run(&["keys", "rotate", "--state-dir", state]);
    assert!(ok);
    assert!(out.contains("(active)"));
    // On an empty directory the first key is the new one; each further run adds one.
    let count = || std::fs::read_dir(dir.path().join("keys")).unwrap().count();
    assert_eq!(count(), 1);
    assert!(run(&["keys", "rotate", "--state-dir", state]).0);
    assert_eq!(count(), 2);
    let files: Vec<_> = std::fs::read_dir(dir.path().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for f in &files {
        assert_eq!(mode(f), 0o600);
    }
}

#[tokio::test]
async fn serve_announces_its_address_serves_tokens_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    assert!(run(&["pki", "init", "--dir", pki.to_str().unwrap()]).0);
    let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients.yaml");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--pki-dir",
            pki.to_str().unwrap(),
            "--state-dir",
            dir.path().join("authz").to_str().unwrap(),
            "--clients",
            clients.to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("certbind-authz listening on https://") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let addr: std::net::SocketAddr = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("no 'listening on' line")
        .parse()
        .unwrap();
    let mut conn = Conn::open(addr, client_config(&pki, Some((&pki, "consumer"))))
        .await
        .unwrap();
    let (status, answer) = conn.form("/token", &token_body(ORDERS, "")).await;
    assert_eq!(status, 200, "{answer}");
    drop(conn);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server did not stop on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
