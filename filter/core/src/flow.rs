//! The per-request machine: from the request's facts to a [`Step`] — allow (with the verified
//! headers), deny (with the exact reply), or wait for the JWKS or the PDP — checking in
//! CONTRACT §4's order. The [`Engine`] holds what outlives a request in one VM: configuration,
//! keys and the caches.
//!
//! A listener binds tokens either to the client certificate (`binding: mtls`, RFC 8705) or to
//! a DPoP key (`binding: dpop`, RFC 9449): there `Authorization: DPoP <token>`, one `DPoP`
//! proof signed by the token's `cnf.jkt` key for this method and URL, and a `jti` never seen
//! by any worker VM within the proof's window (the shared replay cache).

use crate::binding::{BoundToken, CertThumbprint, PeerIdentity, bind, bind_dpop, dpop_jkt};
use crate::cache::ExpiringCache;
use crate::config::{Binding, FilterConfig, Mode};
use crate::decision::{DecisionCache, EncodedRequest, Question, read_decision};
use crate::dpop::{
    DpopError, PROOF_KEY_CACHE_SIZE, ProofCheck, ProofKeys, request_htu, verify_proof_by_host,
    verify_proof_with,
};
use crate::dpop_replay::{MemoryStore, SharedReplayCache, SharedStore};
use crate::host_es256::{ForeignFunctions, HostKey};
use crate::jwks::{FetchKind, JwksCache, JwksError, Lookup};
use crate::reason::Reason;
use crate::revocation::{Kind, Presented};
use crate::revocation_guard::{RevocationGuard, Verdict};
use crate::token::{
    AuthScheme, Expectations, VerifiedToken, authorization_token, bearer, decode_metadata,
    verify_access_token,
};
use crate::usage::{UseAnswer, consume_body, read_use_answer};
use p256::ecdsa::VerifyingKey;
use std::rc::Rc;

/// How many distinct client certificates one VM remembers the identity of.
const PEER_CACHE_SIZE: usize = 256;

/// The headers the filter sets on an allowed request (any copy from the caller is removed).
pub const HEADER_SUBJECT: &str = "x-certbind-subject";
pub const HEADER_CLIENT_ID: &str = "x-certbind-client-id";
pub const HEADER_SCOPE: &str = "x-certbind-scope";
pub const HEADER_JTI: &str = "x-certbind-jti";
/// Every request header with this prefix is removed before the upstream sees the request.
pub const HEADER_PREFIX: &str = "x-certbind-";

/// Whether a caller's header must be removed: its name, in any case and with `_` read as
/// `-`, starts with [`HEADER_PREFIX`]. CGI, WSGI, Rack and PHP upstreams turn
/// `x_certbind_subject` into the same variable as `x-certbind-subject`.
pub fn is_reserved_header(name: &str) -> bool {
    name.len() >= HEADER_PREFIX.len()
        && name
            .bytes()
            .zip(HEADER_PREFIX.bytes())
            .all(|(n, p)| n.to_ascii_lowercase() == p || (n == b'_' && p == b'-'))
}

/// A verified token in the cache, with the key that verified it: a hit counts only while the
/// JWKS still publishes that very key under that `kid`.
#[derive(Debug, Clone)]
struct CachedToken {
    token: Rc<VerifiedToken>,
    key: VerifyingKey,
    /// The audience it was verified for: a listener of another service (same VM, audience
    /// from each listener's certificate) must not take it from the cache.
    audience: Rc<str>,
}

/// What one VM keeps between requests.
#[derive(Debug)]
pub struct Engine {
    config: FilterConfig,
    /// `config.audience`, shared by every request's flow without a copy.
    configured_audience: Option<Rc<str>>,
    expect: Expectations,
    jwks: JwksCache,
    /// Keyed by the token itself: a lookup hashes it with the map's keyed hash and compares
    /// it whole, so no per-request SHA-256 is needed and no collision can hand out an entry.
    tokens: ExpiringCache<Rc<str>, CachedToken>,
    decisions: DecisionCache,
    peers: ExpiringCache<CertThumbprint, PeerIdentity>,
    /// DPoP listeners: the replay cache's shape and the store it lives in (the host's shared
    /// data once the glue installs it; until then this VM's memory).
    replay: Option<SharedReplayCache>,
    replay_store: Box<dyn SharedStore>,
    /// DPoP listeners: recently seen proof keys with their tables (see [`ProofKeys`]).
    proof_keys: ProofKeys,
    /// The revocation feed this VM follows, when configured.
    revocations: Option<RevocationGuard>,
    /// The host's `verify_signature` (Envoy's BoringSSL, ~10× cheaper than p256 in V8) once
    /// the glue's probe found it working; until then signatures are verified in the module.
    signatures: Option<Box<dyn ForeignFunctions>>,
}

impl Engine {
    pub fn new(config: FilterConfig) -> Self {
        Self {
            configured_audience: config.audience.as_deref().map(Rc::from),
            expect: Expectations {
                issuer: config.issuer.clone(),
                audience: config.audience.clone().unwrap_or_default(),
                clock_skew_s: config.clock_skew_s,
                max_lifetime_s: config.max_token_lifetime_s,
            },
            jwks: JwksCache::new(config.jwks.policy()),
            tokens: ExpiringCache::new(config.token_cache_size),
            decisions: DecisionCache::new(config.decision_cache_size),
            peers: ExpiringCache::new(PEER_CACHE_SIZE),
            replay: config
                .dpop
                .as_ref()
                .filter(|_| config.binding == Binding::Dpop)
                .map(|d| SharedReplayCache::new(d.replay_cache_size)),
            replay_store: Box::new(MemoryStore::default()),
            proof_keys: ProofKeys::new(if config.binding == Binding::Dpop {
                PROOF_KEY_CACHE_SIZE
            } else {
                0
            }),
            revocations: config.revocation.clone().map(RevocationGuard::new),
            signatures: None,
            config,
        }
    }

    /// Verifies every ES256 signature (access tokens and DPoP proofs) through `host` from now
    /// on; call once, after [`crate::host_es256::probe`] answered `Works`.
    pub fn use_host_signatures(&mut self, host: Box<dyn ForeignFunctions>) {
        self.signatures = Some(host);
    }

    /// Whether signatures go to the host (`false`: verified inside the module).
    pub fn host_signatures(&self) -> bool {
        self.signatures.is_some()
    }

    /// The revocation state, when `revocation` is configured.
    pub fn revocations(&self) -> Option<&RevocationGuard> {
        self.revocations.as_ref()
    }

    /// The revocation state, to install feed answers into.
    pub fn revocations_mut(&mut self) -> Option<&mut RevocationGuard> {
        self.revocations.as_mut()
    }

    /// Keeps DPoP proof `jti`s in `store` (the host's shared data, so every worker VM sees
    /// them), adopts the shared hash key (`random`, fresh from the host, if this VM is the
    /// first) and creates its slots; call once, before the first request.
    pub fn use_replay_store(&mut self, mut store: Box<dyn SharedStore>, random: [u8; 32]) {
        if let Some(replay) = &mut self.replay {
            replay.prepare(store.as_mut(), random);
        }
        self.replay_store = store;
    }

    pub fn config(&self) -> &FilterConfig {
        &self.config
    }

    pub fn jwks(&self) -> &JwksCache {
        &self.jwks
    }

    /// Installs a fetched JWKS body (see [`JwksCache::install`]).
    pub fn install_jwks(&mut self, body: &[u8], fetched_at_ms: u64) -> Result<(), JwksError> {
        self.jwks.install(body, fetched_at_ms)
    }

    /// The identity the connection proves, parsing a certificate only the first time its
    /// digest is seen. `rest` reads the PEM and the URI SAN, only on a miss.
    pub fn peer_identity(
        &mut self,
        mtls: bool,
        digest_hex: Option<&str>,
        rest: impl FnOnce() -> (Option<String>, Option<String>),
    ) -> PeerIdentity {
        let Some(digest) = digest_hex.filter(|_| mtls) else {
            return PeerIdentity::default();
        };
        let Ok(thumbprint) = CertThumbprint::from_hex(digest) else {
            return PeerIdentity::default();
        };
        if let Some(known) = self.peers.get(&thumbprint, 0) {
            return known.clone();
        }
        let (pem, uri_san) = rest();
        let identity =
            PeerIdentity::from_envoy(mtls, Some(digest), pem.as_deref(), uri_san.as_deref());
        self.peers.insert(thumbprint, identity.clone(), u64::MAX, 0);
        identity
    }
}

