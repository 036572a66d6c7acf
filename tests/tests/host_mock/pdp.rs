//! The policy decision point as the filter sees it: what it is asked, allow and deny, a
//! missing scope, and every way it can fail (all 503, never a pass).

use super::scenario::*;
use serde_json::json;
use std::time::Duration;

#[test]
fn asks_the_pdp_the_contract_question_about_a_verified_request() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let token = sidecar
        .token(&pki.consumer)
        .scope("orders:read orders:write");
    sidecar
        .request(&pki.consumer, &token.build())
        .method("POST")
        .path("/orders?limit=5")
        .admitted();
    let calls = sidecar.calls_for(Endpoint::Pdp);
    assert_eq!(calls.len(), 1);
    let call = calls[0];
    assert_eq!(call.header(":method").as_deref(), Some("POST"));
    assert_eq!(call.header(":path").as_deref(), Some("/v1/decision"));
    assert_eq!(call.header(":authority").as_deref(), Some("127.0.0.1:9191"));
    assert_eq!(
        call.header("content-type").as_deref(),
        Some("application/json")
    );
    assert!(call.call.timeout_ms > 0 && call.call.timeout_ms <= 200);
    let body = call.body_json();
    assert_eq!(body["subject"], json!(pki.consumer.spiffe_id()));
    assert_eq!(body["client_id"], json!("consumer"));
    assert_eq!(body["action"], json!("POST"));
    assert_eq!(body["resource"], json!("/orders"));
    assert_eq!(body["audience"], json!(audience()));
    assert_eq!(body["scopes"], json!(["orders:read", "orders:write"]));
    assert_eq!(body["context"]["jti"], token.claims["jti"]);
    assert_eq!(body["context"]["tls_version"], json!("TLSv1.3"));
    assert_eq!(body["context"]["source_ip"], json!("127.0.0.1"));
}

#[test]
fn admits_what_the_pdp_allows() {
    let mut sidecar = Sidecar::builder()
        .pdp(|_| decision(true, "matched", 60))
        .start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer);
    let headers = sidecar.request(&pki.consumer, &token.build()).admitted();
    assert_identity(&headers, &token);
}

#[test]
fn refuses_what_the_pdp_denies_as_policy_denied() {
    let mut sidecar = Sidecar::builder()
        .pdp(|_| decision(false, "no_rule", 0))
        .start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    sidecar
        .request(&pki.consumer, &token)
        .answers(403, "policy_denied");
}

#[test]
fn refuses_a_missing_scope_as_insufficient_scope() {
    let mut sidecar = Sidecar::builder()
        .pdp(|_| decision(false, "missing_scope", 0))
        .start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    let reply = sidecar
        .request(&pki.consumer, &token)
        .answers_insufficient_scope();
    let challenge = reply
        .headers
        .get_str("www-authenticate")
        .unwrap_or_default();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
}

#[test]
fn answers_pdp_unavailable_when_the_pdp_times_out() {
    let mut sidecar = Sidecar::builder().pdp(|_| Answer::Silent).start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    let mut ex = sidecar.request(&pki.consumer, &token).send();
    sidecar.verdict(&mut ex).stays_paused();
    sidecar.advance(Duration::from_millis(199));
    sidecar.verdict(&mut ex).stays_paused();
    sidecar.advance(Duration::from_millis(2));
    sidecar.verdict(&mut ex).answers(503, "pdp_unavailable");
}

#[test]
fn answers_pdp_unavailable_when_the_pdp_answers_after_its_timeout() {
    let mut sidecar = Sidecar::builder()
        .pdp(|_| decision(true, "matched", 60).after(500))
        .start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    let mut ex = sidecar.request(&pki.consumer, &token).send();
    sidecar.advance(Duration::from_secs(1));
    sidecar.verdict(&mut ex).answers(503, "pdp_unavailable");
}

#[test]
fn answers_pdp_unavailable_when_the_pdp_fails_with_500() {
    let mut sidecar = Sidecar::builder()
        .pdp(|_| {
            Answer::json(
                500,
                r#"{"allow":true,"policy_id":"x","reason":"x","ttl_s":60}"#,
            )
        })
        .start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    sidecar
        .request(&pki.consumer, &token)
        .answers(503, "pdp_unavailable");
}

#[test]
fn answers_pdp_unavailable_when_the_pdp_answers_garbage() {
    let garbage: [&[u8]; 7] = [
        b"",
        b"allow",
        b"{\"allow\":\"yes\"}",
        b"{\"allow\":true}",
        b"[true]",
        b"{\"allow\":true,\"allow\":false,\"policy_id\":\"x\",\"reason\":\"x\",\"ttl_s\":1}",
        b"\xff\xfe{",
    ];
    for body in garbage {
        let mut sidecar = Sidecar::builder()
            .pdp(move |_| Answer::raw(200, body))
            .start();
        let pki = sidecar.pki.clone();
        let token = sidecar.token(&pki.consumer).build();
        sidecar
            .request(&pki.consumer, &token)
            .answers(503, "pdp_unavailable");
    }
}

#[test]
fn answers_pdp_unavailable_when_the_connection_to_the_pdp_fails() {
    let mut sidecar = Sidecar::builder().pdp(|_| Answer::fail()).start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    sidecar
        .request(&pki.consumer, &token)
        .answers(503, "pdp_unavailable");
}

#[test]
fn answers_pdp_unavailable_when_envoy_cannot_start_the_call() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    sidecar.vms[0].host_mut().faults.dispatch_fails = true;
    let token = sidecar.token(&pki.consumer).build();
    sidecar
        .request(&pki.consumer, &token)
        .answers(503, "pdp_unavailable");
}

#[test]
fn answers_pdp_unavailable_for_an_oversized_pdp_answer() {
    let mut sidecar = Sidecar::builder()
        .pdp(|_| {
            let pad = "x".repeat(20_000);
            Answer::json(
                200,
                json!({"allow": true, "policy_id": pad, "reason": "m", "ttl_s": 60}).to_string(),
            )
        })
        .start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    sidecar
        .request(&pki.consumer, &token)
        .answers(503, "pdp_unavailable");
}
