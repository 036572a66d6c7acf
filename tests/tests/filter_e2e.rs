//! The certbind filter end to end: a real Envoy loading the real `.wasm`, the real
//! authz-server and PDP, free ports. One test per CONTRACT §4 reason that can arise through
//! Envoy, positive controls, and the availability behaviour (JWKS and PDP down, key rotation,
//! shadow mode). Tests that only send requests share one System; tests that stop services or
//! rotate keys start their own.

// A test target, test code throughout: the workspace lints apply with clippy.toml's
// allow-*-in-tests, as inside #[test] functions.
#![cfg(test)]

use certbind_core::config::Mode;
use certbind_tests::capture::CaptureUpstream;
use certbind_tests::system::signal;
use certbind_tests::tokens::{
    EcKey, assemble, b64url, decode_header, header, jws_raw, now, sign_encoded,
};
use certbind_tests::{Request, Response, System, spiffe_id};
use serde_json::{Value, json};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The System shared by every test that leaves it as it found it. Two Envoy workers, so the
/// JWKS shared between worker VMs is exercised too.
fn shared() -> &'static System {
    static SYSTEM: OnceLock<System> = OnceLock::new();
    SYSTEM.get_or_init(|| System::builder().concurrency(2).start())
}

fn token(s: &System, client: &str, service: &str, scope: &str) -> String {
    s.token(client, service, scope)
        .unwrap_or_else(|e| panic!("getting a token: {e}\n{}", s.logs_tail(20)))
}

fn call(s: &System, identity: &str, service: &str, request: &Request) -> Response {
    s.call(Some(identity), service, request)
        .unwrap_or_else(|e| {
            panic!(
                "{} {}: {e}\n{}",
                request.method,
                request.path,
                s.logs_tail(20)
            )
        })
}

fn get_with(s: &System, identity: &str, service: &str, path: &str, token: &str) -> Response {
    call(s, identity, service, &Request::get(path).bearer(token))
}

/// Asserts a 200 that reached `service`'s upstream, and returns the upstream's echo.
fn expect_admitted(response: &Response, service: &str) -> Value {
    assert_eq!(
        response.status,
        200,
        "expected 200, got {} {}",
        response.status,
        response.text()
    );
    let echo = response.json().unwrap();
    assert_eq!(echo["service"], service, "{echo}");
    echo
}

/// Asserts CONTRACT §4's answer: status, `reason`, `error` in body and `WWW-Authenticate`,
/// `request_id` equal to the response's `x-request-id`, `Retry-After` on 503.
fn expect_refused(response: &Response, status: u16, reason: &str, error: &str) {
    let body = response.text();
    assert_eq!(
        response.status, status,
        "expected {status} {reason}, got {} {body}",
        response.status
    );
    let json = response.json().unwrap();
    assert_eq!(json["reason"], reason, "{body}");
    assert!(
        response
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        response.headers
    );
    let request_id = json["request_id"].as_str().unwrap_or_default();
    assert!(!request_id.is_empty(), "no request_id: {body}");
    assert_eq!(response.header("x-request-id"), Some(request_id), "{body}");
    assert!(
        json.get("service").is_none(),
        "the upstream answered: {body}"
    );
    let www = response.header("www-authenticate").unwrap_or_default();
    assert!(www.starts_with("Bearer realm="), "WWW-Authenticate {www:?}");
    if reason == "missing_token" {
        assert!(
            !www.contains("error="),
            "RFC 6750 §3.1: no error code, got {www:?}"
        );
    } else {
        assert_eq!(json["error"], error, "{body}");
        assert!(
            www.contains(&format!("error=\"{error}\"")),
            "WWW-Authenticate {www:?}"
        );
    }
    if status == 503 {
        assert!(
            response.header("retry-after").is_some(),
            "503 without Retry-After"
        );
    }
}

fn expect_invalid_token(response: &Response, reason: &str) {
    expect_refused(response, 401, reason, "invalid_token");
}

