//! Certificates stop working when they expire or are replaced, on a real TLS socket: a client
//! certificate that expires during a kept-alive connection is no longer honoured (the next
//! `/token` is `invalid_client`), no session can be resumed past it (the server issues no
//! tickets), a fresh certificate is admitted, and a reissued server certificate and trust
//! bundle are served without a restart.
// Helpers here run only inside tests: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use certbind_authz::{app, ca, server, tls};
use common::{Conn, ORDERS, Pki, client_config, state, token_body};
use rustls::client::ClientSessionMemoryCache;
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

async fn start(
    pki: &Pki,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tempfile::TempDir,
) {
    let (state_dir, st) = state();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = tls::server_config(pki.path(), "authz").unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve(listener, config, app(st), async {
        let _ = stopped.await;
    }));
    (addr, stop, state_dir)
}

/// A TLS handshake with `config`; returns the handshake kind and the served leaf (DER).
async fn handshake(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> (rustls::HandshakeKind, Vec<u8>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let conn = tls.get_ref().1;
    let served = conn.peer_certificates().unwrap()[0].to_vec();
    (conn.handshake_kind().unwrap(), served)
}

#[tokio::test]
async fn a_client_certificate_expiring_mid_connection_gets_no_token_and_no_resumption() {
    let pki = Pki::new();
    let (addr, stop, _state) = start(&pki).await;
    let life = time::Duration::seconds(4);
    ca::issue_for(
        pki.path(),
        "consumer",
        life,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let expires = std::time::Instant::now() + Duration::from_secs(4);
    let mut config = (*client_config(pki.path(), Some((pki.path(), "consumer")))).clone();
    // The client would resume if the server let it.
    config.resumption =
        rustls::client::Resumption::store(Arc::new(ClientSessionMemoryCache::new(16)));
    let config = Arc::new(config);

    // Fresh: admitted.
    let mut kept = Conn::open(addr, Arc::clone(&config)).await.unwrap();
    let (status, body) = kept.form("/token", &token_body(ORDERS, "")).await;
    assert_eq!(status, 200, "fresh certificate: {body}");
    // A second connection is a full handshake: the server sent no ticket to resume with.
    let (kind, _) = handshake(addr, Arc::clone(&config)).await;
    assert_eq!(kind, rustls::HandshakeKind::Full, "a session was resumed");

    tokio::time::sleep_until((expires + Duration::from_millis(1500)).into()).await;
    // The same kept-alive connection, certificate now expired: no token.
    let (status, body) = kept.form("/token", &token_body(ORDERS, "")).await;
    assert_eq!(
        status, 401,
        "expired certificate on a kept connection: {body}"
    );
    assert_eq!(body["error"], "invalid_client", "{body}");
    // A new connection with the expired certificate: refused at the handshake or at /token.
    let again = async {
        let mut conn = Conn::open(addr, Arc::clone(&config)).await?;
        conn.send(
            "POST",
            "/token",
            Some("application/x-www-form-urlencoded"),
            &token_body(ORDERS, ""),
        )
        .await
    }
    .await;
    match again {
        Err(_) => {}
        Ok((status, _, body)) => assert_eq!(
            status,
            401,
            "expired certificate on a new connection: {}",
            String::from_utf8_lossy(&body)
        ),
    }

    // Reissued: admitted again, with no restart.
    ca::issue(pki.path(), "consumer", 1, time::OffsetDateTime::now_utc()).unwrap();
    let mut fresh = Conn::open(
        addr,
        client_config(pki.path(), Some((pki.path(), "consumer"))),
    )
    .await
    .unwrap();
    let (status, body) = fresh.form("/token", &token_body(ORDERS, "")).await;
    assert_eq!(status, 200, "reissued certificate: {body}");
    stop.send(()).unwrap();
}

#[tokio::test]
async fn a_reissued_server_certificate_is_served_without_a_restart() {
    let pki = Pki::new();
    let (addr, stop, _state) = start(&pki).await;
    let config = client_config(pki.path(), None);
    let (_, before) = handshake(addr, Arc::clone(&config)).await;
    assert_eq!(before, pki.der("authz"));
    ca::rotate(pki.path(), &["authz"], 1, time::OffsetDateTime::now_utc()).unwrap();
    let new = pki.der("authz");
    assert_ne!(before, new);
    // The server looks at its files at most once per second, on the next connection.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, served) = handshake(addr, Arc::clone(&config)).await;
        if served == new {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still the old certificate after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.send(()).unwrap();
}
