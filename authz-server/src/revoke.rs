//! The revocation endpoints: `POST /revoke` (RFC 7009, a client revokes its own token),
//! `POST /v1/admin/revocations` (operators revoke a jti, subject or certificate) and the
//! sidecars' long-poll feed `GET /v1/revocations?since=<seq>`.
//!
//! Feed answer (`certbind_core::revocation::FeedAnswer`, the filter parses the same type):
//! `{"seq": <latest>, "snapshot": bool, "revocations": [{"seq", "kind", "value",
//! "not_before_iat"?, "expires_at"}]}`. Without a query (a sidecar's first poll): a snapshot
//! at once. With `since=<n>`: at once when there is news above `n` — a snapshot when `n` is
//! 0 and there are entries, `n` is behind the compaction point, or ahead of the server — else
//! after the long-poll wait (`--feed-wait`, 25 s) an empty delta `{"seq": n, "snapshot":
//! false, "revocations": []}`.

use crate::body::{read_form, read_json_bytes};
use crate::oauth::{ErrorCode, LoggedDetail, OAuthError, internal, no_store};
use crate::revocation::Request;
use crate::state::{AppState, PeerCertificate, current_keys};
use crate::store::Row;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use certbind_core::binding::SpiffeId;
use certbind_core::revocation::Kind;
use certbind_core::token::verify_issued;
use serde::Deserialize;

/// The caller's SPIFFE ID from its (CA-verified) certificate, or `invalid_client`.
fn caller(peer: Option<&Extension<PeerCertificate>>) -> Result<SpiffeId, OAuthError> {
    peer.and_then(|Extension(p)| SpiffeId::from_cert_der(&p.0).ok())
        .ok_or_else(|| {
            OAuthError::new(
                ErrorCode::InvalidClient,
                "a client certificate with a SPIFFE ID is required",
            )
        })
}

/// Runs a blocking store operation off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, OAuthError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if e.is_unavailable() => {
            tracing::error!(error = %e, "revocation store unreachable");
            Err(unavailable())
        }
        Ok(Err(e)) => Err(internal("revocation store failed", &e)),
        Err(e) => Err(internal("revocation store task failed", &e)),
    }
}

/// 503 `temporarily_unavailable`: this replica cannot reach its shared store.
pub(crate) fn unavailable() -> OAuthError {
    OAuthError::new(
        ErrorCode::TemporarilyUnavailable,
        "the revocation store is unreachable from this server",
    )
    .with_detail("store_unavailable")
}

fn with_detail(mut resp: Response, detail: &'static str) -> Response {
    resp.extensions_mut().insert(LoggedDetail(detail));
    resp
}

/// RFC 7009 §2: the client authenticates with its certificate and names a token. A token we
/// issued to this client is revoked by `jti` until its `exp` (+ margin). Anything else —
/// unknown, invalid, expired, or another client's token — is answered `200` with no effect:
/// RFC 7009 §2.2 for invalid tokens, and for another client's token a refusal would tell a
/// thief that the stolen token is live (the outcome goes to the log as `detail`).
pub async fn revoke_endpoint(
    State(state): State<AppState>,
    peer: Option<Extension<PeerCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, OAuthError> {
    let cert = peer.as_ref().map(|Extension(p)| p.0.as_slice());
    let client = crate::grant::authenticate(&state.registry, cert)?;
    let form = read_form(&headers, body).await?;
    let Some(presented) = form.get("token") else {
        return Err(OAuthError::new(
            ErrorCode::InvalidRequest,
            "token is required",
        ));
    };
    let ok = || (no_store(), Json(serde_json::json!({}))).into_response();
    let keys = current_keys(&state)?;
    let now = (state.clock)();
    let Some(claims) =
        verify_issued(presented, |kid| keys.verifying_key(kid), &state.issuer, now).ok()
    else {
        return Ok(with_detail(ok(), "unknown_token"));
    };
    if claims.client_id != client.client_id {
        return Ok(with_detail(ok(), "not_owner"));
    }
    // Our own token names a valid subject; anything else is not a token we can revoke.
    let Ok(subject) = SpiffeId::parse(&claims.sub) else {
        return Ok(with_detail(ok(), "unknown_token"));
    };
    let revs = state.revocations.clone();
    // Past the client's quota the token is still revoked, by its coalesced subject row
    // (crate::quota), so the answer is the same 200 either way.
    let (outcome, row) = blocking(move || {
        let t = crate::quota::Revoked {
            client_id: &claims.client_id,
            subject: &subject,
            jti: &claims.jti,
            iat: claims.iat,
            exp: claims.exp,
        };
        revs.client_revoke(&t, now)
    })
    .await?;
    let mut resp = with_detail(ok(), outcome.detail());
    if let Some(row) = row {
        resp.extensions_mut().insert(Recorded(row.seq));
    }
    Ok(resp)
}

/// The `seq` a request recorded, for the request log.
#[derive(Debug, Clone, Copy)]
pub struct Recorded(pub u64);

/// The admin API body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminBody {
    kind: String,
    value: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    expires_at: Option<u64>,
    #[serde(default)]
    lift: bool,
}

