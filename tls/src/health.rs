//! The plain-HTTP health and metrics port of certbind's servers (`--health-listen`), for
//! kubelet probes and Prometheus: no TLS and no caller check, so it serves nothing but
//! `/healthz` (the process runs), `/readyz` (200 when the server says it is ready, 503
//! otherwise) and `/metrics` (the server's Prometheus text). What "ready" means and which
//! gauges exist is the server's ([`Probe`]).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the mTLS listener is serving; set by `serve` once bound, cleared on shutdown.
pub type Ready = Arc<AtomicBool>;

/// What a server answers on its health port.
pub trait Probe: Clone + Send + Sync + 'static {
    /// `/readyz`: `Ok(body)` for 200, `Err(body)` for 503; `serving` is the mTLS listener's.
    fn readiness(&self, serving: bool) -> Result<Value, Value>;
    /// `/metrics`: Prometheus text.
    fn metrics(&self, serving: bool) -> String;
}

#[derive(Clone)]
struct HealthState<P> {
    probe: P,
    ready: Ready,
}

/// The health router over `probe`.
pub fn router<P: Probe>(probe: P, ready: Ready) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<P>))
        .route("/metrics", get(metrics::<P>))
        .with_state(HealthState { probe, ready })
}

/// Serves the health router on `listener` until the process ends or the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}

async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn readyz<P: Probe>(State(s): State<HealthState<P>>) -> Response {
    match s.probe.readiness(s.ready.load(Ordering::Acquire)) {
        Ok(body) => axum::Json(body).into_response(),
        Err(body) => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response(),
    }
}

async fn metrics<P: Probe>(State(s): State<HealthState<P>>) -> Response {
    let text = s.probe.metrics(s.ready.load(Ordering::Acquire));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// Ready exactly when serving; one gauge.
    #[derive(Clone)]
    struct Fixed;

    impl Probe for Fixed {
        fn readiness(&self, serving: bool) -> Result<Value, Value> {
            if serving {
                Ok(json!({"status": "ready"}))
            } else {
                Err(json!({"status": "not_ready"}))
            }
        }
        fn metrics(&self, serving: bool) -> String {
            format!("test_ready {}\n", u8::from(serving))
        }
    }

    async fn get(router: &Router, path: &str) -> (StatusCode, String) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readyz_follows_the_probe_and_the_listener_flag() {
        let ready = Ready::default();
        let router = router(Fixed, Arc::clone(&ready));
        assert_eq!(get(&router, "/healthz").await.0, StatusCode::OK);
        let (status, body) = get(&router, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(get(&router, "/metrics").await.1, "test_ready 0\n");
        ready.store(true, Ordering::Release);
        assert_eq!(get(&router, "/readyz").await.0, StatusCode::OK);
        assert_eq!(get(&router, "/metrics").await.1, "test_ready 1\n");
    }

    #[tokio::test]
    async fn nothing_else_is_served() {
        let router = router(Fixed, Ready::default());
        for path in ["/token", "/v1/decision", "/"] {
            assert_eq!(get(&router, path).await.0, StatusCode::NOT_FOUND, "{path}");
        }
    }
}
