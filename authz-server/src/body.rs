//! Bounded request bodies: a form (`/token`, `/introspect`, `/revoke`) or a JSON document
//! (admin API, posture reports) of at most [`MAX_BODY`] bytes. A declared `Content-Length`
//! over the bound is refused before a byte is read; an undeclared or understated one is cut
//! off at the bound while reading.

use crate::oauth::{ErrorCode, Form, MAX_BODY, OAuthError, is_content_type, is_form_content_type};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};

/// Reads a form body of at most [`MAX_BODY`] bytes.
pub async fn read_form(headers: &HeaderMap, body: Body) -> Result<Form, OAuthError> {
    if declared_too_large(headers) {
        return Err(OAuthError::too_large());
    }
    if !is_form_content_type(headers) {
        return Err(OAuthError::new(
            ErrorCode::InvalidRequest,
            "body must be application/x-www-form-urlencoded",
        ));
    }
    Form::parse(&collect(body).await?)
}

/// An `application/json` body of at most [`MAX_BODY`] bytes.
pub async fn read_json_bytes(headers: &HeaderMap, body: Body) -> Result<Bytes, OAuthError> {
    if !is_content_type(headers, "application/json") {
        return Err(OAuthError::new(
            ErrorCode::InvalidRequest,
            "body must be application/json",
        ));
    }
    if declared_too_large(headers) {
        return Err(OAuthError::too_large());
    }
    collect(body).await
}

/// Whether the caller announced more than [`MAX_BODY`] bytes (refused unread).
fn declared_too_large(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_BODY as u64)
}

/// The body, read up to [`MAX_BODY`] bytes; more is `413`.
async fn collect(body: Body) -> Result<Bytes, OAuthError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(OAuthError::too_large()),
        Err(_) => Err(OAuthError::new(
            ErrorCode::InvalidRequest,
            "body could not be read",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn json_headers(length: usize) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        h
    }

    /// A body of `len` bytes that records whether anyone read it.
    fn watched_body(len: usize) -> (Body, Arc<AtomicBool>) {
        let read = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&read);
        let body = http_body_util::Full::new(Bytes::from(vec![b' '; len])).map_frame(move |f| {
            flag.store(true, Ordering::SeqCst);
            f
        });
        (Body::new(body), read)
    }

    #[tokio::test]
    async fn a_json_body_declared_too_large_is_refused_before_it_is_read() {
        let (body, read) = watched_body(MAX_BODY + 1);
        let err = read_json_bytes(&json_headers(MAX_BODY + 1), body)
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(!read.load(Ordering::SeqCst), "the body was read");
    }

    #[tokio::test]
    async fn a_json_body_of_exactly_the_bound_is_admitted() {
        let (body, read) = watched_body(MAX_BODY);
        let bytes = read_json_bytes(&json_headers(MAX_BODY), body)
            .await
            .unwrap();
        assert_eq!(bytes.len(), MAX_BODY);
        assert!(read.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn an_understated_json_body_is_still_cut_off_at_the_bound() {
        let (body, _) = watched_body(MAX_BODY + 1);
        let err = read_json_bytes(&json_headers(10), body).await.unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn a_form_body_declared_too_large_is_refused_before_it_is_read() {
        let (body, read) = watched_body(MAX_BODY + 1);
        let mut h = json_headers(MAX_BODY + 1);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let err = read_form(&h, body).await.unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(!read.load(Ordering::SeqCst), "the body was read");
    }
}