/// Everything the filter reads about one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// The `authorization` header, if any.
    pub authorization: Option<String>,
    /// Envoy's `x-request-id`.
    pub request_id: String,
    pub method: String,
    /// `:path`, as Envoy normalised it.
    pub path: String,
    pub peer: PeerIdentity,
    /// The caller's IP (see [`source_ip`]).
    pub source_ip: Option<String>,
    /// `connection.tls_version`, e.g. `TLSv1.3`.
    pub tls_version: Option<String>,
    /// The value of every `DPoP` header, in order (exactly one is valid on a DPoP listener).
    pub dpop: Vec<String>,
    /// The URI SAN of the listener's own certificate (`connection.uri_san_local_certificate`),
    /// read only when no `audience` is configured: it names this service.
    pub local_uri_san: Option<String>,
}

/// The IP of Envoy's `source.address` (`1.2.3.4:5678` or `[::1]:5678`).
pub fn source_ip(address: &str) -> String {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_owned();
    }
    match address.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            ip.to_owned()
        }
        _ => address.to_owned(),
    }
}

/// What the glue must do next for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Let the request through, after removing any caller `x-certbind-*` and applying these.
    Allow(Allow),
    /// Answer locally and stop the request.
    Deny(Deny),
    /// Keys are needed: start (or join) a JWKS fetch of this kind, pause the request, then
    /// call [`Flow::resume_jwks`] when the keys change, the fetch ends, may not start, or
    /// `wait_until_ms` passes.
    FetchJwks { kind: FetchKind, wait_until_ms: u64 },
    /// Ask the PDP (POST `body` to `pdp.path`, timeout `timeout_ms`), then call
    /// [`Flow::pdp_answered`].
    AskPdp { body: String, timeout_ms: u64 },
    /// No revocation snapshot yet: pause the request, then call [`Flow::resume_jwks`] when
    /// the first snapshot arrives or `wait_until_ms` passes (the same re-run as for keys).
    AwaitRevocations { wait_until_ms: u64 },
    /// A usage-bound token passed every check: spend one use (POST `body` to the usage
    /// counter, timeout `timeout_ms`), then call [`Flow::usage_answered`].
    ConsumeUse { body: String, timeout_ms: u64 },
}

/// An allowed request (or, in shadow mode, one that passes despite `shadowed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    /// Verified identity headers to set; empty unless every check passed.
    pub headers: Vec<(&'static str, String)>,
    /// Remove `authorization` and any `dpop` proof before the upstream (unless
    /// `forward_token`).
    pub remove_authorization: bool,
    /// Shadow mode: the reason the request would have been denied.
    pub shadowed: Option<Reason>,
}

/// A local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    pub reason: Reason,
    pub status: u32,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Deny {
    /// The exact CONTRACT §4 answer for `reason`.
    pub fn new(reason: Reason, realm: &str, request_id: &str) -> Self {
        Self::on_listener(reason, realm, request_id, Binding::Mtls)
    }

    /// The answer on a listener of this `binding`: on a DPoP listener every challenge uses
    /// the `DPoP` scheme with `algs="ES256"` (RFC 9449 §7.1).
    pub fn on_listener(reason: Reason, realm: &str, request_id: &str, binding: Binding) -> Self {
        let challenge = reason.www_authenticate_on(realm, binding == Binding::Dpop);
        let mut headers = vec![
            ("content-type", "application/json".to_owned()),
            ("cache-control", "no-store".to_owned()),
            ("www-authenticate", challenge),
        ];
        if let Some(seconds) = reason.retry_after_s() {
            headers.push(("retry-after", seconds.to_string()));
        }
        Self {
            reason,
            status: reason.status(),
            headers,
            body: reason.body(request_id),
        }
    }
}