/// Sends requests until `done(response)` or `timeout`; returns the last response.
fn poll(
    timeout: Duration,
    mut send: impl FnMut() -> Response,
    done: impl Fn(&Response) -> bool,
) -> Response {
    let deadline = Instant::now() + timeout;
    loop {
        let response = send();
        if done(&response) || Instant::now() > deadline {
            return response;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ------------------------------------------------------------------------- positive controls

#[test]
fn admits_the_consumer_and_the_upstream_sees_the_verified_identity() {
    let s = shared();
    let t = token(s, "consumer", "orders", "orders:read");
    let echo = expect_admitted(
        &get_with(s, "consumer", "orders", "/orders/1", &t),
        "orders",
    );
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/orders/1");
    let claims = certbind_tests::tokens::decode_claims(&t).unwrap();
    let seen = &echo["certbind"];
    assert_eq!(seen["x-certbind-subject"], spiffe_id("consumer"), "{echo}");
    assert_eq!(seen["x-certbind-client-id"], "consumer", "{echo}");
    assert_eq!(seen["x-certbind-scope"], "orders:read", "{echo}");
    assert_eq!(seen["x-certbind-jti"], claims["jti"], "{echo}");
}

#[test]
fn admits_every_call_the_demo_policy_grants() {
    let s = shared();
    let read = token(s, "consumer", "orders", "orders:read");
    let write = token(s, "consumer", "orders", "orders:write");
    let billing = token(s, "consumer", "billing", "billing:read");
    let inventory = token(s, "inventory", "orders", "orders:read");
    expect_admitted(
        &get_with(s, "consumer", "orders", "/orders", &read),
        "orders",
    );
    let post = Request::post("/orders")
        .bearer(&write)
        .json(&json!({"item": "x"}));
    expect_admitted(&call(s, "consumer", "orders", &post), "orders");
    expect_admitted(
        &get_with(s, "consumer", "billing", "/billing/7", &billing),
        "billing",
    );
    expect_admitted(
        &get_with(s, "inventory", "orders", "/orders/3", &inventory),
        "orders",
    );
    // The same token again (the verified-token and decision caches answer) still passes.
    expect_admitted(
        &get_with(s, "consumer", "orders", "/orders/2", &read),
        "orders",
    );
}

#[test]
fn admits_a_forged_token_only_the_claims_would_refuse_when_its_claims_are_right() {
    // Control for the claim tests below: a token signed with the real key and correct claims
    // passes, so each of them fails for the one claim it changes.
    let s = shared();
    let f = s.forge().unwrap();
    let t = f.token("consumer", "orders", "orders:read").unwrap();
    expect_admitted(
        &get_with(s, "consumer", "orders", "/orders/1", &t),
        "orders",
    );
}

// --------------------------------------------------------------------- refusals, in order

#[test]
fn refuses_a_request_without_a_token() {
    let s = shared();
    let r = call(s, "consumer", "orders", &Request::get("/orders/1"));
    expect_refused(&r, 401, "missing_token", "");
}

#[test]
fn refuses_malformed_tokens() {
    let s = shared();
    let f = s.forge().unwrap();
    let good = f.token("consumer", "orders", "orders:read").unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let h = header(f.key().kid()).to_string();
    let claims = f
        .claims("consumer", "orders", "orders:read")
        .unwrap()
        .to_string();
    // The claims are parsed only after the signature verified, so the bad ones are signed
    // with the real key: only the parsing can refuse them.
    let cases = [
        ("one part", "abc".to_owned()),
        ("two parts", format!("{}.{}", parts[0], parts[1])),
        ("four parts", format!("{good}.extra")),
        (
            "header not base64url",
            format!("!!!.{}.{}", parts[1], parts[2]),
        ),
        ("header not JSON", assemble("not json", &claims, &[0u8; 64])),
        (
            "header duplicate alg",
            assemble(
                &format!(
                    r#"{{"alg":"ES256","alg":"ES256","typ":"at+jwt","kid":"{}"}}"#,
                    f.key().kid()
                ),
                &claims,
                &[0u8; 64],
            ),
        ),
        (
            "claims not base64url",
            sign_encoded(&b64url(&h), "!!!", f.key()),
        ),
        ("claims not an object", jws_raw(&h, "[1,2]", f.key())),
        (
            "claims duplicate sub",
            jws_raw(
                &h,
                &claims.replacen('{', &format!(r#"{{"sub":"{}","#, spiffe_id("inventory")), 1),
                f.key(),
            ),
        ),
        (
            "oversized",
            format!("{}.{}.{}", parts[0], "A".repeat(20_000), parts[2]),
        ),
    ];
    for (what, t) in cases {
        let r = get_with(s, "consumer", "orders", "/orders/1", &t);
        assert_eq!(
            r.json_str("reason").as_deref(),
            Some("malformed_token"),
            "{what}: {}",
            r.text()
        );
        expect_invalid_token(&r, "malformed_token");
    }
}

#[test]
fn refuses_algorithms_other_than_es256() {
    let s = shared();
    let f = s.forge().unwrap();
    let claims = f
        .claims("consumer", "orders", "orders:read")
        .unwrap()
        .to_string();
    for alg in ["HS256", "RS256", "ES384", "ES512", "EdDSA", "none"] {
        let h = json!({"alg": alg, "typ": "at+jwt", "kid": f.key().kid()}).to_string();
        let t = jws_raw(&h, &claims, f.key());
        let r = get_with(s, "consumer", "orders", "/orders/1", &t);
        expect_invalid_token(&r, "unsupported_alg");
    }
}

#[test]
fn refuses_a_token_whose_typ_is_not_at_jwt() {
    let s = shared();
    let f = s.forge().unwrap();
    let claims = f.claims("consumer", "orders", "orders:read").unwrap();
    for h in [
        json!({"alg": "ES256", "typ": "JWT", "kid": f.key().kid()}),
        json!({"alg": "ES256", "kid": f.key().kid()}),
    ] {
        let r = get_with(
            s,
            "consumer",
            "orders",
            "/orders/1",
            &f.sign_with_header(&h, &claims),
        );
        expect_invalid_token(&r, "wrong_type");
    }
}

#[test]
fn refuses_a_kid_absent_from_the_jwks() {
    let s = shared();
    let attacker = s.attacker_forge().unwrap();
    let t = attacker.token("consumer", "orders", "orders:read").unwrap();
    expect_invalid_token(
        &get_with(s, "consumer", "orders", "/orders/1", &t),
        "unknown_kid",
    );
}

#[test]
fn refuses_a_bad_signature() {
    let s = shared();
    let real = s.forge().unwrap();
    // An attacker's key claiming the authz-server's kid.
    let impostor = real.with_key(EcKey::generate().unwrap().with_kid(real.key().kid()));
    let t = impostor.token("consumer", "orders", "orders:read").unwrap();
    expect_invalid_token(
        &get_with(s, "consumer", "orders", "/orders/1", &t),
        "bad_signature",
    );
    // A real token whose claims were edited after signing (scope escalation).
    let genuine = token(s, "consumer", "orders", "orders:read");
    let parts: Vec<&str> = genuine.split('.').collect();
    let mut claims = certbind_tests::tokens::decode_claims(&genuine).unwrap();
    claims["scope"] = json!("orders:read orders:write");
    let edited = format!("{}.{}.{}", parts[0], b64url(claims.to_string()), parts[2]);
    expect_invalid_token(
        &get_with(s, "consumer", "orders", "/orders/1", &edited),
        "bad_signature",
    );
    // No signature at all, and one of the wrong length.
    let unsigned = format!("{}.{}.", parts[0], parts[1]);
    expect_invalid_token(
        &get_with(s, "consumer", "orders", "/orders/1", &unsigned),
        "bad_signature",
    );
    let short = format!("{}.{}.{}", parts[0], parts[1], b64url([7u8; 63]));
    expect_invalid_token(
        &get_with(s, "consumer", "orders", "/orders/1", &short),
        "bad_signature",
    );
    // The "psychic signature" r = s = 0 (CVE-2022-21449).
    let h = decode_header(&genuine).unwrap().to_string();
    let psychic = assemble(&h, &claims.to_string(), &[0u8; 64]);
    expect_invalid_token(
        &get_with(s, "consumer", "orders", "/orders/1", &psychic),
        "bad_signature",
    );
}

#[test]
fn refuses_an_expired_token() {
    let s = shared();
    let f = s.forge().unwrap();
    let mut c = f.claims("consumer", "orders", "orders:read").unwrap();
    c["iat"] = json!(now() - 600);
    c["nbf"] = json!(now() - 600);
    c["exp"] = json!(now() - 120);
    expect_invalid_token(
        &get_with(s, "consumer", "orders", "/orders/1", &f.sign(&c)),
        "expired",
    );
}

#[test]
fn refuses_a_token_not_yet_valid() {
    let s = shared();
    let f = s.forge().unwrap();
    let mut c = f.claims("consumer", "orders", "orders:read").unwrap();
    c["nbf"] = json!(now() + 120);
    c["exp"] = json!(now() + 400);
    expect_invalid_token(
        &get_with(s, "consumer", "orders", "/orders/1", &f.sign(&c)),
        "not_yet_valid",
    );
}

#[test]
fn refuses_a_token_from_another_issuer() {
    let s = shared();
    let f = s.forge().unwrap();
    let mut c = f.claims("consumer", "orders", "orders:read").unwrap();
    c["iss"] = json!("https://evil.example");
    expect_invalid_token(
        &get_with(s, "consumer", "orders", "/orders/1", &f.sign(&c)),
        "wrong_issuer",
    );
}

#[test]
fn refuses_a_token_for_another_audience() {
    let s = shared();
    // A genuine billing token presented at orders.
    let t = token(s, "consumer", "billing", "billing:read");
    expect_invalid_token(
        &get_with(s, "consumer", "orders", "/orders/1", &t),
        "wrong_audience",
    );
}

#[test]
fn refuses_a_token_without_a_certificate_binding() {
    let s = shared();
    let f = s.forge().unwrap();
    let mut c = f.claims("consumer", "orders", "orders:read").unwrap();
    c.as_object_mut().unwrap().remove("cnf");
    expect_invalid_token(
        &get_with(s, "consumer", "orders", "/orders/1", &f.sign(&c)),
        "binding_missing",
    );
}

#[test]
fn refuses_a_stolen_token_replayed_with_another_certificate() {
    let s = shared();
    let stolen = token(s, "consumer", "orders", "orders:read");
    // Used legitimately first, so it sits in the verified-token cache: the binding is still
    // checked against each connection's certificate.
    expect_admitted(
        &get_with(s, "consumer", "orders", "/orders/1", &stolen),
        "orders",
    );
    let r = get_with(s, "inventory", "orders", "/orders/1", &stolen);
    expect_invalid_token(&r, "binding_mismatch");
}

#[test]
fn refuses_a_token_bound_to_another_certificate() {
    let s = shared();
    let f = s.forge().unwrap();
    let mut c = f.claims("consumer", "orders", "orders:read").unwrap();
    c["cnf"] = f.claims("inventory", "orders", "orders:read").unwrap()["cnf"].clone();
    expect_invalid_token(
        &get_with(s, "consumer", "orders", "/orders/1", &f.sign(&c)),
        "binding_mismatch",
    );
}

#[test]
fn refuses_a_token_whose_subject_is_not_the_certificate_holder() {
    let s = shared();
    let f = s.forge().unwrap();
    // Bound to inventory's certificate (which is presented) but naming the consumer.
    let mut c = f.claims("inventory", "orders", "orders:read").unwrap();
    c["sub"] = json!(spiffe_id("consumer"));
    c["client_id"] = json!("consumer");
    expect_invalid_token(
        &get_with(s, "inventory", "orders", "/orders/1", &f.sign(&c)),
        "subject_mismatch",
    );
}

#[test]
fn refuses_calls_the_policy_does_not_grant_with_access_denied() {
    let s = shared();
    let inventory = token(s, "inventory", "orders", "orders:read");
    // inventory may read single orders, not the collection.
    let r = get_with(s, "inventory", "orders", "/orders", &inventory);
    expect_refused(&r, 403, "policy_denied", "access_denied");
    let write = token(s, "consumer", "orders", "orders:read orders:write");
    let r = call(
        s,
        "consumer",
        "orders",
        &Request::new("DELETE", "/orders/1").bearer(&write),
    );
    expect_refused(&r, 403, "policy_denied", "access_denied");
}

#[test]
fn refuses_a_call_whose_scope_is_missing_with_insufficient_scope() {
    let s = shared();
    let read = token(s, "consumer", "orders", "orders:read");
    // Allowed for GET (and cached), so the decision cache must not answer for POST.
    expect_admitted(
        &get_with(s, "consumer", "orders", "/orders", &read),
        "orders",
    );
    let r = call(
        s,
        "consumer",
        "orders",
        &Request::post("/orders").bearer(&read).json(&json!({})),
    );
    expect_refused(&r, 403, "policy_denied", "insufficient_scope");
}

#[test]
fn refuses_a_tls_handshake_without_a_client_certificate() {
    let s = shared();
    let t = token(s, "consumer", "orders", "orders:read");
    let err = s
        .call(None, "orders", &Request::get("/orders/1").bearer(&t))
        .expect_err("a connection without a client certificate must be refused");
    assert!(
        matches!(err, certbind_tests::Error::Tls(_)),
        "expected a TLS refusal, got {err}"
    );
}

#[test]
fn refuses_a_tls_handshake_with_a_certificate_from_another_ca() {
    let s = shared();
    let t = token(s, "consumer", "orders", "orders:read");
    // The attacker's own CA issued a certificate naming the consumer.
    let foreign = s.foreign_pki("foreign-pki").unwrap();
    let impostor = certbind_tests::TlsClient::new(
        &s.pki_dir().join("ca.crt"),
        Some((&foreign.join("consumer.crt"), &foreign.join("consumer.key"))),
    )
    .unwrap();
    let err = impostor
        .send(s.sidecar("orders"), &Request::get("/orders/1").bearer(&t))
        .expect_err("a certificate from another CA must be refused");
    assert!(
        matches!(err, certbind_tests::Error::Tls(_)),
        "expected a TLS refusal, got {err}"
    );
}

#[test]
fn refuses_tls_1_2_on_the_sidecar_but_not_on_the_baseline() {
    let s = shared();
    let pki = s.pki_dir();
    let tls12 = certbind_tests::TlsClient::with_versions(
        &pki.join("ca.crt"),
        Some((&pki.join("consumer.crt"), &pki.join("consumer.key"))),
        &[&rustls::version::TLS12],
    )
    .unwrap();
    let err = tls12
        .send(s.sidecar("orders"), &Request::get("/orders/1"))
        .expect_err("the sidecar is TLS 1.3 only");
    assert!(matches!(err, certbind_tests::Error::Tls(_)), "{err}");
    // The same client reaches the baseline (which then wants a token): the refusal above was
    // the version, not something else about this client.
    let r = tls12
        .send(s.baseline("orders"), &Request::get("/orders/1"))
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
}

// ------------------------------------------------------------------ headers and paths

#[test]
fn strips_spoofed_certbind_headers_and_sets_the_verified_ones() {
    let s = shared();
    let t = token(s, "inventory", "orders", "orders:read");
    let request = Request::get("/orders/9")
        .bearer(&t)
        .header("x-certbind-subject", &spiffe_id("consumer"))
        .header("x-certbind-scope", "orders:write")
        .header("x-certbind-admin", "true")
        .header("X-Certbind-Client-Id", "consumer");
    let echo = expect_admitted(&call(s, "inventory", "orders", &request), "orders");
    let seen = echo["certbind"].as_object().unwrap();
    assert_eq!(seen["x-certbind-subject"], spiffe_id("inventory"), "{echo}");
    assert_eq!(seen["x-certbind-client-id"], "inventory", "{echo}");
    assert_eq!(seen["x-certbind-scope"], "orders:read", "{echo}");
    assert!(!seen.contains_key("x-certbind-admin"), "{echo}");
}

#[test]
fn rejects_escaped_slashes_and_normalises_paths_before_the_policy_sees_them() {
    let s = shared();
    let t = token(s, "inventory", "orders", "orders:read");
    let r = get_with(s, "inventory", "orders", "/orders%2F1", &t);
    assert_eq!(r.status, 400, "{}", r.text());
    let echo = expect_admitted(
        &get_with(s, "inventory", "orders", "//orders//5", &t),
        "orders",
    );
    assert_eq!(echo["path"], "/orders/5");
    let echo = expect_admitted(
        &get_with(s, "inventory", "orders", "/billing/../orders/6", &t),
        "orders",
    );
    assert_eq!(echo["path"], "/orders/6");
    // Traversal cannot reach what the policy refuses: /orders/.. is /, not granted.
    let r = get_with(s, "inventory", "orders", "/orders/1/../..", &t);
    expect_refused(&r, 403, "policy_denied", "access_denied");
}

#[test]
fn counts_every_decision_in_envoy_stats() {
    let s = shared();
    let allowed = s.counter("certbind.allowed").unwrap();
    let missing = s.counter("certbind.denied.missing_token").unwrap();
    let t = token(s, "consumer", "orders", "orders:read");
    expect_admitted(
        &get_with(s, "consumer", "orders", "/orders/1", &t),
        "orders",
    );
    expect_refused(
        &call(s, "consumer", "orders", &Request::get("/orders/1")),
        401,
        "missing_token",
        "",
    );
    // A refusal is counted at once; the allow path's counters on the filter's next tick (1 s).
    assert!(s.counter("certbind.denied.missing_token").unwrap() > missing);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while s.counter("certbind.allowed").unwrap() <= allowed {
        assert!(
            std::time::Instant::now() < deadline,
            "certbind.allowed did not grow within 5 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let log = s.envoy_log();
    assert!(log.contains("certbind decision"), "no decision log line");
    assert!(!log.contains(&t), "the token was logged");
}

#[test]
fn the_upstream_gets_neither_the_token_nor_a_forged_client_cert_header() {
    let mut s = System::builder().start();
    s.stop_upstream("orders");
    let upstream = CaptureUpstream::bind(s.ports.orders_upstream).unwrap();
    let t = token(&s, "consumer", "orders", "orders:read");
    let forged_xfcc = format!(
        "By={};Hash=00;URI={}",
        spiffe_id("orders"),
        spiffe_id("admin")
    );
    let request = Request::get("/orders/1")
        .bearer(&t)
        .header("x-forwarded-client-cert", &forged_xfcc)
        .header("x-certbind-subject", &spiffe_id("admin"));
    let r = call(&s, "consumer", "orders", &request);
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = upstream.next(Duration::from_secs(5)).unwrap();
    assert_eq!(seen.request_line, "GET /orders/1 HTTP/1.1");
    assert_eq!(
        seen.header("authorization"),
        None,
        "forward_token is false by default"
    );
    assert_eq!(
        seen.header("x-forwarded-client-cert"),
        None,
        "XFCC must be sanitised"
    );
    assert_eq!(
        seen.header("x-certbind-subject"),
        Some(spiffe_id("consumer").as_str())
    );
    assert_eq!(
        seen.headers
            .iter()
            .filter(|(n, _)| n == "x-certbind-subject")
            .count(),
        1,
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.header("x-request-id"), r.header("x-request-id"));
}

// ---------------------------------------------------------------- the weak baseline works

#[test]
fn baseline_admits_a_stolen_bearer_token_from_anywhere_but_checks_its_signature() {
    let s = shared();
    let stolen = token(s, "consumer", "orders", "orders:read");
    let anonymous = s.client(None).unwrap();
    let r = anonymous
        .send(
            s.baseline("orders"),
            &Request::get("/orders/1").bearer(&stolen),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = anonymous
        .send(s.baseline("orders"), &Request::get("/orders/1"))
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    let forged = s
        .attacker_forge()
        .unwrap()
        .token("consumer", "orders", "orders:read")
        .unwrap();
    let r = anonymous
        .send(
            s.baseline("orders"),
            &Request::get("/orders/1").bearer(&forged),
        )
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    let billing = token(s, "consumer", "billing", "billing:read");
    let r = anonymous
        .send(
            s.baseline("billing"),
            &Request::get("/billing/1").bearer(&billing),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

// ------------------------------------------------------- availability: own Systems each

#[test]
fn picks_up_a_rotated_signing_key_without_restarting_envoy() {
    let s = System::builder().start();
    let old = token(&s, "consumer", "orders", "orders:read");
    expect_admitted(
        &get_with(&s, "consumer", "orders", "/orders/1", &old),
        "orders",
    );
    let pid = s.envoy_pid();
    let new_kid = s.rotate_keys().unwrap();
    let new = token(&s, "consumer", "orders", "orders:read");
    assert_eq!(
        decode_header(&new).unwrap()["kid"],
        new_kid.as_str(),
        "authz-server still signs with the old key"
    );
    assert_ne!(decode_header(&old).unwrap()["kid"], new_kid.as_str());
    // The unknown kid triggers a refetch, rate-limited to one per second here (and the JWKS
    // was just fetched at start), so the first tries may still answer unknown_kid.
    let r = poll(
        Duration::from_secs(5),
        || get_with(&s, "consumer", "orders", "/orders/1", &new),
        |r| r.status != 401 || r.json_str("reason").as_deref() != Some("unknown_kid"),
    );
    expect_admitted(&r, "orders");
    expect_admitted(
        &get_with(&s, "consumer", "orders", "/orders/2", &old),
        "orders",
    );
    assert_eq!(s.envoy_pid(), pid);
}

#[test]
fn serves_the_cached_jwks_while_the_authz_server_is_down_until_the_staleness_bound() {
    // Refresh every second, serve a good JWKS for at most 3 s after its last fetch.
    let mut s = System::builder().jwks_timing(1, 1, 3, 1000).start();
    let f = s.forge().unwrap();
    let t = token(&s, "consumer", "orders", "orders:read");
    expect_admitted(
        &get_with(&s, "consumer", "orders", "/orders/1", &t),
        "orders",
    );
    s.stop_authz();
    let stopped = Instant::now();
    // Fresh tokens (not in the verified-token cache) still verify against the cached keys.
    let fresh = f.token("consumer", "orders", "orders:read").unwrap();
    let r = get_with(&s, "consumer", "orders", "/orders/2", &fresh);
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "too slow to prove the cache"
    );
    expect_admitted(&r, "orders");
    // Past the staleness bound the filter fails closed.
    let r = poll(
        Duration::from_secs(10),
        || {
            get_with(
                &s,
                "consumer",
                "orders",
                "/orders/3",
                &f.token("consumer", "orders", "orders:read").unwrap(),
            )
        },
        |r| r.status == 503,
    );
    expect_refused(&r, 503, "jwks_unavailable", "temporarily_unavailable");
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "stale bound not honoured: 503 after {:?}",
        stopped.elapsed()
    );
    // And recovers once the authz-server is back.
    s.start_authz().unwrap();
    let r = poll(
        Duration::from_secs(10),
        || {
            get_with(
                &s,
                "consumer",
                "orders",
                "/orders/4",
                &f.token("consumer", "orders", "orders:read").unwrap(),
            )
        },
        |r| r.status == 200,
    );
    expect_admitted(&r, "orders");
}

#[test]
fn answers_503_until_the_first_jwks_arrives_then_recovers() {
    let mut s = System::builder()
        .without_authz()
        .jwks_timing(1, 1, 3600, 1000)
        .start();
    // No JWKS yet: a well-formed token cannot be checked. (The authz-server has no key yet
    // either, so an attacker's key stands in; its kid cannot be known.)
    let waiting = s
        .attacker_forge()
        .unwrap()
        .token("consumer", "orders", "orders:read")
        .unwrap();
    let started = Instant::now();
    let r = get_with(&s, "consumer", "orders", "/orders/1", &waiting);
    expect_refused(&r, 503, "jwks_unavailable", "temporarily_unavailable");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "did not wait for the first JWKS"
    );
    s.start_authz().unwrap();
    let t = token(&s, "consumer", "orders", "orders:read");
    let r = poll(
        Duration::from_secs(10),
        || get_with(&s, "consumer", "orders", "/orders/1", &t),
        |r| r.status == 200,
    );
    expect_admitted(&r, "orders");
}

#[test]
fn answers_503_pdp_unavailable_while_the_pdp_is_down_then_recovers() {
    let mut s = System::builder().without_pdp().start();
    let t = token(&s, "consumer", "orders", "orders:read");
    let r = get_with(&s, "consumer", "orders", "/orders/1", &t);
    expect_refused(&r, 503, "pdp_unavailable", "temporarily_unavailable");
    s.start_pdp().unwrap();
    let r = poll(
        Duration::from_secs(10),
        || get_with(&s, "consumer", "orders", "/orders/1", &t),
        |r| r.status == 200,
    );
    expect_admitted(&r, "orders");
    // A hung PDP (stopped: connections are accepted, never answered) times out: 503, fast.
    let pid = s.pdp_pid().unwrap();
    signal(pid, "STOP").unwrap();
    let started = Instant::now();
    let r = get_with(&s, "consumer", "orders", "/orders/55", &t);
    let waited = started.elapsed();
    signal(pid, "CONT").unwrap();
    expect_refused(&r, 503, "pdp_unavailable", "temporarily_unavailable");
    assert!(
        waited < Duration::from_secs(2),
        "the 200 ms PDP timeout took {waited:?}"
    );
    // A decision already cached keeps being served; a new one fails closed again.
    s.stop_pdp();
    expect_admitted(
        &get_with(&s, "consumer", "orders", "/orders/1", &t),
        "orders",
    );
    let r = get_with(&s, "consumer", "orders", "/orders/77", &t);
    expect_refused(&r, 503, "pdp_unavailable", "temporarily_unavailable");
}

#[test]
fn shadow_mode_admits_and_counts_what_enforce_refuses() {
    let s = System::builder().mode(Mode::Shadow).start();
    let stolen = token(&s, "consumer", "orders", "orders:read");
    let before_missing = s.counter("certbind.denied.missing_token").unwrap();
    let before_mismatch = s.counter("certbind.denied.binding_mismatch").unwrap();
    expect_admitted(
        &call(&s, "consumer", "orders", &Request::get("/orders/1")),
        "orders",
    );
    expect_admitted(
        &get_with(&s, "inventory", "orders", "/orders/1", &stolen),
        "orders",
    );
    let forged = s
        .attacker_forge()
        .unwrap()
        .token("consumer", "orders", "orders:read")
        .unwrap();
    expect_admitted(
        &get_with(&s, "consumer", "orders", "/orders/1", &forged),
        "orders",
    );
    assert!(s.counter("certbind.denied.missing_token").unwrap() > before_missing);
    assert!(s.counter("certbind.denied.binding_mismatch").unwrap() > before_mismatch);
    // The TLS layer is not the filter's: shadow mode never admits a caller without a certificate.
    assert!(
        s.call(None, "orders", &Request::get("/orders/1").bearer(&stolen))
            .is_err()
    );
}
