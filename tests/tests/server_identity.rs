//! Clients accept a server only by its SPIFFE ID: a TLS server presenting a workload
//! (client-only) certificate, or another server's certificate, is refused by the test
//! harness's client and by the demo's client; the right server is accepted. The PKI is the
//! real `certbind-authz pki init` (only servers get serverAuth and host names).

// A test target, test code throughout: the workspace lints apply with clippy.toml's
// allow-*-in-tests, as inside #[test] functions.
#![cfg(test)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use certbind_demo::client::HttpsClient;
use certbind_tests::{Error, Request, TlsClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

fn pki() -> tempfile::TempDir {
    let authz = certbind_tests::prereq::release_bin("certbind-authz").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(authz)
        .args(["pki", "init", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// A TLS 1.3 server presenting `<name>.crt` that answers every request with 200 "ok".
fn serve_as(pki: &Path, name: &str) -> SocketAddr {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(pki.join(format!("{name}.crt")))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_file(pki.join(format!("{name}.key"))).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let config = Arc::clone(&config);
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    addr
}

#[test]
fn the_harness_client_accepts_only_the_expected_server_id() {
    let pki = pki();
    let client = TlsClient::for_workload(pki.path(), Some("consumer"))
        .unwrap()
        .expecting("authz")
        .unwrap();
    let ok = client
        .send(serve_as(pki.path(), "authz"), &Request::get("/"))
        .unwrap();
    assert_eq!(ok.status, 200);
    // A workload's certificate (clientAuth only, no host name) posing as the authz-server.
    for impostor in ["inventory", "consumer", "envoy", "pdp", "orders"] {
        let err = client
            .send(serve_as(pki.path(), impostor), &Request::get("/"))
            .expect_err(impostor);
        assert!(matches!(err, Error::Tls(_)), "{impostor}: {err}");
    }
    // Without pinning one server, a workload certificate is still never a server.
    let any_server = TlsClient::for_workload(pki.path(), None).unwrap();
    assert!(
        any_server
            .send(serve_as(pki.path(), "orders"), &Request::get("/"))
            .is_ok()
    );
    assert!(
        any_server
            .send(serve_as(pki.path(), "inventory"), &Request::get("/"))
            .is_err()
    );
}

#[tokio::test]
async fn the_demo_client_accepts_only_the_expected_server_id() {
    let pki = pki();
    let client = HttpsClient::for_workload(pki.path(), Some("consumer"))
        .unwrap()
        .expecting("orders")
        .unwrap();
    let ok = client
        .send(serve_as(pki.path(), "orders"), &Request::get("/"))
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    for impostor in ["inventory", "consumer", "envoy", "billing", "authz"] {
        let err = client
            .send(serve_as(pki.path(), impostor), &Request::get("/"))
            .await
            .expect_err(impostor);
        let text = err.to_string();
        assert!(
            text.to_lowercase().contains("tls") || text.contains("certificate"),
            "{impostor}: {text}"
        );
    }
}
