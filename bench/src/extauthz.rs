//! Scenario S4's authorization service: an Envoy `ext_authz` HTTP service that decides with the
//! PDP's own policy code (`certbind_pdp::decide`) and policy file. It stands in for an
//! `ext_authz` endpoint the PDP does not have yet: it reads the method and path of the check
//! request (Envoy forwards the original ones under `path_prefix`) and the claims `jwt_authn`
//! forwards in `x-jwt-payload`, and answers 200 (allow) or 403.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use certbind_core::decision::{DecisionContext, DecisionRequest};
use certbind_pdp::PolicyStore;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// The `path_prefix` of the scenario's `http_service`.
pub const PATH_PREFIX: &str = "/ext_authz";
/// The header `jwt_authn` puts the verified claims in (`forward_payload_header`).
pub const PAYLOAD_HEADER: &str = "x-jwt-payload";

/// The PDP question for one check request, or `None` when it lacks verified claims (deny).
pub fn decision_request(method: &str, path: &str, payload_b64: &str) -> Option<DecisionRequest> {
    let resource = path.strip_prefix(PATH_PREFIX).unwrap_or(path);
    let resource = resource.split('?').next().unwrap_or(resource);
    let json = URL_SAFE_NO_PAD
        .decode(payload_b64.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&json).ok()?;
    let text = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_owned);
    let audience = match claims.get("aud") {
        Some(Value::String(a)) => a.clone(),
        Some(Value::Array(a)) => a.first()?.as_str()?.to_owned(),
        _ => return None,
    };
    Some(DecisionRequest {
        subject: text("sub")?,
        client_id: text("client_id").unwrap_or_default(),
        action: method.to_owned(),
        resource: resource.to_owned(),
        audience,
        scopes: text("scope")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        context: DecisionContext {
            iat: claims.get("iat").and_then(Value::as_u64),
            jti: text("jti"),
            ..DecisionContext::default()
        },
    })
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn check(State(store): State<Arc<PolicyStore>>, req: Request) -> StatusCode {
    let payload = req
        .headers()
        .get(PAYLOAD_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(question) = decision_request(req.method().as_str(), req.uri().path(), payload) else {
        return StatusCode::FORBIDDEN;
    };
    if certbind_pdp::decide(&store.current(), &question, now_unix()).allow {
        StatusCode::OK
    } else {
        StatusCode::FORBIDDEN
    }
}

/// Serves until the process is killed. Prints `ext_authz listening on <addr>` when ready.
pub fn serve(listen: SocketAddr, policies: &Path) -> Result<(), String> {
    let store =
        Arc::new(PolicyStore::open(policies).map_err(|e| format!("{}: {e}", policies.display()))?);
    let app = Router::new().fallback(check).with_state(store);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("bind {listen}: {e}"))?;
        println!("ext_authz listening on {listen}");
        axum::serve(listener, app).await.map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(claims: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
    }

    #[test]
    fn builds_the_pdp_question_from_the_forwarded_claims() {
        let p = payload(&serde_json::json!({
            "sub": "spiffe://certbind.test/ns/demo/sa/consumer", "client_id": "consumer",
            "aud": "spiffe://certbind.test/ns/demo/sa/orders", "scope": "orders:read x",
            "iat": 5, "jti": "j"}));
        let q = decision_request("GET", "/ext_authz/orders/1?x=1", &p).unwrap();
        assert_eq!(q.resource, "/orders/1");
        assert_eq!(q.action, "GET");
        assert_eq!(q.scopes, ["orders:read", "x"]);
        assert_eq!(q.audience, "spiffe://certbind.test/ns/demo/sa/orders");
    }

    #[test]
    fn refuses_a_check_without_verified_claims() {
        assert!(decision_request("GET", "/ext_authz/orders/1", "").is_none());
        assert!(decision_request("GET", "/ext_authz/orders/1", "!!").is_none());
        let no_sub = payload(&serde_json::json!({"aud": "a"}));
        assert!(decision_request("GET", "/ext_authz/orders/1", &no_sub).is_none());
    }

    #[test]
    fn the_demo_policy_allows_consumer_reads_and_denies_writes_without_scope() {
        let root = certbind_tests::prereq::repo_root();
        let store = PolicyStore::open(&root.join("pdp/policies/demo.yaml")).unwrap();
        let p = payload(&serde_json::json!({
            "sub": "spiffe://certbind.test/ns/demo/sa/consumer", "client_id": "consumer",
            "aud": "spiffe://certbind.test/ns/demo/sa/orders", "scope": "orders:read"}));
        let read = decision_request("GET", "/ext_authz/orders/1", &p).unwrap();
        let write = decision_request("POST", "/ext_authz/orders", &p).unwrap();
        assert!(certbind_pdp::decide(&store.current(), &read, now_unix()).allow);
        assert!(!certbind_pdp::decide(&store.current(), &write, now_unix()).allow);
    }
}
