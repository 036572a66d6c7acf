//! The HTTP application: routes, the token, introspection, JWKS and metadata handlers, and the
//! per-request log line (the revocation endpoints are in `revoke`). Transport-agnostic:
//! the TLS layer puts the verified client certificate into the request as [`PeerCertificate`],
//! so tests drive `app(state)` without sockets.

use crate::body::read_form;
use crate::dpop_jtis::Refusal;
use crate::grant;
use crate::oauth::{ErrorCode, LoggedDetail, LoggedError, OAuthError, internal, no_store};
use crate::revoke::{self, Recorded};
use crate::state::current_keys;
use crate::token::{self, Claims};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use certbind_core::binding::{CertThumbprint, SpiffeId};
use certbind_core::dpop::{self, ProofCheck};
use certbind_core::revocation::Presented;
use certbind_core::token::verify_issued;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

// The state and the clock live in their own modules (so `revoke` need not name this one);
// their old paths under `app` stay valid.
pub use crate::clock::{Clock, system_clock};
pub use crate::state::{
    AppState, DEFAULT_FEED_CALLER, DEFAULT_FEED_WAIT, DEFAULT_OPERATOR, DPOP_CLOCK_SKEW_S,
    DPOP_MAX_AGE_S, PeerCertificate,
};

/// The router with every endpoint and the request log.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/token", post(token_endpoint))
        .route("/introspect", post(introspect_endpoint))
        .route("/revoke", post(revoke::revoke_endpoint))
        .route("/v1/admin/revocations", post(revoke::admin_endpoint))
        .route("/v1/revocations", get(revoke::feed_endpoint))
        .route("/v1/posture", post(revoke::posture_endpoint))
        .route("/v1/health", get(revoke::health_endpoint))
        .route("/v1/usage/consume", post(usage_endpoint))
        .route("/.well-known/jwks.json", get(jwks_endpoint))
        .route(
            "/.well-known/oauth-authorization-server",
            get(metadata_endpoint),
        )
        .with_state(state)
        .layer(middleware::from_fn(log_request))
}

