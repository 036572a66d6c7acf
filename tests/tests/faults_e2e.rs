//! Faults of the services the filter depends on, on a real Envoy with the real `.wasm`: a PDP or
//! JWKS endpoint that answers 500, garbage, a huge body or too late must give the caller the
//! contract's 503 (never an allow), and the filter must recover on its own, without an Envoy
//! restart, once the real service is back. An authz-server killed with SIGKILL must come back
//! with the same signing keys. An Envoy killed and started again must hold its first requests
//! until it has keys and the revocation list, then admit and refuse exactly as before. Clock skew
//! is checked on both sides of its bound.
//! (Down-at-start, down-later and hung services are in filter_e2e and revocation_e2e.)

// A test target, test code throughout: the workspace lints apply with clippy.toml's
// allow-*-in-tests, as inside #[test] functions.
#![cfg(test)]

use certbind_tests::fake::{FakeService, Fault};
use certbind_tests::ports::loopback;
use certbind_tests::system::signal;
use certbind_tests::tokens::decode_claims;
use certbind_tests::{Request, Response, System, TlsClient};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn get(s: &System, token: &str, path: &str) -> Response {
    s.call(
        Some("consumer"),
        "orders",
        &Request::get(path).bearer(token),
    )
    .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", s.logs_tail(20)))
}

fn expect(r: &Response, status: u16, reason: &str) {
    assert_eq!(
        r.status,
        status,
        "expected {status} {reason}, got {} {}",
        r.status,
        r.text()
    );
    assert_eq!(
        r.json_str("reason").as_deref(),
        Some(reason),
        "{}",
        r.text()
    );
}

