//! The PKI lives forever on its own (issue 16 §1): certificates living 2 minutes, a CA living
//! 7, the real renewer (`certbind-authz pki renew --watch`) reissuing every leaf at 2/3 of its
//! life and rolling the CA over in the middle, under 10 minutes of consumer-like traffic
//! through the real Envoy, authz-server and PDP, none of which is restarted. Every request
//! must succeed (token renewals included), and at the end the first, now expired, consumer
//! certificate is refused by the sidecar and by the authz-server.

// A test target, test code throughout: the workspace lints apply with clippy.toml's
// allow-*-in-tests, as inside #[test] functions.
#![cfg(test)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use certbind_tests::proc::{Proc, Ready};
use certbind_tests::{Request, System, TlsClient};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LEAF_SECS: &str = "120";
const CA_SECS: &str = "420";
/// Longer than Envoy's 30 s upstream connection lifetime (envoy/sidecar.yaml.tmpl).
const OVERLAP_SECS: &str = "40";
const TRAFFIC: Duration = Duration::from_secs(600);
/// Tokens renew several times during the run.
const TOKEN_TTL: &str = "60";

/// What identifies the consumer's pair on disk (a renewal replaces both files).
fn stamp(pki: &Path) -> Option<(Vec<u8>, Vec<u8>)> {
    Some((
        std::fs::read(pki.join("consumer.crt")).ok()?,
        std::fs::read(pki.join("consumer.key")).ok()?,
    ))
}

/// A copy of the consumer's pair as it is now (it will expire while the run goes on).
fn keep_copy(pki: &Path, to: &Path) -> (PathBuf, PathBuf) {
    let (crt, key) = (to.join("old-consumer.crt"), to.join("old-consumer.key"));
    std::fs::copy(pki.join("consumer.crt"), &crt).unwrap();
    std::fs::copy(pki.join("consumer.key"), &key).unwrap();
    (crt, key)
}

/// The consumer: one client per certificate generation (a token is bound to the certificate
/// that obtained it), a token per service renewed before it expires.
struct Consumer {
    pki: PathBuf,
    stamp: Option<(Vec<u8>, Vec<u8>)>,
    client: Option<TlsClient>,
    tokens: Vec<(&'static str, String, Instant)>,
    generations: u32,
    token_fetches: u32,
    mid_rotation_retries: u32,
}

impl Consumer {
    fn refresh(&mut self) {
        let now = stamp(&self.pki);
        if now.is_some() && now != self.stamp {
            let crt = self.pki.join("consumer.crt");
            let key = self.pki.join("consumer.key");
            // Caught between the key's and the certificate's rename: rustls refuses the
            // mismatched pair here, before any request; keep the previous client.
            match TlsClient::new(&self.pki.join("ca.crt"), Some((&crt, &key))) {
                Ok(client) => {
                    self.client = Some(client);
                    self.stamp = now;
                    self.tokens.clear();
                    self.generations += 1;
                }
                Err(_) => self.mid_rotation_retries += 1,
            }
        }
    }

