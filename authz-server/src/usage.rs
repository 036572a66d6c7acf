//! Usage-bound tokens (issue 22): who may ask for one at `/token` (`max_uses=N`, bounded per
//! client in `clients.yaml`), the durable counter every sidecar shares, and the endpoint only
//! sidecar identities may call to spend one use: `POST /v1/usage/consume` with
//! `{"jti": "..."}`, answered `200 {"outcome": "consumed", "remaining": n}`,
//! `{"outcome": "exhausted"}` or `{"outcome": "unknown"}`.

use crate::clients::Client;
use crate::grant::Grant;
use crate::oauth::{ErrorCode, Form, LoggedDetail, MAX_BODY, OAuthError, no_store};
use crate::store::{Store, StoreError, UsageStore, UseOutcome};
use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use certbind_core::binding::SpiffeId;
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

/// The form parameter of `/token` that asks for a usage-bound token.
pub const MAX_USES_PARAM: &str = "max_uses";

/// The number of uses a `/token` request asks for: `None` without `max_uses`; else a decimal
/// in 1..=the client's `usage_bound.max_uses`, for a client allowed to ask, with every granted
/// scope among its `usage_bound.scopes` (RFC 6749 §5.2 codes otherwise).
pub fn requested_uses(
    client: &Client,
    grant: &Grant,
    form: &Form,
) -> Result<Option<u32>, OAuthError> {
    let Some(raw) = form.get(MAX_USES_PARAM) else {
        return Ok(None);
    };
    let Some(bound) = &client.usage_bound else {
        return Err(OAuthError::new(
            ErrorCode::InvalidRequest,
            "this client may not request usage-bound tokens",
        )
        .with_detail("usage_not_allowed"));
    };
    let n = (raw.len() <= 7 && raw.bytes().all(|b| b.is_ascii_digit()))
        .then(|| raw.parse::<u32>().ok())
        .flatten()
        .filter(|n| (1..=bound.max_uses).contains(n))
        .ok_or_else(|| {
            OAuthError::new(
                ErrorCode::InvalidRequest,
                "max_uses must be a decimal within the client's bound",
            )
            .with_detail("max_uses_out_of_bounds")
        })?;
    if grant
        .scope
        .split(' ')
        .any(|s| !bound.scopes.iter().any(|b| b == s))
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidScope,
            "a granted scope is not allowed in a usage-bound token",
        ));
    }
    Ok(Some(n))
}

/// The shared counter: its own connection to the revocation store's SQLite file.
#[derive(Debug)]
pub struct UsageCounter {
    store: Mutex<Box<dyn UsageStore>>,
}