async fn token_endpoint(
    State(state): State<AppState>,
    peer: Option<Extension<PeerCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, OAuthError> {
    let cert = peer.as_ref().map(|Extension(p)| p.0.as_slice());
    // Authenticate before reading the body: an anonymous caller learns nothing else.
    let client_id = grant::authenticate(&state.registry, cert)?
        .client_id
        .clone();
    // The proof is checked (and its `jti` spent) before the body is read.
    let dpop_jkt = dpop_proof_key(&state, &client_id, &headers)?;
    // A replica cut from its shared store cannot see bans or record the proof's jti: no token.
    if !state.revocations.is_current() {
        return Err(revoke::unavailable());
    }
    if let (Some((_, jti, until)), true) = (&dpop_jkt, state.revocations.is_shared()) {
        spend_shared_jti(&state, jti.clone(), *until).await?;
    }
    let dpop_jkt = dpop_jkt.map(|(jkt, _, _)| jkt);
    let form = read_form(&headers, body).await?;
    let grant = grant::decide(&state.registry, cert, &form)?;
    let client = grant::authenticate(&state.registry, cert)?;
    let max_uses = crate::usage::requested_uses(client, &grant, &form)?;
    // A banned subject or a revoked certificate gets no new token (checked after the grant,
    // so the answer for an unregistered client stays the same).
    if let Some(kind) =
        state
            .revocations
            .refuses_issuance(&grant.subject, &grant.thumbprint, (state.clock)())
    {
        let detail = match kind {
            certbind_core::revocation::Kind::Cert => "revoked_cert",
            _ => "revoked_subject",
        };
        return Err(OAuthError::new(
            ErrorCode::InvalidClient,
            "the client's credentials are revoked",
        )
        .with_detail(detail));
    }
    let keys = current_keys(&state)?;
    let key = keys
        .active()
        .ok_or_else(|| internal("no signing key", &"key directory is empty"))?;
    let jti = token::new_jti().map_err(|e| internal("no randomness for jti", &e))?;
    let mut claims =
        token::claims_for(&grant, &state.issuer, (state.clock)(), state.token_ttl, jti);
    if let Some(jkt) = &dpop_jkt {
        claims = claims.bound_to_dpop_key(jkt);
    }
    if let Some(n) = max_uses {
        // The count is on disk before the token exists, so no sidecar can meet an unknown jti.
        let Some(counter) = state.usage.clone() else {
            return Err(internal("usage counter", &"not configured"));
        };
        let (jti, exp, now) = (claims.jti.clone(), claims.exp, (state.clock)());
        match tokio::task::spawn_blocking(move || counter.register(&jti, n, exp, now)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(internal("usage counter failed", &e)),
            Err(e) => return Err(internal("usage counter task failed", &e)),
        }
        claims.max_uses = Some(n);
    }
    let access_token =
        token::encode(&claims, key).map_err(|e| internal("cannot encode token", &e))?;
    let mut body = serde_json::json!({
        "access_token": access_token,
        "token_type": claims.token_type(),
        "expires_in": state.token_ttl,
        "scope": claims.scope,
    });
    if let Some(n) = claims.max_uses {
        body["max_uses"] = n.into();
    }
    let mut resp = (no_store(), Json(body)).into_response();
    resp.extensions_mut().insert(Issued {
        token_type: claims.token_type(),
        client_id: claims.client_id,
        aud: claims.aud,
        jti: claims.jti,
        kid: key.kid().to_owned(),
    });
    Ok(resp)
}

/// The replicas' shared DPoP `jti` set: a proof spent at another replica is a replay here too.
async fn spend_shared_jti(state: &AppState, jti: String, until: u64) -> Result<(), OAuthError> {
    let revs = Arc::clone(&state.revocations);
    let now = (state.clock)();
    match tokio::task::spawn_blocking(move || revs.spend_dpop_jti(&jti, until, now)).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(OAuthError::new(
            ErrorCode::InvalidDpopProof,
            "the DPoP proof was already used",
        )
        .with_detail(dpop::DpopError::Replayed.as_str())),
        Ok(Err(e)) if e.is_unavailable() => {
            tracing::error!(error = %e, "DPoP jti set unreachable");
            Err(revoke::unavailable())
        }
        Ok(Err(e)) => Err(internal("DPoP jti set failed", &e)),
        Err(e) => Err(internal("DPoP jti task failed", &e)),
    }
}

