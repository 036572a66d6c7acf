//! The one real-socket test: the server on a free port with real TLS 1.3 and client
//! certificates, and an independent JWT library checking what it issues.
// Helpers here run only inside tests: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use certbind_authz::{app, server, tls};
use common::{Conn, ORDERS, Pki, client_config, state, token_body};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;

/// Starts the server on 127.0.0.1:0; returns its address and the shutdown trigger.
async fn start(
    pki: &Pki,
    st: certbind_authz::AppState,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = tls::server_config(pki.path(), "authz").unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(listener, config, app(st), async {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Cnf {
    #[serde(rename = "x5t#S256")]
    x5t_s256: String,
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct IndependentClaims {
    iss: String,
    sub: String,
    client_id: String,
    aud: String,
    scope: String,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: String,
    cnf: Cnf,
}

#[tokio::test]
async fn serves_bound_tokens_over_mtls_and_refuses_anonymous_and_foreign_clients() {
    let pki = Pki::new();
    let (_state_dir, st) = state();
    let (addr, stop, task) = start(&pki, st).await;

    // 1. mTLS with the consumer certificate: a token.
    let mut conn = Conn::open(
        addr,
        client_config(pki.path(), Some((pki.path(), "consumer"))),
    )
    .await
    .unwrap();
    let (status, answer) = conn
        .form("/token", &token_body(ORDERS, "&scope=orders%3Aread"))
        .await;
    assert_eq!(status, 200, "{answer}");
    let jwt = answer["access_token"].as_str().unwrap().to_owned();

    // 2. Interop: jsonwebtoken verifies it with the key from the JWKS.
    let (status, _, jwks) = conn
        .send("GET", "/.well-known/jwks.json", None, "")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let jwks: serde_json::Value = serde_json::from_slice(&jwks).unwrap();
    let header = jsonwebtoken::decode_header(&jwt).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let kid = header.kid.unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap();
    let key = jsonwebtoken::DecodingKey::from_ec_components(
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[ORDERS]);
    validation.set_issuer(&[common::ISSUER]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<IndependentClaims>(&jwt, &key, &validation).unwrap();
    assert_eq!(
        data.claims.sub,
        "spiffe://certbind.test/ns/demo/sa/consumer"
    );
    assert_eq!(data.claims.scope, "orders:read");

    // 3. The binding equals an independent SHA-256 of the certificate we presented.
    let der = pki.der("consumer");
    assert_eq!(
        data.claims.cnf.x5t_s256,
        URL_SAFE_NO_PAD.encode(Sha256::digest(&der))
    );

    // And a tampered signature does not verify with the independent library either.
    let mut forged = jwt.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert!(jsonwebtoken::decode::<IndependentClaims>(&forged, &key, &validation).is_err());

    // 4. No client certificate: TLS succeeds, /token answers 401 invalid_client.
    let mut anon = Conn::open(addr, client_config(pki.path(), None))
        .await
        .unwrap();
    let (status, answer) = anon.form("/token", &token_body(ORDERS, "")).await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"], "invalid_client");
    let (status, _, _) = anon
        .send("GET", "/.well-known/jwks.json", None, "")
        .await
        .unwrap();
    assert_eq!(status, 200, "the JWKS is public");

    // 5. A certificate from another CA: the TLS handshake fails, no HTTP answer.
    let rogue = Pki::new();
    let refused = async {
        let mut c = Conn::open(
            addr,
            client_config(pki.path(), Some((rogue.path(), "consumer"))),
        )
        .await?;
        c.send(
            "POST",
            "/token",
            Some("application/x-www-form-urlencoded"),
            &token_body(ORDERS, ""),
        )
        .await
    }
    .await;
    let err = refused.expect_err("a foreign client certificate got an HTTP answer");
    let chain = {
        let mut s = err.to_string();
        let mut src = err.source();
        while let Some(e) = src {
            s.push_str(&format!(" / {e}"));
            src = e.source();
        }
        s
    };
    eprintln!("foreign certificate refused: {chain}");
    assert!(chain.contains("fatal alert"), "unexpected error: {chain}");

    // 6. Graceful stop.
    stop.send(()).unwrap();
    drop(conn);
    drop(anon);
    tokio::time::timeout(std::time::Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap();
}
