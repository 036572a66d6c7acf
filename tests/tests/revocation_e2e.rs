//! Revocation end to end on a real Envoy (issue 8): the filter follows the authz-server's
//! feed and refuses revoked tokens, subjects and certificates within a second — cached tokens
//! and decisions included — fails closed when the feed goes quiet, and keeps enforcing across a
//! kill -9 of the authz-server.

// A test target, test code throughout: the workspace lints apply with clippy.toml's
// allow-*-in-tests, as inside #[test] functions.
#![cfg(test)]

use certbind_tests::tokens::{EcKey, cert_thumbprint, decode_claims, dpop_proof};
use certbind_tests::{Request, Response, System, spiffe_id};
use std::time::{Duration, Instant};

const ORDER: &str = "/orders/1";

fn get(system: &System, who: &str, token: &str) -> Response {
    system
        .call(Some(who), "orders", &Request::get(ORDER).bearer(token))
        .unwrap()
}

fn reason(r: &Response) -> String {
    r.json_str("reason").unwrap_or_default()
}

/// Calls until the answer is `status` (with `reason`, when given) or `within` passes;
/// returns how long it took.
fn until_answer(
    system: &System,
    who: &str,
    token: &str,
    status: u16,
    want: Option<&str>,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let r = get(system, who, token);
        if r.status == status && want.is_none_or(|w| reason(&r) == w) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{who}: still {} {} after {within:?}\n{}",
            r.status,
            r.text(),
            system.logs_tail(20)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn jti_of(token: &str) -> String {
    decode_claims(token).unwrap()["jti"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The high-S twin of a token (same bytes signed, a second valid signature).
fn high_s_twin(token: &str) -> String {
    certbind_demo::forge::high_s_twin(token).unwrap()
}

fn ok(r: Response) -> Response {
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

#[test]
fn revokes_by_jti_subject_and_certificate_within_a_second_and_spares_the_others() {
    let system = System::builder().concurrency(2).start();
    let consumer = system.token("consumer", "orders", "orders:read").unwrap();
    let inventory = system.token("inventory", "orders", "orders:read").unwrap();
    // Both admitted, so both tokens and decisions are in the filter's caches.
    for _ in 0..3 {
        ok(get(&system, "consumer", &consumer));
        ok(get(&system, "inventory", &inventory));
    }

    // 1. The client revokes its own token (RFC 7009): refused by jti, cached or not.
    ok(system.revoke_token("consumer", &consumer).unwrap());
    let took = until_answer(
        &system,
        "consumer",
        &consumer,
        401,
        Some("revoked"),
        Duration::from_secs(1),
    );
    println!("jti revocation refused after {took:?}");
    let twin = high_s_twin(&consumer);
    assert_ne!(twin, consumer);
    let r = get(&system, "consumer", &twin);
    assert_eq!(r.status, 401, "high-S twin: {}", r.text());
    assert!(
        ["revoked", "bad_signature"].contains(&reason(&r).as_str()),
        "high-S twin: {}",
        r.text()
    );
    println!("high-S twin of the revoked token: 401 {}", reason(&r));
    // A new token of the same client is not affected; nor is the other subject.
    let fresh = system.token("consumer", "orders", "orders:read").unwrap();
    assert_ne!(jti_of(&fresh), jti_of(&consumer));
    ok(get(&system, "consumer", &fresh));
    ok(get(&system, "inventory", &inventory));

    // 2. The operator revokes a subject (admin API): its earlier token is refused, the
    //    consumer is not; the subject cannot get a new token either.
    let row = ok(system.revoke("subject", &spiffe_id("inventory")).unwrap())
        .json()
        .unwrap();
    assert_eq!(row["kind"], "subject");
    let took = until_answer(
        &system,
        "inventory",
        &inventory,
        401,
        Some("revoked"),
        Duration::from_secs(1),
    );
    println!("subject revocation refused after {took:?}");
    ok(get(&system, "consumer", &fresh));
    assert_eq!(
        system
            .token_request(
                "inventory",
                &[
                    ("grant_type", "client_credentials"),
                    ("audience", &spiffe_id("orders")),
                    ("scope", "orders:read"),
                ],
            )
            .unwrap()
            .status,
        401
    );

    // 3. The operator revokes the consumer's certificate from the command line: every
    //    token presented with it is refused.
    let x5t = cert_thumbprint(&system.pki_dir().join("consumer.crt")).unwrap();
    let printed = system.revoke_cli(&["--cert", &x5t]).unwrap();
    assert!(printed.contains("\"cert\""), "{printed}");
    let took = until_answer(
        &system,
        "consumer",
        &fresh,
        401,
        Some("revoked"),
        Duration::from_secs(1),
    );
    println!("certificate revocation (CLI) refused after {took:?}");
    assert!(system.counter("certbind.denied.revoked").unwrap() >= 3);
    let log = system.envoy_log();
    for kind in ["revoked=jti", "revoked=subject", "revoked=cert"] {
        assert!(log.contains(kind), "no decision line with {kind}");
    }
    assert!(!log.contains(&consumer), "a token was logged");
}

#[test]
fn fails_closed_when_the_feed_is_down_beyond_the_staleness_bound_and_recovers() {
    let mut system = System::builder()
        .authz_args(&["--feed-wait", "1"])
        .tuning(|t| t.revocation_max_staleness_s = Some(3))
        .start();
    let token = system.token("consumer", "orders", "orders:read").unwrap();
    ok(get(&system, "consumer", &token));
    system.stop_authz();
    let down = Instant::now();
    // Within the bound the cached token still passes.
    ok(get(&system, "consumer", &token));
    let r = {
        let took = until_answer(
            &system,
            "consumer",
            &token,
            503,
            Some("revocation_unavailable"),
            Duration::from_secs(8),
        );
        println!("fail closed {took:?} after the feed went down");
        get(&system, "consumer", &token)
    };
    // The bound counts from the last good answer, at most one feed wait (1 s) before the stop.
    assert!(
        down.elapsed() >= Duration::from_secs(2),
        "{:?}",
        down.elapsed()
    );
    assert_eq!(
        r.json_str("error").as_deref(),
        Some("temporarily_unavailable")
    );
    assert_eq!(r.header("retry-after"), Some("5"));
    assert!(
        system
            .counter("certbind.denied.revocation_unavailable")
            .unwrap()
            >= 1
    );
    system.start_authz().unwrap();
    let took = until_answer(
        &system,
        "consumer",
        &token,
        200,
        None,
        Duration::from_secs(5),
    );
    println!("recovered {took:?} after the authz-server restarted");
}

#[test]
fn fail_open_admits_a_stale_feed_and_counts_it() {
    let mut system = System::builder()
        .authz_args(&["--feed-wait", "1"])
        .tuning(|t| {
            t.revocation_max_staleness_s = Some(2);
            t.revocation_fail_open = Some(true);
        })
        .start();
    let token = system.token("consumer", "orders", "orders:read").unwrap();
    ok(get(&system, "consumer", &token));
    system.stop_authz();
    std::thread::sleep(Duration::from_secs(4));
    ok(get(&system, "consumer", &token));
    assert!(system.counter("certbind.revocation.fail_open").unwrap() >= 1);
    assert_eq!(
        system
            .counter("certbind.denied.revocation_unavailable")
            .unwrap(),
        0
    );
}

#[test]
fn keeps_enforcing_a_revocation_after_kill_9_of_the_authz_server() {
    let mut system = System::builder().start();
    let token = system.token("consumer", "orders", "orders:read").unwrap();
    ok(get(&system, "consumer", &token));
    let jti = jti_of(&token);
    // Revoked by the operator, then SIGKILL right after the 200.
    ok(system.revoke("jti", &jti).unwrap());
    system.stop_authz();
    system.start_authz().unwrap();
    // The restarted server still publishes it: a fresh feed snapshot lists the jti.
    let feed = system
        .client(Some("envoy"))
        .unwrap()
        .send(system.authz_addr(), &Request::get("/v1/revocations"))
        .unwrap();
    assert_eq!(feed.status, 200, "{}", feed.text());
    let listed = feed.json().unwrap()["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["kind"] == "jti" && r["value"] == jti.as_str());
    assert!(listed, "the restarted authz-server lost the revocation");
    // And the sidecar, following the restarted feed, refuses the token.
    until_answer(
        &system,
        "consumer",
        &token,
        401,
        Some("revoked"),
        Duration::from_secs(3),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(reason(&get(&system, "consumer", &token)), "revoked");
    let other = system.token("consumer", "orders", "orders:read").unwrap();
    ok(get(&system, "consumer", &other));
}

#[test]
fn rotating_the_signing_key_under_load_fails_no_request() {
    let system = System::builder().concurrency(2).start();
    let old = system.token("consumer", "orders", "orders:read").unwrap();
    ok(get(&system, "consumer", &old));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (calls, failures) = std::thread::scope(|s| {
        let load = s.spawn(|| {
            let (mut calls, mut failures) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // A fresh token each round (signed by whatever key is active now) and the
                // token from before every rotation.
                let fresh = system.token("consumer", "orders", "orders:read").unwrap();
                for token in [&fresh, &old] {
                    let r = get(&system, "consumer", token);
                    calls += 1;
                    if r.status != 200 {
                        failures.push(format!("{} {}", r.status, reason(&r)));
                    }
                }
            }
            (calls, failures)
        });
        let mut kids = Vec::new();
        for _ in 0..2 {
            std::thread::sleep(Duration::from_millis(1500));
            kids.push(system.rotate_keys().unwrap());
        }
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_ne!(kids[0], kids[1]);
        load.join().unwrap()
    });
    println!(
        "{calls} calls during two key rotations, {} failed",
        failures.len()
    );
    assert!(calls >= 20, "too little load: {calls} calls");
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(system.counter("certbind.jwks.fetch_ok").unwrap() >= 2);
}

#[test]
fn the_revocation_demo_step_runs_against_a_system_on_free_ports() {
    let system = System::builder().start();
    let bin = certbind_tests::prereq::release_bin("certbind-revoke-demo")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(bin)
        .args(["--authz", &system.authz_addr().to_string()])
        .args(["--orders", &system.sidecar("orders").to_string()])
        .arg("--pki-dir")
        .arg(system.pki_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "certbind-revoke-demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    assert!(stdout.contains("401 revoked"), "{stdout}");
    // The ban was lifted at the end: inventory can get a new token again.
    system.token("inventory", "orders", "orders:read").unwrap();
}

#[test]
fn one_worker_vm_per_envoy_long_polls_the_feed_and_every_worker_enforces_it() {
    let system = System::builder().concurrency(2).start();
    let consumer = system.token("consumer", "orders", "orders:read").unwrap();
    // Requests on fresh connections land on both workers; all are admitted once synced.
    for _ in 0..6 {
        ok(get(&system, "consumer", &consumer));
    }
    // Every worker VM runs one root context per listener's plugin; following the feed each
    // would hold several long-polls open. One lease holder holds exactly one.
    let admin = system.admin();
    let mut samples = Vec::new();
    for _ in 0..10 {
        let stats = admin.stats().unwrap();
        samples.push(stats["cluster.certbind_authz.upstream_rq_active"]);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        samples.iter().all(|&n| n == 1),
        "requests open to the authz-server: {samples:?}\n{}",
        system.logs_tail(20)
    );
    let log = system.envoy_log();
    let leading = log.matches("this worker VM is now following it").count()
        - log.matches("this worker VM stopped following it").count();
    assert_eq!(leading, 1, "lease holders at the end:\n{log}");
    println!("open feed long-polls: {samples:?}; lease holders: {leading}");
    ok(system.revoke_token("consumer", &consumer).unwrap());
    let took = until_answer(
        &system,
        "consumer",
        &consumer,
        401,
        Some("revoked"),
        Duration::from_secs(1),
    );
    // Every worker refuses it: new connections spread over both.
    for _ in 0..10 {
        let r = get(&system, "consumer", &consumer);
        assert_eq!(
            (r.status, reason(&r)),
            (401, "revoked".into()),
            "{}",
            r.text()
        );
    }
    let stats = admin.stats().unwrap();
    for worker in ["worker_0", "worker_1"] {
        let served: u64 = stats
            .iter()
            .filter(|(k, _)| {
                k.starts_with("listener.") && k.ends_with(&format!(".{worker}.downstream_cx_total"))
            })
            .map(|(_, v)| *v)
            .sum();
        assert!(
            served > 0,
            "{worker} served no connection: both workers must be checked"
        );
    }
    println!("refused on every worker after {took:?}");
    // A second revocation arrives as a delta (the first, on an empty store, as a snapshot).
    // Each other VM (the workers' and the main thread's, but the leader's) takes it in once,
    // by the delta, however many listeners' plugins it runs: they share one copy of the set.
    let adopted = |stats: &std::collections::BTreeMap<String, u64>| {
        let count = |name: &str| stats[&format!("wasmcustom.certbind.revocation.{name}")];
        (count("adopted_set"), count("adopted_delta"))
    };
    let before = adopted(&admin.stats().unwrap());
    let second = system.token("consumer", "orders", "orders:read").unwrap();
    ok(get(&system, "consumer", &second));
    ok(system.revoke_token("consumer", &second).unwrap());
    until_answer(
        &system,
        "consumer",
        &second,
        401,
        Some("revoked"),
        Duration::from_secs(1),
    );
    std::thread::sleep(Duration::from_millis(300));
    let after = adopted(&admin.stats().unwrap());
    println!("followers' copies caught up (by the whole set, by deltas): {before:?} -> {after:?}");
    assert_eq!(after.0, before.0, "no VM read the whole set again");
    assert!(
        (1..=2).contains(&(after.1 - before.1)),
        "one delta per other VM (2 of the 3), not per plugin: {before:?} -> {after:?}"
    );
}

/// `GET /orders/1` on the edge listener with `token` as `DPoP` and a fresh proof by `key`.
fn edge_get(system: &System, key: &EcKey, token: &str) -> Response {
    let htu = format!("{}{ORDER}", system.edge_origin());
    let proof = dpop_proof(key, "GET", &htu, Some(token)).unwrap();
    let request = Request::get(ORDER)
        .header("authorization", &format!("DPoP {token}"))
        .header("dpop", &proof);
    system
        .client(None)
        .unwrap()
        .send(system.edge(), &request)
        .unwrap()
}

fn introspect(system: &System, caller: &str, token: &str) -> serde_json::Value {
    let r = system
        .client(Some(caller))
        .unwrap()
        .send(
            system.authz_addr(),
            &Request::post("/introspect").form(&[("token", token)]),
        )
        .unwrap();
    ok(r).json().unwrap()
}

#[test]
fn revoking_a_certificate_refuses_the_dpop_tokens_it_obtained_at_the_edge_within_a_second() {
    let system = System::builder().concurrency(2).start();
    let key = EcKey::generate().unwrap();
    let consumer = system
        .dpop_token("consumer", "orders", "orders:read", &key)
        .unwrap();
    let inventory = system
        .dpop_token("inventory", "orders", "orders:read", &key)
        .unwrap();
    let x5t = cert_thumbprint(&system.pki_dir().join("consumer.crt")).unwrap();
    assert_eq!(decode_claims(&consumer).unwrap()["client_x5t#S256"], x5t);
    for _ in 0..3 {
        ok(edge_get(&system, &key, &consumer));
        ok(edge_get(&system, &key, &inventory));
    }
    assert_eq!(introspect(&system, "orders", &consumer)["active"], true);

    // The operator revokes the certificate that obtained the DPoP token; no request on the
    // edge carries that certificate, only the token's claim names it.
    ok(system.revoke("cert", &x5t).unwrap());
    let start = Instant::now();
    loop {
        let r = edge_get(&system, &key, &consumer);
        if r.status == 401 && reason(&r) == "revoked" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "still {} {} after 1 s\n{}",
            r.status,
            r.text(),
            system.logs_tail(20)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "DPoP token of a revoked certificate refused at the edge after {:?}",
        start.elapsed()
    );
    assert_eq!(
        introspect(&system, "orders", &consumer),
        serde_json::json!({"active": false})
    );
    // Another client's DPoP token, from another certificate, passes; so does its introspection.
    ok(edge_get(&system, &key, &inventory));
    assert_eq!(introspect(&system, "orders", &inventory)["active"], true);
    assert!(system.envoy_log().contains("revoked=cert"));
}
