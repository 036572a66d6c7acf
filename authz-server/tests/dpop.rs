//! DPoP at the token endpoint (RFC 9449 §5) through `app(state)`: a valid proof yields a
//! DPoP-bound token (`cnf.jkt`, `token_type: DPoP`) that introspection reports as such, and
//! every bad proof — two headers, replayed, other method or URL, stale, wrong type or
//! algorithm, private key inside, forged signature — is a 400 `invalid_dpop_proof`.
// Helpers here run only inside tests: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use certbind_authz::app::{AppState, PeerCertificate, app};
use certbind_authz::dpop_jtis::ProofJtis;
use certbind_core::binding::ec_p256_jwk_thumbprint;
use common::{ISSUER, ORDERS, Pki, enc, state, token_body};
use http_body_util::BodyExt;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

const NOW: u64 = 1_800_000_000;
const FORM: &str = "application/x-www-form-urlencoded";

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: Value,
}

/// A state whose clock stands still at [`NOW`].
fn fixed_state() -> (tempfile::TempDir, AppState) {
    let (dir, mut st) = state();
    st.clock = Arc::new(|| NOW);
    (dir, st)
}

async fn send(st: &AppState, path: &str, peer: Option<&[u8]>, dpop: &[&str], body: &str) -> Answer {
    let mut req = Request::builder()
        .method("POST")
        .uri(path)
        .header(header::CONTENT_TYPE, FORM);
    for proof in dpop {
        req = req.header("DPoP", *proof);
    }
    let mut req = req.body(Body::from(body.to_owned())).unwrap();
    if let Some(der) = peer {
        req.extensions_mut()
            .insert(PeerCertificate(Arc::new(der.to_vec())));
    }
    let resp = app(st.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// `/token` as the consumer (mTLS client certificate) with the given `DPoP` headers.
async fn token(st: &AppState, pki: &Pki, dpop: &[&str]) -> Answer {
    let der = pki.der("consumer");
    send(st, "/token", Some(&der), dpop, &token_body(ORDERS, "")).await
}

fn assert_invalid_proof(a: &Answer) {
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.json);
    assert_eq!(a.json["error"], "invalid_dpop_proof", "{}", a.json);
    assert!(a.json["error_description"].is_string());
    assert!(a.json.get("access_token").is_none());
    assert_eq!(a.headers[header::CACHE_CONTROL], "no-store");
}

fn client_key() -> SigningKey {
    SigningKey::from_slice(&[0x31; 32]).unwrap()
}

fn other_key() -> SigningKey {
    SigningKey::from_slice(&[0x32; 32]).unwrap()
}

fn public_jwk(key: &SigningKey) -> Value {
    let point = key.verifying_key().to_sec1_point(false);
    json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    })
}

fn jkt(key: &SigningKey) -> String {
    let jwk = public_jwk(key);
    ec_p256_jwk_thumbprint(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap())
}

fn header() -> Value {
    json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(&client_key())})
}

fn claims(jti: &str) -> Value {
    json!({"jti": jti, "htm": "POST", "htu": format!("{ISSUER}/token"), "iat": NOW})
}

fn sign_with(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig: Signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

fn proof(jti: &str) -> String {
    sign_with(&client_key(), &header(), &claims(jti))
}

fn proof_with_claim(name: &str, value: Value) -> String {
    let mut c = claims("j-claim");
    c[name] = value;
    sign_with(&client_key(), &header(), &c)
}

fn proof_with_header(name: &str, value: Value) -> String {
    let mut h = header();
    h[name] = value;
    sign_with(&client_key(), &h, &claims("j-header"))
}

fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn issues_a_dpop_bound_token_with_the_jkt_of_the_proof_key() {
    let pki = Pki::new();
    let (_s, st) = fixed_state();
    let a = token(&st, &pki, &[&proof("j-1")]).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["token_type"], "DPoP");
    assert_eq!(a.json["expires_in"], 300);
    let c = payload(a.json["access_token"].as_str().unwrap());
    assert_eq!(c["cnf"], json!({ "jkt": jkt(&client_key()) }));
    assert_eq!(c["sub"], "spiffe://certbind.test/ns/demo/sa/consumer");
    assert_eq!(c["client_id"], "consumer");
    assert_eq!(c["aud"], ORDERS);
    assert_eq!(c["iat"], NOW);
    // The certificate that obtained it (CONTRACT §3, `client_x5t#S256`).
    assert_eq!(
        c["client_x5t#S256"],
        certbind_core::binding::CertThumbprint::from_der(&pki.der("consumer")).to_cnf()
    );
    assert_eq!(c.as_object().unwrap().len(), 11);
}

#[tokio::test]
async fn issues_a_certificate_bound_bearer_token_without_a_dpop_header() {
    let pki = Pki::new();
    let (_s, st) = fixed_state();
    let a = token(&st, &pki, &[]).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["token_type"], "Bearer");
    let c = payload(a.json["access_token"].as_str().unwrap());
    assert!(c["cnf"]["x5t#S256"].is_string());
    assert!(c["cnf"].get("jkt").is_none());
}

