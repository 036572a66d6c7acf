//! The HTTP API (CONTRACT §5): `POST /v1/decision`, the OPA-shaped `POST /v1/data/certbind/allow`,
//! Envoy's HTTP `ext_authz` check at `/v1/ext_authz/<original path>` (any method), `GET /healthz`,
//! `GET /metrics`. Only configured callers get answers; bad input is a 4xx JSON
//! `{"error": ...}`, never a 500 and never an allow.
//!
//! The caller's identity arrives as a request extension (`PeerIdentity`) set by the TLS layer
//! (`serve`); a request without one is treated as an unknown caller.

use certbind_core::caller::CallerList;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use certbind_core::binding::SpiffeId;
use certbind_core::decision::{DecisionRequest, OpaInput, OpaResult};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::eval::decide;
use crate::metrics::Metrics;
use crate::reload::PolicyStore;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The TLS peer's SPIFFE ID (`None`: no certificate, or none with exactly one SPIFFE URI SAN).
#[derive(Debug, Clone)]
pub struct PeerIdentity(pub Option<SpiffeId>);

/// Everything the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<PolicyStore>,
    pub metrics: Arc<Metrics>,
    /// SPIFFE IDs (or patterns, `spiffe://<td>/ns/*/sa/*`) allowed to ask for decisions
    /// and read metrics.
    pub callers: Arc<CallerList>,
}

impl AppState {
    pub fn new(store: Arc<PolicyStore>, metrics: Arc<Metrics>, callers: CallerList) -> Self {
        Self {
            store,
            metrics,
            callers: Arc::new(callers),
        }
    }
}

/// The router. `/healthz` answers any peer that passed the TLS handshake (it reveals nothing);
/// every other route needs a configured caller.
pub fn app(state: AppState) -> Router {
    let guarded = Router::new()
        .route("/v1/decision", post(decision))
        .route("/v1/data/certbind/allow", post(opa_allow))
        .route("/v1/ext_authz/{*path}", any(ext_authz))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_caller,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(guarded)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

fn error(status: StatusCode, error: &str, detail: Option<String>) -> Response {
    let body = match detail {
        Some(d) => json!({ "error": error, "detail": d }),
        None => json!({ "error": error }),
    };
    (status, axum::Json(body)).into_response()
}

async fn require_caller(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let caller = req
        .extensions()
        .get::<PeerIdentity>()
        .and_then(|p| p.0.as_ref());
    match caller {
        Some(id) if state.callers.allows(id) => next.run(req).await,
        other => {
            tracing::warn!(
                caller = other.map(SpiffeId::as_str).unwrap_or("<none>"),
                path = req.uri().path(),
                "caller not allowed"
            );
            state.metrics.record_rejected(403);
            error(StatusCode::FORBIDDEN, "caller_not_allowed", None)
        }
    }
}

async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", None)
}

async fn method_not_allowed() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None)
}

/// The Prometheus text of `/metrics` (also served on the health port).
pub(crate) fn metrics_text(state: &AppState) -> String {
    let policy = state.store.current();
    state.metrics.render(&policy.version, policy.rules.len())
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = metrics_text(&state);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Reads and parses a bounded JSON body, mapping every failure to a 4xx answer.
async fn read_json<T: DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, Response> {
    let reject = |status: StatusCode, code: &str, detail: Option<String>| {
        state.metrics.record_rejected(status.as_u16());
        error(status, code, detail)
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            None,
        ));
    }
    let bytes = match http_body_util::Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(reject(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                None,
            ));
        }
        Err(e) => {
            tracing::debug!(error = %e, "request body unreadable");
            return Err(reject(StatusCode::BAD_REQUEST, "unreadable_body", None));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        use serde_json::error::Category;
        let code = match e.classify() {
            Category::Data => "invalid_request",
            Category::Syntax | Category::Eof | Category::Io => "not_json",
        };
        // serde's message names the field and position, never echoes the input's values.
        reject(StatusCode::BAD_REQUEST, code, Some(e.to_string()))
    })
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Evaluates, records metrics and writes the audit line.
fn evaluate(
    state: &AppState,
    req: &DecisionRequest,
    api: &'static str,
) -> certbind_core::decision::Decision {
    let policy = state.store.current();
    let started = Instant::now();
    let outcome = decide(&policy, req, now_unix());
    let latency = started.elapsed();
    state
        .metrics
        .record_decision(outcome.allow, outcome.reason, latency);
    tracing::info!(
        target: "certbind_pdp::audit",
        api,
        subject = %req.subject,
        client_id = %req.client_id,
        action = %req.action,
        resource = %req.resource,
        audience = %req.audience,
        allow = outcome.allow,
        policy_id = outcome.policy_id,
        reason = outcome.reason.as_str(),
        policy_version = %policy.version,
        latency_us = latency.as_secs_f64() * 1e6,
        "decision"
    );
    outcome.to_decision(&policy.version)
}

async fn decision(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match read_json::<DecisionRequest>(&state, &headers, body).await {
        Ok(req) => axum::Json(evaluate(&state, &req, "decision")).into_response(),
        Err(resp) => resp,
    }
}

async fn opa_allow(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match read_json::<OpaInput>(&state, &headers, body).await {
        Ok(input) => {
            let d = evaluate(&state, &input.input, "opa");
            axum::Json(OpaResult { result: d.allow }).into_response()
        }
        Err(resp) => resp,
    }
}

/// Envoy's `ext_authz` check: 200 allows, 403 denies (with the PDP's reason), 400 when the check
/// carries no usable claims. Only the status matters to Envoy; the body helps whoever debugs it.
async fn ext_authz(State(state): State<AppState>, req: Request) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map_or(req.uri().path(), |p| p.as_str());
    let payload = req
        .headers()
        .get(crate::ext_authz::PAYLOAD_HEADER)
        .and_then(|v| v.to_str().ok());
    match crate::ext_authz::decision_request(req.method().as_str(), path, payload) {
        Ok(question) => {
            let d = evaluate(&state, &question, "ext_authz");
            if d.allow {
                StatusCode::OK.into_response()
            } else {
                (
                    StatusCode::FORBIDDEN,
                    axum::Json(json!({ "error": "access_denied", "reason": d.reason })),
                )
                    .into_response()
            }
        }
        Err(e) => {
            state.metrics.record_rejected(400);
            error(StatusCode::BAD_REQUEST, e.code(), Some(e.to_string()))
        }
    }
}
