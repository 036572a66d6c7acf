//! Shared test helpers: decision requests, policy files, a throwaway PKI, HTTP through `app()`.
#![allow(dead_code)]
// each test binary uses a different subset
// Test helpers are not `#[test]` functions, so clippy.toml's test allowances do not reach them;
// a failed setup should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use certbind_core::binding::SpiffeId;
use certbind_core::decision::{DecisionContext, DecisionRequest};
use certbind_pdp::metrics::Metrics;
use certbind_pdp::{AppState, PeerIdentity, PolicyStore, app};
use http_body_util::BodyExt;
use tower::ServiceExt;

pub const TD: &str = "spiffe://certbind.test/ns/demo/sa/";

pub fn id(name: &str) -> String {
    format!("{TD}{name}")
}

/// The repository's demo policy file.
pub fn demo_policy_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/demo.yaml")
}

/// A request from `subject` to `audience`, holding `scopes`.
pub fn req(
    subject: &str,
    method: &str,
    path: &str,
    audience: &str,
    scopes: &[&str],
) -> DecisionRequest {
    DecisionRequest {
        subject: id(subject),
        client_id: subject.to_owned(),
        action: method.to_owned(),
        resource: path.to_owned(),
        audience: id(audience),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        context: DecisionContext::default(),
    }
}

/// Writes `text` to a fresh policy file and returns its directory (kept alive) and path.
pub fn policy_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// App state over a policy file, allowing the `envoy` identity.
pub fn state_for(path: &Path) -> AppState {
    let store = Arc::new(PolicyStore::open(path).unwrap());
    AppState::new(
        store,
        Arc::new(Metrics::default()),
        certbind_core::caller::CallerList::parse(&[id("envoy")]).unwrap(),
    )
}

/// One request through the router as `caller` (None: no client identity).
pub async fn call(
    state: &AppState,
    caller: Option<&str>,
    method: &str,
    uri: &str,
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value, String) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let peer = caller.map(|c| SpiffeId::parse(&id(c)).unwrap());
    request.extensions_mut().insert(PeerIdentity(peer));
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json, text)
}

/// A throwaway PKI: an EC P-256 CA and leaf certificates for workloads, written as PEM files.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A leaf certificate and its key, as DER (for a TLS client) and as files.
pub struct Leaf {
    pub cert_der: rustls_pki_types::CertificateDer<'static>,
    pub key_der: rustls_pki_types::PrivatePkcs8KeyDer<'static>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "certbind test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(params, key).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
        Self { dir, ca }
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn ca_der(&self) -> rustls_pki_types::CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// A workload certificate: one URI SAN `spiffe://certbind.test/ns/demo/sa/<name>`,
    /// DNS `localhost`, IP 127.0.0.1.
    pub fn leaf(&self, name: &str) -> Leaf {
        self.leaf_with(name, |_| {})
    }

    /// A workload certificate that expires `secs` from now.
    pub fn leaf_expiring_in(&self, name: &str, secs: i64) -> Leaf {
        self.leaf_with(name, |params| {
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::minutes(1);
            params.not_after = now + time::Duration::seconds(secs);
        })
    }

    fn leaf_with(&self, name: &str, tweak: impl FnOnce(&mut rcgen::CertificateParams)) -> Leaf {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(id(name).try_into().unwrap()));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        tweak(&mut params);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let cert_path = self.dir.path().join(format!("{name}.crt"));
        let key_path = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Leaf {
            cert_der: cert.der().clone(),
            key_der: rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()),
            cert_path,
            key_path,
        }
    }
}
