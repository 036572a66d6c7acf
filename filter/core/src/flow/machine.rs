//! One request's progress through the checks ([`Flow`]), in CONTRACT §4's order: token
//! (see `verify`), binding (mTLS certificate or DPoP proof), certificate window, revocation,
//! decision (cache or PDP), usage; then the [`Step`] that allows or denies.

use super::dpop::check_dpop;
use super::engine::{DpopMemo, Engine};
use super::request::{IdentityHeaders, RequestFacts, identity_headers};
use super::step::{Allow, Deny, Step};
use super::trace::DecisionTrace;
use crate::binding::{BoundToken, CertThumbprint, bind};
use crate::cache::same_bytes;
use crate::config::{Binding, Mode};
use crate::decision::{EncodedRequest, Question, read_decision};
use crate::reason::Reason;
use crate::revocation::{Kind, Presented};
use crate::revocation_guard::Verdict;
use crate::token::AuthScheme;
use crate::usage::{UseAnswer, consume_body, read_use_answer};
use std::rc::Rc;

#[derive(Debug)]
pub(super) enum State {
    /// Checking the token; `refetch_asked` once an unknown `kid` asked for a refetch.
    Token {
        refetch_asked: bool,
    },
    /// Waiting for the PDP.
    Pdp {
        bound: BoundToken,
        request: EncodedRequest,
    },
    /// Admitted but for one use of a usage-bound token: waiting for the counter.
    Usage {
        bound: BoundToken,
    },
    Done,
}

/// How far a check got: done with a value, failed, or waiting on the glue.
pub(super) enum Progress<T> {
    Done(T),
    Failed(Reason),
    Wait(Step),
}

/// One request's progress through the checks.
#[derive(Debug)]
pub struct Flow {
    pub(super) facts: RequestFacts,
    /// The SPIFFE ID the token's `aud` must name here; `None`: the listener has none, so every
    /// token is refused as `wrong_audience`.
    pub(super) audience: Option<Rc<str>>,
    pub(super) started_ms: u64,
    pub(super) state: State,
    /// What the checks observed, for the log line and the counters.
    pub(super) trace: DecisionTrace,
    /// This flow verified its token's signature itself: a rerun after a wait (revocations)
    /// finds the token cached, but that is not a cache hit.
    pub(super) verified_here: bool,
    /// The verified token's identity headers (from the token cache, or built when verified).
    pub(super) identity: Option<IdentityHeaders>,
    /// The scheme the token came with (`Bearer` or `DPoP`).
    pub(super) scheme: Option<AuthScheme>,
    /// What the token's DPoP proofs share, kept with its token-cache entry (set once the
    /// token verified or was found: no allocation for a request that never gets that far).
    pub(super) dpop_memo: Option<Rc<DpopMemo>>,
    /// The token bound by a DPoP proof that passed every check, its `jti` now spent: a flow
    /// resumed after a wait (revocations) reuses it instead of replaying its own proof.
    dpop_bound: Option<BoundToken>,
}

impl Flow {
    /// Runs the checks as far as they go without waiting.
    pub fn start(engine: &mut Engine, facts: RequestFacts, now_ms: u64) -> (Self, Step) {
        let audience = match &engine.configured_audience {
            Some(configured) => Some(Rc::clone(configured)),
            None => engine
                .config
                .audience_for(facts.local_uri_san.as_deref())
                .map(Rc::from),
        };
        let mut flow = Self {
            facts,
            audience,
            started_ms: now_ms,
            state: State::Token {
                refetch_asked: false,
            },
            trace: DecisionTrace::default(),
            verified_here: false,
            identity: None,
            dpop_memo: None,
            scheme: None,
            dpop_bound: None,
        };
        let step = flow.run(engine, now_ms);
        (flow, step)
    }

    /// The JWKS changed, a fetch ended, a fetch could not start, or the wait timed out.
    /// `None` when this flow was not waiting for keys (a late or repeated callback).
    pub fn resume_jwks(&mut self, engine: &mut Engine, now_ms: u64) -> Option<Step> {
        matches!(self.state, State::Token { .. }).then(|| self.run(engine, now_ms))
    }

    /// The PDP answered (`status` `None`: timeout or failed call). `None` when this flow was
    /// not waiting for the PDP.
    pub fn pdp_answered(
        &mut self,
        engine: &mut Engine,
        status: Option<u32>,
        body: &[u8],
        now_ms: u64,
    ) -> Option<Step> {
        let State::Pdp { bound, request } = std::mem::replace(&mut self.state, State::Done) else {
            return None;
        };
        let outcome = read_decision(status, body).map(|decision| {
            engine
                .decisions
                .remember(&request, &decision, bound.token().exp(), now_ms);
            bound
        });
        Some(match outcome {
            Ok(bound) => self.admit(engine, bound),
            Err(reason) => self.finish(engine, Err(reason)),
        })
    }

