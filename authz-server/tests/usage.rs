//! Usage-bound tokens at the authz-server (issue 22), through `app(state)`: issuing with
//! `max_uses` (and every refusal), the counter endpoint only sidecars may call, and exactly
//! `max_uses` spent under concurrent consumers.
// Helpers here run only inside tests: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::body::Body;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use certbind_authz::app::AppState;
use common::{Answer, BILLING, ORDERS, Pki, call, state, token_body};

const FORM: &str = "application/x-www-form-urlencoded";

async fn token(state: &AppState, peer: &[u8], body: &str) -> Answer {
    call(
        state,
        "POST",
        "/token",
        Some(peer),
        Some(FORM),
        Body::from(body.to_owned()),
    )
    .await
}

async fn consume(state: &AppState, peer: Option<&[u8]>, body: &str) -> Answer {
    let body = Body::from(body.to_owned());
    call(
        state,
        "POST",
        "/v1/usage/consume",
        peer,
        Some("application/json"),
        body,
    )
    .await
}

fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn jti_body(jti: &str) -> String {
    serde_json::json!({ "jti": jti }).to_string()
}

#[tokio::test]
async fn issues_a_usage_bound_token_whose_uses_only_a_sidecar_can_spend_exactly_once_each() {
    let pki = Pki::new();
    let (_dir, state) = state();
    let a = token(
        &state,
        &pki.der("consumer"),
        &token_body(ORDERS, "&scope=orders%3Aread&max_uses=2"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["max_uses"], 2);
    let c = claims(a.json["access_token"].as_str().unwrap());
    assert_eq!(c["max_uses"], 2);
    assert!(c["cnf"]["x5t#S256"].is_string(), "still certificate-bound");
    let jti = c["jti"].as_str().unwrap();
    let envoy = pki.der("envoy");
    let first = consume(&state, Some(&envoy), &jti_body(jti)).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        first.json,
        serde_json::json!({"outcome": "consumed", "remaining": 1})
    );
    assert_eq!(first.headers["cache-control"], "no-store");
    let second = consume(&state, Some(&envoy), &jti_body(jti)).await;
    assert_eq!(
        second.json,
        serde_json::json!({"outcome": "consumed", "remaining": 0})
    );
    let third = consume(&state, Some(&envoy), &jti_body(jti)).await;
    assert_eq!(third.status, StatusCode::OK);
    assert_eq!(third.json, serde_json::json!({"outcome": "exhausted"}));
    let unknown = consume(&state, Some(&envoy), &jti_body("never-issued")).await;
    assert_eq!(unknown.json, serde_json::json!({"outcome": "unknown"}));
}

#[tokio::test]
async fn an_ordinary_token_carries_no_max_uses_and_is_not_counted() {
    let pki = Pki::new();
    let (_dir, state) = state();
    let a = token(
        &state,
        &pki.der("consumer"),
        &token_body(ORDERS, "&scope=orders%3Aread"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.json.get("max_uses").is_none());
    let c = claims(a.json["access_token"].as_str().unwrap());
    assert!(c.get("max_uses").is_none(), "{c}");
    let jti = c["jti"].as_str().unwrap();
    let answer = consume(&state, Some(&pki.der("envoy")), &jti_body(jti)).await;
    assert_eq!(answer.json, serde_json::json!({"outcome": "unknown"}));
}

#[tokio::test]
async fn refuses_max_uses_for_a_client_scope_or_count_not_allowed() {
    let pki = Pki::new();
    let (_dir, state) = state();
    let consumer = pki.der("consumer");
    let cases = [
        (
            "consumer",
            token_body(ORDERS, "&scope=orders%3Aread&max_uses=0"),
            "invalid_request",
        ),
        (
            "consumer",
            token_body(ORDERS, "&scope=orders%3Aread&max_uses=101"),
            "invalid_request",
        ),
        (
            "consumer",
            token_body(ORDERS, "&scope=orders%3Aread&max_uses=two"),
            "invalid_request",
        ),
        (
            "consumer",
            token_body(ORDERS, "&scope=orders%3Aread&max_uses=2&max_uses=3"),
            "invalid_request",
        ),
        (
            "consumer",
            token_body(ORDERS, "&scope=orders%3Awrite&max_uses=2"),
            "invalid_scope",
        ),
        // No scope asked: every allowed scope, orders:write included, which is not allowed.
        (
            "consumer",
            token_body(ORDERS, "&max_uses=2"),
            "invalid_scope",
        ),
        (
            "consumer",
            token_body(BILLING, "&max_uses=2"),
            "invalid_scope",
        ),
        (
            "inventory",
            token_body(ORDERS, "&scope=orders%3Aread&max_uses=2"),
            "invalid_request",
        ),
    ];
    for (who, body, error) in cases {
        let der = if who == "consumer" {
            consumer.clone()
        } else {
            pki.der(who)
        };
        let a = token(&state, &der, &body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.json);
        assert_eq!(a.json["error"], error, "{body}");
    }
}

#[tokio::test]
async fn only_a_sidecar_identity_may_consume_and_only_with_a_valid_body() {
    let pki = Pki::new();
    let (_dir, state) = state();
    let a = token(
        &state,
        &pki.der("consumer"),
        &token_body(ORDERS, "&scope=orders%3Aread&max_uses=1"),
    )
    .await;
    let jti = claims(a.json["access_token"].as_str().unwrap())["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    // The token's own client cannot spend (or probe) its uses, nor can anyone anonymous.
    let denied = consume(&state, Some(&pki.der("consumer")), &jti_body(&jti)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.json["error"], "access_denied");
    let anonymous = consume(&state, None, &jti_body(&jti)).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let envoy = pki.der("envoy");
    for bad in [
        "",
        "{}",
        "{\"jti\": 5}",
        "{\"jti\": \"\"}",
        "{\"jti\": \"a\", \"n\": 1}",
        "[]",
    ] {
        let a = consume(&state, Some(&envoy), bad).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(a.json["error"], "invalid_request", "{bad}");
    }
    let form = call(
        &state,
        "POST",
        "/v1/usage/consume",
        Some(&envoy),
        Some(FORM),
        Body::from(format!("jti={jti}")),
    )
    .await;
    assert_eq!(form.status, StatusCode::BAD_REQUEST);
    // None of the refused calls spent the single use.
    let ok = consume(&state, Some(&envoy), &jti_body(&jti)).await;
    assert_eq!(
        ok.json,
        serde_json::json!({"outcome": "consumed", "remaining": 0})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_consumers_spend_exactly_max_uses() {
    let pki = Pki::new();
    let (_dir, state) = state();
    let a = token(
        &state,
        &pki.der("consumer"),
        &token_body(ORDERS, "&scope=orders%3Aread&max_uses=37"),
    )
    .await;
    let jti = claims(a.json["access_token"].as_str().unwrap())["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    let envoy = pki.der("envoy");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (state, envoy, body) = (state.clone(), envoy.clone(), jti_body(&jti));
            tokio::spawn(async move { consume(&state, Some(&envoy), &body).await.json })
        })
        .collect();
    let mut consumed = 0;
    for t in tasks {
        let json = t.await.unwrap();
        match json["outcome"].as_str() {
            Some("consumed") => consumed += 1,
            Some("exhausted") => {}
            other => panic!("unexpected answer {other:?}: {json}"),
        }
    }
    assert_eq!(consumed, 37);
}
