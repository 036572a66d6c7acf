//! Issue 16's filter and sidecar hardening on a real Envoy with the real `.wasm`: TLS session
//! resumption (off in the template; the filter's `certificate_expired` where it is on), header
//! names with `_`, `;` path parameters, and one client flooding the DPoP replay cache while
//! another's fresh proofs pass.

// A test target, test code throughout: the workspace lints apply with clippy.toml's
// allow-*-in-tests, as inside #[test] functions.
#![cfg(test)]

use certbind_tests::tokens::{EcKey, dpop_proof};
use certbind_tests::{Request, Response, System, TlsClient, spiffe_id};
use rcgen::{CertificateParams, DnType, Issuer, KeyPair, SanType};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The System every test shares that leaves it as it found it: the template as shipped.
fn shared() -> &'static System {
    static SYSTEM: OnceLock<System> = OnceLock::new();
    SYSTEM.get_or_init(|| System::builder().concurrency(2).start())
}

fn token(s: &System, client: &str, service: &str, scope: &str) -> String {
    s.token(client, service, scope)
        .unwrap_or_else(|e| panic!("getting a token: {e}\n{}", s.logs_tail(20)))
}

fn expect_status(response: &Response, status: u16) {
    assert_eq!(
        response.status,
        status,
        "expected {status}, got {} {}",
        response.status,
        response.text()
    );
}