/// Calls until `done` holds for the answer or `within` passes; returns the last answer.
fn poll_until(
    s: &System,
    token: &str,
    within: Duration,
    done: impl Fn(&Response) -> bool,
) -> Response {
    let started = Instant::now();
    loop {
        let r = get(s, token, "/orders/1");
        if done(&r) || started.elapsed() > within {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn poll_until_200(s: &System, token: &str, within: Duration) -> Response {
    poll_until(s, token, within, |r| r.status == 200)
}

/// Answers that are not a decision: each must be 503 `pdp_unavailable`, even those that say
/// "allow" in a form the filter does not accept.
fn pdp_faults() -> Vec<(&'static str, Fault)> {
    vec![
        (
            "500 with an allow body",
            Fault::Status(500, r#"{"allow":true}"#.into()),
        ),
        (
            "200 not JSON",
            Fault::Status(200, "<html>allow</html>".into()),
        ),
        (
            "200 allow as a string",
            Fault::Status(200, r#"{"allow":"true"}"#.into()),
        ),
        (
            "200 truncated JSON",
            Fault::Status(200, r#"{"allow":true,"reason":"#.into()),
        ),
        ("200 larger than the decision limit", Fault::Huge(64 * 1024)),
        (
            "no answer before the timeout",
            Fault::Slow(Duration::from_secs(3)),
        ),
    ]
}

#[test]
fn a_misbehaving_pdp_gets_503_pdp_unavailable_never_an_allow_and_the_real_one_recovers() {
    let mut s = System::builder().without_pdp().pdp_timeout_ms(300).start();
    let token = s.token("consumer", "orders", "orders:read").unwrap();
    for (i, (what, fault)) in pdp_faults().into_iter().enumerate() {
        let fake = FakeService::start(loopback(s.ports.pdp), s.pki_dir(), "pdp", fault).unwrap();
        // A path per fault: a decision is never cached from a fault, but be sure of it.
        let started = Instant::now();
        let r = get(&s, &token, &format!("/orders/{i}"));
        assert_eq!(r.status, 503, "{what}: {} {}", r.status, r.text());
        expect(&r, 503, "pdp_unavailable");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what}: took {:?}",
            started.elapsed()
        );
        assert!(fake.requests() >= 1, "{what}: the fake PDP was never asked");
        drop(fake);
    }
    s.start_pdp().unwrap();
    let r = poll_until_200(&s, &token, Duration::from_secs(10));
    assert_eq!(r.status, 200, "after the PDP came back: {}", r.text());
}

/// Concurrent callers in the burst below: more than the PDP cluster's circuit breaker lets wait
/// (128 connections + 256 pending requests), fewer than a listener's 512-connection limit.
const BURST: usize = 480;

#[test]
fn a_burst_against_a_hung_pdp_overflows_its_circuit_breaker_at_once_never_an_allow() {
    let mut s = System::builder()
        .without_pdp()
        .pdp_timeout_ms(5_000)
        .start();
    let token = s.token("consumer", "orders", "orders:read").unwrap();
    // Accepts, reads the question, answers nothing for longer than the filter's PDP timeout.
    let fake = FakeService::start(
        loopback(s.ports.pdp),
        s.pki_dir(),
        "pdp",
        Fault::Slow(Duration::from_secs(30)),
    )
    .unwrap();
    let client = s.client(Some("consumer")).unwrap();
    let sidecar = s.sidecar("orders");
    let start = std::sync::Arc::new(std::sync::Barrier::new(BURST));
    let callers: Vec<_> = (0..BURST)
        .map(|i| {
            let (client, token, start) = (client.clone(), token.clone(), start.clone());
            std::thread::spawn(move || {
                // An order of its own: a decision-cache miss, so a PDP call each.
                let request = Request::get(&format!("/orders/{}", 10_000 + i)).bearer(&token);
                start.wait();
                let began = Instant::now();
                let r = client.send(sidecar, &request);
                (r, began.elapsed())
            })
        })
        .collect();
    let answers: Vec<(Response, Duration)> = callers
        .into_iter()
        .map(|t| {
            let (r, took) = t.join().unwrap();
            (
                r.unwrap_or_else(|e| panic!("a caller got no answer: {e}")),
                took,
            )
        })
        .collect();
    for (r, _) in &answers {
        expect(r, 503, "pdp_unavailable");
    }
    let stats = s.admin().stats().unwrap();
    let overflow = stats["cluster.certbind_pdp.upstream_rq_pending_overflow"];
    // Shed by the breaker: answered well before the 5 s PDP timeout could end them.
    let fast = answers
        .iter()
        .filter(|(_, took)| *took < Duration::from_secs(3))
        .count();
    println!(
        "burst of {BURST}: all 503 pdp_unavailable; breaker overflow {overflow}, answered in < 3 s {fast}, \
         questions reaching the hung PDP {}",
        fake.requests()
    );
    assert!(
        overflow > 0 && fast as u64 >= overflow,
        "overflow {overflow}, fast answers {fast}"
    );
    // At most the breaker's connections and pending requests ever reach the PDP.
    assert!(
        fake.requests() <= 128 + 256,
        "the breaker let {} questions through",
        fake.requests()
    );
    drop(fake);
    s.start_pdp().unwrap();
    let r = poll_until_200(&s, &token, Duration::from_secs(10));
    assert_eq!(r.status, 200, "after the PDP came back: {}", r.text());
}

#[test]
fn a_misbehaving_jwks_endpoint_gets_503_jwks_unavailable_and_the_real_one_recovers() {
    let mut s = System::builder()
        .without_authz()
        .jwks_timing(1, 1, 3600, 300)
        .tuning(|t| t.jwks_timeout_ms = Some(300))
        .start();
    // No JWKS has ever arrived, so no token can be checked; an attacker's key stands in.
    let waiting = s
        .attacker_forge()
        .unwrap()
        .token("consumer", "orders", "orders:read")
        .unwrap();
    let faults = [
        ("500", Fault::Status(500, r#"{"keys":[]}"#.into())),
        ("200 not JSON", Fault::Status(200, "garbage".into())),
        (
            "200 keys not a list",
            Fault::Status(200, r#"{"keys":{}}"#.into()),
        ),
        ("200 beyond the JWKS size limit", Fault::Huge(512 * 1024)),
        (
            "no answer before the timeout",
            Fault::Slow(Duration::from_secs(3)),
        ),
    ];
    for (what, fault) in faults {
        let fake =
            FakeService::start(loopback(s.ports.authz), s.pki_dir(), "authz", fault).unwrap();
        // Let the filter's refresh (every second) hit the fake at least once.
        let started = Instant::now();
        while fake.requests() == 0 && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let r = get(&s, &waiting, "/orders/1");
        assert_eq!(r.status, 503, "{what}: {} {}", r.status, r.text());
        expect(&r, 503, "jwks_unavailable");
        drop(fake);
    }
    s.start_authz().unwrap();
    let token = s.token("consumer", "orders", "orders:read").unwrap();
    let r = poll_until_200(&s, &token, Duration::from_secs(10));
    assert_eq!(
        r.status,
        200,
        "after the authz-server came back: {}",
        r.text()
    );
}

#[test]
fn keys_already_cached_survive_a_jwks_endpoint_answering_garbage() {
    let mut s = System::builder().jwks_timing(1, 1, 3600, 1000).start();
    let token = s.token("consumer", "orders", "orders:read").unwrap();
    assert_eq!(get(&s, &token, "/orders/1").status, 200);
    s.stop_authz();
    let fake = FakeService::start(
        loopback(s.ports.authz),
        s.pki_dir(),
        "authz",
        Fault::Status(200, r#"{"keys":"garbage"}"#.into()),
    )
    .unwrap();
    let started = Instant::now();
    while fake.requests() < 2 && started.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        fake.requests() >= 2,
        "the filter did not refresh against the fake"
    );
    // A different path: a fresh decision, and the token checked against the kept keys.
    let r = get(&s, &token, "/orders/2");
    assert_eq!(
        r.status,
        200,
        "garbage replaced the good keys: {}",
        r.text()
    );
    drop(fake);
    s.start_authz().unwrap();
}

#[test]
fn a_sigkilled_authz_server_restarts_with_the_same_signing_keys_while_calls_continue() {
    let mut s = System::builder().start();
    let before = s.token("consumer", "orders", "orders:read").unwrap();
    assert_eq!(get(&s, &before, "/orders/1").status, 200);
    let jwks = |s: &System| {
        let r = s
            .client(Some("consumer"))
            .unwrap()
            .send(s.authz_addr(), &Request::get("/.well-known/jwks.json"))
            .unwrap();
        r.json().unwrap()["keys"].clone()
    };
    let keys_before = jwks(&s);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let failed = std::thread::scope(|scope| {
        let client = scope.spawn(|| {
            let (mut sent, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = get(&s, &before, &format!("/orders/{}", sent % 3));
                if r.status != 200 {
                    failed.push(r.text());
                }
                sent += 1;
            }
            assert!(sent > 10, "the client hardly ran: {sent} calls");
            failed
        });
        std::thread::sleep(Duration::from_millis(300));
        signal(s.authz_pid().unwrap(), "KILL").unwrap();
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        client.join().unwrap()
    });
    assert!(
        failed.is_empty(),
        "calls failed while the authz-server died: {failed:?}"
    );
    s.start_authz().unwrap();
    assert_eq!(jwks(&s), keys_before, "the JWKS changed across a SIGKILL");
    let after = s.token("consumer", "orders", "orders:read").unwrap();
    assert_eq!(get(&s, &after, "/orders/1").status, 200);
    assert_eq!(
        get(&s, &before, "/orders/9").status,
        200,
        "a pre-crash token stopped verifying"
    );
}

/// A consumer's call to the orders sidecar sent as soon as it accepts connections: retried while
/// the connection fails (Envoy not up yet) until `deadline`; the answer and when it came.
fn call_once_up(
    client: &TlsClient,
    sidecar: SocketAddr,
    token: &str,
    deadline: Instant,
) -> (Response, Instant) {
    loop {
        match client.send(sidecar, &Request::get("/orders/1").bearer(token)) {
            Ok(r) => return (r, Instant::now()),
            Err(e) if Instant::now() > deadline => panic!("the sidecar never answered: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

#[test]
fn a_restarted_envoy_holds_its_first_requests_for_keys_and_revocations_then_answers_as_before() {
    let mut s = System::builder().start();
    let valid = s.token("consumer", "orders", "orders:read").unwrap();
    let revoked = s.token("consumer", "orders", "orders:read").unwrap();
    // Both admitted once, so both sit in the old Envoy's caches.
    assert_eq!(get(&s, &valid, "/orders/1").status, 200);
    assert_eq!(get(&s, &revoked, "/orders/1").status, 200);
    let jti = decode_claims(&revoked).unwrap()["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s.revoke("jti", &jti).unwrap();
    assert_eq!(r.status, 200, "revoking: {}", r.text());
    let r = poll_until(&s, &revoked, Duration::from_secs(2), |r| r.status == 401);
    expect(&r, 401, "revoked");

    s.stop_envoy();
    let client = s.client(Some("consumer")).unwrap();
    assert!(
        client
            .send(
                s.sidecar("orders"),
                &Request::get("/orders/1").bearer(&valid)
            )
            .is_err(),
        "the sidecar still answers after Envoy was killed"
    );
    // The consumer keeps calling while Envoy is down; the first calls the new Envoy accepts
    // arrive before its first JWKS fetch and revocation sync, and must wait for both.
    let sidecar = s.sidecar("orders");
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(30);
    let (first_valid, first_revoked) = std::thread::scope(|scope| {
        let valid = scope.spawn(|| call_once_up(&client, sidecar, &valid, deadline));
        let revoked = scope.spawn(|| call_once_up(&client, sidecar, &revoked, deadline));
        s.start_envoy().unwrap();
        (valid.join().unwrap(), revoked.join().unwrap())
    });
    let ready_after = restarted.elapsed();
    let (r, at) = first_valid;
    assert_eq!(
        r.status,
        200,
        "the first valid call after the restart: {} {}\n{}",
        r.status,
        r.text(),
        s.logs_tail(20)
    );
    let (r, revoked_at) = first_revoked;
    expect(&r, 401, "revoked");
    let (valid_took, revoked_took) = (at - restarted, revoked_at - restarted);
    println!(
        "Envoy ready {ready_after:?} after the restart began; first answers: 200 after \
         {valid_took:?}, 401 revoked after {revoked_took:?}"
    );
    for took in [valid_took, revoked_took] {
        assert!(
            took < Duration::from_secs(5),
            "a first answer took {took:?} from the restart"
        );
    }
    // Counters of the new Envoy: it fetched both itself.
    assert!(s.counter("certbind.jwks.fetch_ok").unwrap() >= 1);
    assert!(s.counter("certbind.revocation.feed_ok").unwrap() >= 1);
    assert_eq!(s.counter("certbind.denied.jwks_unavailable").unwrap(), 0);
    // And it goes on answering as the old one did.
    assert_eq!(get(&s, &valid, "/orders/2").status, 200);
    expect(&get(&s, &revoked, "/orders/2"), 401, "revoked");
    let fresh = s.token("consumer", "orders", "orders:read").unwrap();
    assert_eq!(get(&s, &fresh, "/orders/3").status, 200);
}

#[test]
fn clock_skew_admits_just_inside_its_bound_and_refuses_just_outside() {
    const SKEW: u64 = 30;
    let s = System::builder()
        .tuning(|t| t.clock_skew_s = Some(SKEW))
        .start();
    let forge = s.forge().unwrap();
    let now = certbind_tests::tokens::now();
    let with = |exp: u64, nbf: Option<u64>| {
        let mut claims = forge.claims("consumer", "orders", "orders:read").unwrap();
        claims["iat"] = (now - 120).into();
        claims["exp"] = exp.into();
        if let Some(nbf) = nbf {
            claims["nbf"] = nbf.into();
        }
        forge.sign(&claims)
    };
    // 10 s of margin on each side for the time a request takes on a busy machine.
    let r = get(&s, &with(now - SKEW + 10, None), "/orders/1");
    assert_eq!(r.status, 200, "expired within the skew: {}", r.text());
    expect(
        &get(&s, &with(now - SKEW - 10, None), "/orders/1"),
        401,
        "expired",
    );
    let r = get(&s, &with(now + 120, Some(now + SKEW - 10)), "/orders/1");
    assert_eq!(r.status, 200, "not yet valid within the skew: {}", r.text());
    expect(
        &get(&s, &with(now + 120, Some(now + SKEW + 10)), "/orders/1"),
        401,
        "not_yet_valid",
    );
}