#[tokio::test]
async fn the_client_still_authenticates_with_its_certificate() {
    let (_s, st) = fixed_state();
    let a = send(
        &st,
        "/token",
        None,
        &[&proof("j-anon")],
        &token_body(ORDERS, ""),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.json);
    assert_eq!(a.json["error"], "invalid_client");
}

#[tokio::test]
async fn refuses_two_dpop_headers() {
    let pki = Pki::new();
    let (_s, st) = fixed_state();
    assert_invalid_proof(&token(&st, &pki, &[&proof("j-a"), &proof("j-b")]).await);
    let same = proof("j-c");
    assert_invalid_proof(&token(&st, &pki, &[&same, &same]).await);
}

#[tokio::test]
async fn refuses_a_replayed_proof_and_admits_a_fresh_one_from_the_same_key() {
    let pki = Pki::new();
    let (_s, st) = fixed_state();
    let p = proof("j-once");
    assert_eq!(token(&st, &pki, &[&p]).await.status, StatusCode::OK);
    let again = token(&st, &pki, &[&p]).await;
    assert_invalid_proof(&again);
    assert_eq!(
        again.json["error_description"],
        "the DPoP proof was already used"
    );
    let fresh = token(&st, &pki, &[&proof("j-twice")]).await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.json);
}

#[tokio::test]
async fn a_client_at_its_proof_share_is_told_so_and_another_client_is_still_admitted() {
    let pki = Pki::new();
    let (_s, mut st) = fixed_state();
    st.dpop_replay = Arc::new(Mutex::new(ProofJtis::new(1)));
    assert_eq!(
        token(&st, &pki, &[&proof("j-1")]).await.status,
        StatusCode::OK
    );
    // The consumer's share is full: a clear 429, not "replayed", and no live entry forgotten.
    let full = token(&st, &pki, &[&proof("j-2")]).await;
    assert_eq!(full.status, StatusCode::TOO_MANY_REQUESTS, "{}", full.json);
    assert_eq!(full.json["error"], "invalid_request");
    assert!(
        full.json["error_description"]
            .as_str()
            .unwrap()
            .contains("too many DPoP proofs"),
        "{}",
        full.json
    );
    assert!(full.json.get("access_token").is_none());
    let again = token(&st, &pki, &[&proof("j-1")]).await;
    assert_eq!(
        again.json["error_description"],
        "the DPoP proof was already used"
    );
    // inventory has its own share: its fresh proof is admitted.
    let other = send(
        &st,
        "/token",
        Some(&pki.der("inventory")),
        &[&proof("j-3")],
        &token_body(ORDERS, ""),
    )
    .await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.json);
}

#[tokio::test]
async fn refuses_a_proof_for_another_method() {
    let pki = Pki::new();
    let (_s, st) = fixed_state();
    for htm in ["GET", "post", "PUT"] {
        assert_invalid_proof(&token(&st, &pki, &[&proof_with_claim("htm", htm.into())]).await);
    }
}

#[tokio::test]
async fn refuses_a_proof_for_another_url() {
    let pki = Pki::new();
    let (_s, st) = fixed_state();
    for htu in [
        format!("{ISSUER}/introspect"),
        "https://127.0.0.1:9444/token".to_owned(),
        "https://authz.example/token".to_owned(),
        "http://127.0.0.1:9443/token".to_owned(),
    ] {
        assert_invalid_proof(&token(&st, &pki, &[&proof_with_claim("htu", htu.into())]).await);
    }
}

#[tokio::test]
async fn admits_a_token_endpoint_url_spelled_differently_but_equal() {
    let pki = Pki::new();
    let (_s, st) = fixed_state();
    for (i, htu) in [
        "HTTPS://127.0.0.1:9443/token",
        "https://127.0.0.1:9443/token?x=1",
        "https://127.0.0.1:9443/./token",
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = claims(&format!("j-url-{i}"));
        c["htu"] = htu.into();
        let a = token(&st, &pki, &[&sign_with(&client_key(), &header(), &c)]).await;
        assert_eq!(a.status, StatusCode::OK, "{htu}: {}", a.json);
    }
}

#[tokio::test]
async fn refuses_a_stale_or_future_iat_and_admits_one_inside_the_window() {
    let pki = Pki::new();
    let (_s, st) = fixed_state();
    for iat in [NOW - 66, NOW + 6] {
        assert_invalid_proof(&token(&st, &pki, &[&proof_with_claim("iat", iat.into())]).await);
    }
    for (jti, iat) in [("j-oldest", NOW - 65), ("j-latest", NOW + 5)] {
        let mut c = claims(jti);
        c["iat"] = iat.into();
        let a = token(&st, &pki, &[&sign_with(&client_key(), &header(), &c)]).await;
        assert_eq!(a.status, StatusCode::OK, "{iat}: {}", a.json);
    }
}