/// How a recorded row is shown to operators (admin API and CLI).
pub fn row_json(row: &Row) -> serde_json::Value {
    serde_json::json!({
        "seq": row.seq,
        "kind": row.entry.kind.as_str(),
        "value": row.entry.value,
        "reason": row.entry.reason,
        "revoked_at": row.entry.revoked_at,
        "not_before_iat": row.entry.not_before_iat,
        "expires_at": row.entry.expires_at,
        "banned": row.entry.banned,
    })
}

async fn read_json(headers: &HeaderMap, body: Body) -> Result<AdminBody, OAuthError> {
    let bytes = read_json_bytes(headers, body).await?;
    certbind_core::json::from_slice_strict(&bytes).map_err(|_| {
        OAuthError::new(
            ErrorCode::InvalidRequest,
            "body must be {\"kind\",\"value\",\"reason\"?,\"expires_at\"?,\"lift\"?}",
        )
    })
}

/// `POST /v1/admin/revocations`: only an operator identity (`--operators`).
pub async fn admin_endpoint(
    State(state): State<AppState>,
    peer: Option<Extension<PeerCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, OAuthError> {
    let who = caller(peer.as_ref())?;
    if !state.operators.contains(&who) {
        return Err(OAuthError::new(
            ErrorCode::AccessDenied,
            "only an operator identity may revoke",
        ));
    }
    let b = read_json(&headers, body).await?;
    let Some(kind) = Kind::parse(&b.kind) else {
        return Err(OAuthError::new(
            ErrorCode::InvalidRequest,
            "kind must be jti, subject or cert",
        ));
    };
    let req = Request {
        kind,
        value: b.value,
        reason: b.reason,
        expires_at: b.expires_at,
        lift: b.lift,
    };
    let now = (state.clock)();
    let revs = state.revocations.clone();
    let row = blocking(move || revs.apply_request(&req, now))
        .await?
        .map_err(|e| OAuthError::new(ErrorCode::InvalidRequest, e.0))?;
    tracing::info!(
        operator = %who,
        seq = row.seq,
        kind = row.entry.kind.as_str(),
        value = %row.entry.value,
        reason = %row.entry.reason,
        banned = row.entry.banned,
        "revocation recorded"
    );
    let mut resp = (no_store(), Json(row_json(&row))).into_response();
    resp.extensions_mut().insert(Recorded(row.seq));
    Ok(resp)
}

/// `POST /v1/posture`: a host agent reports, with its workload's certificate, facts about its
/// host; the posture rules decide. Violations ban the subject; a clean report never lifts a
/// ban (only an operator does). Answer: `{"compliant": bool, "violations": [...], "banned": bool}`.
pub async fn posture_endpoint(
    State(state): State<AppState>,
    peer: Option<Extension<PeerCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, OAuthError> {
    let cert = peer.as_ref().map(|Extension(p)| p.0.as_slice());
    let client = crate::grant::authenticate(&state.registry, cert)?;
    let subject = client.spiffe_id.clone();
    let Some(policy) = state.posture.clone() else {
        let mut resp =
            OAuthError::new(ErrorCode::InvalidRequest, "posture is not configured").into_response();
        *resp.status_mut() = axum::http::StatusCode::NOT_FOUND;
        return Ok(resp);
    };
    let bytes = read_json_bytes(&headers, body).await?;
    let report: crate::posture::Report = certbind_core::json::from_slice_strict(&bytes)
        .ok()
        .filter(|r: &crate::posture::Report| {
            r.blocked_processes.len() <= crate::posture::MAX_PROCESSES
                && r.blocked_processes.iter().all(|p| p.len() <= 256)
        })
        .ok_or_else(|| {
            OAuthError::new(
                ErrorCode::InvalidRequest,
                "body must be {\"firewall\",\"blocked_processes\",\"os_patch_age_days\"}",
            )
        })?;
    let now = (state.clock)();
    state.posture_reports.record(&subject, now);
    if state.revocations.is_shared() {
        // Replicas share reports: a subject reporting here is not overdue at the others.
        let (revs, who) = (state.revocations.clone(), subject.clone());
        blocking(move || revs.record_posture_report(&who, now)).await?;
    }
    let violations = crate::posture::violations(&policy.rules, &report);
    let revs = state.revocations.clone();
    let (who, found) = (subject.clone(), violations.clone());
    let banned = blocking(move || revs.posture_verdict(&who, &found, now)).await?;
    tracing::info!(
        subject = %subject,
        compliant = violations.is_empty(),
        violations = %violations.join(","),
        banned,
        "posture report"
    );
    let answer = serde_json::json!({
        "compliant": violations.is_empty(),
        "violations": violations,
        "banned": banned,
    });
    Ok((no_store(), Json(answer)).into_response())
}

/// Bans required subjects whose posture reports stopped; runs until aborted.
pub fn spawn_posture_watchdog(state: AppState) -> Option<tokio::task::JoinHandle<()>> {
    let policy = state.posture.clone()?;
    policy.report_interval_s?;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = (state.clock)();
            if state.revocations.is_shared() {
                // Reports made at other replicas count; without them no subject is overdue.
                let revs = state.revocations.clone();
                match blocking(move || revs.posture_reports()).await {
                    Ok(reports) => {
                        for (subject, at) in reports {
                            if let Ok(id) = SpiffeId::parse(&subject) {
                                state.posture_reports.merge(&id, at);
                            }
                        }
                    }
                    Err(_) => continue,
                }
            }
            for subject in state.posture_reports.overdue(&policy, now) {
                let revs = state.revocations.clone();
                let who = subject.clone();
                match blocking(move || revs.posture_verdict(&who, &["no_report"], now)).await {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(subject = %subject, error = ?e.description, "posture watchdog failed")
                    }
                }
            }
        }
    }))
}

