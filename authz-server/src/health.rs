//! The plain-HTTP health and metrics port (`serve --health-listen`), for kubelet probes and
//! Prometheus: no TLS and no client certificate, so it issues, revokes and reveals nothing.
//! `/healthz`: the process runs. `/readyz`: the mTLS listener is serving and a signing key is
//! active (503 otherwise). `/metrics`: readiness and signing-key gauges in Prometheus text.

use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the mTLS listener is serving; set by `serve` once bound, cleared on shutdown.
pub type Ready = Arc<AtomicBool>;

#[derive(Clone)]
struct HealthState {
    app: AppState,
    ready: Ready,
}

pub fn router(app: AppState, ready: Ready) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(HealthState { app, ready })
}

/// (listener serving, signing keys published, one of them active)
fn status(s: &HealthState) -> (bool, usize, bool) {
    let keys = s.app.keys.current().ok();
    let published = keys.as_ref().map_or(0, |k| k.len());
    let active = keys.as_ref().is_some_and(|k| k.active().is_some());
    (s.ready.load(Ordering::Acquire), published, active)
}

async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn readyz(State(s): State<HealthState>) -> Response {
    match status(&s) {
        (true, _, true) => axum::Json(json!({"status": "ready"})).into_response(),
        (serving, _, active) => {
            let body = json!({"status": "not_ready", "serving": serving, "signing_key": active});
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
        }
    }
}

async fn metrics(State(s): State<HealthState>) -> Response {
    let (serving, published, active) = status(&s);
    let text = format!(
        "# HELP certbind_authz_ready 1 while the mTLS listener serves with an active signing key.\n\
         # TYPE certbind_authz_ready gauge\n\
         certbind_authz_ready {}\n\
         # HELP certbind_authz_signing_keys Signing keys published in the JWKS.\n\
         # TYPE certbind_authz_signing_keys gauge\n\
         certbind_authz_signing_keys {published}\n",
        u8::from(serving && active)
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Serves the health router on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) {
    if let Err(e) = axum::serve(listener, router).await {
        tracing::error!(error = %e, "health listener stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::Registry;
    use crate::keys::KeyStore;
    use crate::revocation::Revocations;
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
