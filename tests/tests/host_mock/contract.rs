//! CONTRACT §4 as data: which status and `error` each `reason` answers, and a checker that
//! says whether a local reply is one of the contract's answers (used by every scenario).

use super::host::LocalResponse;
use serde_json::Value;

/// Every `reason` of CONTRACT §4 with its status and RFC 6750 / RFC 9449 `error`
/// (`None`: no `error`, RFC 6750 §3.1).
pub const REASONS: [(&str, u32, Option<&str>); 25] = [
    ("missing_token", 401, None),
    ("malformed_token", 401, Some("invalid_token")),
    ("unsupported_alg", 401, Some("invalid_token")),
    ("wrong_type", 401, Some("invalid_token")),
    ("unknown_kid", 401, Some("invalid_token")),
    ("bad_signature", 401, Some("invalid_token")),
    ("expired", 401, Some("invalid_token")),
    ("not_yet_valid", 401, Some("invalid_token")),
    ("wrong_issuer", 401, Some("invalid_token")),
    ("wrong_audience", 401, Some("invalid_token")),
    ("binding_missing", 401, Some("invalid_token")),
    ("binding_mismatch", 401, Some("invalid_token")),
    ("subject_mismatch", 401, Some("invalid_token")),
    ("dpop_invalid", 401, Some("invalid_dpop_proof")),
    ("dpop_replay", 401, Some("invalid_dpop_proof")),
    ("revoked", 401, Some("invalid_token")),
    // `insufficient_scope` when a scope is missing, else `access_denied`.
    ("policy_denied", 403, Some("access_denied")),
    ("jwks_unavailable", 503, Some("temporarily_unavailable")),
    ("pdp_unavailable", 503, Some("temporarily_unavailable")),
    (
        "revocation_unavailable",
        503,
        Some("temporarily_unavailable"),
    ),
    // The connection's certificate is outside its validity window (a resumed TLS session).
    ("certificate_expired", 401, Some("invalid_token")),
    // A DPoP proof the shared replay cache has no room for (never seen: not `dpop_replay`).
    ("replay_cache_full", 503, Some("temporarily_unavailable")),
    ("usage_exhausted", 401, Some("invalid_token")),
    ("usage_unavailable", 503, Some("temporarily_unavailable")),
    // The filter cannot examine the request: not configured, or its state is busy.
    ("internal_error", 503, Some("temporarily_unavailable")),
];

pub fn status_of(reason: &str) -> Option<u32> {
    REASONS.iter().find(|r| r.0 == reason).map(|r| r.1)
}

pub fn error_of(reason: &str) -> Option<&'static str> {
    REASONS.iter().find(|r| r.0 == reason).and_then(|r| r.2)
}

/// The parsed essentials of a contract answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u32,
    pub reason: String,
    pub error: Option<String>,
    pub request_id: String,
}

/// Checks that `reply` is one of CONTRACT §4's answers; returns it parsed, or what is wrong.
/// `request_id`: what the caller sent, when the check should compare it.
pub fn check_reply(reply: &LocalResponse, request_id: Option<&str>) -> Result<Answer, String> {
    let body: Value = serde_json::from_slice(&reply.body).map_err(|e| {
        format!(
            "body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&reply.body)
        )
    })?;
    let reason = body["reason"]
        .as_str()
        .ok_or_else(|| format!("body has no string `reason`: {body}"))?
        .to_owned();
    let Some(&(_, status, error)) = REASONS.iter().find(|r| r.0 == reason) else {
        return Err(format!("`reason` {reason:?} is not in CONTRACT §4"));
    };
    if reply.status != status {
        return Err(format!(
            "{reason} answered {} instead of {status}",
            reply.status
        ));
    }
    let body_error = body["error"].as_str().map(str::to_owned);
    let expected_error: Option<&str> = match (reason.as_str(), body_error.as_deref()) {
        ("policy_denied", Some("insufficient_scope")) => Some("insufficient_scope"),
        _ => error,
    };
    let challenge = reply
        .headers
        .get_str("www-authenticate")
        .unwrap_or_default();
    match expected_error {
        Some(e) => {
            if body_error.as_deref() != Some(e) {
                return Err(format!(
                    "{reason}: body error {body_error:?}, expected {e:?}"
                ));
            }
            if !challenge.contains(&format!("error=\"{e}\"")) {
                return Err(format!(
                    "{reason}: WWW-Authenticate {challenge:?} lacks error={e}"
                ));
            }
        }
        None => {
            if body_error.as_deref().is_some_and(|e| e != reason) {
                return Err(format!(
                    "{reason}: body error {body_error:?}, expected none"
                ));
            }
            if challenge.contains("error=") {
                return Err(format!(
                    "{reason}: WWW-Authenticate {challenge:?} carries an error"
                ));
            }
        }
    }
    let scheme_ok = challenge.starts_with("Bearer realm=") || challenge.starts_with("DPoP realm=");
    if !scheme_ok {
        return Err(format!("{reason}: WWW-Authenticate {challenge:?}"));
    }
    let rid = body["request_id"]
        .as_str()
        .ok_or_else(|| format!("{reason}: body has no string request_id: {body}"))?;
    if request_id.is_some_and(|sent| sent != rid) {
        return Err(format!("{reason}: request_id {rid:?}, sent {request_id:?}"));
    }
    let ct = reply.headers.get_str("content-type").unwrap_or_default();
    if !ct.starts_with("application/json") {
        return Err(format!("{reason}: content-type {ct:?}"));
    }
    Ok(Answer {
        status,
        reason,
        error: body_error,
        request_id: rid.to_owned(),
    })
}
