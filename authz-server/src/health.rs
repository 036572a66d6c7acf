//! What the authz-server answers on the plain-HTTP health port (`serve --health-listen`,
//! served by certbind-tls): no TLS and no client certificate, so it issues, revokes and
//! reveals nothing. `/readyz`: the mTLS listener is serving and a signing key is active (503
//! otherwise). `/metrics`: readiness and signing-key gauges in Prometheus text.

use crate::state::AppState;
use axum::Router;
use certbind_tls::health::Probe;
pub use certbind_tls::health::Ready;
use serde_json::{Value, json};

/// The health router over the server's state.
pub fn router(app: AppState, ready: Ready) -> Router {
    certbind_tls::health::router(app, ready)
}

/// Serves the health router on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) {
    if let Err(e) = certbind_tls::health::serve(listener, router).await {
        tracing::error!(error = %e, "health listener stopped");
    }
}

/// (signing keys published, one of them active)
fn keys(app: &AppState) -> (usize, bool) {
    let keys = app.keys.current().ok();
    let published = keys.as_ref().map_or(0, |k| k.len());
    let active = keys.as_ref().is_some_and(|k| k.active().is_some());
    (published, active)
}

impl Probe for AppState {
    fn readiness(&self, serving: bool) -> Result<Value, Value> {
        match (serving, keys(self).1) {
            (true, true) => Ok(json!({"status": "ready"})),
            (serving, active) => {
                Err(json!({"status": "not_ready", "serving": serving, "signing_key": active}))
            }
        }
    }

    fn metrics(&self, serving: bool) -> String {
        let (published, active) = keys(self);
        format!(
            "# HELP certbind_authz_ready 1 while the mTLS listener serves with an active signing key.\n\
             # TYPE certbind_authz_ready gauge\n\
             certbind_authz_ready {}\n\
             # HELP certbind_authz_signing_keys Signing keys published in the JWKS.\n\
             # TYPE certbind_authz_signing_keys gauge\n\
             certbind_authz_signing_keys {published}\n",
            u8::from(serving && active)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::Registry;
    use crate::keys::KeyStore;
    use crate::revocation::Revocations;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One plain HTTP/1.1 GET on a real socket: (status line, whole answer).
    async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        let status = answer.lines().next().unwrap_or_default().to_owned();
        (status, answer)
    }

    #[tokio::test]
    async fn answers_probes_and_metrics_on_a_plain_socket_and_is_ready_only_when_serving() {
        let dir = tempfile::tempdir().unwrap();
        let clients = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients.yaml");
        let registry = Registry::load(&clients).unwrap();
        let keys = KeyStore::open(dir.path()).unwrap();
        let revocations = Arc::new(Revocations::open(dir.path(), 1_800_000_000).unwrap());
        let app = AppState::new(registry, keys, revocations, "https://a", 300);
        let ready = Ready::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(serve(listener, router(app, Arc::clone(&ready))));

        let (status, body) = get(addr, "/readyz").await;
        assert!(status.contains(" 503 "), "{body}");
        assert!(body.contains("\"serving\":false"), "{body}");
        assert!(get(addr, "/healthz").await.0.contains(" 200 "));
        ready.store(true, Ordering::Release);
        let (status, body) = get(addr, "/readyz").await;
        assert!(status.contains(" 200 "), "{body}");
        let (status, body) = get(addr, "/metrics").await;
        assert!(status.contains(" 200 "), "{body}");
        assert!(body.contains("certbind_authz_ready 1"), "{body}");
        assert!(body.contains("certbind_authz_signing_keys 1"), "{body}");
        // Nothing else is served here: no token, no JWKS, no admin API.
        for path in ["/token", "/.well-known/jwks.json", "/v1/revocations"] {
            assert!(get(addr, path).await.0.contains(" 404 "), "{path}");
        }
        task.abort();
    }
}