#[derive(Debug)]
enum State {
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

enum Progress<T> {
    Done(T),
    Failed(Reason),
    Wait(Step),
}

/// One request's progress through the checks.
#[derive(Debug)]
pub struct Flow {
    facts: RequestFacts,
    /// The SPIFFE ID the token's `aud` must name here; `None`: the listener has none, so every
    /// token is refused as `wrong_audience`.
    audience: Option<Rc<str>>,
    started_ms: u64,
    state: State,
    subject: Option<String>,
    token_cache_hit: bool,
    /// This flow verified its token's signature itself: a rerun after a wait (revocations)
    /// finds the token cached, but that is not a cache hit.
    verified_here: bool,
    decision_cache_hit: bool,
    /// The scheme the token came with (`Bearer` or `DPoP`).
    scheme: Option<AuthScheme>,
    /// Which DPoP check failed, for the log line.
    dpop_detail: Option<&'static str>,
    /// The token bound by a DPoP proof that passed every check, its `jti` now spent: a flow
    /// resumed after a wait (revocations) reuses it instead of replaying its own proof.
    dpop_bound: Option<BoundToken>,
    /// What revoked the token, for the log line.
    revoked: Option<Kind>,
    /// `fail_open`: admitted although the revocation feed was stale.
    revocation_unchecked: bool,
    /// What the usage counter answered, for the log line.
    usage: Option<UseAnswer>,
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
            subject: None,
            token_cache_hit: false,
            verified_here: false,
            decision_cache_hit: false,
            scheme: None,
            dpop_detail: None,
            dpop_bound: None,
            revoked: None,
            revocation_unchecked: false,
            usage: None,
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
            self.usage = Some(answer);
            answer.verdict()
        });
        Some(self.finish(engine, outcome.map(|()| bound)))
    }

    /// What the usage counter answered (a usage-bound token only), for the log line.
    pub fn usage(&self) -> Option<UseAnswer> {
        self.usage
    }

    pub fn facts(&self) -> &RequestFacts {
        &self.facts
    }

    /// The verified `sub`, once the token verified (for the log line).
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    pub fn token_cache_hit(&self) -> bool {
        self.token_cache_hit
    }

    pub fn decision_cache_hit(&self) -> bool {
        self.decision_cache_hit
    }

    /// Which DPoP check refused the request (e.g. `ath_mismatch`, `replayed`), for the log.
    pub fn dpop_detail(&self) -> Option<&'static str> {
        self.dpop_detail
    }

    /// What revoked the token (`cert`, `subject`, `jti`), for the log line.
    pub fn revoked(&self) -> Option<Kind> {
        self.revoked
    }

    /// Admitted under `revocation.fail_open` while the feed was stale (log and count it).
    pub fn revocation_unchecked(&self) -> bool {
        self.revocation_unchecked
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
        self.subject = Some(token.subject().to_owned());
        let bound = match engine.config.binding {
            Binding::Mtls => bind(token, &self.facts.peer, &engine.config.trust_domain),
            Binding::Dpop => match (&self.dpop_bound, self.scheme) {
                (Some(bound), _) => Ok(bound.clone()),
                (None, Some(scheme)) => {
                    check_dpop(engine, &self.facts, scheme, token, now_ms / 1000)
                        .inspect(|bound| self.dpop_bound = Some(bound.clone()))
                        .map_err(|(reason, detail)| {
                            self.dpop_detail = detail;
                            reason
                        })
                }
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
        let guard = engine.revocations.as_ref()?;
        let token = bound.token();
        // Validated as a 32-byte base64url value when the claims were checked.
        let issued_over = token
            .client_x5t_s256()
            .and_then(|t| CertThumbprint::from_cnf(t).ok());
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
        match verdict {
            Verdict::Admit => None,
            Verdict::Revoked(kind) => {
                self.revoked = Some(kind);
                Some(self.finish(engine, Err(Reason::Revoked)))
            }
            Verdict::NotSynced if now_ms < wait_until_ms => {
                Some(Step::AwaitRevocations { wait_until_ms })
            }
            Verdict::NotSynced | Verdict::Stale if fail_open => {
                self.revocation_unchecked = true;
                None
            }
            Verdict::NotSynced | Verdict::Stale => {
                Some(self.finish(engine, Err(Reason::RevocationUnavailable)))
            }
        }
    }

    /// Bearer → token cache → header → key → signature → claims.
    fn verify_token(&mut self, engine: &mut Engine, now_ms: u64) -> Progress<Rc<VerifiedToken>> {
        let Some(authorization) = self.facts.authorization.as_deref() else {
            return Progress::Failed(Reason::MissingToken);
        };
        let presented = match engine.config.binding {
            Binding::Mtls => bearer(authorization).map(|token| (AuthScheme::Bearer, token)),
            Binding::Dpop => authorization_token(authorization),
        };
        let token = match presented {
            Ok((scheme, token)) => {
                self.scheme = Some(scheme);
                token
            }
            Err(reason) => return Progress::Failed(reason),
        };
        let Some(audience) = self.audience.clone() else {
            return Progress::Failed(Reason::WrongAudience);
        };
        let now_s = now_ms / 1000;
        if let Some(cached) = engine.tokens.get(token, now_ms).cloned() {
            match engine.jwks.lookup(cached.token.kid(), now_ms) {
                Lookup::Found(key)
                    if *key.verifying_key() == cached.key && cached.audience == audience =>
                {
                    self.token_cache_hit = !self.verified_here;
                    return match cached.token.check_time(now_s, engine.expect.clock_skew_s) {
                        Ok(()) => Progress::Done(cached.token),
                        Err(reason) => Progress::Failed(reason),
                    };
                }
                Lookup::Stale => return Progress::Failed(Reason::JwksUnavailable),
                // The key was rotated away or replaced, or the token was verified for another
                // listener's audience: verify afresh.
                _ => engine.tokens.remove(token),
            }
        }
        let jws = match decode_metadata(token) {
            Ok(jws) => jws,
            Err(reason) => return Progress::Failed(reason),
        };
        let kid = match jws.access_token_kid() {
            Ok(kid) => kid,
            Err(reason) => return Progress::Failed(reason),
        };
        let key = match engine.jwks.lookup(kid, now_ms) {
            Lookup::Found(key) => key,
            Lookup::Stale => return Progress::Failed(Reason::JwksUnavailable),
            Lookup::NoKeys => {
                let until = self
                    .started_ms
                    .saturating_add(engine.config.jwks.first_fetch_wait_ms);
                if now_ms >= until {
                    return Progress::Failed(Reason::JwksUnavailable);
                }
                return Progress::Wait(Step::FetchJwks {
                    kind: FetchKind::Scheduled,
                    wait_until_ms: until,
                });
            }
            Lookup::UnknownKid => {
                let State::Token { refetch_asked } = &mut self.state else {
                    return Progress::Failed(Reason::UnknownKid);
                };
                if *refetch_asked {
                    return Progress::Failed(Reason::UnknownKid);
                }
                *refetch_asked = true;
                return Progress::Wait(Step::FetchJwks {
                    kind: FetchKind::UnknownKid,
                    wait_until_ms: now_ms
                        .saturating_add(engine.config.jwks.timeout_ms)
                        .saturating_add(1000),
                });
            }
        };
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
        let verified = match engine.signatures.as_deref() {
            Some(host) => {
                let via = HostKey::new(host, key.verifying_key());
                verify_access_token(jws, &via, expect, now_s)
            }
            None => verify_access_token(jws, key, expect, now_s),
        };
        match verified {
            Ok(verified) => {
                let verified = Rc::new(verified);
                let until = verified.exp().saturating_mul(1000);
                let entry = CachedToken {
                    token: Rc::clone(&verified),
                    key: *key.verifying_key(),
                    audience,
                };
                engine.tokens.insert(Rc::from(token), entry, until, now_ms);
                self.verified_here = true;
                Progress::Done(verified)
            }
            Err(reason) => Progress::Failed(reason),
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
        if engine.decisions.get(&key, now_ms).is_some() {
            self.decision_cache_hit = true;
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

    fn finish(&mut self, engine: &Engine, outcome: Result<BoundToken, Reason>) -> Step {
        self.state = State::Done;
        let remove_authorization = !engine.config.forward_token;
        match outcome {
            Ok(bound) => {
                let token = bound.token();
                Step::Allow(Allow {
                    headers: vec![
                        (HEADER_SUBJECT, bound.subject().as_str().to_owned()),
                        (HEADER_CLIENT_ID, token.client_id().to_owned()),
                        (HEADER_SCOPE, token.scope().to_owned()),
                        (HEADER_JTI, token.jti().to_owned()),
                    ],
                    remove_authorization,
                    shadowed: None,
                })
            }
            Err(reason) if engine.config.mode == Mode::Shadow => Step::Allow(Allow {
                headers: Vec::new(),
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

/// The DPoP half of a DPoP listener's checks, after the token verified (CONTRACT §4 order):
/// the token's `cnf` (`binding_*`), then the `DPoP` scheme and exactly one proof, the proof
/// itself against this request and the token (`verify_proof`: method, URL, `iat`, `ath`,
/// `jkt`), the subject, and last the shared replay cache, so only a proof that passed every
/// other check uses up its `jti`. Errors carry the failed check's name for the log.
fn check_dpop(
    engine: &mut Engine,
    facts: &RequestFacts,
    scheme: AuthScheme,
    token: Rc<VerifiedToken>,
    now_s: u64,
) -> Result<BoundToken, (Reason, Option<&'static str>)> {
    let invalid = |detail: &'static str| (Reason::DpopInvalid, Some(detail));
    let jkt = dpop_jkt(&token).map_err(|reason| (reason, None))?;
    // A DPoP-bound token sent as `Bearer`: RFC 9449 §7.1 wants the `DPoP` scheme, so a
    // stolen DPoP token cannot pass a check that skips the proof.
    if scheme != AuthScheme::Dpop {
        return Err(invalid("bearer_scheme"));
    }
    let [proof] = facts.dpop.as_slice() else {
        return Err(invalid(if facts.dpop.is_empty() {
            "no_proof"
        } else {
            "many_proofs"
        }));
    };
    let (Some(dpop), Some(replay)) = (engine.config.dpop.as_ref(), engine.replay.as_ref()) else {
        return Err(invalid("not_configured"));
    };
    let htu = request_htu(&dpop.public_origin, &facts.path).ok_or(invalid("bad_request_uri"))?;
    let access_token = facts
        .authorization
        .as_deref()
        .and_then(|a| authorization_token(a).ok())
        .map(|(_, t)| t);
    let check = ProofCheck {
        method: &facts.method,
        htu: &htu,
        now_s,
        window: dpop.window(),
        access_token: Some(access_token.unwrap_or_default()),
        jkt: Some(jkt),
        nonces: &[],
    };
    let failed = |e: DpopError| (e.reason(), Some(e.as_str()));
    let proof = match engine.signatures.as_deref() {
        Some(host) => verify_proof_by_host(proof, &check, host),
        None => verify_proof_with(proof, &check, Some(&mut engine.proof_keys)),
    }
    .map_err(failed)?;
    let bound =
        bind_dpop(token, &proof, &engine.config.trust_domain).map_err(|reason| (reason, None))?;
    replay
        .check_and_record(engine.replay_store.as_mut(), &proof, now_s)
        .map_err(failed)?;
    Ok(bound)
}

/// The PDP's resource: the normalised path without query or fragment.
fn resource_of(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::binding::bind_tests::{CONSUMER, cert};
    use crate::config::tests::MINIMAL;
    use crate::decision::DecisionRequest;
    use crate::host_es256_reference::ReferenceHost;
    use crate::jwks::tests::{RFC7515_X, RFC7515_Y, jwk, jwks_body};
    use crate::token::tests::{NOW, claims, header, sign};

    const NOW_MS: u64 = NOW * 1000;
    const INVENTORY: &str = "spiffe://certbind.test/ns/demo/sa/inventory";

    pub(crate) struct World {
        pub(crate) engine: Engine,
        pub(crate) consumer: (Vec<u8>, String),
        inventory: (Vec<u8>, String),
    }

    fn config(edit: impl FnOnce(&mut serde_json::Value)) -> FilterConfig {
        let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
        edit(&mut v);
        FilterConfig::from_json(v.to_string().as_bytes()).unwrap()
    }

    pub(crate) fn world_with(edit: impl FnOnce(&mut serde_json::Value)) -> World {
        let mut engine = Engine::new(config(edit));
        engine
            .install_jwks(&jwks_body(&[jwk("k1", RFC7515_X, RFC7515_Y)]), NOW_MS)
            .unwrap();
        World {
            engine,
            consumer: cert(&[CONSUMER]),
            inventory: cert(&[INVENTORY]),
        }
    }

    fn world() -> World {
        world_with(|_| {})
    }

    fn token_bound_to(der: &[u8]) -> String {
        let mut c = claims();
        c["cnf"] = serde_json::json!({"x5t#S256": CertThumbprint::from_der(der).to_cnf()});
        sign(&header(), &c)
    }

    pub(crate) fn facts(cert: &(Vec<u8>, String), authorization: Option<String>) -> RequestFacts {
        RequestFacts {
            authorization,
            request_id: "req-1".into(),
            method: "GET".into(),
            path: "/orders/1?x=1".into(),
            peer: PeerIdentity::from_cert_der(&cert.0),
            source_ip: Some("127.0.0.1".into()),
            tls_version: Some("TLSv1.3".into()),
            dpop: Vec::new(),
            local_uri_san: None,
        }
    }

    pub(crate) fn bearer_of(token: &str) -> Option<String> {
        Some(format!("Bearer {token}"))
    }

    pub(crate) const PDP_ALLOW: &[u8] =
        br#"{"allow":true,"policy_id":"p","reason":"matched","ttl_s":60}"#;

    pub(crate) fn denied(step: Step) -> Reason {
        match step {
            Step::Deny(d) => d.reason,
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    pub(crate) fn allowed(step: Step) -> Allow {
        match step {
            Step::Allow(a) => a,
            other => panic!("expected an allow, got {other:?}"),
        }
    }

    /// Start a request with the consumer's bound token and answer the PDP's question.
    fn full_allow(w: &mut World, now_ms: u64) -> (Flow, Allow) {
        let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
        let (mut flow, step) = Flow::start(&mut w.engine, f, now_ms);
        let Step::AskPdp { .. } = step else {
            panic!("expected a PDP question, got {step:?}")
        };
        let step = flow
            .pdp_answered(&mut w.engine, Some(200), PDP_ALLOW, now_ms)
            .unwrap();
        (flow, allowed(step))
    }

    #[test]
    fn refuses_a_request_without_a_token() {
        let mut w = world();
        let (_, step) = Flow::start(&mut w.engine, facts(&w.consumer.clone(), None), NOW_MS);
        let Step::Deny(d) = step else {
            panic!("{step:?}")
        };
        assert_eq!((d.reason, d.status), (Reason::MissingToken, 401));
        assert!(
            d.headers
                .contains(&("www-authenticate", "Bearer realm=\"certbind\"".into()))
        );
        assert!(d.body.contains("\"request_id\":\"req-1\""));
    }

    #[test]
    fn refuses_a_malformed_token() {
        let mut w = world();
        let f = facts(&w.consumer, Some("Bearer not.a.jwt".into()));
        assert_eq!(
            denied(Flow::start(&mut w.engine, f, NOW_MS).1),
            Reason::MalformedToken
        );
    }

    #[test]
    fn admits_a_bound_token_the_pdp_allows_with_verified_headers() {
        let mut w = world();
        let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
        let (mut flow, step) = Flow::start(&mut w.engine, f, NOW_MS);
        let Step::AskPdp { body, timeout_ms } = step else {
            panic!("{step:?}")
        };
        assert_eq!(timeout_ms, 200);
        let asked: DecisionRequest = serde_json::from_str(&body).unwrap();
        assert_eq!(asked.subject, CONSUMER);
        assert_eq!(asked.action, "GET");
        assert_eq!(asked.resource, "/orders/1");
        assert_eq!(asked.audience, "spiffe://certbind.test/ns/demo/sa/orders");
        assert_eq!(asked.scopes, ["orders:read", "orders:write"]);
        assert_eq!(asked.context.source_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(asked.context.tls_version.as_deref(), Some("TLSv1.3"));
        assert_eq!(asked.context.jti.as_deref(), Some("j-1"));
        assert_eq!(asked.context.iat, Some(NOW - 10));
        let allow = allowed(
            flow.pdp_answered(&mut w.engine, Some(200), PDP_ALLOW, NOW_MS)
                .unwrap(),
        );
        assert_eq!(
            allow.headers,
            vec![
                (HEADER_SUBJECT, CONSUMER.to_owned()),
                (HEADER_CLIENT_ID, "consumer".to_owned()),
                (HEADER_SCOPE, "orders:read orders:write".to_owned()),
                (HEADER_JTI, "j-1".to_owned()),
            ]
        );
        assert!(allow.remove_authorization);
        assert_eq!(allow.shadowed, None);
        assert_eq!(flow.subject(), Some(CONSUMER));
        assert!(flow.is_done());
    }

    #[test]
    fn forwards_the_token_only_when_configured() {
        let mut w = world_with(|c| c["forward_token"] = true.into());
        let (_, allow) = full_allow(&mut w, NOW_MS);
        assert!(!allow.remove_authorization);
    }

    #[test]
    fn refuses_token_bound_to_other_cert() {
        let mut w = world();
        let stolen = token_bound_to(&w.consumer.0);
        let f = facts(&w.inventory, bearer_of(&stolen));
        assert_eq!(
            denied(Flow::start(&mut w.engine, f, NOW_MS).1),
            Reason::BindingMismatch
        );
    }

    #[test]
    fn refuses_a_cached_token_presented_on_another_certificate() {
        let mut w = world();
        let (first, _) = full_allow(&mut w, NOW_MS);
        assert!(!first.token_cache_hit());
        let stolen = token_bound_to(&w.consumer.0);
        let f = facts(&w.inventory, bearer_of(&stolen));
        let (flow, step) = Flow::start(&mut w.engine, f, NOW_MS + 1);
        assert!(flow.token_cache_hit());
        assert_eq!(denied(step), Reason::BindingMismatch);
    }

    #[test]
    fn refuses_a_subject_other_than_the_certificate() {
        let mut w = world();
        let mut c = claims();
        c["cnf"] =
            serde_json::json!({"x5t#S256": CertThumbprint::from_der(&w.inventory.0).to_cnf()});
        let f = facts(&w.inventory, bearer_of(&sign(&header(), &c)));
        assert_eq!(
            denied(Flow::start(&mut w.engine, f, NOW_MS).1),
            Reason::SubjectMismatch
        );
    }

    #[test]
    fn reuses_the_verified_token_and_the_allow_for_the_same_request() {
        let mut w = world();
        full_allow(&mut w, NOW_MS);
        let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
        let (flow, step) = Flow::start(&mut w.engine, f, NOW_MS + 1_000);
        assert!(flow.token_cache_hit());
        assert!(flow.decision_cache_hit());
        assert_eq!(allowed(step).headers.len(), 4);
    }

    #[test]
    fn asks_the_pdp_again_for_another_resource() {
        let mut w = world();
        full_allow(&mut w, NOW_MS);
        let mut f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
        f.path = "/orders/2".into();
        let (_, step) = Flow::start(&mut w.engine, f, NOW_MS);
        assert!(matches!(step, Step::AskPdp { .. }), "{step:?}");
    }

    #[test]
    fn the_cached_allow_expires_with_its_ttl() {
        let mut w = world();
        full_allow(&mut w, NOW_MS);
        let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
        let (_, step) = Flow::start(&mut w.engine, f, NOW_MS + 60_000);
        assert!(matches!(step, Step::AskPdp { .. }), "{step:?}");
    }

    #[test]
    fn the_cached_token_expires_with_exp() {
        let mut w = world();
        full_allow(&mut w, NOW_MS);
        let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
        let (flow, step) = Flow::start(&mut w.engine, f, (NOW + 290 + 30) * 1000);
        assert!(!flow.token_cache_hit());
        assert_eq!(denied(step), Reason::Expired);
    }

    #[test]
    fn refuses_when_the_pdp_denies() {
        let mut w = world();
        let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
        let (mut flow, _) = Flow::start(&mut w.engine, f.clone(), NOW_MS);
        let deny = br#"{"allow":false,"policy_id":"default","reason":"no_rule","ttl_s":0}"#;
        let Step::Deny(d) = flow
            .pdp_answered(&mut w.engine, Some(200), deny, NOW_MS)
            .unwrap()
        else {
            panic!()
        };
        assert_eq!((d.reason, d.status), (Reason::PolicyDenied, 403));
        assert!(d.body.contains("\"error\":\"access_denied\""));
        let (mut flow, _) = Flow::start(&mut w.engine, f, NOW_MS);
        let scope = br#"{"allow":false,"policy_id":"p","reason":"missing_scope","ttl_s":0}"#;
        let Step::Deny(d) = flow
            .pdp_answered(&mut w.engine, Some(200), scope, NOW_MS)
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(d.reason, Reason::InsufficientScope);
        assert!(d.body.contains("\"error\":\"insufficient_scope\""));
        assert!(d.body.contains("\"reason\":\"policy_denied\""));
    }

    #[test]
    fn answers_503_when_the_pdp_is_unavailable() {
        let mut w = world();
        let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
        let (mut flow, _) = Flow::start(&mut w.engine, f, NOW_MS);
        let Step::Deny(d) = flow.pdp_answered(&mut w.engine, None, b"", NOW_MS).unwrap() else {
            panic!()
        };
        assert_eq!((d.reason, d.status), (Reason::PdpUnavailable, 503));
        assert!(d.headers.contains(&("retry-after", "5".into())));
    }

    #[test]
    fn a_late_or_repeated_callback_is_ignored() {
        let mut w = world();
        let (mut flow, _) = full_allow(&mut w, NOW_MS);
        assert_eq!(
            flow.pdp_answered(&mut w.engine, Some(200), PDP_ALLOW, NOW_MS),
            None
        );
        assert_eq!(flow.resume_jwks(&mut w.engine, NOW_MS), None);
    }

    #[test]
    fn waits_for_the_first_jwks_then_resumes() {
        let mut engine = Engine::new(config(|_| {}));
        let consumer = cert(&[CONSUMER]);
        let f = facts(&consumer, bearer_of(&token_bound_to(&consumer.0)));
        let (mut flow, step) = Flow::start(&mut engine, f, NOW_MS);
        assert_eq!(
            step,
            Step::FetchJwks {
                kind: FetchKind::Scheduled,
                wait_until_ms: NOW_MS + 5_000
            }
        );
        // A failed fetch: keep waiting.
        assert!(matches!(
            flow.resume_jwks(&mut engine, NOW_MS + 100),
            Some(Step::FetchJwks { .. })
        ));
        engine
            .install_jwks(&jwks_body(&[jwk("k1", RFC7515_X, RFC7515_Y)]), NOW_MS + 200)
            .unwrap();
        assert!(matches!(
            flow.resume_jwks(&mut engine, NOW_MS + 200),
            Some(Step::AskPdp { .. })
        ));
    }

    #[test]
    fn answers_503_when_no_jwks_arrives_in_time() {
        let mut engine = Engine::new(config(|_| {}));
        let consumer = cert(&[CONSUMER]);
        let f = facts(&consumer, bearer_of(&token_bound_to(&consumer.0)));
        let (mut flow, _) = Flow::start(&mut engine, f, NOW_MS);
        let Some(Step::Deny(d)) = flow.resume_jwks(&mut engine, NOW_MS + 5_000) else {
            panic!()
        };
        assert_eq!((d.reason, d.status), (Reason::JwksUnavailable, 503));
        assert!(d.headers.contains(&("retry-after", "5".into())));
    }

    #[test]
    fn an_unknown_kid_asks_for_one_refetch_then_refuses() {
        let mut w = world();
        let mut h = header();
        h["kid"] = "k2".into();
        let mut c = claims();
        c["cnf"] =
            serde_json::json!({"x5t#S256": CertThumbprint::from_der(&w.consumer.0).to_cnf()});
        let f = facts(&w.consumer, bearer_of(&sign(&h, &c)));
        let (mut flow, step) = Flow::start(&mut w.engine, f, NOW_MS);
        assert!(
            matches!(
                step,
                Step::FetchJwks {
                    kind: FetchKind::UnknownKid,
                    ..
                }
            ),
            "{step:?}"
        );
        let step = flow.resume_jwks(&mut w.engine, NOW_MS + 10).unwrap();
        assert_eq!(denied(step), Reason::UnknownKid);
    }

    #[test]
    fn a_rotated_key_is_picked_up_by_the_refetch() {
        let mut w = world();
        let mut h = header();
        h["kid"] = "k2".into();
        let mut c = claims();
        c["cnf"] =
            serde_json::json!({"x5t#S256": CertThumbprint::from_der(&w.consumer.0).to_cnf()});
        let f = facts(&w.consumer, bearer_of(&sign(&h, &c)));
        let (mut flow, _) = Flow::start(&mut w.engine, f, NOW_MS);
        w.engine
            .install_jwks(&jwks_body(&[jwk("k2", RFC7515_X, RFC7515_Y)]), NOW_MS + 5)
            .unwrap();
        assert!(matches!(
            flow.resume_jwks(&mut w.engine, NOW_MS + 10),
            Some(Step::AskPdp { .. })
        ));
    }

    #[test]
    fn a_cached_token_is_refused_once_its_key_is_withdrawn() {
        let mut w = world();
        full_allow(&mut w, NOW_MS);
        w.engine
            .install_jwks(&jwks_body(&[jwk("k9", RFC7515_X, RFC7515_Y)]), NOW_MS + 5)
            .unwrap();
        let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
        let (flow, step) = Flow::start(&mut w.engine, f, NOW_MS + 10);
        assert!(!flow.token_cache_hit());
        assert!(matches!(
            step,
            Step::FetchJwks {
                kind: FetchKind::UnknownKid,
                ..
            }
        ));
    }

    #[test]
    fn refuses_with_jwks_unavailable_once_the_set_is_too_stale() {
        let mut w = world();
        full_allow(&mut w, NOW_MS);
        let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
        let (_, step) = Flow::start(&mut w.engine, f, NOW_MS + 3_600_001);
        assert_eq!(denied(step), Reason::JwksUnavailable);
    }

    #[test]
    fn shadow_mode_lets_a_failing_request_pass_without_identity() {
        let mut w = world_with(|c| c["mode"] = "shadow".into());
        let stolen = token_bound_to(&w.consumer.0);
        let f = facts(&w.inventory, bearer_of(&stolen));
        let allow = allowed(Flow::start(&mut w.engine, f, NOW_MS).1);
        assert_eq!(allow.shadowed, Some(Reason::BindingMismatch));
        assert!(allow.headers.is_empty());
        let f = facts(&w.inventory, None);
        assert_eq!(
            allowed(Flow::start(&mut w.engine, f, NOW_MS).1).shadowed,
            Some(Reason::MissingToken)
        );
    }

    #[test]
    fn shadow_mode_still_sets_identity_when_everything_passes() {
        let mut w = world_with(|c| c["mode"] = "shadow".into());
        let (_, allow) = full_allow(&mut w, NOW_MS);
        assert_eq!(allow.shadowed, None);
        assert_eq!(allow.headers.len(), 4);
    }

    #[test]
    fn peer_identity_is_parsed_once_per_certificate() {
        let mut w = world();
        let (der, pem) = w.consumer.clone();
        let hex: String = CertThumbprint::from_der(&der)
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut reads = 0;
        for _ in 0..3 {
            let id = w.engine.peer_identity(true, Some(&hex), || {
                reads += 1;
                (Some(pem.clone()), None)
            });
            assert_eq!(id.spiffe_id().unwrap().as_str(), CONSUMER);
        }
        assert_eq!(reads, 1);
        let none = w
            .engine
            .peer_identity(false, Some(&hex), || panic!("not read without mTLS"));
        assert_eq!(none, PeerIdentity::default());
    }

    /// The consumer's certificate valid from `NOW - 60` until `not_after_s`: (DER, PEM).
    fn consumer_cert_until(not_after_s: u64) -> (Vec<u8>, String) {
        consumer_cert_between(NOW - 60, not_after_s)
    }

    fn consumer_cert_between(not_before_s: u64, not_after_s: u64) -> (Vec<u8>, String) {
        use rcgen::{CertificateParams, KeyPair, SanType};
        let at = |s: u64| rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(s);
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(CONSUMER.try_into().unwrap())];
        params.not_before = at(not_before_s);
        params.not_after = at(not_after_s);
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        (cert.der().to_vec(), cert.pem())
    }

    #[test]
    fn refuses_a_certificate_past_its_validity_even_with_token_and_decision_cached() {
        let mut w = world();
        w.consumer = consumer_cert_until(NOW + 10);
        // Admitted while the certificate is valid, up to and including its last second.
        full_allow(&mut w, NOW_MS);
        let request = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
        let (flow, step) = Flow::start(&mut w.engine, request.clone(), (NOW + 10) * 1000 + 999);
        assert!(flow.decision_cache_hit());
        allowed(step);
        // One second later the same connection (a resumed TLS session) is refused.
        let (flow, step) = Flow::start(&mut w.engine, request, (NOW + 11) * 1000);
        assert!(flow.token_cache_hit());
        let Step::Deny(d) = step else {
            panic!("{step:?}")
        };
        assert_eq!((d.reason, d.status), (Reason::CertificateExpired, 401));
        assert!(d.body.contains("\"error\":\"invalid_token\""), "{}", d.body);
    }

    #[test]
    fn refuses_a_certificate_not_yet_valid() {
        let mut w = world();
        w.consumer = consumer_cert_between(NOW + 1, NOW + 600);
        let request = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
        let (_, step) = Flow::start(&mut w.engine, request, NOW_MS + 999);
        assert_eq!(denied(step), Reason::CertificateExpired);
    }

    #[test]
    fn refuses_a_connection_whose_certificate_window_is_unknown() {
        let mut w = world();
        let hex: String = CertThumbprint::from_der(&w.consumer.0)
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut request = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
        // Envoy's digest and URI SAN, but no PEM: the binding holds, the window is unknown.
        request.peer = PeerIdentity::from_envoy(true, Some(&hex), None, Some(CONSUMER));
        let (_, step) = Flow::start(&mut w.engine, request, NOW_MS);
        assert_eq!(denied(step), Reason::CertificateExpired);
    }

    #[test]
    fn binding_is_checked_before_the_certificate_window() {
        let mut w = world();
        w.consumer = consumer_cert_until(NOW - 1);
        let stolen = token_bound_to(&w.inventory.0);
        let request = facts(&w.consumer, bearer_of(&stolen));
        assert_eq!(
            denied(Flow::start(&mut w.engine, request, NOW_MS).1),
            Reason::BindingMismatch
        );
    }

    #[test]
    fn reserved_headers_include_case_and_underscore_variants() {
        for name in [
            "x-certbind-subject",
            "X-Certbind-Subject",
            "x_certbind_subject",
            "X_CERTBIND_SCOPE",
            "x-certbind_jti",
            "x_certbind-",
        ] {
            assert!(is_reserved_header(name), "{name}");
        }
    }

    #[test]
    fn other_headers_are_not_reserved() {
        for name in [
            "x-certbind",
            "x-certbindsubject",
            "xx-certbind-subject",
            "x-request-id",
            "authorization",
            "",
        ] {
            assert!(!is_reserved_header(name), "{name}");
        }
    }

    #[test]
    fn source_ip_drops_the_port() {
        assert_eq!(source_ip("127.0.0.1:5678"), "127.0.0.1");
        assert_eq!(source_ip("[::1]:5678"), "::1");
        assert_eq!(source_ip("10.0.0.1"), "10.0.0.1");
        assert_eq!(source_ip("::1"), "::1");
    }

    // --- revocation ----------------------------------------------------------------------

    mod revocation {
        use super::*;

        fn revoking(max_staleness_s: u64, fail_open: bool) -> World {
            world_with(|c| {
                c["revocation"] = serde_json::json!({
                    "max_staleness_s": max_staleness_s, "fail_open": fail_open,
                    "first_sync_wait_ms": 1000
                })
            })
        }

        fn feed(w: &mut World, body: &str, now_ms: u64) {
            w.engine
                .revocations_mut()
                .unwrap()
                .install(body.as_bytes(), now_ms)
                .unwrap();
        }

        fn empty_snapshot(w: &mut World, now_ms: u64) {
            feed(w, r#"{"seq":1,"snapshot":true,"revocations":[]}"#, now_ms);
        }

        fn revoke_jti(w: &mut World, jti: &str, now_ms: u64) {
            let body = format!(
                r#"{{"seq":2,"snapshot":false,"revocations":[{{"seq":2,"kind":"jti","value":"{jti}","expires_at":null}}]}}"#
            );
            feed(w, &body, now_ms);
        }

        #[test]
        fn refuses_a_revoked_token_even_with_its_token_and_decision_cached() {
            let mut w = revoking(30, false);
            empty_snapshot(&mut w, NOW_MS);
            full_allow(&mut w, NOW_MS);
            revoke_jti(&mut w, "j-1", NOW_MS);
            let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
            let (flow, step) = Flow::start(&mut w.engine, f, NOW_MS);
            assert!(flow.token_cache_hit());
            let Step::Deny(d) = step else {
                panic!("{step:?}")
            };
            assert_eq!((d.reason, d.status), (Reason::Revoked, 401));
            assert_eq!(flow.revoked(), Some(Kind::Jti));
        }

        #[test]
        fn refuses_a_revoked_subject_and_admits_another_subject() {
            let mut w = revoking(30, false);
            let body = format!(
                r#"{{"seq":1,"snapshot":true,"revocations":[{{"seq":1,"kind":"subject","value":"{INVENTORY}","not_before_iat":{NOW},"expires_at":null}}]}}"#
            );
            feed(&mut w, &body, NOW_MS);
            full_allow(&mut w, NOW_MS);
            let mut c = claims();
            c["sub"] = INVENTORY.into();
            c["cnf"] =
                serde_json::json!({"x5t#S256": CertThumbprint::from_der(&w.inventory.0).to_cnf()});
            let f = facts(&w.inventory, bearer_of(&sign(&header(), &c)));
            let (flow, step) = Flow::start(&mut w.engine, f, NOW_MS);
            assert_eq!(denied(step), Reason::Revoked);
            assert_eq!(flow.revoked(), Some(Kind::Subject));
        }

        #[test]
        fn refuses_a_revoked_certificate() {
            let mut w = revoking(30, false);
            let t = CertThumbprint::from_der(&w.consumer.0).to_cnf();
            let body = format!(
                r#"{{"seq":1,"snapshot":true,"revocations":[{{"seq":1,"kind":"cert","value":"{t}","expires_at":null}}]}}"#
            );
            feed(&mut w, &body, NOW_MS);
            let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
            assert_eq!(
                denied(Flow::start(&mut w.engine, f, NOW_MS).1),
                Reason::Revoked
            );
        }

        #[test]
        fn waits_for_the_first_snapshot_then_answers() {
            let mut w = revoking(30, false);
            let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
            let (mut flow, step) = Flow::start(&mut w.engine, f.clone(), NOW_MS);
            assert_eq!(
                step,
                Step::AwaitRevocations {
                    wait_until_ms: NOW_MS + 1000
                }
            );
            empty_snapshot(&mut w, NOW_MS + 10);
            let step = flow.resume_jwks(&mut w.engine, NOW_MS + 10).unwrap();
            assert!(matches!(step, Step::AskPdp { .. }), "{step:?}");
            // It verified the token itself before waiting: the rerun is not a cache hit.
            assert!(!flow.token_cache_hit());
            // Without a snapshot in time: 503.
            let mut w = revoking(30, false);
            let (mut flow, _) = Flow::start(&mut w.engine, f, NOW_MS);
            let step = flow.resume_jwks(&mut w.engine, NOW_MS + 1000).unwrap();
            let Step::Deny(d) = step else {
                panic!("{step:?}")
            };
            assert_eq!((d.reason, d.status), (Reason::RevocationUnavailable, 503));
            assert!(d.body.contains("\"error\":\"temporarily_unavailable\""));
        }

        #[test]
        fn fails_closed_when_the_feed_is_stale_and_recovers() {
            let mut w = revoking(2, false);
            empty_snapshot(&mut w, NOW_MS - 2000);
            full_allow(&mut w, NOW_MS);
            let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
            let late = NOW_MS + 1;
            assert_eq!(
                denied(Flow::start(&mut w.engine, f.clone(), late).1),
                Reason::RevocationUnavailable
            );
            feed(
                &mut w,
                r#"{"seq":1,"snapshot":false,"revocations":[]}"#,
                late,
            );
            assert!(matches!(
                Flow::start(&mut w.engine, f, late).1,
                Step::Allow(_)
            ));
        }

        #[test]
        fn fail_open_admits_a_stale_feed_but_still_refuses_known_revocations() {
            let mut w = revoking(2, true);
            empty_snapshot(&mut w, NOW_MS - 10_000);
            let (flow, allow) = full_allow(&mut w, NOW_MS);
            assert!(flow.revocation_unchecked());
            assert_eq!(allow.headers.len(), 4);
            revoke_jti(&mut w, "j-1", NOW_MS - 10_000);
            let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
            assert_eq!(
                denied(Flow::start(&mut w.engine, f, NOW_MS).1),
                Reason::Revoked
            );
        }

        #[test]
        fn without_revocation_configured_nothing_waits() {
            let mut w = world();
            assert!(w.engine.revocations().is_none());
            full_allow(&mut w, NOW_MS);
        }
    }

    // --- DPoP listener ------------------------------------------------------------------

    mod dpop {
        use super::*;
        use crate::dpop::access_token_hash;
        use crate::dpop_replay::tests::{jkt_of, proof_header, proof_key, sign_proof};
        use crate::dpop_replay::{MemoryStore, SharedStore, StoreError};
        use p256::ecdsa::SigningKey;
        use serde_json::{Value, json};
        use std::cell::RefCell;

        const ORIGIN: &str = "https://orders.example:8445";

        /// One host's shared data, seen by several engines (worker VMs).
        #[derive(Debug, Clone, Default)]
        struct Shared(Rc<RefCell<MemoryStore>>);

        impl SharedStore for Shared {
            fn get(&mut self, key: &str) -> Option<(Vec<u8>, u32)> {
                self.0.borrow_mut().get(key)
            }
            fn set(&mut self, key: &str, v: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
                self.0.borrow_mut().set(key, v, cas)
            }
        }

        fn dpop_config(c: &mut Value) {
            c["binding"] = "dpop".into();
            c["dpop"] = json!({"public_origin": ORIGIN});
        }

        fn vm(shared: &Shared) -> Engine {
            let mut w = world_with(dpop_config);
            w.engine.use_replay_store(Box::new(shared.clone()), [7; 32]);
            w.engine
        }

        fn key() -> SigningKey {
            proof_key(0x11)
        }

        fn token_with_cnf(cnf: Value) -> String {
            let mut c = claims();
            c["cnf"] = cnf;
            sign(&header(), &c)
        }

        fn dpop_token() -> String {
            token_with_cnf(json!({"jkt": jkt_of(&key())}))
        }

        fn proof_claims(jti: &str, token: &str) -> Value {
            json!({
                "jti": jti, "htm": "GET", "htu": format!("{ORIGIN}/orders/1"),
                "iat": NOW, "ath": access_token_hash(token),
            })
        }

        fn proof(jti: &str, token: &str) -> String {
            sign_proof(&key(), &proof_header(&key()), &proof_claims(jti, token))
        }

        fn request(authorization: String, proofs: Vec<String>) -> RequestFacts {
            RequestFacts {
                authorization: Some(authorization),
                request_id: "req-1".into(),
                method: "GET".into(),
                path: "/orders/1?x=1".into(),
                peer: PeerIdentity::default(),
                source_ip: Some("127.0.0.1".into()),
                tls_version: Some("TLSv1.3".into()),
                dpop: proofs,
                local_uri_san: None,
            }
        }

        fn start(engine: &mut Engine, facts: RequestFacts) -> (Flow, Step) {
            Flow::start(engine, facts, NOW_MS)
        }

        /// The answer to a request with `token` (as `DPoP`) and one proof with these claims.
        fn with_claims(edit: impl FnOnce(&mut Value)) -> (Flow, Step) {
            let token = dpop_token();
            let mut c = proof_claims("j-edit", &token);
            edit(&mut c);
            let p = sign_proof(&key(), &proof_header(&key()), &c);
            start(
                &mut vm(&Shared::default()),
                request(format!("DPoP {token}"), vec![p]),
            )
        }

        fn refused(step: Step) -> Deny {
            match step {
                Step::Deny(d) => d,
                other => panic!("expected a denial, got {other:?}"),
            }
        }

        #[test]
        fn admits_a_dpop_bound_token_with_a_fresh_proof() {
            let mut engine = vm(&Shared::default());
            let token = dpop_token();
            let f = request(format!("DPoP {token}"), vec![proof("p-1", &token)]);
            let (mut flow, step) = start(&mut engine, f);
            assert!(matches!(step, Step::AskPdp { .. }), "{step:?}");
            let allow = allowed(
                flow.pdp_answered(&mut engine, Some(200), PDP_ALLOW, NOW_MS)
                    .unwrap(),
            );
            assert_eq!(allow.headers[0], (HEADER_SUBJECT, CONSUMER.to_owned()));
            assert!(allow.remove_authorization);
            assert_eq!(flow.dpop_detail(), None);
        }

        #[test]
        fn admits_every_fresh_proof_with_a_cached_token_and_decision() {
            let mut engine = vm(&Shared::default());
            let token = dpop_token();
            let f = request(format!("DPoP {token}"), vec![proof("p-1", &token)]);
            let (mut flow, _) = start(&mut engine, f);
            flow.pdp_answered(&mut engine, Some(200), PDP_ALLOW, NOW_MS);
            let f = request(format!("DPoP {token}"), vec![proof("p-2", &token)]);
            let (flow, step) = start(&mut engine, f);
            assert!(flow.token_cache_hit() && flow.decision_cache_hit());
            allowed(step);
        }

        #[test]
        fn a_flow_resumed_after_waiting_for_revocations_does_not_replay_its_own_proof() {
            let mut w = world_with(|c| {
                dpop_config(c);
                c["revocation"] = json!({"first_sync_wait_ms": 1000});
            });
            w.engine
                .use_replay_store(Box::new(Shared::default()), [7; 32]);
            let token = dpop_token();
            let f = request(format!("DPoP {token}"), vec![proof("p-1", &token)]);
            let (mut flow, step) = start(&mut w.engine, f.clone());
            assert!(matches!(step, Step::AwaitRevocations { .. }), "{step:?}");
            w.engine
                .revocations_mut()
                .unwrap()
                .install(
                    br#"{"seq":1,"snapshot":true,"revocations":[]}"#,
                    NOW_MS + 10,
                )
                .unwrap();
            let step = flow.resume_jwks(&mut w.engine, NOW_MS + 10).unwrap();
            assert!(matches!(step, Step::AskPdp { .. }), "{step:?}");
            // The proof is still spent for any other request.
            let d = refused(start(&mut w.engine, f).1);
            assert_eq!(d.reason, Reason::DpopReplay);
        }

        #[test]
        fn refuses_a_proof_replayed_on_the_same_or_another_vm() {
            let shared = Shared::default();
            let (mut vm1, mut vm2) = (vm(&shared), vm(&shared));
            let token = dpop_token();
            let f = request(format!("DPoP {token}"), vec![proof("p-1", &token)]);
            assert!(matches!(start(&mut vm1, f.clone()).1, Step::AskPdp { .. }));
            for engine in [&mut vm2, &mut vm1] {
                let (flow, step) = start(engine, f.clone());
                let d = refused(step);
                assert_eq!((d.reason, d.status), (Reason::DpopReplay, 401));
                assert_eq!(flow.dpop_detail(), Some("replayed"));
            }
        }

        #[test]
        fn a_proof_refused_for_another_reason_does_not_use_up_its_jti() {
            let mut engine = vm(&Shared::default());
            let token = dpop_token();
            let mut f = request(format!("DPoP {token}"), vec![proof("p-1", &token)]);
            f.method = "POST".into();
            assert_eq!(
                refused(start(&mut engine, f.clone()).1).reason,
                Reason::DpopInvalid
            );
            f.method = "GET".into();
            assert!(matches!(start(&mut engine, f).1, Step::AskPdp { .. }));
        }

        #[test]
        fn answers_with_the_dpop_challenge() {
            let (_, step) = with_claims(|c| c["htm"] = "POST".into());
            let d = refused(step);
            assert_eq!(d.status, 401);
            assert!(d.headers.contains(&(
                "www-authenticate",
                "DPoP realm=\"certbind\", error=\"invalid_dpop_proof\", error_description=\"dpop_invalid\", algs=\"ES256\"".into()
            )));
            assert!(d.body.contains("\"error\":\"invalid_dpop_proof\""));
            let f = RequestFacts {
                authorization: None,
                ..request(String::new(), Vec::new())
            };
            let d = refused(start(&mut vm(&Shared::default()), f).1);
            assert_eq!(d.reason, Reason::MissingToken);
            assert!(d.headers.contains(&(
                "www-authenticate",
                "DPoP realm=\"certbind\", algs=\"ES256\"".into()
            )));
        }

        #[test]
        fn refuses_proofs_that_do_not_match_the_request_or_token() {
            let mut other = claims();
            other["cnf"] = json!({"jkt": jkt_of(&key())});
            other["jti"] = "j-other".into();
            let other_token = sign(&header(), &other);
            type Edit = Box<dyn FnOnce(&mut Value)>;
            let cases: Vec<(&str, Edit)> = vec![
                ("wrong_method", Box::new(|c| c["htm"] = "DELETE".into())),
                (
                    "wrong_uri",
                    Box::new(|c| c["htu"] = format!("{ORIGIN}/orders/2").into()),
                ),
                (
                    "wrong_uri",
                    Box::new(|c| c["htu"] = "https://other.example:8445/orders/1".into()),
                ),
                (
                    "missing_ath",
                    Box::new(|c| {
                        c.as_object_mut().unwrap().remove("ath");
                    }),
                ),
                (
                    "ath_mismatch",
                    Box::new(move |c| c["ath"] = access_token_hash(&other_token).into()),
                ),
                ("too_old", Box::new(|c| c["iat"] = (NOW - 66).into())),
                (
                    "issued_in_future",
                    Box::new(|c| c["iat"] = (NOW + 6).into()),
                ),
            ];
            for (detail, edit) in cases {
                let (flow, step) = with_claims(edit);
                assert_eq!(refused(step).reason, Reason::DpopInvalid, "{detail}");
                assert_eq!(flow.dpop_detail(), Some(detail));
            }
        }

        #[test]
        fn refuses_a_proof_signed_by_a_key_other_than_cnf_jkt() {
            let token = dpop_token();
            let thief = proof_key(0x22);
            let p = sign_proof(&thief, &proof_header(&thief), &proof_claims("p", &token));
            let (flow, step) = start(
                &mut vm(&Shared::default()),
                request(format!("DPoP {token}"), vec![p]),
            );
            assert_eq!(refused(step).reason, Reason::DpopInvalid);
            assert_eq!(flow.dpop_detail(), Some("jkt_mismatch"));
        }

        #[test]
        fn refuses_a_proof_carrying_a_private_key() {
            let token = dpop_token();
            let mut h = proof_header(&key());
            h["jwk"]["d"] = URL_SAFE_NO_PAD_D.into();
            let p = sign_proof(&key(), &h, &proof_claims("p", &token));
            let (flow, step) = start(
                &mut vm(&Shared::default()),
                request(format!("DPoP {token}"), vec![p]),
            );
            assert_eq!(refused(step).reason, Reason::DpopInvalid);
            assert_eq!(flow.dpop_detail(), Some("private_key"));
        }

        const URL_SAFE_NO_PAD_D: &str = "EREREREREREREREREREREREREREREREREREREREREREE";

        #[test]
        fn refuses_no_proof_or_two_proofs() {
            let token = dpop_token();
            for (proofs, detail) in [
                (Vec::new(), "no_proof"),
                (vec![proof("a", &token), proof("b", &token)], "many_proofs"),
            ] {
                let (flow, step) = start(
                    &mut vm(&Shared::default()),
                    request(format!("DPoP {token}"), proofs),
                );
                assert_eq!(refused(step).reason, Reason::DpopInvalid);
                assert_eq!(flow.dpop_detail(), Some(detail));
            }
        }

        #[test]
        fn refuses_a_dpop_bound_token_sent_as_bearer() {
            let token = dpop_token();
            let (flow, step) = start(
                &mut vm(&Shared::default()),
                request(format!("Bearer {token}"), vec![proof("p", &token)]),
            );
            assert_eq!(refused(step).reason, Reason::DpopInvalid);
            assert_eq!(flow.dpop_detail(), Some("bearer_scheme"));
        }

        #[test]
        fn refuses_a_certificate_bound_or_unbound_token() {
            let x5t = token_with_cnf(json!({"x5t#S256": CertThumbprint::from_der(b"c").to_cnf()}));
            let mut unbound = claims();
            unbound.as_object_mut().unwrap().remove("cnf");
            let unbound = sign(&header(), &unbound);
            for (token, reason) in [
                (x5t, Reason::BindingMismatch),
                (unbound, Reason::BindingMissing),
            ] {
                for scheme in ["DPoP", "Bearer"] {
                    let f = request(format!("{scheme} {token}"), vec![proof("p", &token)]);
                    let d = refused(start(&mut vm(&Shared::default()), f).1);
                    assert_eq!(d.reason, reason, "{scheme}");
                }
            }
        }

        #[test]
        fn refuses_a_subject_outside_the_trust_domain() {
            let mut c = claims();
            c["cnf"] = json!({"jkt": jkt_of(&key())});
            c["sub"] = "spiffe://other.test/ns/demo/sa/consumer".into();
            let token = sign(&header(), &c);
            let f = request(format!("DPoP {token}"), vec![proof("p", &token)]);
            let d = refused(start(&mut vm(&Shared::default()), f).1);
            assert_eq!(d.reason, Reason::SubjectMismatch);
        }

        #[test]
        fn the_mtls_listener_refuses_a_dpop_bound_token() {
            let mut w = world();
            let token = dpop_token();
            let mut f = facts(&w.consumer, bearer_of(&token));
            f.dpop = vec![proof("p", &token)];
            assert_eq!(
                denied(Flow::start(&mut w.engine, f.clone(), NOW_MS).1),
                Reason::BindingMissing
            );
            f.authorization = Some(format!("DPoP {token}"));
            assert_eq!(
                denied(Flow::start(&mut w.engine, f, NOW_MS).1),
                Reason::MissingToken
            );
        }

        #[test]
        fn verifies_the_token_and_every_proof_through_the_host_once_probed() {
            let host = Rc::new(ReferenceHost::default());
            let mut engine = vm(&Shared::default());
            engine.use_host_signatures(Box::new(Rc::clone(&host)));
            let token = dpop_token();
            let f = request(format!("DPoP {token}"), vec![proof("h-1", &token)]);
            let (mut flow, _) = start(&mut engine, f);
            allowed(
                flow.pdp_answered(&mut engine, Some(200), PDP_ALLOW, NOW_MS)
                    .unwrap(),
            );
            assert_eq!(host.calls.get(), 2, "one token and one proof");
            let mut forged = proof("h-2", &token);
            forged.replace_range(forged.len() - 3.., "AAA");
            let (flow, step) = start(&mut engine, request(format!("DPoP {token}"), vec![forged]));
            assert_eq!(refused(step).reason, Reason::DpopInvalid);
            assert_eq!(flow.dpop_detail(), Some("bad_signature"));
            assert_eq!(
                host.calls.get(),
                3,
                "the cached token is not verified again"
            );
        }
    }

    #[test]
    fn verifies_tokens_through_the_host_once_probed() {
        let host = Rc::new(ReferenceHost::default());
        let mut w = world();
        assert!(!w.engine.host_signatures());
        w.engine.use_host_signatures(Box::new(Rc::clone(&host)));
        assert!(w.engine.host_signatures());
        full_allow(&mut w, NOW_MS);
        let again = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
        allowed(Flow::start(&mut w.engine, again, NOW_MS).1);
        assert_eq!(
            host.calls.get(),
            1,
            "verified once, then from the token cache"
        );
        let mut forged = token_bound_to(&w.inventory.0);
        forged.replace_range(forged.len() - 3.., "AAA");
        let f = facts(&w.inventory, bearer_of(&forged));
        assert_eq!(
            denied(Flow::start(&mut w.engine, f, NOW_MS).1),
            Reason::BadSignature
        );
        assert_eq!(host.calls.get(), 2);
    }

    /// One mesh-wide configuration: the audience from the listener's certificate.
    mod audience;
}
