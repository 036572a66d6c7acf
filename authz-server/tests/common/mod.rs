//! Shared test fixtures: a fresh PKI, an app state over temp dirs, and an mTLS HTTP client.
#![allow(dead_code)]
// each test binary uses a different subset
// Test fixtures: a failed setup must fail the test loudly, as in #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use certbind_authz::app::AppState;
use certbind_authz::ca;
use certbind_authz::clients::Registry;
use certbind_authz::keys::KeyStore;
use certbind_authz::revocation::Revocations;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tempfile::TempDir;

pub const ISSUER: &str = "https://127.0.0.1:9443";
pub const ORDERS: &str = "spiffe://certbind.test/ns/demo/sa/orders";
pub const BILLING: &str = "spiffe://certbind.test/ns/demo/sa/billing";

/// A PKI directory with the CA and every default workload certificate.
pub struct Pki {
    pub dir: TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        ca::init(
            dir.path(),
            &ca::DEFAULT_WORKLOADS,
            1,
            false,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Issues an extra workload certificate (e.g. one the registry does not know).
    pub fn issue(&self, name: &str) {
        ca::issue(self.path(), name, 1, time::OffsetDateTime::now_utc()).unwrap();
    }

    pub fn cert_path(&self, name: &str) -> PathBuf {
        self.path().join(format!("{name}.crt"))
    }

    pub fn der(&self, name: &str) -> Vec<u8> {
        ca::read_cert_der(&self.cert_path(name)).unwrap()
    }
}

/// The demo registry, a key store in a temp dir and our issuer.
pub fn state() -> (TempDir, AppState) {
    let state_dir = tempfile::tempdir().unwrap();
    let registry =
        Registry::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("clients.yaml")).unwrap();
    let keys = KeyStore::open(state_dir.path()).unwrap();
    let now = (certbind_authz::app::system_clock())();
    let revocations = Arc::new(Revocations::open(state_dir.path(), now).unwrap());
    let mut state = AppState::new(registry, keys, revocations, ISSUER, 300);
    state.usage = Some(Arc::new(
        certbind_authz::usage::UsageCounter::open(state_dir.path()).unwrap(),
    ));
    (state_dir, state)
}

/// A TLS 1.3 client trusting `ca_dir/ca.crt`, presenting `identity` (`<dir>/<name>.crt|key`).
pub fn client_config(ca_dir: &Path, identity: Option<(&Path, &str)>) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_dir.join("ca.crt")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match identity {
        Some((dir, name)) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(dir.join(format!("{name}.crt")))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One HTTP/1.1 keep-alive connection over TLS.
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Connects and completes the TLS handshake; errors are returned, not unwrapped, so a
    /// test can assert a refused handshake.
    pub async fn open(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = connector
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender })
    }

    /// Sends a request; returns status, headers and body.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Result<(u16, hyper::HeaderMap, Vec<u8>), Box<dyn std::error::Error + Send + Sync>> {
        self.sender.ready().await?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned())))?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok((status, headers, body))
    }

    pub async fn form(&mut self, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (status, _, body) = self
            .send(
                "POST",
                path,
                Some("application/x-www-form-urlencoded"),
                body,
            )
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }
}

/// Percent-encodes a form value.
pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The token request body for `audience` with optional extra fields.
pub fn token_body(audience: &str, extra: &str) -> String {
    format!(
        "grant_type=client_credentials&audience={}{extra}",
        enc(audience)
    )
}

/// What `app(state)` answered: status, headers, the JSON body (`Null` if none) and the bytes.
pub struct Answer {
    pub status: axum::http::StatusCode,
    pub headers: axum::http::HeaderMap,
    pub json: serde_json::Value,
    pub body: Vec<u8>,
}

/// One request through `app(state)` without a socket; `peer` is the verified client
/// certificate's DER.
pub async fn call(
    state: &AppState,
    method: &str,
    path: &str,
    peer: Option<&[u8]>,
    content_type: Option<&str>,
    body: impl Into<axum::body::Body>,
) -> Answer {
    let mut req = axum::http::Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        req = req.header(axum::http::header::CONTENT_TYPE, ct);
    }
    let mut req = req.body(body.into()).unwrap();
    if let Some(der) = peer {
        req.extensions_mut()
            .insert(certbind_authz::PeerCertificate(Arc::new(der.to_vec())));
    }
    let resp = tower::ServiceExt::oneshot(certbind_authz::app(state.clone()), req)
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        headers,
        json,
        body: bytes.to_vec(),
    }
}

/// Form and JSON content types.
pub const FORM: &str = "application/x-www-form-urlencoded";
pub const JSON: &str = "application/json";

/// A token for the client with certificate `der`, for the orders service.
pub async fn token_for(st: &AppState, der: &[u8]) -> String {
    let a = call(
        st,
        "POST",
        "/token",
        Some(der),
        Some(FORM),
        token_body(ORDERS, ""),
    )
    .await;
    assert_eq!(a.status, axum::http::StatusCode::OK, "{}", a.json);
    a.json["access_token"].as_str().unwrap().to_owned()
}

/// Whether `/introspect`, asked by the sidecar identity, says `token` is active.
pub async fn active(st: &AppState, pki: &Pki, token: &str) -> bool {
    let a = call(
        st,
        "POST",
        "/introspect",
        Some(&pki.der("envoy")),
        Some(FORM),
        format!("token={}", enc(token)),
    )
    .await;
    assert_eq!(a.status, axum::http::StatusCode::OK, "{}", a.json);
    a.json["active"].as_bool().unwrap()
}

/// A request to the operators' admin API.
pub async fn admin(st: &AppState, der: Option<&[u8]>, body: serde_json::Value) -> Answer {
    call(
        st,
        "POST",
        "/v1/admin/revocations",
        der,
        Some(JSON),
        body.to_string(),
    )
    .await
}
