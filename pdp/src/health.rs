//! What the PDP answers on the plain-HTTP health port (`serve --health-listen`, served by
//! certbind-tls): no TLS and no caller check, so it answers nothing about any decision.
//! `/readyz`: the mTLS listener is serving with a loaded policy (503 before and after).
//! `/metrics`: the same Prometheus text as the mTLS `/metrics`.

use crate::app::{AppState, metrics_text};
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

impl Probe for AppState {
    fn readiness(&self, serving: bool) -> Result<Value, Value> {
        let policy = self.store.current();
        if serving {
            Ok(json!({"status": "ready", "policy_version": policy.version}))
        } else {
            Err(json!({"status": "not_ready"}))
        }
    }

    fn metrics(&self, _serving: bool) -> String {
        metrics_text(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::reload::PolicyStore;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use tower::ServiceExt;

    fn state() -> AppState {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/demo.yaml");
        let store = Arc::new(PolicyStore::open(&path).unwrap());
        AppState::new(store, Arc::new(Metrics::default()), Default::default())
    }

    async fn get(router: &Router, path: &str) -> (StatusCode, String) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readyz_is_503_until_the_mtls_listener_serves_then_200() {
        let ready = Ready::default();
        let router = router(state(), Arc::clone(&ready));
        let (status, body) = get(&router, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        ready.store(true, Ordering::Release);
        let (status, body) = get(&router, "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\"policy_version\""), "{body}");
    }

    #[tokio::test]
    async fn healthz_and_metrics_answer_without_a_client_certificate() {
        let router = router(state(), Ready::default());
        assert_eq!(get(&router, "/healthz").await.0, StatusCode::OK);
        let (status, text) = get(&router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("certbind_pdp_"), "{text}");
    }

    #[tokio::test]
    async fn the_health_port_never_answers_a_decision() {
        let router = router(state(), Ready::default());
        for path in ["/v1/decision", "/v1/data/certbind/allow", "/v1/ext_authz/x"] {
            let request = Request::post(path).body(Body::from("{}")).unwrap();
            let status = router.clone().oneshot(request).await.unwrap().status();
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        }
    }
}