/// The `since` of a feed query: no query at all (`None`, a first poll), or exactly one
/// parameter `since`, a decimal `u64`. Anything else is `Err`.
fn parse_since(uri: &Uri) -> Result<Option<u64>, ()> {
    let Some(query) = uri.query() else {
        return Ok(None);
    };
    let mut pairs = form_urlencoded::parse(query.as_bytes());
    let (name, value) = pairs.next().ok_or(())?;
    if name != "since" || pairs.next().is_some() {
        return Err(());
    }
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    value.parse().map(Some).map_err(|_| ())
}

/// `GET /v1/health`: `200 {"status":"ok"}` while this server answers as current, else `503
/// {"status":"store_unavailable"}` (Envoy's active health check takes it out of the cluster).
pub async fn health_endpoint(State(state): State<AppState>) -> Response {
    if state.revocations.is_current() {
        (no_store(), Json(serde_json::json!({"status": "ok"}))).into_response()
    } else {
        let mut resp = (
            no_store(),
            Json(serde_json::json!({"status": "store_unavailable"})),
        )
            .into_response();
        *resp.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
        resp
    }
}

/// `GET /v1/revocations?since=<seq>`: the long-poll feed for sidecar identities.
pub async fn feed_endpoint(
    State(state): State<AppState>,
    peer: Option<Extension<PeerCertificate>>,
    uri: Uri,
) -> Result<Response, OAuthError> {
    let who = caller(peer.as_ref())?;
    if !state.feed_callers.allows(&who) {
        return Err(OAuthError::new(
            ErrorCode::AccessDenied,
            "only a sidecar identity may follow the revocation feed",
        ));
    }
    let since = parse_since(&uri).map_err(|()| {
        OAuthError::new(
            ErrorCode::InvalidRequest,
            "the query must be empty or exactly since=<decimal sequence number>",
        )
    })?;
    let revs = &state.revocations;
    // Cut from a shared store, the mirror may be stale: never serve it as current (the
    // sidecar's staleness bound takes over, and Envoy's health check moves it elsewhere).
    if !revs.is_current() {
        return Err(unavailable());
    }
    if revs.lags_behind(since) {
        let (r, now) = (revs.clone(), (state.clock)());
        blocking(move || r.refresh(now)).await?;
    }
    // Subscribe before looking, so a revocation between the look and the wait still wakes us.
    let mut rx = revs.subscribe();
    let deadline = tokio::time::Instant::now() + state.feed_wait;
    let body = loop {
        if let Some(body) = revs.answer_body(since, (state.clock)()) {
            break body;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            // Timed out, or the service is shutting down: nothing new (if still current).
            Ok(Err(_)) | Err(_) => {
                if !revs.is_current() {
                    return Err(unavailable());
                }
                let json = serde_json::to_vec(&revs.nothing_new())
                    .map_err(|e| internal("cannot serialize the feed answer", &e))?;
                break crate::revocation::FeedBody {
                    json: json.into(),
                    snapshot: false,
                    entries: 0,
                };
            }
        }
    };
    let detail = match (body.snapshot, body.entries) {
        (true, _) => "snapshot",
        (false, 0) => "nothing_new",
        (false, _) => "delta",
    };
    let mut headers = no_store();
    headers.insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Ok(with_detail((headers, body.json).into_response(), detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feed_query_is_exactly_one_decimal_since() {
        let since = |q: &str| parse_since(&q.parse::<Uri>().unwrap());
        assert_eq!(since("/v1/revocations"), Ok(None));
        assert_eq!(since("/v1/revocations?since=0"), Ok(Some(0)));
        assert_eq!(since("/v1/revocations?since=42"), Ok(Some(42)));
        for bad in [
            "/v1/revocations?",
            "/v1/revocations?since=",
            "/v1/revocations?since=-1",
            "/v1/revocations?since=1e3",
            "/v1/revocations?since=1&since=2",
            "/v1/revocations?since=1&x=2",
            "/v1/revocations?from=1",
            "/v1/revocations?since=99999999999999999999999",
        ] {
            assert_eq!(since(bad), Err(()), "{bad}");
        }
    }
}
