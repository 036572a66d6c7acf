//! The question an Envoy `ext_authz` check request asks (pure): Envoy's HTTP `ext_authz`
//! forwards the original method and the original path under a `path_prefix`, and `jwt_authn`
//! forwards the verified claims as base64url JSON in `x-jwt-payload` (`forward_payload_header`).
//! The subject and scopes come only from those claims, so the PDP must trust the caller that
//! sends them: the route sits behind the same caller list as the other decision APIs.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use certbind_core::decision::{DecisionContext, DecisionRequest};
use serde_json::Value;

/// The route prefix Envoy's `http_service.path_prefix` must name.
pub const PATH_PREFIX: &str = "/v1/ext_authz";
/// The header `jwt_authn` puts the verified claims in.
pub const PAYLOAD_HEADER: &str = "x-jwt-payload";
/// Forwarded claims larger than this are refused (a token's claims are a few hundred bytes).
pub const MAX_PAYLOAD_BYTES: usize = 8 * 1024;

/// Why a check request cannot become a question (each is a 400: never an allow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("no x-jwt-payload header: jwt_authn must forward the verified claims")]
    MissingClaims,
    #[error("x-jwt-payload is not base64url JSON of at most 8 KiB")]
    MalformedClaims,
    #[error("the forwarded claims lack a string sub or aud")]
    IncompleteClaims,
    #[error("the path does not start with /v1/ext_authz/")]
    BadPath,
}

impl CheckError {
    /// The machine-readable `error` of the 400 answer.
    pub fn code(self) -> &'static str {
        match self {
            Self::MissingClaims => "missing_claims",
            Self::MalformedClaims => "malformed_claims",
            Self::IncompleteClaims => "incomplete_claims",
            Self::BadPath => "bad_path",
        }
    }
}

/// The PDP question for one check request: `path` is the check request's path (prefix and
/// original path, query included), `payload` the `x-jwt-payload` value if any.
pub fn decision_request(
    method: &str,
    path: &str,
    payload: Option<&str>,
) -> Result<DecisionRequest, CheckError> {
    let resource = path
        .strip_prefix(PATH_PREFIX)
        .filter(|r| r.starts_with('/'))
        .ok_or(CheckError::BadPath)?;
    let resource = resource.split('?').next().unwrap_or(resource);
    let payload = payload.ok_or(CheckError::MissingClaims)?;
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(CheckError::MalformedClaims);
    }
    let json = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| CheckError::MalformedClaims)?;
    let claims: Value = serde_json::from_slice(&json).map_err(|_| CheckError::MalformedClaims)?;
    let text = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_owned);
    let audience = match claims.get("aud") {
        Some(Value::String(a)) => a.clone(),
        Some(Value::Array(a)) => a
            .first()
            .and_then(Value::as_str)
            .ok_or(CheckError::IncompleteClaims)?
            .to_owned(),
        _ => return Err(CheckError::IncompleteClaims),
    };
    Ok(DecisionRequest {
        subject: text("sub").ok_or(CheckError::IncompleteClaims)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(claims: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
    }

    fn consumer_claims() -> String {
        payload(&serde_json::json!({
            "sub": "spiffe://certbind.test/ns/demo/sa/consumer", "client_id": "consumer",
            "aud": "spiffe://certbind.test/ns/demo/sa/orders", "scope": "orders:read x",
            "iat": 5, "jti": "j"}))
    }

    #[test]
    fn builds_the_question_from_the_original_request_and_the_forwarded_claims() {
        let p = consumer_claims();
        let q = decision_request("GET", "/v1/ext_authz/orders/1?x=1", Some(&p)).unwrap();
        assert_eq!(q.resource, "/orders/1");
        assert_eq!(q.action, "GET");
        assert_eq!(q.subject, "spiffe://certbind.test/ns/demo/sa/consumer");
        assert_eq!(q.scopes, ["orders:read", "x"]);
        assert_eq!(q.audience, "spiffe://certbind.test/ns/demo/sa/orders");
        assert_eq!(q.context.jti.as_deref(), Some("j"));
    }

    #[test]
    fn takes_the_first_audience_of_a_list_and_tolerates_padding() {
        let p = payload(&serde_json::json!({"sub": "s", "aud": ["a", "b"]})) + "==";
        let q = decision_request("POST", "/v1/ext_authz/x", Some(&p)).unwrap();
        assert_eq!(q.audience, "a");
        assert!(q.scopes.is_empty());
    }

    #[test]
    fn refuses_a_check_without_claims() {
        let e = decision_request("GET", "/v1/ext_authz/orders", None).unwrap_err();
        assert_eq!(e, CheckError::MissingClaims);
    }

    #[test]
    fn refuses_claims_that_are_not_base64url_json_or_too_large() {
        for bad in ["!!", "bm90IGpzb24", &"A".repeat(MAX_PAYLOAD_BYTES + 4)] {
            let e = decision_request("GET", "/v1/ext_authz/orders", Some(bad)).unwrap_err();
            assert_eq!(e, CheckError::MalformedClaims, "{bad:.20}");
        }
    }

    #[test]
    fn refuses_claims_without_a_subject_or_audience() {
        for claims in [
            serde_json::json!({"aud": "a"}),
            serde_json::json!({"sub": "s"}),
            serde_json::json!({"sub": 1, "aud": "a"}),
            serde_json::json!({"sub": "s", "aud": []}),
        ] {
            let e = decision_request("GET", "/v1/ext_authz/o", Some(&payload(&claims)));
            assert_eq!(e.unwrap_err(), CheckError::IncompleteClaims, "{claims}");
        }
    }

    #[test]
    fn refuses_a_path_outside_the_prefix() {
        let p = consumer_claims();
        for path in ["/orders/1", "/v1/ext_authzorders", "/v1/ext_authz"] {
            let e = decision_request("GET", path, Some(&p)).unwrap_err();
            assert_eq!(e, CheckError::BadPath, "{path}");
        }
    }
}