/// The upstream's echo of an admitted request.
fn echo_of(response: &Response) -> serde_json::Value {
    expect_status(response, 200);
    response.json().unwrap()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ------------------------------------------------------------------ TLS session resumption

/// The template with session resumption turned back on: a deployment whose template is not
/// ours, where only the filter stands between a resumed session and the upstream.
fn resumption_on(config: String) -> String {
    let edited = config
        .replace(
            "disable_stateless_session_resumption: true",
            "disable_stateless_session_resumption: false",
        )
        .replace(
            "disable_stateful_session_resumption: true",
            "disable_stateful_session_resumption: false",
        );
    assert_ne!(edited, config, "the template no longer disables resumption");
    edited
}

/// A `consumer` certificate from the system's CA that expires `lifetime` from now, written
/// to `dir` as (certificate, key) files.
fn short_lived_consumer(s: &System, dir: &Path, lifetime: Duration) -> (PathBuf, PathBuf) {
    let pki = s.pki_dir();
    let ca_cert = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(pki.join("ca.key")).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, ca_key).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "consumer");
    params.subject_alt_names = vec![SanType::URI(
        spiffe_id("consumer").as_str().try_into().unwrap(),
    )];
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + Duration::from_secs(now_s() - 60);
    params.not_after = epoch + Duration::from_secs(now_s()) + lifetime;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (cert_path, key_path) = (dir.join("short.crt"), dir.join("short.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

/// A token bound to the certificate at `cert` (signed with the authz-server's active key:
/// the authz-server refuses to issue to an expired certificate, the filter must refuse too).
fn token_bound_to(s: &System, cert: &Path) -> String {
    let forge = s.forge().unwrap();
    let mut claims = forge.claims("consumer", "orders", "orders:read").unwrap();
    claims["cnf"]["x5t#S256"] = certbind_tests::tokens::cert_thumbprint(cert)
        .unwrap()
        .into();
    forge.sign(&claims)
}

#[test]
fn the_sidecar_never_resumes_a_tls_session_but_the_baseline_does() {
    let s = shared();
    let consumer = s.client(Some("consumer")).unwrap();
    let t = token(s, "consumer", "orders", "orders:read");
    let get = Request::get("/orders/1").bearer(&t);
    for attempt in 0..3 {
        let (response, resumed) = consumer.send_resuming(s.sidecar("orders"), &get).unwrap();
        echo_of(&response);
        assert!(
            !resumed,
            "connection {attempt} to the sidecar resumed a TLS session"
        );
    }
    // The control: the same kind of client does resume where Envoy's default is left on.
    let anonymous = s.client(None).unwrap();
    let first = anonymous.send_resuming(s.baseline("orders"), &get).unwrap();
    let second = anonymous.send_resuming(s.baseline("orders"), &get).unwrap();
    assert!(!first.1, "the first connection cannot be resumed");
    assert!(
        second.1,
        "the client did not resume at the baseline: the control is void"
    );
}

#[test]
fn a_certificate_expired_under_a_resumed_session_is_refused_as_certificate_expired() {
    let s = System::builder().envoy_config(resumption_on).start();
    let dir = tempfile::tempdir().unwrap();
    let lifetime = Duration::from_secs(6);
    let issued = Instant::now();
    let (cert, key) = short_lived_consumer(&s, dir.path(), lifetime);
    let client = TlsClient::new(&s.pki_dir().join("ca.crt"), Some((&cert, &key))).unwrap();
    let t = token_bound_to(&s, &cert);
    let get = Request::get("/orders/1").bearer(&t);
    // Full handshake while the certificate is valid: admitted.
    let (response, resumed) = client.send_resuming(s.sidecar("orders"), &get).unwrap();
    assert!(!resumed);
    assert_eq!(
        echo_of(&response)["certbind"]["x-certbind-subject"],
        spiffe_id("consumer")
    );
    // Past notAfter, the session ticket still resumes: Envoy checks no certificate then.
    std::thread::sleep((lifetime + Duration::from_secs(2)).saturating_sub(issued.elapsed()));
    let (response, resumed) = client.send_resuming(s.sidecar("orders"), &get).unwrap();
    assert!(
        resumed,
        "the session was not resumed: the test proves nothing"
    );
    expect_status(&response, 401);
    let body = response.json().unwrap();
    assert_eq!(body["reason"], "certificate_expired", "{body}");
    assert_eq!(body["error"], "invalid_token", "{body}");
    assert!(
        body.get("service").is_none(),
        "the upstream answered: {body}"
    );
    // A valid certificate of the same workload still passes on the same Envoy.
    let valid = s.client(Some("consumer")).unwrap();
    let t = token(&s, "consumer", "orders", "orders:read");
    echo_of(
        &valid
            .send(s.sidecar("orders"), &Request::get("/orders/1").bearer(&t))
            .unwrap(),
    );
    assert_eq!(s.counter("certbind.denied.certificate_expired").unwrap(), 1);
}

// ---------------------------------------------------------------------- header names

#[test]
fn an_underscore_variant_of_an_identity_header_never_reaches_the_upstream() {
    let s = shared();
    let t = token(s, "consumer", "orders", "orders:read");
    let smuggled = Request::get("/orders/1")
        .bearer(&t)
        .header("x_certbind_subject", &spiffe_id("admin"));
    let response = s.call(Some("consumer"), "orders", &smuggled).unwrap();
    expect_status(&response, 400);
    assert!(
        response
            .json()
            .ok()
            .and_then(|b| b.get("service").cloned())
            .is_none(),
        "the upstream answered: {}",
        response.text()
    );
    // The hyphenated spelling is removed by the filter and the verified identity set.
    let t = token(s, "consumer", "orders", "orders:read");
    let forged = Request::get("/orders/1")
        .bearer(&t)
        .header("x-certbind-subject", &spiffe_id("admin"));
    let echo = echo_of(&s.call(Some("consumer"), "orders", &forged).unwrap());
    assert_eq!(
        echo["certbind"]["x-certbind-subject"],
        spiffe_id("consumer")
    );
}

// ------------------------------------------------------------------- `;` path parameters

#[test]
fn a_path_parameter_does_not_pass_a_path_pattern() {
    let s = shared();
    let t = token(s, "inventory", "orders", "orders:read");
    for path in ["/orders/;", "/orders/;jsessionid=1", "/orders/1;x=y"] {
        let response = s
            .call(Some("inventory"), "orders", &Request::get(path).bearer(&t))
            .unwrap();
        expect_status(&response, 400);
        assert!(
            response.text().contains("path parameters"),
            "{path}: {}",
            response.text()
        );
    }
    // The same caller's ordinary path under the same pattern still passes.
    let echo = echo_of(
        &s.call(
            Some("inventory"),
            "orders",
            &Request::get("/orders/1").bearer(&t),
        )
        .unwrap(),
    );
    assert_eq!(echo["path"], "/orders/1");
}

// ------------------------------------------------------------- DPoP replay-cache flood

/// The edge listener's replay cache small enough (1,024 proofs: 16 slots of 128, a share of
/// 64 per slot and key) that a flood fills its share within seconds.
fn small_replay_cache(config: String) -> String {
    let edited = config.replace(
        r#""replay_cache_size": 4096}"#,
        r#""replay_cache_size": 1024}"#,
    );
    assert_ne!(
        edited, config,
        "the edge listener's replay cache size moved"
    );
    edited
}

fn dpop_get(s: &System, key: &EcKey, token: &str) -> Request {
    let url = format!("{}/orders/1", s.edge_origin());
    let proof = dpop_proof(key, "GET", &url, Some(token)).unwrap();
    Request::get("/orders/1")
        .header("authorization", &format!("DPoP {token}"))
        .header("dpop", &proof)
}

#[test]
fn a_client_flooding_the_dpop_replay_cache_does_not_deny_another_clients_fresh_proofs() {
    let s = Arc::new(
        System::builder()
            .concurrency(2)
            .envoy_config(small_replay_cache)
            .start(),
    );
    let token_for = |workload: &str, key: &EcKey| {
        s.dpop_token(workload, "orders", "orders:read", key)
            .unwrap_or_else(|e| panic!("{e}\n{}", s.logs_tail(20)))
    };
    // The flooder holds tokens for two proof keys: its share is the workload's, not a key's.
    let flood: Vec<(EcKey, String)> = (0..2)
        .map(|_| {
            let key = EcKey::generate().unwrap();
            let token = token_for("inventory", &key);
            (key, token)
        })
        .collect();
    let victim_key = EcKey::generate().unwrap();
    let victim_token = token_for("consumer", &victim_key);
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, flood_admitted, refused_full, other) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let started = Instant::now();
    let flooders: Vec<_> = (0..3)
        .map(|i| {
            let (s, stop, sent, ok, full, other) = (
                Arc::clone(&s),
                Arc::clone(&stop),
                Arc::clone(&sent),
                Arc::clone(&flood_admitted),
                Arc::clone(&refused_full),
                Arc::clone(&other),
            );
            let (key, token) = flood[i % flood.len()].clone();
            std::thread::spawn(move || {
                let client = s.client(None).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let Ok(r) = client.send(s.edge(), &dpop_get(&s, &key, &token)) else {
                        other.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    sent.fetch_add(1, Ordering::Relaxed);
                    let reason = r
                        .json()
                        .ok()
                        .and_then(|b| Some(b.get("reason")?.as_str()?.to_owned()));
                    match (r.status, reason.as_deref()) {
                        (200, _) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        (503, Some("replay_cache_full")) => {
                            full.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            other.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    // Until the flood has used up its share (1,024 proofs), then on for the victim's requests.
    let deadline = Instant::now() + Duration::from_secs(60);
    while refused_full.load(Ordering::Relaxed) < 50 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let victim = s.client(None).unwrap();
    let (mut admitted, total) = (0, 100);
    for i in 0..total {
        let r = victim
            .send(s.edge(), &dpop_get(&s, &victim_key, &victim_token))
            .unwrap();
        if r.status == 200 {
            admitted += 1;
        } else {
            eprintln!("victim request {i}: {} {}", r.status, r.text());
        }
    }
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let (sent, full) = (
        sent.load(Ordering::Relaxed),
        refused_full.load(Ordering::Relaxed),
    );
    println!(
        "flooder: {sent} proofs in {secs:.1} s ({:.0}/s), {} admitted, {full} refused 503 \
         replay_cache_full; victim: {admitted}/{total} fresh proofs admitted",
        sent as f64 / secs,
        flood_admitted.load(Ordering::Relaxed),
    );
    assert!(
        full >= 50,
        "the flood never filled its share ({sent} sent): the test proves nothing"
    );
    assert!(
        flood_admitted.load(Ordering::Relaxed) <= 16 * 64,
        "the flooder got more than its share of the cache"
    );
    assert_eq!(
        other.load(Ordering::Relaxed),
        0,
        "flood answers other than 200/503"
    );
    assert_eq!(admitted, total, "the victim's fresh proofs were refused");
    assert_eq!(s.counter("certbind.denied.dpop_replay").unwrap(), 0);
}
