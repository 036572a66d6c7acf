//! One real mTLS socket on a free port: the allowed caller gets decisions, another workload of
//! the same CA gets 403, and a client without a certificate (or from another CA) is refused in
//! the TLS handshake. Shutdown drains and returns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use certbind_pdp::{app, serve, tls};
use common::{Leaf, Pki, demo_policy_path, id, state_for};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{PrivateKeyDer, ServerName};

fn client_config(ca: &Pki, leaf: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca_der()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match leaf {
        Some(l) => builder
            .with_client_auth_cert(
                vec![l.cert_der.clone()],
                PrivateKeyDer::Pkcs8(l.key_der.clone_key()),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// POSTs `body` to `path`; Err when the TLS handshake or the exchange fails.
async fn post(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = hyper::Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("exchange: {e}"))?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

const REQUEST: &str = r#"{"subject":"spiffe://certbind.test/ns/demo/sa/consumer","client_id":"consumer",
  "action":"GET","resource":"/orders/1","audience":"spiffe://certbind.test/ns/demo/sa/orders",
  "scopes":["orders:read"],"context":{"tls_version":"TLSv1.3"}}"#;

#[tokio::test]
async fn mtls_listener_answers_allowed_caller_refuses_others() {
    let pki = Pki::new();
    let server = pki.leaf("pdp");
    let envoy = pki.leaf("envoy");
    let consumer = pki.leaf("consumer");
    let foreign_pki = Pki::new();
    let foreign_envoy = foreign_pki.leaf("envoy");

    let tls_config =
        tls::server_config(&server.cert_path, &server.key_path, &pki.ca_path()).unwrap();
    let state = state_for(&demo_policy_path());
    assert!(state.callers.allows_str(&id("envoy")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_task = tokio::spawn(serve::serve(listener, tls_config, app(state), async {
        let _ = stop_rx.await;
    }));

    // The allowed caller gets a decision.
    let (status, body) = post(
        addr,
        client_config(&pki, Some(&envoy)),
        "/v1/decision",
        REQUEST,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let decision: certbind_core::decision::Decision = serde_json::from_str(&body).unwrap();
    assert!(decision.allow);
    assert_eq!(decision.policy_id, "consumer-orders-read");
    let (status, body) = post(
        addr,
        client_config(&pki, Some(&envoy)),
        "/v1/data/certbind/allow",
        &format!("{{\"input\":{REQUEST}}}"),
    )
    .await
    .unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"result":true}"#));

    // Another workload of the same CA is authenticated but not a caller: 403 JSON.
    let (status, body) = post(
        addr,
        client_config(&pki, Some(&consumer)),
        "/v1/decision",
        REQUEST,
    )
    .await
    .unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("caller_not_allowed"), "{body}");

    // No client certificate: refused at TLS, no HTTP answer at all.
    let refused = post(addr, client_config(&pki, None), "/v1/decision", REQUEST).await;
    assert!(
        refused.is_err(),
        "a client without a certificate got {refused:?}"
    );

    // A certificate from another CA, even with the envoy identity: refused at TLS.
    let refused = post(
        addr,
        client_config(&pki, Some(&foreign_envoy)),
        "/v1/decision",
        REQUEST,
    )
    .await;
    assert!(refused.is_err(), "a foreign certificate got {refused:?}");

    // TLS 1.2 is not offered.
    let tls12 = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates({
        let mut r = rustls::RootCertStore::empty();
        r.add(pki.ca_der()).unwrap();
        r
    })
    .with_client_auth_cert(
        vec![envoy.cert_der.clone()],
        PrivateKeyDer::Pkcs8(envoy.key_der.clone_key()),
    )
    .unwrap();
    let refused = post(addr, Arc::new(tls12), "/v1/decision", REQUEST).await;
    assert!(refused.is_err(), "TLS 1.2 got {refused:?}");

    // The server still answers after the refusals, then stops on the signal.
    let (status, _) = post(
        addr,
        client_config(&pki, Some(&envoy)),
        "/v1/decision",
        REQUEST,
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    stop_tx.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), server_task)
        .await
        .expect("the server stops after the shutdown signal")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening after shutdown"
    );
}

#[tokio::test]
async fn a_caller_certificate_expiring_mid_connection_is_no_longer_a_caller() {
    let pki = Pki::new();
    let server = pki.leaf("pdp");
    let envoy = pki.leaf_expiring_in("envoy", 3);
    let expires = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let tls_config =
        tls::server_config(&server.cert_path, &server.key_path, &pki.ca_path()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve::serve(
        listener,
        tls_config,
        app(state_for(&demo_policy_path())),
        async {
            let _ = stop_rx.await;
        },
    ));

    // One kept-alive connection, as Envoy's cluster keeps them.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config(&pki, Some(&envoy)))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut ask = async || {
        sender.ready().await.unwrap();
        let request = hyper::Request::post("/v1/decision")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(REQUEST)))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    let (status, body) = ask().await;
    assert_eq!(status, 200, "fresh certificate: {body}");

    tokio::time::sleep_until((expires + std::time::Duration::from_millis(1500)).into()).await;
    let (status, body) = ask().await;
    assert_eq!(
        status, 403,
        "expired certificate on a kept connection: {body}"
    );
    assert!(body.contains("caller_not_allowed"), "{body}");
    // A new connection with it is refused at the handshake.
    let refused = post(
        addr,
        client_config(&pki, Some(&envoy)),
        "/v1/decision",
        REQUEST,
    )
    .await;
    assert!(refused.is_err(), "an expired certificate got {refused:?}");
    // A fresh one is admitted.
    let fresh = pki.leaf("envoy");
    let (status, body) = post(
        addr,
        client_config(&pki, Some(&fresh)),
        "/v1/decision",
        REQUEST,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "fresh certificate: {body}");
    stop_tx.send(()).unwrap();
}