    /// The usage counter answered (`status` `None`: timeout or failed call). `None` when this
    /// flow was not waiting for it.
    pub fn usage_answered(
        &mut self,
        engine: &Engine,
        status: Option<u32>,
        body: &[u8],
    ) -> Option<Step> {
        let State::Usage { bound } = std::mem::replace(&mut self.state, State::Done) else {
            return None;
        };
        let outcome = read_use_answer(status, body).and_then(|answer| {
            self.trace.usage = Some(answer);
            answer.verdict()
        });
        Some(self.finish(engine, outcome.map(|()| bound)))
    }

    /// What the usage counter answered (a usage-bound token only), for the log line.
    pub fn usage(&self) -> Option<UseAnswer> {
        self.trace.usage()
    }

    /// What the checks observed; renders the decision's log line.
    pub fn trace(&self) -> &DecisionTrace {
        &self.trace
    }

    pub fn facts(&self) -> &RequestFacts {
        &self.facts
    }

    /// The verified `sub`, once the token verified (for the log line).
    pub fn subject(&self) -> Option<&str> {
        self.trace.subject()
    }

    pub fn token_cache_hit(&self) -> bool {
        self.trace.token_cache_hit()
    }

    pub fn decision_cache_hit(&self) -> bool {
        self.trace.decision_cache_hit()
    }