/// `POST /v1/usage/consume` (see [`crate::usage::consume`]).
async fn usage_endpoint(
    State(state): State<AppState>,
    peer: Option<Extension<PeerCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, OAuthError> {
    let peer = peer.as_ref().map(|Extension(p)| p.0.as_slice());
    crate::usage::consume(
        state.usage.clone(),
        &state.feed_callers,
        peer,
        &headers,
        body,
    )
    .await
}

/// RFC 9449 §5: with no `DPoP` header, `None` (the token is bound to the client certificate);
/// with exactly one, the proof is checked — `htm` POST, `htu` this endpoint, `iat` in the
/// window, `jti` never seen — and its key's `jkt` returned. Anything else is
/// `invalid_dpop_proof`; which check failed goes to the log only.
/// Also returns the proof's `jti` and until when it must be remembered.
fn dpop_proof_key(
    state: &AppState,
    client_id: &str,
    headers: &HeaderMap,
) -> Result<Option<(String, String, u64)>, OAuthError> {
    let refused = |description: &'static str, detail: &'static str| {
        OAuthError::new(ErrorCode::InvalidDpopProof, description).with_detail(detail)
    };
    let mut proofs = headers.get_all("dpop").iter();
    let Some(proof) = proofs.next() else {
        return Ok(None);
    };
    if proofs.next().is_some() {
        return Err(refused(
            "exactly one DPoP header is allowed",
            "two_dpop_headers",
        ));
    }
    let invalid = |e: dpop::DpopError| match e {
        dpop::DpopError::Replayed => refused("the DPoP proof was already used", e.as_str()),
        _ => refused("the DPoP proof is invalid", e.as_str()),
    };
    let proof = proof
        .to_str()
        .map_err(|_| invalid(dpop::DpopError::Malformed))?;
    let now = (state.clock)();
    let htu = state.token_endpoint();
    let check = ProofCheck {
        method: "POST",
        htu: &htu,
        now_s: now,
        window: state.dpop_window,
        ath: None,
        jkt: None,
        nonces: &[],
    };
    let verified = dpop::verify_proof(proof, &check).map_err(invalid)?;
    // A panic cannot happen while the lock is held; a poisoned set is still the best record.
    let recorded = state
        .dpop_replay
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .check_and_record(client_id, verified.jti(), verified.replay_until_s(), now);
    match recorded {
        Ok(()) => {}
        Err(Refusal::Replayed) => return Err(invalid(dpop::DpopError::Replayed)),
        Err(Refusal::TooOld) => return Err(invalid(dpop::DpopError::TooOld)),
        // This client's own share is full: say so, never "replayed" for an unseen proof.
        Err(Refusal::ClientShareFull) => {
            return Err(OAuthError {
                status: axum::http::StatusCode::TOO_MANY_REQUESTS,
                ..OAuthError::new(
                    ErrorCode::InvalidRequest,
                    "too many DPoP proofs from this client within the proof window; retry later",
                )
                .with_detail("client_proof_share_full")
            });
        }
    }
    Ok(Some((
        verified.jkt().to_owned(),
        verified.jti().to_owned(),
        verified.replay_until_s(),
    )))
}

/// What the request log says about an issued token (identifiers only, never the token).
#[derive(Debug, Clone)]
struct Issued {
    token_type: &'static str,
    client_id: String,
    aud: String,
    jti: String,
    kid: String,
}

async fn introspect_endpoint(
    State(state): State<AppState>,
    peer: Option<Extension<PeerCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, OAuthError> {
    // RFC 7662 §2.1: the caller must be authenticated; any workload of our CA may ask.
    let Some(caller) = peer
        .as_ref()
        .and_then(|Extension(p)| SpiffeId::from_cert_der(&p.0).ok())
    else {
        return Err(OAuthError::new(
            ErrorCode::InvalidClient,
            "a client certificate with a SPIFFE ID is required",
        ));
    };
    let form = read_form(&headers, body).await?;
    let Some(token) = form.get("token") else {
        return Err(OAuthError::new(
            ErrorCode::InvalidRequest,
            "token is required",
        ));
    };
    let keys = current_keys(&state)?;
    let now = (state.clock)();
    let verified = verify_issued(token, |kid| keys.verifying_key(kid), &state.issuer, now);
    let answer = match verified.ok() {
        Some(claims) if !entitled(&state, &caller, &claims) => {
            // RFC 7662 §4: a stranger learns nothing, not even that the token is live.
            let mut resp =
                (no_store(), Json(serde_json::json!({ "active": false }))).into_response();
            resp.extensions_mut().insert(LoggedDetail("not_entitled"));
            return Ok(resp);
        }
        Some(claims) if !revoked(&state, &claims, now) => active_answer(&claims),
        _ => serde_json::json!({ "active": false }),
    };
    Ok((no_store(), Json(answer)).into_response())
}

/// RFC 7662 §4: who may learn that a token is live and what it carries — the service it is
/// for (`aud`), the client it was issued to (`sub`), or a sidecar identity (the feed callers,
/// which enforce tokens for every audience).
fn entitled(state: &AppState, caller: &SpiffeId, c: &Claims) -> bool {
    caller.as_str() == c.aud || caller.as_str() == c.sub || state.feed_callers.allows(caller)
}

/// Whether a token we issued is revoked, by the same check the filter runs.
fn revoked(state: &AppState, c: &Claims, now: u64) -> bool {
    let Ok(subject) = SpiffeId::parse(&c.sub) else {
        return true;
    };
    let cert = match &c.cnf {
        token::Confirmation::Certificate(x) => CertThumbprint::from_cnf(&x.x5t_s256).ok(),
        token::Confirmation::DpopKey(_) => None,
    };
    // Every token we issue names the certificate it was issued over: refuse one that cannot.
    let Ok(issued_over) = CertThumbprint::from_cnf(&c.client_x5t_s256) else {
        return true;
    };
    let presented = Presented {
        jti: &c.jti,
        subject: &subject,
        iat: c.iat,
        cert: cert.as_ref(),
        issued_over: Some(&issued_over),
    };
    state.revocations.is_revoked(&presented, now).is_some()
}

fn active_answer(c: &Claims) -> serde_json::Value {
    let mut answer = serde_json::json!({
        "active": true,
        "scope": c.scope,
        "client_id": c.client_id,
        "sub": c.sub,
        "aud": c.aud,
        "iss": c.iss,
        "exp": c.exp,
        "iat": c.iat,
        "nbf": c.nbf,
        "jti": c.jti,
        "token_type": c.token_type(),
        "cnf": c.cnf,
    });
    if let Some(n) = c.max_uses {
        answer["max_uses"] = n.into();
    }
    answer
}

async fn jwks_endpoint(State(state): State<AppState>) -> Result<Response, OAuthError> {
    let keys = current_keys(&state)?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=60"),
    );
    Ok((headers, Json(keys.jwks())).into_response())
}

async fn metadata_endpoint(State(state): State<AppState>) -> Response {
    let iss = &state.issuer;
    let mut scopes: Vec<&str> = Vec::new();
    for s in state.registry.all_scopes() {
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    let body = serde_json::json!({
        "issuer": iss,
        "token_endpoint": format!("{iss}/token"),
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{iss}/introspect"),
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": [],
        "scopes_supported": scopes,
        "token_endpoint_auth_methods_supported": ["tls_client_auth"],
        "introspection_endpoint_auth_methods_supported": ["tls_client_auth"],
        "tls_client_certificate_bound_access_tokens": true,
        "access_token_signing_alg_values_supported": ["ES256"],
        "dpop_signing_alg_values_supported": ["ES256"],
    });
    (headers, Json(body)).into_response()
}

/// Request id: 64 random bits in hex, or a counter if randomness is unavailable.
fn request_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        bytes = COUNTER
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One structured line per request: id, method, path (never the query), caller, status,
/// OAuth error and its logged detail if any, what was issued, duration. Never a token, key or
/// certificate.
async fn log_request(req: Request, next: Next) -> Response {
    let id = request_id();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let caller = req
        .extensions()
        .get::<PeerCertificate>()
        .map(|p| match SpiffeId::from_cert_der(&p.0) {
            Ok(id) => id.to_string(),
            Err(_) => "<no spiffe id>".to_owned(),
        })
        .unwrap_or_else(|| "-".to_owned());
    let started = Instant::now();
    let mut resp = next.run(req).await;
    let error = resp.extensions().get::<LoggedError>().map_or("-", |e| e.0);
    let detail = resp.extensions().get::<LoggedDetail>().map_or("-", |d| d.0);
    let issued = resp.extensions().get::<Issued>();
    let recorded = resp.extensions().get::<Recorded>().map_or(0, |r| r.0);
    tracing::info!(
        request_id = %id,
        method = %method,
        path = %path,
        caller = %caller,
        status = resp.status().as_u16(),
        error = error,
        detail = detail,
        token_type = issued.map_or("-", |i| i.token_type),
        client_id = issued.map_or("-", |i| i.client_id.as_str()),
        aud = issued.map_or("-", |i| i.aud.as_str()),
        jti = issued.map_or("-", |i| i.jti.as_str()),
        kid = issued.map_or("-", |i| i.kid.as_str()),
        revocation_seq = recorded,
        micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}