    fn token(&mut self, s: &System, service: &'static str, scope: &str) -> String {
        let fresh = self
            .tokens
            .iter()
            .find(|(svc, _, at)| *svc == service && at.elapsed() < Duration::from_secs(40));
        if let Some((_, token, _)) = fresh {
            return token.clone();
        }
        let client = self.client.as_ref().unwrap().expecting("authz").unwrap();
        let response = client
            .send(
                s.authz_addr(),
                &Request::post("/token").form(&[
                    ("grant_type", "client_credentials"),
                    ("audience", &certbind_tests::spiffe_id(service)),
                    ("scope", scope),
                ]),
            )
            .unwrap_or_else(|e| panic!("token request failed: {e}"));
        assert_eq!(response.status, 200, "token refused: {}", response.text());
        let token = response.json_str("access_token").unwrap();
        self.token_fetches += 1;
        self.tokens.retain(|(svc, _, _)| *svc != service);
        self.tokens.push((service, token.clone(), Instant::now()));
        token
    }
}

#[test]
fn rotates_every_certificate_and_the_ca_under_traffic_with_no_failed_request() {
    let s = System::builder()
        .pki_args(&["--leaf-secs", LEAF_SECS, "--ca-secs", CA_SECS])
        .authz_args(&["--token-ttl", TOKEN_TTL])
        .concurrency(2)
        .start();
    let pki = s.pki_dir().to_path_buf();
    let (old_crt, old_key) = keep_copy(&pki, s.dir());
    let mut renewer = Proc::spawn(
        "renewer",
        s.authz_bin(),
        &[
            "pki",
            "renew",
            "--watch",
            "--dir",
            &pki.display().to_string(),
            "--leaf-secs",
            LEAF_SECS,
            "--ca-secs",
            CA_SECS,
            "--overlap-secs",
            OVERLAP_SECS,
        ]
        .map(str::to_owned),
        &s.dir().join("logs"),
        Ready::LogLine("renewer watching".into()),
        Duration::from_secs(30),
    )
    .unwrap();

    let mut consumer = Consumer {
        pki: pki.clone(),
        stamp: None,
        client: None,
        tokens: Vec::new(),
        generations: 0,
        token_fetches: 0,
        mid_rotation_retries: 0,
    };
    let calls: [(&str, &str, &str); 3] = [
        ("orders", "orders:read", "/orders/1"),
        ("orders", "orders:read", "/orders"),
        ("billing", "billing:read", "/billing/7"),
    ];
    let mut roots_seen = BTreeSet::new();
    let mut bundle_sizes = BTreeSet::new();
    let (mut ok, mut i) = (0u64, 0usize);
    let start = Instant::now();
    while start.elapsed() < TRAFFIC {
        consumer.refresh();
        if let Ok(bundle) = std::fs::read_to_string(pki.join("ca.crt")) {
            let roots: Vec<String> = bundle
                .split("-----END CERTIFICATE-----")
                .map(str::trim)
                .filter(|b| !b.is_empty())
                .map(str::to_owned)
                .collect();
            bundle_sizes.insert(roots.len());
            roots_seen.extend(roots);
        }
        let (service, scope, path) = calls[i % calls.len()];
        i += 1;
        let token = consumer.token(&s, service, scope);
        let client = consumer
            .client
            .as_ref()
            .unwrap()
            .expecting(service)
            .unwrap();
        let at = start.elapsed().as_secs();
        let response = client
            .send(s.sidecar(service), &Request::get(path).bearer(&token))
            .unwrap_or_else(|e| {
                panic!(
                    "request {i} ({service} {path}) at +{at}s failed: {e}\nrenewer:\n{}",
                    renewer.log_tail(30)
                )
            });
        assert_eq!(
            response.status,
            200,
            "request {i} ({service} {path}) at +{at}s: {}\nrenewer:\n{}",
            response.text(),
            renewer.log_tail(30)
        );
        ok += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        renewer.is_running(),
        "the renewer died:\n{}",
        renewer.log_tail(30)
    );
    let log = renewer.log();
    let rollovers = log.matches("the new root signs from now on").count();
    let retired = log.matches("removed from the bundle").count();
    let reissued = log.matches(": reissued (serial").count();

    // The first consumer certificate has expired by now: refused by the sidecar and by the
    // authz-server, although its key is the right one.
    let old = TlsClient::new(&pki.join("ca.crt"), Some((&old_crt, &old_key))).unwrap();
    let sidecar = old.send(s.sidecar("orders"), &Request::get("/orders/1"));
    assert!(
        sidecar.is_err() || sidecar.as_ref().is_ok_and(|r| r.status == 401),
        "an expired certificate reached the sidecar: {:?}",
        sidecar.map(|r| (r.status, r.text()))
    );
    let authz = old.send(
        s.authz_addr(),
        &Request::post("/token").form(&[
            ("grant_type", "client_credentials"),
            ("audience", &certbind_tests::spiffe_id("orders")),
        ]),
    );
    assert!(
        authz.is_err() || authz.as_ref().is_ok_and(|r| r.status == 401),
        "an expired certificate got a token: {:?}",
        authz.map(|r| (r.status, r.text()))
    );
    renewer.stop();

    println!(
        "lifecycle: {ok} requests over {} s, 0 failed; {} token fetches; {} consumer certificate \
         generations; {} leaf reissues, {rollovers} CA rollover(s), {retired} old root(s) retired, \
         {} distinct roots seen, bundle sizes {:?}; {} pair-mid-rotation retries; the expired \
         certificate refused by the sidecar and the authz-server",
        TRAFFIC.as_secs(),
        consumer.token_fetches,
        consumer.generations,
        reissued,
        roots_seen.len(),
        bundle_sizes,
        consumer.mid_rotation_retries,
    );
    assert!(
        consumer.generations >= 5,
        "{} generations",
        consumer.generations
    );
    assert!(rollovers >= 1, "no CA rollover:\n{log}");
    assert!(retired >= 1, "the old root never left the bundle:\n{log}");
    assert!(
        roots_seen.len() >= 2 && bundle_sizes.contains(&2),
        "{bundle_sizes:?}"
    );
}