#[tokio::test]
async fn refuses_a_proof_without_the_dpop_type_or_with_another_algorithm() {
    let pki = Pki::new();
    let (_s, st) = fixed_state();
    assert_invalid_proof(&token(&st, &pki, &[&proof_with_header("typ", "JWT".into())]).await);
    for alg in ["none", "HS256", "ES384"] {
        assert_invalid_proof(&token(&st, &pki, &[&proof_with_header("alg", alg.into())]).await);
    }
    assert_invalid_proof(&token(&st, &pki, &[&proof_with_header("crit", json!(["x"]))]).await);
}

#[tokio::test]
async fn refuses_a_proof_with_a_private_key_inside() {
    let pki = Pki::new();
    let (_s, st) = fixed_state();
    let mut h = header();
    h["jwk"]["d"] = URL_SAFE_NO_PAD.encode(client_key().to_bytes()).into();
    let p = sign_with(&client_key(), &h, &claims("j-private"));
    assert_invalid_proof(&token(&st, &pki, &[&p]).await);
}

#[tokio::test]
async fn refuses_a_proof_signed_by_a_key_other_than_its_jwk() {
    let pki = Pki::new();
    let (_s, st) = fixed_state();
    let p = sign_with(&other_key(), &header(), &claims("j-forged"));
    assert_invalid_proof(&token(&st, &pki, &[&p]).await);
}

#[tokio::test]
async fn refuses_malformed_proofs() {
    let pki = Pki::new();
    let (_s, st) = fixed_state();
    let long = "a".repeat(4096);
    for bad in ["", "a.b", "a.b.c", long.as_str()] {
        assert_invalid_proof(&token(&st, &pki, &[bad]).await);
    }
    let mut c = claims("x");
    c.as_object_mut().unwrap().remove("jti");
    assert_invalid_proof(&token(&st, &pki, &[&sign_with(&client_key(), &header(), &c)]).await);
}

#[tokio::test]
async fn a_refused_proof_issues_nothing_even_when_the_request_is_otherwise_valid() {
    let pki = Pki::new();
    let (_s, st) = fixed_state();
    let a = token(&st, &pki, &[&proof_with_claim("htm", "GET".into())]).await;
    assert_invalid_proof(&a);
    // The same grant without DPoP would have been issued.
    assert_eq!(token(&st, &pki, &[]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn introspection_reports_a_dpop_token_with_its_type_and_jkt() {
    let pki = Pki::new();
    let (_s, st) = fixed_state();
    let jwt = token(&st, &pki, &[&proof("j-introspect")]).await.json["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = format!("token={}", enc(&jwt));
    let a = send(&st, "/introspect", Some(&pki.der("envoy")), &[], &body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["active"], true);
    assert_eq!(a.json["token_type"], "DPoP");
    assert_eq!(a.json["cnf"], json!({ "jkt": jkt(&client_key()) }));
    // A certificate-bound token stays Bearer with its x5t#S256.
    let jwt = token(&st, &pki, &[]).await.json["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = format!("token={}", enc(&jwt));
    let a = send(&st, "/introspect", Some(&pki.der("envoy")), &[], &body).await;
    assert_eq!(a.json["token_type"], "Bearer");
    assert!(a.json["cnf"]["x5t#S256"].is_string());
}

#[tokio::test]
async fn metadata_advertises_es256_for_dpop_proofs() {
    let (_s, st) = fixed_state();
    let req = Request::builder()
        .uri("/.well-known/oauth-authorization-server")
        .body(Body::empty())
        .unwrap();
    let resp = app(st).oneshot(req).await.unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let m: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(m["dpop_signing_alg_values_supported"], json!(["ES256"]));
    assert_eq!(m["tls_client_certificate_bound_access_tokens"], true);
}

#[tokio::test]
async fn revoking_the_certificate_that_obtained_a_dpop_token_makes_it_inactive() {
    let pki = Pki::new();
    let (_s, st) = fixed_state();
    let jwt = token(&st, &pki, &[&proof("j-cert-revoked")]).await.json["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let thumbprint = certbind_core::binding::CertThumbprint::from_der(&pki.der("consumer"));
    assert_eq!(claims["client_x5t#S256"], thumbprint.to_cnf());
    let body = format!("token={}", enc(&jwt));
    let orders = pki.der("orders");
    let introspect = || send(&st, "/introspect", Some(&orders), &[], &body);
    assert_eq!(introspect().await.json["active"], true);
    // Another client's DPoP token, obtained over another certificate, is not touched.
    let other = send(
        &st,
        "/token",
        Some(&pki.der("inventory")),
        &[&proof("j-other-cert")],
        &token_body(ORDERS, ""),
    )
    .await
    .json["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoke = Request::builder()
        .method("POST")
        .uri("/v1/admin/revocations")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"kind": "cert", "value": thumbprint.to_cnf()}).to_string(),
        ))
        .unwrap();
    let mut revoke = revoke;
    revoke
        .extensions_mut()
        .insert(PeerCertificate(Arc::new(pki.der("operator"))));
    let resp = app(st.clone()).oneshot(revoke).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(introspect().await.json, json!({"active": false}));
    let other_body = format!("token={}", enc(&other));
    let a = send(
        &st,
        "/introspect",
        Some(&pki.der("orders")),
        &[],
        &other_body,
    )
    .await;
    assert_eq!(a.json["active"], true, "{}", a.json);
}
