//! Envoy's HTTP `ext_authz` check through `app()`: the original method and path under
//! `/v1/ext_authz`, the claims `jwt_authn` forwards in `x-jwt-payload`; 200 allows, anything
//! else denies, and only configured callers are answered.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use certbind_core::binding::SpiffeId;
use certbind_pdp::{PeerIdentity, app};
use common::{demo_policy_path, id, state_for};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

fn claims(scope: &str) -> String {
    URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&json!({
            "sub": id("consumer"), "client_id": "consumer",
            "aud": id("orders"), "scope": scope, "iat": 1, "jti": "j"
        }))
        .unwrap(),
    )
}

async fn check(
    caller: Option<&str>,
    method: &str,
    uri: &str,
    payload: Option<&str>,
) -> (StatusCode, Value) {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(p) = payload {
        b = b.header("x-jwt-payload", p);
    }
    let mut request = b.body(Body::empty()).unwrap();
    let peer = caller.map(|c| SpiffeId::parse(&id(c)).unwrap());
    request.extensions_mut().insert(PeerIdentity(peer));
    let state = state_for(&demo_policy_path());
    let response = app(state).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn allows_what_the_demo_policy_grants() {
    let p = claims("orders:read");
    for uri in ["/v1/ext_authz/orders", "/v1/ext_authz/orders/7?full=1"] {
        let (status, _) = check(Some("envoy"), "GET", uri, Some(&p)).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn denies_with_403_and_the_reason_what_the_policy_does_not_grant() {
    let (status, body) = check(
        Some("envoy"),
        "DELETE",
        "/v1/ext_authz/orders/7",
        Some(&claims("orders:read")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "access_denied");
    let (status, body) = check(
        Some("envoy"),
        "GET",
        "/v1/ext_authz/orders",
        Some(&claims("other")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["reason"], "missing_scope");
}

#[tokio::test]
async fn answers_400_never_200_without_usable_claims() {
    for (payload, code) in [(None, "missing_claims"), (Some("%%"), "malformed_claims")] {
        let (status, body) = check(Some("envoy"), "GET", "/v1/ext_authz/orders", payload).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], code);
    }
}

#[tokio::test]
async fn answers_only_configured_callers() {
    let p = claims("orders:read");
    for caller in [Some("consumer"), None] {
        let (status, body) = check(caller, "GET", "/v1/ext_authz/orders", Some(&p)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{caller:?}");
        assert_eq!(body["error"], "caller_not_allowed");
    }
}
