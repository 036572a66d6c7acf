//! RFC 6749 §5.2 error answers and the strict form-body reader shared by `/token` and
//! `/introspect`: parameters at most once, values decoded, bodies bounded.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;

/// The largest accepted form body.
pub const MAX_BODY: usize = 16 * 1024;

/// RFC 6749 §5.2 (and RFC 8707 §2 `invalid_target`) error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Missing, duplicated or malformed parameter, or not a form body.
    InvalidRequest,
    /// No client certificate, or one that names no registered client (401).
    InvalidClient,
    /// The client is registered but may not obtain tokens.
    UnauthorizedClient,
    /// `grant_type` other than `client_credentials`.
    UnsupportedGrantType,
    /// A requested scope the client may not get for that audience.
    InvalidScope,
    /// An audience/resource the client may not get tokens for.
    InvalidTarget,
    /// RFC 9449 §5: the `DPoP` proof is missing a check, invalid, replayed, or sent twice.
    InvalidDpopProof,
    /// The caller is authenticated but not allowed here (admin API, feed): 403.
    AccessDenied,
    /// Something broke on our side; the detail is logged, never echoed.
    ServerError,
    /// RFC 6749 §4.1.2.1: the store is out of reach for now (a replica cut from its
    /// database); 503, try another replica or later.
    TemporarilyUnavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::AccessDenied => "access_denied",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }
}

/// An OAuth error answer: status, code and a fixed human-readable description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub description: &'static str,
    /// A stable detail for the request log only (e.g. which DPoP check failed).
    pub detail: Option<&'static str>,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: &'static str) -> Self {
        let status = match code {
            ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            ErrorCode::AccessDenied => StatusCode::FORBIDDEN,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self {
            status,
            code,
            description,
            detail: None,
        }
    }

    /// The same error with a detail for the log (never sent to the client).
    pub fn with_detail(self, detail: &'static str) -> Self {
        Self {
            detail: Some(detail),
            ..self
        }
    }

    pub fn too_large() -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: ErrorCode::InvalidRequest,
            description: "request body larger than 16 KiB",
            detail: None,
        }
    }
}

/// Marker left in response extensions so the request log can name the error.
#[derive(Debug, Clone, Copy)]
pub struct LoggedError(pub &'static str);

/// Marker left in response extensions so the request log can say why (never sent).
#[derive(Debug, Clone, Copy)]
pub struct LoggedDetail(pub &'static str);

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": self.code.as_str(),
            "error_description": self.description,
        });
        let mut resp = (self.status, no_store(), Json(body)).into_response();
        resp.extensions_mut()
            .insert(LoggedError(self.code.as_str()));
        if let Some(detail) = self.detail {
            resp.extensions_mut().insert(LoggedDetail(detail));
        }
        resp
    }
}

/// `Cache-Control: no-store` (RFC 6749 §5.1) for token and error answers.
pub fn no_store() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h
}

/// A decoded `application/x-www-form-urlencoded` body in which each name occurs at most once.
#[derive(Debug, Default)]
pub struct Form {
    fields: HashMap<String, String>,
}

impl Form {
    /// Decodes `body`, refusing non-UTF-8 and any parameter sent twice (RFC 6749 §3.2).
    /// Parameters with an empty value count as absent (RFC 6749 §3.1).
    pub fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        if std::str::from_utf8(body).is_err() {
            return Err(OAuthError::new(
                ErrorCode::InvalidRequest,
                "body is not UTF-8",
            ));
        }
        let mut fields = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for (name, value) in form_urlencoded::parse(body) {
            // A percent-encoded invalid UTF-8 sequence decodes to U+FFFD: refuse it.
            if name.contains('\u{FFFD}') || value.contains('\u{FFFD}') {
                return Err(OAuthError::new(
                    ErrorCode::InvalidRequest,
                    "parameter is not valid UTF-8",
                ));
            }
            if !seen.insert(name.to_string()) {
                return Err(OAuthError::new(
                    ErrorCode::InvalidRequest,
                    "a parameter is included more than once",
                ));
            }
            if !value.is_empty() {
                fields.insert(name.into_owned(), value.into_owned());
            }
        }
        Ok(Self { fields })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// Whether the request declares a form body (`application/x-www-form-urlencoded`, any params).
pub fn is_form_content_type(headers: &HeaderMap) -> bool {
    is_content_type(headers, "application/x-www-form-urlencoded")
}

/// Whether the `Content-Type` names `mime` (parameters such as `charset` ignored).
pub fn is_content_type(headers: &HeaderMap, mime: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|found| found.trim().eq_ignore_ascii_case(mime))
}

/// A generic `server_error` answer; what broke goes to the log only.
pub fn internal(what: &str, err: &dyn std::fmt::Display) -> OAuthError {
    // The target stays the one this line always had, so log filters keep matching it.
    tracing::error!(target: "certbind_authz::app", error = %err, "{what}");
    OAuthError::new(ErrorCode::ServerError, "internal error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_form_and_treats_empty_values_as_absent() {
        let f = Form::parse(b"grant_type=client_credentials&scope=orders%3Aread+x&empty=").unwrap();
        assert_eq!(f.get("grant_type"), Some("client_credentials"));
        assert_eq!(f.get("scope"), Some("orders:read x"));
        assert_eq!(f.get("empty"), None);
        assert_eq!(f.get("missing"), None);
    }

    #[test]
    fn refuses_duplicated_parameters_even_when_one_is_empty() {
        for body in [&b"a=1&a=1"[..], b"a=1&a=", b"a=&a=2", b"a=1&%61=2"] {
            let err = Form::parse(body).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest);
        }
    }

    #[test]
    fn refuses_bodies_that_are_not_utf8() {
        assert!(Form::parse(b"a=\xff").is_err());
        assert!(Form::parse(b"a=%ff").is_err());
    }

    #[test]
    fn recognises_form_content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_form_content_type(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=UTF-8"),
        );
        assert!(is_form_content_type(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(!is_form_content_type(&h));
    }

    #[test]
    fn error_statuses_follow_rfc6749() {
        assert_eq!(
            OAuthError::new(ErrorCode::InvalidClient, "x").status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            OAuthError::new(ErrorCode::InvalidScope, "x").status,
            StatusCode::BAD_REQUEST
        );
        let dpop = OAuthError::new(ErrorCode::InvalidDpopProof, "x");
        assert_eq!(dpop.status, StatusCode::BAD_REQUEST);
        assert_eq!(dpop.code.as_str(), "invalid_dpop_proof");
        assert_eq!(
            OAuthError::too_large().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