impl UsageCounter {
    /// Opens (creating if needed) the counter in `<state_dir>/revocations.db`.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let store = Store::open(state_dir)?;
        store.prepare_usage()?;
        Ok(Self::on(Box::new(store)))
    }

    /// The counter on another store (the replicas' PostgreSQL).
    pub fn on(store: Box<dyn UsageStore>) -> Self {
        Self {
            store: Mutex::new(store),
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Box<dyn UsageStore>> {
        // A panic cannot happen while the lock is held; a poisoned store is still consistent
        // (SQLite rolled back anything unfinished).
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a token's uses (and forgets tokens expired by `now`). Blocking.
    pub fn register(&self, jti: &str, max_uses: u32, exp: u64, now: u64) -> Result<(), StoreError> {
        let mut store = self.store();
        store.compact_uses(now)?;
        store.register_uses(jti, max_uses, exp)
    }

    /// Spends one use of `jti`. Blocking.
    pub fn consume(&self, jti: &str) -> Result<UseOutcome, StoreError> {
        self.store().consume_use(jti)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumeBody {
    jti: String,
}

/// A failure on our side: logged, answered as a generic `server_error`.
fn failed(what: &str, err: &dyn std::fmt::Display) -> OAuthError {
    tracing::error!(error = %err, "{what}");
    OAuthError::new(ErrorCode::ServerError, "internal error")
}

/// `POST /v1/usage/consume`: only the sidecar identities (`callers`, the feed's callers) may
/// spend uses. `peer` is the DER of the CA-verified client certificate.
pub async fn consume(
    counter: Option<Arc<UsageCounter>>,
    callers: &certbind_core::caller::CallerList,
    peer: Option<&[u8]>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, OAuthError> {
    let who = peer
        .and_then(|der| SpiffeId::from_cert_der(der).ok())
        .ok_or_else(|| {
            OAuthError::new(
                ErrorCode::InvalidClient,
                "a client certificate with a SPIFFE ID is required",
            )
        })?;
    if !callers.allows(&who) {
        return Err(OAuthError::new(
            ErrorCode::AccessDenied,
            "only a sidecar identity may consume token uses",
        ));
    }
    let Some(counter) = counter else {
        return Err(failed("usage counter", &"not configured"));
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("application/json"));
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) if is_json => c.to_bytes(),
        _ => {
            return Err(OAuthError::new(
                ErrorCode::InvalidRequest,
                "body must be application/json {\"jti\": \"...\"}",
            ));
        }
    };
    let jti = certbind_core::json::from_slice_strict::<ConsumeBody>(&bytes)
        .ok()
        .map(|b| b.jti)
        .filter(|j| certbind_core::revocation::valid_value(certbind_core::revocation::Kind::Jti, j))
        .ok_or_else(|| {
            OAuthError::new(
                ErrorCode::InvalidRequest,
                "body must be application/json {\"jti\": \"...\"}",
            )
        })?;
    let outcome = match tokio::task::spawn_blocking(move || counter.consume(&jti)).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(failed("usage counter failed", &e)),
        Err(e) => return Err(failed("usage counter task failed", &e)),
    };
    let (json, detail) = match outcome {
        UseOutcome::Consumed { remaining } => (
            serde_json::json!({"outcome": "consumed", "remaining": remaining}),
            "consumed",
        ),
        UseOutcome::Exhausted => (serde_json::json!({"outcome": "exhausted"}), "exhausted"),
        UseOutcome::Unknown => (serde_json::json!({"outcome": "unknown"}), "unknown"),
    };
    let mut resp = (no_store(), Json(json)).into_response();
    resp.extensions_mut().insert(LoggedDetail(detail));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::Registry;
    use certbind_core::binding::CertThumbprint;

    fn client(name: &str) -> Client {
        let reg = Registry::from_yaml(include_str!("../clients.yaml")).unwrap();
        let id = SpiffeId::parse(&format!("spiffe://certbind.test/ns/demo/sa/{name}")).unwrap();
        reg.by_spiffe_id(&id).unwrap().clone()
    }

    fn grant(scope: &str) -> Grant {
        Grant {
            client_id: "consumer".into(),
            subject: SpiffeId::parse("spiffe://certbind.test/ns/demo/sa/consumer").unwrap(),
            audience: "spiffe://certbind.test/ns/demo/sa/orders".into(),
            scope: scope.into(),
            thumbprint: CertThumbprint::from_der(b"cert"),
        }
    }

    fn form(body: &str) -> Form {
        Form::parse(body.as_bytes()).unwrap()
    }

    #[test]
    fn admits_max_uses_within_the_clients_bound_for_an_allowed_scope() {
        let c = client("consumer");
        let g = grant("orders:read");
        assert_eq!(requested_uses(&c, &g, &form("")).unwrap(), None);
        assert_eq!(
            requested_uses(&c, &g, &form("max_uses=1")).unwrap(),
            Some(1)
        );
        assert_eq!(
            requested_uses(&c, &g, &form("max_uses=100")).unwrap(),
            Some(100)
        );
    }

    #[test]
    fn refuses_max_uses_out_of_bounds_or_malformed() {
        let c = client("consumer");
        let g = grant("orders:read");
        for v in [
            "0",
            "101",
            "-1",
            "+5",
            "1.0",
            "0x10",
            "99999999999",
            " 5",
            "5 ",
        ] {
            let body = format!("max_uses={}", v.replace(' ', "+"));
            let err = requested_uses(&c, &g, &form(&body)).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest, "{v}");
        }
    }

    #[test]
    fn refuses_a_client_not_allowed_and_a_scope_not_allowed() {
        let err = requested_uses(
            &client("inventory"),
            &grant("orders:read"),
            &form("max_uses=2"),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        for scope in ["orders:write", "orders:read orders:write", "billing:read"] {
            let err = requested_uses(&client("consumer"), &grant(scope), &form("max_uses=2"))
                .unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidScope, "{scope}");
        }
    }
}