    /// Which DPoP check refused the request (e.g. `ath_mismatch`, `replayed`), for the log.
    pub fn dpop_detail(&self) -> Option<&'static str> {
        self.trace.dpop_detail()
    }

    /// What revoked the token (`cert`, `subject`, `jti`), for the log line.
    pub fn revoked(&self) -> Option<Kind> {
        self.trace.revoked()
    }

    /// Admitted under `revocation.fail_open` while the feed was stale (log and count it).
    pub fn revocation_unchecked(&self) -> bool {
        self.trace.revocation_unchecked()
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn run(&mut self, engine: &mut Engine, now_ms: u64) -> Step {
        let token = match self.verify_token(engine, now_ms) {
            Progress::Done(token) => token,
            Progress::Failed(reason) => return self.finish(engine, Err(reason)),
            Progress::Wait(step) => return step,
        };
        // The subject header's value, shared: no copy of the `sub` per request.
        self.trace.subject = Some(match self.identity.as_ref().and_then(|h| h.first()) {
            Some((_, subject)) => Rc::clone(subject),
            None => Rc::from(token.subject()),
        });
        let bound = match engine.config.binding {
            Binding::Mtls => bind(token, &self.facts.peer, &engine.config.trust_domain),
            Binding::Dpop => match (&self.dpop_bound, self.scheme) {
                (Some(bound), _) => Ok(bound.clone()),
                (None, Some(scheme)) => check_dpop(
                    engine,
                    &self.facts,
                    (
                        scheme,
                        &Rc::clone(self.dpop_memo.get_or_insert_with(Rc::default)),
                    ),
                    token,
                    now_ms / 1000,
                )
                .inspect(|bound| self.dpop_bound = Some(bound.clone()))
                .map_err(|(reason, detail)| {
                    self.trace.dpop_detail = detail;
                    reason
                }),
                (None, None) => Err(Reason::MissingToken),
            },
        };
        let bound = bound.and_then(|bound| {
            self.check_certificate_window(engine, now_ms)
                .map(|()| bound)
        });
        match bound {
            Ok(bound) => match self.check_revocation(engine, &bound, now_ms) {
                Some(step) => step,
                None => self.decide(engine, bound, now_ms),
            },
            Err(reason) => self.finish(engine, Err(reason)),
        }
    }

    /// On an mTLS listener, after binding and before revocation (CONTRACT §4): the connection's
    /// certificate must be inside its validity window now, not only at the full handshake a
    /// resumed TLS session skips. A window that is unknown (no PEM from the host) fails closed.
    fn check_certificate_window(&self, engine: &Engine, now_ms: u64) -> Result<(), Reason> {
        if engine.config.binding != Binding::Mtls {
            return Ok(());
        }
        match self.facts.peer.validity() {
            Some(window) => window.check(now_ms / 1000),
            None => Err(Reason::CertificateExpired),
        }
    }

    /// After binding, before the decision (cache or PDP), so a cached token or decision never
    /// outlives its revocation: refuses a revoked token, subject or certificate (keyed on the
    /// verified `jti`, never on the token's bytes), waits for the first snapshot, and fails
    /// closed on a stale feed unless `fail_open`. `None`: go on.
    fn check_revocation(
        &mut self,
        engine: &mut Engine,
        bound: &BoundToken,
        now_ms: u64,
    ) -> Option<Step> {
        let copy = engine.revocations.as_ref()?.borrow();
        let guard = copy.guard();
        let token = bound.token();
        // Decoded (and refused unless one SHA-256) when the claims were checked.
        let issued_over = token
            .client_x5t_digest()
            .map(|d| CertThumbprint::from_digest(*d));
        let presented = Presented {
            jti: token.jti(),
            subject: bound.subject(),
            iat: token.iat(),
            cert: self.facts.peer.thumbprint(),
            issued_over: issued_over.as_ref(),
        };
        let verdict = guard.check(&presented, now_ms);
        let wait_until_ms = self
            .started_ms
            .saturating_add(guard.config().first_sync_wait_ms);
        let fail_open = guard.config().fail_open;
        drop(copy);
        match verdict {
            Verdict::Admit => None,
            Verdict::Revoked(kind) => {
                self.trace.revoked = Some(kind);
                Some(self.finish(engine, Err(Reason::Revoked)))
            }
            Verdict::NotSynced if now_ms < wait_until_ms => {
                Some(Step::AwaitRevocations { wait_until_ms })
            }
            Verdict::NotSynced | Verdict::Stale if fail_open => {
                self.trace.revocation_unchecked = true;
                None
            }
            Verdict::NotSynced | Verdict::Stale => {
                Some(self.finish(engine, Err(Reason::RevocationUnavailable)))
            }
        }
    }

    fn decide(&mut self, engine: &mut Engine, bound: BoundToken, now_ms: u64) -> Step {
        let token = bound.token();
        let question = Question {
            subject: bound.subject().as_str(),
            client_id: token.client_id(),
            action: &self.facts.method,
            resource: resource_of(&self.facts.path),
            audience: self.audience.as_deref().unwrap_or_default(),
            scope: token.scope(),
            source_ip: self.facts.source_ip.as_deref(),
            iat: Some(token.iat()),
            jti: Some(token.jti()),
            tls_version: self.facts.tls_version.as_deref(),
        };
        let key = question.key();
        // An allow cached for another token of this question never outlives this one's `exp`.
        let before_exp = now_ms < token.exp().saturating_mul(1000);
        if before_exp && engine.decisions.allows(&key, now_ms) {
            self.trace.decision_cache_hit = true;
            return self.admit(engine, bound);
        }
        let request = EncodedRequest::new(&question);
        let body = request.body.clone();
        self.state = State::Pdp { bound, request };
        Step::AskPdp {
            body,
            timeout_ms: engine.config.pdp.timeout_ms,
        }
    }

    /// Every check passed. An ordinary token is allowed now; a usage-bound one first spends
    /// a use at the shared counter (never skipped by a cached token or decision), or is
    /// refused when no counter is configured here.
    fn admit(&mut self, engine: &Engine, bound: BoundToken) -> Step {
        if bound.token().max_uses().is_none() {
            return self.finish(engine, Ok(bound));
        }
        let Some(usage) = engine.config.usage.as_ref() else {
            return self.finish(engine, Err(Reason::UsageUnavailable));
        };
        let body = consume_body(bound.token().jti());
        let timeout_ms = usage.timeout_ms;
        self.state = State::Usage { bound };
        Step::ConsumeUse { body, timeout_ms }
    }

    pub(super) fn finish(&mut self, engine: &Engine, outcome: Result<BoundToken, Reason>) -> Step {
        self.state = State::Done;
        let remove_authorization = !engine.config.forward_token;
        match outcome {
            Ok(bound) => {
                let subject = bound.subject().as_str();
                // Built with the token's `sub`, which binding found equal to the subject; the
                // check costs a comparison, and a mismatch builds them afresh.
                let headers = match self.identity.take() {
                    Some(h)
                        if h.first()
                            .is_some_and(|(_, s)| same_bytes(s.as_bytes(), subject.as_bytes())) =>
                    {
                        h
                    }
                    _ => identity_headers(subject, bound.token()),
                };
                Step::Allow(Allow {
                    headers,
                    remove_authorization,
                    shadowed: None,
                })
            }
            Err(reason) if engine.config.mode == Mode::Shadow => Step::Allow(Allow {
                headers: Rc::new([]),
                remove_authorization,
                shadowed: Some(reason),
            }),
            Err(reason) => Step::Deny(Deny::on_listener(
                reason,
                &engine.config.realm,
                &self.facts.request_id,
                engine.config.binding,
            )),
        }
    }
}

/// The PDP's resource: the normalised path without query or fragment.
fn resource_of(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or_default()
}
