//! The token step of a [`Flow`]: the presented token → the token cache → header and `kid` →
//! the key (waiting for the first JWKS, or one refetch for an unknown `kid`) → signature and
//! claims, remembering what verified.

use super::engine::{CachedToken, Engine};
use super::machine::{Flow, Progress, State};
use super::request::identity_headers;
use super::step::Step;
use crate::cache::{BytesKey, KeyBytes, same_bytes};
use crate::config::Binding;
use crate::es256::PreparedKey;
use crate::host_es256::HostKey;
use crate::jwks::{FetchKind, Lookup};
use crate::reason::Reason;
use crate::token::{
    AuthScheme, Expectations, UntrustedJws, VerifiedToken, decode_metadata, presented, token_text,
    verify_access_token,
};
use std::rc::Rc;

type TokenProgress = Progress<Rc<VerifiedToken>>;

impl Flow {
    /// Bearer → token cache → header → key → signature → claims.
    pub(super) fn verify_token(&mut self, engine: &mut Engine, now_ms: u64) -> TokenProgress {
        let presented = presented_token(engine.config.binding, &self.facts.authorization);
        let token = match presented {
            Ok((scheme, token)) => {
                self.scheme = Some(scheme);
                token
            }
            Err(reason) => return Progress::Failed(reason),
        };
        let cached = match &self.audience {
            Some(audience) => cached_token(engine, token, audience, now_ms),
            None => None,
        };
        if let Some(cached) = cached {
            self.trace.token_cache_hit = !self.verified_here;
            return match cached {
                Ok(cached) => {
                    self.identity = Some(cached.headers);
                    self.dpop_memo = Some(cached.dpop);
                    Progress::Done(cached.token)
                }
                Err(reason) => Progress::Failed(reason),
            };
        }
        // Not found: only now is the token's text checked (a cached token passed it).
        if let Err(reason) = token_text(token) {
            return Progress::Failed(reason);
        }
        let Some(audience) = self.audience.clone() else {
            return Progress::Failed(Reason::WrongAudience);
        };
        let jws = match decode_metadata(token) {
            Ok(jws) => jws,
            Err(reason) => return Progress::Failed(reason),
        };
        let kid = match jws.access_token_kid() {
            Ok(kid) => kid,
            Err(reason) => return Progress::Failed(reason),
        };
        let key = match key_for(engine, kid, &mut self.state, self.started_ms, now_ms) {
            Ok(key) => key,
            Err(progress) => return progress,
        };
        let verifying_key = *key.verifying_key();
        match verify_with(engine, jws, key, &audience, now_ms / 1000) {
            Ok(verified) => {
                let verified = Rc::new(verified);
                let until = verified.exp().saturating_mul(1000);
                let headers = identity_headers(verified.subject(), &verified);
                self.identity = Some(Rc::clone(&headers));
                let dpop = Rc::clone(self.dpop_memo.get_or_insert_with(Rc::default));
                let entry = CachedToken {
                    token: Rc::clone(&verified),
                    key: verifying_key,
                    audience,
                    headers,
                    dpop,
                };
                engine
                    .tokens
                    .insert(BytesKey::new(token.as_bytes()), entry, until, now_ms);
                self.verified_here = true;
                Progress::Done(verified)
            }
            Err(reason) => Progress::Failed(reason),
        }
    }
}

/// The token and its scheme: `Bearer` only on an mTLS listener, `Bearer` or `DPoP` on a DPoP
/// one (the DPoP check refuses a DPoP-bound token sent as `Bearer`). The token's text is
/// checked after the cache probe ([`token_text`]).
fn presented_token(
    binding: Binding,
    authorization: &Option<String>,
) -> Result<(AuthScheme, &str), Reason> {
    let authorization = authorization.as_deref().ok_or(Reason::MissingToken)?;
    presented(authorization, binding == Binding::Dpop)
}

/// The cached verification of `token`, with its time checked again now; `None` when there is
/// none usable (then it is verified afresh).
fn cached_token(
    engine: &mut Engine,
    token: &str,
    audience: &Rc<str>,
    now_ms: u64,
) -> Option<Result<CachedToken, Reason>> {
    let cached = engine
        .tokens
        .probe::<dyn KeyBytes, _>(&token, now_ms, CachedToken::clone)?;
    match engine.jwks.lookup(cached.token.kid(), now_ms) {
        Lookup::Found(key)
            if *key.verifying_key() == cached.key && same(&cached.audience, audience) =>
        {
            let checked = cached
                .token
                .check_time(now_ms / 1000, engine.expect.clock_skew_s);
            Some(checked.map(|()| cached))
        }
        Lookup::Stale => Some(Err(Reason::JwksUnavailable)),
        // The key was rotated away or replaced, or the token was verified for another
        // listener's audience: verify afresh.
        _ => {
            engine.tokens.remove::<dyn KeyBytes>(&token);
            None
        }
    }
}

/// Whether two shared texts are equal: the same allocation when both came from the listener's
/// configured audience (no bytes compared), else compared a word at a time.
fn same(a: &Rc<str>, b: &Rc<str>) -> bool {
    Rc::ptr_eq(a, b) || same_bytes(a.as_bytes(), b.as_bytes())
}

/// The key of `kid`, or what to do without it: wait for the first JWKS (until
/// `first_fetch_wait_ms` after the request started), ask once for a refetch of a set that
/// lacks `kid`, or refuse.
fn key_for<'e>(
    engine: &'e Engine,
    kid: &str,
    state: &mut State,
    started_ms: u64,
    now_ms: u64,
) -> Result<&'e PreparedKey, TokenProgress> {
    match engine.jwks.lookup(kid, now_ms) {
        Lookup::Found(key) => Ok(key),
        Lookup::Stale => Err(Progress::Failed(Reason::JwksUnavailable)),
        Lookup::NoKeys => {
            let until = started_ms.saturating_add(engine.config.jwks.first_fetch_wait_ms);
            if now_ms >= until {
                return Err(Progress::Failed(Reason::JwksUnavailable));
            }
            Err(Progress::Wait(Step::FetchJwks {
                kind: FetchKind::Scheduled,
                wait_until_ms: until,
            }))
        }
        Lookup::UnknownKid => {
            let State::Token { refetch_asked } = state else {
                return Err(Progress::Failed(Reason::UnknownKid));
            };
            if *refetch_asked {
                return Err(Progress::Failed(Reason::UnknownKid));
            }
            *refetch_asked = true;
            Err(Progress::Wait(Step::FetchJwks {
                kind: FetchKind::UnknownKid,
                wait_until_ms: now_ms
                    .saturating_add(engine.config.jwks.timeout_ms)
                    .saturating_add(1000),
            }))
        }
    }
}

/// Signature (by the host once probed, else in the module) and claims, for this listener's
/// audience.
fn verify_with(
    engine: &Engine,
    jws: UntrustedJws<'_>,
    key: &PreparedKey,
    audience: &Rc<str>,
    now_s: u64,
) -> Result<VerifiedToken, Reason> {
    let derived;
    let expect = if engine.configured_audience.is_some() {
        &engine.expect
    } else {
        derived = Expectations {
            audience: audience.to_string(),
            ..engine.expect.clone()
        };
        &derived
    };
    match engine.signatures.as_deref() {
        Some(host) => {
            let via = HostKey::new(host, key.spki());
            verify_access_token(jws, &via, expect, now_s)
        }
        None => verify_access_token(jws, key, expect, now_s),
    }
}
