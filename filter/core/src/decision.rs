//! PDP wire types (CONTRACT §5), shared by the filter that asks and the PDP that answers.

use serde::{Deserialize, Serialize};

/// What the filter asks the PDP: who (subject, client), does what (action = HTTP method)
/// to what (resource = normalised path) at which service (audience), holding which scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub subject: String,
    pub client_id: String,
    pub action: String,
    pub resource: String,
    pub audience: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub context: DecisionContext,
}

/// Facts about the request that conditions may use. Absent facts never satisfy a condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// The token's `iat` (seconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// e.g. "TLSv1.3", as Envoy reports `connection.tls_version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
}

/// The PDP's answer. `reason` is machine-readable (`missing_scope` lets the filter answer
/// `insufficient_scope`); `ttl_s` bounds how long the filter may cache an allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub allow: bool,
    pub policy_id: String,
    pub reason: String,
    pub ttl_s: u64,
    #[serde(default)]
    pub policy_version: String,
}

/// The PDP's `reason` when only scopes were lacking.
pub const REASON_MISSING_SCOPE: &str = "missing_scope";

/// The OPA data API shape: `POST /v1/data/certbind/allow` with `{"input": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpaInput {
    pub input: DecisionRequest,
}

/// The OPA data API answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpaResult {
    pub result: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_and_refuses_unknown_fields() {
        let json = r#"{"subject":"spiffe://certbind.test/ns/demo/sa/consumer","client_id":"consumer",
            "action":"GET","resource":"/orders/1","audience":"spiffe://certbind.test/ns/demo/sa/orders",
            "scopes":["orders:read"],"context":{"iat":1,"tls_version":"TLSv1.3"}}"#;
        let req: DecisionRequest = serde_json::from_str(json).unwrap();
        assert_eq!(req.context.iat, Some(1));
        let again: DecisionRequest =
            serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
        assert_eq!(again, req);
        let extra = json.replace("\"action\"", "\"admin\":true,\"action\"");
        assert!(serde_json::from_str::<DecisionRequest>(&extra).is_err());
    }
}
