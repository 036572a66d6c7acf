//! The HTTP API through `app()`: both decision APIs, health, metrics, caller checks and every
//! class of bad input (never a 500, never an allow).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use axum::http::StatusCode;
use common::{call, demo_policy_path, state_for};
use serde_json::json;

fn consumer_get_order(scopes: &[&str]) -> serde_json::Value {
    json!({
        "subject": "spiffe://certbind.test/ns/demo/sa/consumer",
        "client_id": "consumer",
        "action": "GET",
        "resource": "/orders/1",
        "audience": "spiffe://certbind.test/ns/demo/sa/orders",
        "scopes": scopes,
        "context": {"source_ip": "127.0.0.1", "iat": 1, "jti": "abc", "tls_version": "TLSv1.3"}
    })
}

fn body(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

#[tokio::test]
async fn decision_api_allows_and_names_rule_reason_ttl_and_version() {
    let state = state_for(&demo_policy_path());
    let (status, answer, _) = call(
        &state,
        Some("envoy"),
        "POST",
        "/v1/decision",
        body(&consumer_get_order(&["orders:read"])),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["allow"], true);
    assert_eq!(answer["policy_id"], "consumer-orders-read");
    assert_eq!(answer["reason"], "allowed");
    assert_eq!(answer["ttl_s"], 30);
    assert_eq!(
        answer["policy_version"],
        state.store.current().version.as_str()
    );
    // It parses as the shared wire type.
    let _: certbind_core::decision::Decision = serde_json::from_value(answer).unwrap();
}

#[tokio::test]
async fn decision_api_denies_with_missing_scope() {
    let state = state_for(&demo_policy_path());
    let (status, answer, _) = call(
        &state,
        Some("envoy"),
        "POST",
        "/v1/decision",
        body(&consumer_get_order(&["billing:read"])),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["allow"], false);
    assert_eq!(answer["reason"], "missing_scope");
    assert_eq!(answer["policy_id"], "consumer-orders-read");
    assert_eq!(answer["ttl_s"], 0);
}

#[tokio::test]
async fn decision_api_accepts_a_request_without_context() {
    let state = state_for(&demo_policy_path());
    let mut req = consumer_get_order(&["orders:read"]);
    req.as_object_mut().unwrap().remove("context");
    let (status, answer, _) = call(&state, Some("envoy"), "POST", "/v1/decision", body(&req)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["allow"], true);
}

#[tokio::test]
async fn opa_api_answers_result_true_and_false() {
    let state = state_for(&demo_policy_path());
    let allow = json!({"input": consumer_get_order(&["orders:read"])});
    let (status, answer, _) = call(
        &state,
        Some("envoy"),
        "POST",
        "/v1/data/certbind/allow",
        body(&allow),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, json!({"result": true}));
    let deny = json!({"input": consumer_get_order(&[])});
    let (status, answer, _) = call(
        &state,
        Some("envoy"),
        "POST",
        "/v1/data/certbind/allow",
        body(&deny),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, json!({"result": false}));
}

#[tokio::test]
async fn refuses_callers_not_in_the_list_with_403_json() {
    let state = state_for(&demo_policy_path());
    for caller in [Some("consumer"), Some("inventory"), None] {
        for (method, uri) in [
            ("POST", "/v1/decision"),
            ("POST", "/v1/data/certbind/allow"),
            ("GET", "/metrics"),
        ] {
            let (status, answer, _) = call(
                &state,
                caller,
                method,
                uri,
                body(&json!({"input": consumer_get_order(&["orders:read"])})),
            )
            .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{caller:?} {uri}");
            assert_eq!(answer["error"], "caller_not_allowed");
        }
    }
}

#[tokio::test]
async fn a_caller_pattern_admits_every_sidecar_of_the_trust_domain() {
    let mut state = state_for(&demo_policy_path());
    state.callers = std::sync::Arc::new(
        certbind_core::caller::CallerList::parse(&["spiffe://certbind.test/ns/*/sa/*"]).unwrap(),
    );
    for caller in ["consumer", "inventory", "orders"] {
        let (status, answer, _) = call(
            &state,
            Some(caller),
            "POST",
            "/v1/data/certbind/allow",
            body(&json!({"input": consumer_get_order(&["orders:read"])})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{caller}");
        assert_eq!(answer, json!({"result": true}));
    }
    let (status, _, _) = call(&state, None, "GET", "/metrics", Vec::new()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn healthz_answers_any_authenticated_peer() {
    let state = state_for(&demo_policy_path());
    let (status, answer, _) = call(&state, Some("consumer"), "GET", "/healthz", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["status"], "ok");
}

#[tokio::test]
async fn every_bad_input_class_is_a_4xx_json_error_never_an_allow() {
    let state = state_for(&demo_policy_path());
    let good = consumer_get_order(&["orders:read"]);
    let mut wrong_type = good.clone();
    wrong_type["scopes"] = json!("orders:read");
    let mut wrong_context_type = good.clone();
    wrong_context_type["context"]["iat"] = json!("yesterday");
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("subject");
    let mut unknown = good.clone();
    unknown["admin"] = json!(true);
    let mut unknown_ctx = good.clone();
    unknown_ctx["context"]["role"] = json!("root");
    let mut null_field = good.clone();
    null_field["action"] = json!(null);
    let big = {
        let mut b = good.clone();
        b["client_id"] = json!("x".repeat(70 * 1024));
        body(&b)
    };
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "not JSON",
            b"allow me".to_vec(),
            StatusCode::BAD_REQUEST,
            "not_json",
        ),
        (
            "empty body",
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "not_json",
        ),
        (
            "truncated JSON",
            body(&good)[..40].to_vec(),
            StatusCode::BAD_REQUEST,
            "not_json",
        ),
        (
            "JSON array",
            b"[1,2]".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "wrong type",
            body(&wrong_type),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "wrong context type",
            body(&wrong_context_type),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "missing field",
            body(&missing),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "unknown field",
            body(&unknown),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "unknown context field",
            body(&unknown_ctx),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "null field",
            body(&null_field),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "trailing garbage",
            [body(&good), b"x".to_vec()].concat(),
            StatusCode::BAD_REQUEST,
            "not_json",
        ),
        (
            "body over 64 KiB",
            big,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for (name, payload, want_status, want_error) in cases {
        // The decision API takes the request itself, the OPA API wraps it in {"input": ...}.
        let opa_payload = [b"{\"input\":".as_slice(), &payload, b"}"].concat();
        for (uri, p) in [
            ("/v1/decision", payload.clone()),
            ("/v1/data/certbind/allow", opa_payload),
        ] {
            let (status, answer, text) = call(&state, Some("envoy"), "POST", uri, p).await;
            assert_eq!(status, want_status, "{name} at {uri}: {text}");
            assert_eq!(answer["error"], want_error, "{name} at {uri}: {text}");
            assert!(
                answer.get("allow").is_none() && answer.get("result").is_none(),
                "{name}: {text}"
            );
        }
    }
    // The OPA API also refuses the bare request (no "input" wrapper).
    let (status, answer, _) = call(
        &state,
        Some("envoy"),
        "POST",
        "/v1/data/certbind/allow",
        body(&good),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"], "invalid_request");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_not_500() {
    let state = state_for(&demo_policy_path());
    let (status, answer, _) = call(&state, Some("envoy"), "GET", "/v1/admin", Vec::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error"], "not_found");
    let (status, answer, _) = call(&state, Some("envoy"), "GET", "/v1/decision", Vec::new()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer["error"], "method_not_allowed");
}

#[tokio::test]
async fn metrics_count_decisions_reasons_rejections_and_name_the_version() {
    let state = state_for(&demo_policy_path());
    call(
        &state,
        Some("envoy"),
        "POST",
        "/v1/decision",
        body(&consumer_get_order(&["orders:read"])),
    )
    .await;
    call(
        &state,
        Some("envoy"),
        "POST",
        "/v1/decision",
        body(&consumer_get_order(&[])),
    )
    .await;
    call(
        &state,
        Some("envoy"),
        "POST",
        "/v1/data/certbind/allow",
        body(&json!({"input": consumer_get_order(&[])})),
    )
    .await;
    call(
        &state,
        Some("envoy"),
        "POST",
        "/v1/decision",
        b"nope".to_vec(),
    )
    .await;
    call(&state, Some("consumer"), "POST", "/v1/decision", Vec::new()).await;
    let (status, _, text) = call(&state, Some("envoy"), "GET", "/metrics", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    let version = state.store.current().version.clone();
    for line in [
        "certbind_pdp_decisions_total{result=\"allow\"} 1",
        "certbind_pdp_decisions_total{result=\"deny\"} 2",
        "certbind_pdp_decision_reasons_total{reason=\"missing_scope\"} 2",
        "certbind_pdp_decision_duration_seconds_count 3",
        "certbind_pdp_decision_duration_seconds_bucket{le=\"+Inf\"} 3",
        "certbind_pdp_policy_reloads_total{result=\"ok\"} 0",
        "certbind_pdp_policy_reloads_total{result=\"failed\"} 0",
        "certbind_pdp_requests_rejected_total{status=\"400\"} 1",
        "certbind_pdp_requests_rejected_total{status=\"403\"} 1",
        &format!("certbind_pdp_policy_info{{version=\"{version}\",rules=\"4\"}} 1"),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
}
