//! The HTTP application without sockets: every `/token` error class, the happy path,
//! JWKS, metadata, introspection and key rotation, driven through `app(state)`.
// Helpers here run only inside tests: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use certbind_authz::app::{AppState, PeerCertificate, app};
use certbind_authz::keys::KeyStore;
use certbind_core::binding::CertThumbprint;
use common::{Answer, BILLING, ISSUER, ORDERS, Pki, call, enc, state, token_body};
use std::sync::Arc;
use tower::ServiceExt;

const FORM: &str = "application/x-www-form-urlencoded";

async fn token(state: &AppState, peer: Option<&[u8]>, body: &str) -> Answer {
    call(
        state,
        "POST",
        "/token",
        peer,
        Some(FORM),
        Body::from(body.to_owned()),
    )
    .await
}

fn assert_error(a: &Answer, status: StatusCode, error: &str) {
    assert_eq!(a.status, status, "{}", a.json);
    assert_eq!(a.json["error"], error, "{}", a.json);
    assert!(a.json["error_description"].is_string());
    assert_eq!(a.headers[header::CACHE_CONTROL], "no-store");
}

fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn header_of(token: &str) -> serde_json::Value {
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
}

#[tokio::test]
async fn issues_a_certificate_bound_token_to_the_consumer() {
    let pki = Pki::new();
    let (_s, st) = state();
    let der = pki.der("consumer");
    let a = token(&st, Some(&der), &token_body(ORDERS, "&scope=orders%3Aread")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(a.json["token_type"], "Bearer");
    assert_eq!(a.json["expires_in"], 300);
    assert_eq!(a.json["scope"], "orders:read");
    let jwt = a.json["access_token"].as_str().unwrap();
    let c = claims(jwt);
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["sub"], "spiffe://certbind.test/ns/demo/sa/consumer");
    assert_eq!(c["client_id"], "consumer");
    assert_eq!(c["aud"], ORDERS);
    assert_eq!(c["scope"], "orders:read");
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 300);
    assert_eq!(c["nbf"], c["iat"]);
    assert_eq!(
        c["cnf"]["x5t#S256"],
        CertThumbprint::from_der(&der).to_cnf()
    );
    assert_eq!(
        c["client_x5t#S256"],
        CertThumbprint::from_der(&der).to_cnf()
    );
    assert_eq!(c.as_object().unwrap().len(), 11);
    let h = header_of(jwt);
    assert_eq!(h["alg"], "ES256");
    assert_eq!(h["typ"], "at+jwt");
    assert!(a.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn grants_every_allowed_scope_when_none_is_requested_and_accepts_resource() {
    let pki = Pki::new();
    let (_s, st) = state();
    let der = pki.der("consumer");
    let a = token(&st, Some(&der), &token_body(ORDERS, "")).await;
    assert_eq!(a.json["scope"], "orders:read orders:write");
    let body = format!(
        "grant_type=client_credentials&resource={}&client_id=consumer",
        enc(BILLING)
    );
    let a = token(&st, Some(&der), &body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(
        claims(a.json["access_token"].as_str().unwrap())["aud"],
        BILLING
    );
    assert_eq!(a.json["scope"], "billing:read");
}

#[tokio::test]
async fn refuses_a_request_without_a_client_certificate() {
    let (_s, st) = state();
    let a = token(&st, None, &token_body(ORDERS, "")).await;
    assert_error(&a, StatusCode::UNAUTHORIZED, "invalid_client");
}

#[tokio::test]
async fn refuses_a_certificate_of_an_unregistered_workload() {
    let pki = Pki::new();
    pki.issue("stranger");
    let (_s, st) = state();
    let a = token(&st, Some(&pki.der("stranger")), &token_body(ORDERS, "")).await;
    assert_error(&a, StatusCode::UNAUTHORIZED, "invalid_client");
    // envoy is a workload of our CA but not an OAuth client.
    let a = token(&st, Some(&pki.der("envoy")), &token_body(ORDERS, "")).await;
    assert_error(&a, StatusCode::UNAUTHORIZED, "invalid_client");
}

#[tokio::test]
async fn refuses_a_client_id_that_differs_from_the_certificate() {
    let pki = Pki::new();
    let (_s, st) = state();
    let a = token(
        &st,
        Some(&pki.der("inventory")),
        &token_body(ORDERS, "&client_id=consumer"),
    )
    .await;
    assert_error(&a, StatusCode::UNAUTHORIZED, "invalid_client");
}

#[tokio::test]
async fn refuses_malformed_requests_with_invalid_request() {
    let pki = Pki::new();
    let (_s, st) = state();
    let der = pki.der("consumer");
    for body in [
        format!("audience={}", enc(ORDERS)),        // no grant_type
        "grant_type=client_credentials".to_owned(), // no audience/resource
        token_body(ORDERS, "&grant_type=client_credentials"), // duplicated field
        token_body(ORDERS, &format!("&audience={}", enc(ORDERS))),
        token_body(ORDERS, "&scope=orders%3Aread&scope="),
        "grant_type=client_credentials&audience=%ff".to_owned(), // not UTF-8
    ] {
        let a = token(&st, Some(&der), &body).await;
        assert_error(&a, StatusCode::BAD_REQUEST, "invalid_request");
    }
    // Not a form body.
    for ct in [None, Some("application/json"), Some("text/plain")] {
        let a = call(
            &st,
            "POST",
            "/token",
            Some(&der),
            ct,
            Body::from(token_body(ORDERS, "")),
        )
        .await;
        assert_error(&a, StatusCode::BAD_REQUEST, "invalid_request");
    }
}

#[tokio::test]
async fn refuses_other_grant_types() {
    let pki = Pki::new();
    let (_s, st) = state();
    for gt in [
        "password",
        "authorization_code",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "CLIENT_CREDENTIALS",
    ] {
        let body = format!("grant_type={}&audience={}", enc(gt), enc(ORDERS));
        let a = token(&st, Some(&pki.der("consumer")), &body).await;
        assert_error(&a, StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
}

#[tokio::test]
async fn refuses_registered_workloads_that_may_not_obtain_tokens() {
    let pki = Pki::new();
    let (_s, st) = state();
    let a = token(&st, Some(&pki.der("orders")), &token_body(BILLING, "")).await;
    assert_error(&a, StatusCode::BAD_REQUEST, "unauthorized_client");
}

#[tokio::test]
async fn refuses_scopes_beyond_what_the_client_may_get_there() {
    let pki = Pki::new();
    let (_s, st) = state();
    let inventory = pki.der("inventory");
    let consumer = pki.der("consumer");
    let cases: [(&[u8], String); 4] = [
        (&inventory, token_body(ORDERS, "&scope=orders%3Awrite")),
        (
            &inventory,
            token_body(ORDERS, "&scope=orders%3Aread+orders%3Awrite"),
        ),
        (&consumer, token_body(ORDERS, "&scope=billing%3Aread")),
        (&consumer, token_body(ORDERS, "&scope=+orders%3Aread")),
    ];
    for (der, body) in cases {
        let a = token(&st, Some(der), &body).await;
        assert_error(&a, StatusCode::BAD_REQUEST, "invalid_scope");
    }
}

#[tokio::test]
async fn refuses_audiences_the_client_may_not_address() {
    let pki = Pki::new();
    let (_s, st) = state();
    let inventory = pki.der("inventory");
    let consumer = pki.der("consumer");
    let cases: [(&[u8], String); 4] = [
        (&inventory, token_body(BILLING, "")),
        (
            &consumer,
            token_body("spiffe://certbind.test/ns/demo/sa/admin", ""),
        ),
        (&consumer, token_body("https://orders.example", "")),
        (
            &consumer,
            token_body(ORDERS, &format!("&resource={}", enc(BILLING))),
        ),
    ];
    for (der, body) in cases {
        let a = token(&st, Some(der), &body).await;
        assert_error(&a, StatusCode::BAD_REQUEST, "invalid_target");
    }
}

#[tokio::test]
async fn refuses_bodies_over_16_kib_with_413() {
    let pki = Pki::new();
    let (_s, st) = state();
    let der = pki.der("consumer");
    let big = token_body(ORDERS, &format!("&pad={}", "x".repeat(16 * 1024)));
    // No declared length: the read stops at the limit.
    let a = token(&st, Some(&der), &big).await;
    assert_error(&a, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request");
    // A declared length over the limit is refused before reading.
    let req = Request::builder()
        .method("POST")
        .uri("/token")
        .header(header::CONTENT_TYPE, FORM)
        .header(header::CONTENT_LENGTH, "1000000")
        .body(Body::from(big.clone()))
        .unwrap();
    let mut req = req;
    req.extensions_mut()
        .insert(PeerCertificate(Arc::new(der.clone())));
    let resp = app(st.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Exactly at the limit is read (and then judged on its content).
    let at_limit = {
        let base = token_body(ORDERS, "&pad=");
        format!("{base}{}", "x".repeat(16 * 1024 - base.len()))
    };
    assert_eq!(at_limit.len(), 16 * 1024);
    assert_eq!(
        token(&st, Some(&der), &at_limit).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn answers_wrong_methods_and_paths_without_a_server_error() {
    let (_s, st) = state();
    let a = call(&st, "GET", "/token", None, None, Body::empty()).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    let a = call(&st, "GET", "/nope", None, None, Body::empty()).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn garbage_bodies_never_cause_a_server_error() {
    let pki = Pki::new();
    let (_s, st) = state();
    let der = pki.der("consumer");
    for body in [
        "",
        "&&&",
        "=",
        "==&=",
        "%",
        "%%41",
        "a=%zz",
        "\u{0}",
        "grant_type",
        "scope=%20",
        "audience=%00",
    ] {
        let a = token(&st, Some(&der), body).await;
        assert!(a.status.is_client_error(), "{body:?} → {}", a.status);
        assert!(a.json["error"].is_string());
    }
}

#[tokio::test]
async fn publishes_the_public_signing_key_as_jwks() {
    let (_s, st) = state();
    let a = call(
        &st,
        "GET",
        "/.well-known/jwks.json",
        None,
        None,
        Body::empty(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers[header::CACHE_CONTROL], "max-age=60");
    let keys = a.json["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(k["kty"], "EC");
    assert_eq!(k["crv"], "P-256");
    assert_eq!(k["alg"], "ES256");
    assert_eq!(k["use"], "sig");
    assert_eq!(
        k["kid"],
        certbind_core::binding::ec_p256_jwk_thumbprint(
            k["x"].as_str().unwrap(),
            k["y"].as_str().unwrap()
        )
    );
    assert!(k.get("d").is_none());
}

#[tokio::test]
async fn publishes_rfc8414_metadata() {
    let (_s, st) = state();
    let a = call(
        &st,
        "GET",
        "/.well-known/oauth-authorization-server",
        None,
        None,
        Body::empty(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let m = &a.json;
    assert_eq!(m["issuer"], ISSUER);
    assert_eq!(m["token_endpoint"], format!("{ISSUER}/token"));
    assert_eq!(m["jwks_uri"], format!("{ISSUER}/.well-known/jwks.json"));
    assert_eq!(m["introspection_endpoint"], format!("{ISSUER}/introspect"));
    assert_eq!(m["tls_client_certificate_bound_access_tokens"], true);
    assert_eq!(
        m["token_endpoint_auth_methods_supported"],
        serde_json::json!(["tls_client_auth"])
    );
    assert_eq!(
        m["grant_types_supported"],
        serde_json::json!(["client_credentials"])
    );
}

async fn introspect(st: &AppState, peer: Option<&[u8]>, token: &str) -> Answer {
    let body = format!("token={}&token_type_hint=access_token", enc(token));
    call(
        st,
        "POST",
        "/introspect",
        peer,
        Some(FORM),
        Body::from(body),
    )
    .await
}

#[tokio::test]
async fn introspection_reports_a_valid_token_as_active_with_its_claims() {
    let pki = Pki::new();
    let (_s, st) = state();
    let consumer = pki.der("consumer");
    let jwt = token(&st, Some(&consumer), &token_body(ORDERS, ""))
        .await
        .json["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = introspect(&st, Some(&pki.der("envoy")), &jwt).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers[header::CACHE_CONTROL], "no-store");
    let c = claims(&jwt);
    assert_eq!(a.json["active"], true);
    for name in [
        "scope",
        "client_id",
        "sub",
        "aud",
        "iss",
        "exp",
        "iat",
        "nbf",
        "jti",
        "cnf",
    ] {
        assert_eq!(a.json[name], c[name], "{name}");
    }
    assert_eq!(a.json["token_type"], "Bearer");
}

#[tokio::test]
async fn introspection_reports_invalid_expired_and_foreign_tokens_as_inactive() {
    let pki = Pki::new();
    let (_s, st) = state();
    let (_s2, other) = state();
    let consumer = pki.der("consumer");
    let envoy = pki.der("envoy");
    let ours = token(&st, Some(&consumer), &token_body(ORDERS, ""))
        .await
        .json["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let foreign = token(&other, Some(&consumer), &token_body(ORDERS, ""))
        .await
        .json["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut tampered = ours.clone();
    tampered.insert(ours.find('.').unwrap() + 5, 'A');
    for bad in [foreign.as_str(), tampered.as_str(), "not-a-jwt", "a.b.c"] {
        let a = introspect(&st, Some(&envoy), bad).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.json, serde_json::json!({"active": false}));
    }
    // Five minutes later the same token is inactive.
    let mut later = st.clone();
    later.clock = Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 301
    });
    assert_eq!(
        introspect(&later, Some(&envoy), &ours).await.json,
        serde_json::json!({"active": false})
    );
    assert_eq!(
        introspect(&st, Some(&envoy), &ours).await.json["active"],
        true
    );
}

#[tokio::test]
async fn introspection_tells_a_stranger_nothing_about_another_clients_live_token() {
    let pki = Pki::new();
    let (_s, st) = state();
    let jwt = token(&st, Some(&pki.der("consumer")), &token_body(ORDERS, ""))
        .await
        .json["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // inventory is neither the token's audience nor its client: RFC 7662 §4.
    let a = introspect(&st, Some(&pki.der("inventory")), &jwt).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json, serde_json::json!({"active": false}));
    // billing is a service too, but not this token's audience.
    let a = introspect(&st, Some(&pki.der("billing")), &jwt).await;
    assert_eq!(a.json, serde_json::json!({"active": false}));
}

#[tokio::test]
async fn introspection_answers_the_tokens_audience_its_client_and_the_sidecar() {
    let pki = Pki::new();
    let (_s, st) = state();
    let jwt = token(&st, Some(&pki.der("consumer")), &token_body(ORDERS, ""))
        .await
        .json["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for caller in ["orders", "consumer", "envoy"] {
        let a = introspect(&st, Some(&pki.der(caller)), &jwt).await;
        assert_eq!(a.json["active"], true, "{caller}: {}", a.json);
        assert_eq!(a.json["client_id"], "consumer", "{caller}");
    }
}

#[tokio::test]
async fn introspection_requires_an_authenticated_caller_and_a_token() {
    let pki = Pki::new();
    let (_s, st) = state();
    let a = introspect(&st, None, "x.y.z").await;
    assert_error(&a, StatusCode::UNAUTHORIZED, "invalid_client");
    let a = call(
        &st,
        "POST",
        "/introspect",
        Some(&pki.der("envoy")),
        Some(FORM),
        Body::from("token_type_hint=access_token"),
    )
    .await;
    assert_error(&a, StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn a_rotated_key_signs_at_once_and_the_old_key_stays_published() {
    let pki = Pki::new();
    let (state_dir, st) = state();
    let consumer = pki.der("consumer");
    let old = token(&st, Some(&consumer), &token_body(ORDERS, ""))
        .await
        .json["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    std::thread::sleep(std::time::Duration::from_millis(20));
    // The CLI's `keys rotate` is another KeyStore on the same directory.
    let new_kid = KeyStore::open(state_dir.path()).unwrap().rotate().unwrap();
    let jwks = call(
        &st,
        "GET",
        "/.well-known/jwks.json",
        None,
        None,
        Body::empty(),
    )
    .await
    .json;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2);
    assert_eq!(kids[0], new_kid);
    assert!(kids.contains(&header_of(&old)["kid"].as_str().unwrap()));
    let new = token(&st, Some(&consumer), &token_body(ORDERS, ""))
        .await
        .json["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(header_of(&new)["kid"], new_kid.as_str());
    let envoy = pki.der("envoy");
    assert_eq!(
        introspect(&st, Some(&envoy), &old).await.json["active"],
        true
    );
    assert_eq!(
        introspect(&st, Some(&envoy), &new).await.json["active"],
        true
    );
}
