//! One worker VM's state shared by its root and http contexts — the core `Engine`, requests
//! paused on the JWKS or the PDP, and the pending calls by token — and the mapping of core
//! `Step`s onto host calls. Every pending thing lives here, in one visible place.
//!
//! Re-entrancy: the `RefCell` is never borrowed across a host call that can call back into
//! the module (dispatching, replying, resuming), and callbacks use `try_borrow_mut`, so a
//! late or re-entrant callback finds nothing to do instead of aborting the VM.

use crate::metrics::{Counter, Metrics};
use certbind_core::binding::PeerIdentity;
use certbind_core::cache::ExpiringCache;
use certbind_core::config::FilterConfig;
use certbind_core::decision::MAX_DECISION_BYTES;
use certbind_core::dpop_replay::{SharedStore, StoreError};
use certbind_core::flow::{Allow, Deny, Engine, Flow, Step};
use certbind_core::jwks::{
    FetchKind, FetchRecord, FetchStart, MAX_JWKS_BYTES, decode_shared_set, encode_shared_set,
};
use certbind_core::reason::Reason;
use certbind_core::usage::MAX_USE_ANSWER_BYTES;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

pub type VmRef = Rc<RefCell<Vm>>;

/// Tick while requests wait for keys (or none arrived yet), and otherwise.
const FAST_TICK: Duration = Duration::from_millis(100);
const SLOW_TICK: Duration = Duration::from_secs(1);

/// How many downstream connections' facts one VM remembers (oldest forgotten first: a
/// forgotten live connection just has its facts read again).
const CONN_CACHE_SIZE: usize = 512;

/// What a paused request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Jwks {
        until_ms: u64,
    },
    Pdp {
        token: u32,
    },
    /// The usage counter's answer (a usage-bound token, after every other check).
    Usage {
        token: u32,
    },
    /// The first revocation snapshot (`crate::revocation`); resumed like a keys wait.
    Revocations {
        until_ms: u64,
    },
}

struct Parked {
    flow: Flow,
    wait: Wait,
}

/// What a dispatched call was for, and which SDK context will receive its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Jwks { receiver: u32 },
    Pdp { ctx: u32, receiver: u32 },
    Usage { ctx: u32, receiver: u32 },
}

pub struct Vm {
    engine: Engine,
    root_id: u32,
    metrics: Metrics,
    parked: HashMap<u32, Parked>,
    calls: HashMap<u32, Call>,
    /// CAS of the shared JWKS copy this VM installed last.
    jwks_cas: Option<u32>,
    /// Keys changed while an http context was active: the root resumes the waiters.
    wake_pending: bool,
    tick: Option<Duration>,
    set_key: String,
    fetch_key: String,
    /// The revocation feed follower's state (`crate::revocation`).
    pub(crate) feed: crate::revocation::Feed,
    /// Connection facts by `connection.id` (see [`ConnFacts`]).
    conns: ExpiringCache<u64, ConnFacts>,
}

impl Vm {
    pub fn new(config: FilterConfig, root_id: u32) -> Self {
        let scope = format!("{}{}", config.jwks.cluster, config.jwks.path);
        let feed = crate::revocation::Feed::new(&config);
        let mut engine = Engine::new(config);
        engine.use_replay_store(Box::new(EnvoySharedData), replay_hash_key());
        let metrics = Metrics::define();
        crate::crypto::use_host_signatures(&mut engine, &metrics, root_id);
        Self {
            engine,
            root_id,
            metrics,
            parked: HashMap::new(),
            calls: HashMap::new(),
            jwks_cas: None,
            wake_pending: false,
            tick: None,
            set_key: format!("certbind.jwks.v1:{scope}"),
            fetch_key: format!("certbind.jwks.fetch.v1:{scope}"),
            feed,
            conns: ExpiringCache::new(CONN_CACHE_SIZE),
        }
    }

    pub fn config(&self) -> &FilterConfig {
        self.engine.config()
    }

    pub(crate) fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// Envoy's shared data (one copy for every worker VM of this `vm_id`): where the DPoP replay
/// cache lives, so a proof replayed to another worker is caught.
#[derive(Debug)]
struct EnvoySharedData;

impl SharedStore for EnvoySharedData {
    fn get(&mut self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((value, Some(cas))) => Some((value.unwrap_or_default(), cas)),
            _ => None,
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Failed),
        }
    }
}

/// A fresh random key for the DPoP replay cache's slot hash (the first VM's becomes every
/// VM's). Without randomness the key is all zeros: replays are still caught, but a client
/// could aim at slots again, so this is logged as an error.
fn replay_hash_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut key) {
        log::error!(
            "certbind: no randomness for the DPoP replay cache key ({e}); using a fixed key"
        );
    }
    key
}

pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Header values and request ids in log lines: printable ASCII, bounded.
fn log_safe(s: &str) -> String {
    s.chars()
        .take(128)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Requests

/// What one downstream connection proves: read once per connection and remembered by
/// `connection.id` (unique within the Envoy process, never reused), since a connection's TLS
/// facts and peer cannot change while it lives and re-reading them costs four host calls.
#[derive(Debug, Clone)]
pub(crate) struct ConnFacts {
    peer: PeerIdentity,
    source_ip: Option<String>,
    tls_version: Option<String>,
    local_uri_san: Option<String>,
}

/// Envoy's `connection.id` (a uint64, serialised as 8 little-endian bytes), if it answers.
fn connection_id() -> Option<u64> {
    let bytes = hostcalls::get_property(vec!["connection", "id"]).ok()??;
    <[u8; 8]>::try_from(bytes.as_slice())
        .ok()
        .map(u64::from_le_bytes)
}

/// A header value as text: Envoy passes obs-text (0x80-0xff) through, and the SDK's `get_map`
/// would abort the VM on it. A value that is not UTF-8 becomes lossy text (U+FFFD), which no
/// token, proof or path check accepts.
fn header_text(value: Vec<u8>) -> String {
    String::from_utf8(value).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The facts of the current request, read from Envoy. Caller-sent `x-certbind-*` headers, and
/// their `_` spellings, are removed here, before anything else can happen to the request.
pub fn read_facts(vm: &VmRef) -> Option<certbind_core::flow::RequestFacts> {
    // One host call for every header, as bytes (names are HTTP tokens: ASCII); only the
    // values the checks use become text.
    let headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default();
    let mut facts = certbind_core::flow::RequestFacts::default();
    for (name, value) in headers {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if certbind_core::flow::is_reserved_header(&name) {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, &name, None);
        } else if is("authorization") {
            if facts.authorization.is_none() {
                facts.authorization = Some(header_text(value));
            }
        } else if is("x-request-id") {
            facts.request_id = header_text(value);
        } else if is(":method") {
            facts.method = header_text(value);
        } else if is(":path") {
            facts.path = header_text(value);
        } else if is("dpop") {
            facts.dpop.push(header_text(value));
        }
    }
    let conn_id = connection_id();
    if let Some(id) = conn_id {
        let mut v = vm.try_borrow_mut().ok()?;
        if let Some(known) = v.conns.get(&id, 0) {
            facts.peer = known.peer.clone();
            facts.source_ip = known.source_ip.clone();
            facts.tls_version = known.tls_version.clone();
            facts.local_uri_san = known.local_uri_san.clone();
            return Some(facts);
        }
    }
    let property = |path: &[&str]| -> Option<String> {
        hostcalls::get_property(path.to_vec())
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
    };
    let mtls = hostcalls::get_property(vec!["connection", "mtls"])
        .ok()
        .flatten()
        .is_some_and(|b| b.as_slice() == [1] || b.as_slice() == b"true");
    let digest = property(&["connection", "sha256_peer_certificate_digest"]);
    facts.source_ip = property(&["source", "address"]).map(|a| certbind_core::flow::source_ip(&a));
    facts.tls_version = property(&["connection", "tls_version"]);
    let mut v = vm.try_borrow_mut().ok()?;
    if v.config().audience.is_none() {
        // One mesh-wide configuration: this listener's certificate names the service.
        facts.local_uri_san = property(&["connection", "uri_san_local_certificate"]);
        if v.config()
            .audience_for(facts.local_uri_san.as_deref())
            .is_none()
        {
            log::warn!(
                "certbind: no audience configured and the listener's certificate has no SPIFFE ID of the trust domain (URI SAN {}): every token is refused as wrong_audience",
                facts
                    .local_uri_san
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), log_safe)
            );
        }
    }
    facts.peer = v.engine.peer_identity(mtls, digest.as_deref(), || {
        let pem = property(&["connection", "peer_certificate"]);
        log::debug!(
            "certbind new peer certificate (PEM {})",
            if pem.is_some() {
                "available"
            } else {
                "absent: first URI SAN used"
            }
        );
        (pem, property(&["connection", "uri_san_peer_certificate"]))
    });
    if let Some(id) = conn_id {
        let known = ConnFacts {
            peer: facts.peer.clone(),
            source_ip: facts.source_ip.clone(),
            tls_version: facts.tls_version.clone(),
            local_uri_san: facts.local_uri_san.clone(),
        };
        v.conns.insert(id, known, u64::MAX, 0);
    }
    Some(facts)
}

/// Starts the checks for the current request (context `ctx`); true to continue at once.
pub fn start_request(vm: &VmRef, ctx: u32) -> bool {
    let now = now_ms();
    crate::revocation::before_request(vm, now);
    let Some(facts) = read_facts(vm) else {
        return fail_closed(ctx, "");
    };
    let started = match vm.try_borrow_mut() {
        Ok(mut v) => Some(Flow::start(&mut v.engine, facts, now)),
        Err(_) => None,
    };
    match started {
        Some((flow, step)) => act(vm, ctx, flow, step, now, false),
        None => fail_closed(ctx, ""),
    }
}

/// The request could not even be examined (state busy): refuse it rather than pass it.
fn fail_closed(ctx: u32, request_id: &str) -> bool {
    log::error!("[ctx {ctx}] certbind internal state unavailable; refusing the request");
    let deny = Deny::new(Reason::JwksUnavailable, "certbind", request_id);
    reply(&deny);
    false
}

/// Carries out `step` for request `ctx` until it is allowed, denied or paused.
/// `resuming`: the request is paused already and must be resumed to pass.
/// Returns true when the request may continue right away (only when not resuming).
fn act(vm: &VmRef, ctx: u32, mut flow: Flow, mut step: Step, now: u64, resuming: bool) -> bool {
    loop {
        step = match step {
            Step::Allow(allow) => {
                allow_request(vm, ctx, &flow, &allow);
                if resuming {
                    let _ = hostcalls::resume_http_request();
                }
                return true;
            }
            Step::Deny(deny) => {
                record(vm, ctx, &flow, Outcome::Deny(deny.reason));
                reply(&deny);
                return false;
            }
            Step::FetchJwks {
                kind,
                wait_until_ms,
            } => {
                if sync_jwks(vm) {
                    // Another VM just stored a newer set: that is the fetch this flow asks for.
                    match resume_jwks(vm, &mut flow, now) {
                        Some(next) => {
                            step = next;
                            continue;
                        }
                        None => return fail_closed(ctx, &flow.facts().request_id),
                    }
                }
                let started = start_jwks_fetch(vm, kind, now);
                if started == FetchStart::NotNow && kind == FetchKind::UnknownKid {
                    // Rate limited: the flow refuses the unknown `kid` now.
                    match resume_jwks(vm, &mut flow, now) {
                        Some(next) => next,
                        None => return fail_closed(ctx, &flow.facts().request_id),
                    }
                } else {
                    park(
                        vm,
                        ctx,
                        flow,
                        Wait::Jwks {
                            until_ms: wait_until_ms,
                        },
                    );
                    return false;
                }
            }
            Step::AwaitRevocations { wait_until_ms } => {
                park(
                    vm,
                    ctx,
                    flow,
                    Wait::Revocations {
                        until_ms: wait_until_ms,
                    },
                );
                return false;
            }
            Step::ConsumeUse { body, timeout_ms } => {
                match dispatch_post(vm, Target::Usage, &body, timeout_ms) {
                    Some(token) => {
                        let receiver = active_context(vm);
                        if let Ok(mut v) = vm.try_borrow_mut() {
                            v.calls.insert(token, Call::Usage { ctx, receiver });
                        }
                        park(vm, ctx, flow, Wait::Usage { token });
                        return false;
                    }
                    // Not dispatched (no such cluster, breaker open): the use cannot be counted.
                    None => match vm.try_borrow() {
                        Ok(v) => flow
                            .usage_answered(&v.engine, None, b"")
                            .unwrap_or_else(|| {
                                Step::Deny(Deny::new(Reason::UsageUnavailable, "certbind", ""))
                            }),
                        Err(_) => return fail_closed(ctx, &flow.facts().request_id),
                    },
                }
            }
            Step::AskPdp { body, timeout_ms } => {
                match dispatch_post(vm, Target::Pdp, &body, timeout_ms) {
                    Some(token) => {
                        let receiver = active_context(vm);
                        if let Ok(mut v) = vm.try_borrow_mut() {
                            v.calls.insert(token, Call::Pdp { ctx, receiver });
                        }
                        park(vm, ctx, flow, Wait::Pdp { token });
                        return false;
                    }
                    None => match vm.try_borrow_mut() {
                        Ok(mut v) => flow
                            .pdp_answered(&mut v.engine, None, b"", now)
                            .unwrap_or_else(|| {
                                Step::Deny(Deny::new(Reason::PdpUnavailable, "certbind", ""))
                            }),
                        Err(_) => return fail_closed(ctx, &flow.facts().request_id),
                    },
                }
            }
        };
    }
}

fn resume_jwks(vm: &VmRef, flow: &mut Flow, now: u64) -> Option<Step> {
    let mut v = vm.try_borrow_mut().ok()?;
    flow.resume_jwks(&mut v.engine, now)
}

fn park(vm: &VmRef, ctx: u32, flow: Flow, wait: Wait) {
    if let Ok(mut v) = vm.try_borrow_mut() {
        v.parked.insert(ctx, Parked { flow, wait });
        if matches!(wait, Wait::Jwks { .. } | Wait::Revocations { .. }) {
            set_tick(&mut v, FAST_TICK);
        }
    }
}

fn allow_request(vm: &VmRef, ctx: u32, flow: &Flow, allow: &Allow) {
    // `add`, not `replace`: read_facts removed every caller-sent `x-certbind-*` header, so
    // Envoy need not look for one to replace.
    for (name, value) in &allow.headers {
        let _ = hostcalls::add_map_value(MapType::HttpRequestHeaders, name, value);
    }
    // Removing a header the request does not carry is a host call for nothing.
    if allow.remove_authorization {
        if flow.facts().authorization.is_some() {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "authorization", None);
        }
        if !flow.facts().dpop.is_empty() {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "dpop", None);
        }
    }
    let outcome = match allow.shadowed {
        Some(reason) => Outcome::Shadow(reason),
        None => Outcome::Allow,
    };
    record(vm, ctx, flow, outcome);
}

fn reply(deny: &Deny) {
    let headers: Vec<(&str, &str)> = deny
        .headers
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let _ = hostcalls::send_http_response(deny.status, headers, Some(deny.body.as_bytes()));
}

enum Outcome {
    Allow,
    Deny(Reason),
    Shadow(Reason),
}

/// Counters and the one log line of a decision (never the token).
fn record(vm: &VmRef, ctx: u32, flow: &Flow, outcome: Outcome) {
    let Ok(v) = vm.try_borrow() else {
        return;
    };
    let (word, reason) = match outcome {
        Outcome::Allow => {
            v.metrics.bump(Counter::Allowed);
            ("allow", "ok")
        }
        Outcome::Deny(reason) => {
            v.metrics.bump(Counter::Denied(reason));
            ("deny", reason.as_str())
        }
        Outcome::Shadow(reason) => {
            v.metrics.bump(Counter::Denied(reason));
            v.metrics.bump(Counter::ShadowPassed);
            ("shadow", reason.as_str())
        }
    };
    if flow.token_cache_hit() {
        v.metrics.bump(Counter::TokenCacheHit);
    }
    if flow.decision_cache_hit() {
        v.metrics.bump(Counter::DecisionCacheHit);
    }
    if flow.revocation_unchecked() {
        v.metrics.bump(Counter::RevocationFailOpen);
        log::warn!(
            "certbind revocation feed stale: request_id={} admitted unchecked (fail_open)",
            log_safe(&flow.facts().request_id)
        );
    }
    log::info!(
        "certbind decision ctx={ctx} request_id={} outcome={word} reason={reason} subject={} mode={} token_cache={} decision_cache={}{}{}{}",
        log_safe(&flow.facts().request_id),
        flow.subject().map_or_else(|| "-".to_owned(), log_safe),
        v.config().mode.as_str(),
        if flow.token_cache_hit() {
            "hit"
        } else {
            "miss"
        },
        if flow.decision_cache_hit() {
            "hit"
        } else {
            "miss"
        },
        flow.dpop_detail()
            .map_or_else(String::new, |d| format!(" dpop={d}")),
        flow.revoked()
            .map_or_else(String::new, |k| format!(" revoked={k}")),
        flow.usage()
            .map_or_else(String::new, |u| format!(" usage={}", u.as_str())),
    );
}

/// Whether request `ctx` is paused waiting for keys or the PDP (or its state is busy).
pub fn is_waiting(vm: &VmRef, ctx: u32) -> bool {
    vm.try_borrow()
        .map_or(true, |v| v.parked.contains_key(&ctx))
}

/// The request context went away: forget its paused flow and calls. A JWKS fetch whose
/// answer would have gone to it frees its lease so another context can fetch.
pub fn forget_context(vm: &VmRef, ctx: u32) {
    let Ok(mut v) = vm.try_borrow_mut() else {
        return;
    };
    v.parked.remove(&ctx);
    let mut orphaned_fetch = false;
    v.calls.retain(|_, call| match *call {
        Call::Pdp { ctx: c, receiver } | Call::Usage { ctx: c, receiver } => {
            c != ctx && receiver != ctx
        }
        Call::Jwks { receiver } => {
            orphaned_fetch |= receiver == ctx;
            receiver != ctx
        }
    });
    if orphaned_fetch {
        let key = v.fetch_key.clone();
        drop(v);
        update_fetch_record(&key, FetchRecord::abandon);
        if let Ok(mut v) = vm.try_borrow_mut() {
            v.wake_pending = true;
        }
    }
}

// ---------------------------------------------------------------------------------------
// JWKS

/// Installs the shared JWKS copy if another VM (or this one) stored a newer one.
/// Returns true when the keys changed.
pub fn sync_jwks(vm: &VmRef) -> bool {
    let Ok(key) = vm.try_borrow().map(|v| v.set_key.clone()) else {
        return false;
    };
    let (value, cas) = hostcalls::get_shared_data(&key).unwrap_or((None, None));
    let Ok(mut v) = vm.try_borrow_mut() else {
        return false;
    };
    if cas.is_none() || cas == v.jwks_cas {
        return false;
    }
    v.jwks_cas = cas;
    let Some((fetched_at, body)) = value.as_deref().and_then(decode_shared_set) else {
        return false;
    };
    match v.engine.install_jwks(body, fetched_at) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("certbind shared JWKS refused: {e}");
            false
        }
    }
}

/// Reads, changes and CAS-writes the shared fetch record (a few retries on a lost race).
fn update_fetch_record(key: &str, change: impl Fn(&mut FetchRecord)) {
    for _ in 0..4 {
        let (value, cas) = hostcalls::get_shared_data(key).unwrap_or((None, None));
        let mut record = FetchRecord::decode(value.as_deref().unwrap_or_default());
        change(&mut record);
        match hostcalls::set_shared_data(key, Some(record.encode().as_bytes()), cas) {
            Err(Status::CasMismatch) => continue,
            _ => return,
        }
    }
}

/// Starts a JWKS fetch if this VM may (single flight across VMs, rate limit, backoff).
pub fn start_jwks_fetch(vm: &VmRef, kind: FetchKind, now: u64) -> FetchStart {
    let Ok((key, due, policy)) = vm.try_borrow().map(|v| {
        (
            v.fetch_key.clone(),
            v.engine.jwks().needs_refresh(now),
            *v.engine.jwks().policy(),
        )
    }) else {
        return FetchStart::InFlight;
    };
    let (value, cas) = hostcalls::get_shared_data(&key).unwrap_or((None, None));
    let mut record = FetchRecord::decode(value.as_deref().unwrap_or_default());
    let start = record.begin(kind, due, &policy, now);
    if start != FetchStart::Begun {
        return start;
    }
    match hostcalls::set_shared_data(&key, Some(record.encode().as_bytes()), cas) {
        Ok(()) => {}
        Err(_) => return FetchStart::InFlight,
    }
    let receiver = active_context(vm);
    match dispatch_jwks(vm) {
        Some(token) => {
            if let Ok(mut v) = vm.try_borrow_mut() {
                v.calls.insert(token, Call::Jwks { receiver });
            }
            FetchStart::Begun
        }
        None => {
            update_fetch_record(&key, |r| r.finish(false, now));
            if let Ok(v) = vm.try_borrow() {
                v.metrics.bump(Counter::JwksFetchFailed);
            }
            log::warn!("certbind JWKS fetch could not be dispatched");
            FetchStart::NotNow
        }
    }
}

thread_local! {
    /// The SDK context whose callback is running (the receiver of calls dispatched now).
    static ACTIVE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Notes which context's callback is running; the glue calls this on every entry.
pub fn enter(ctx: u32) {
    ACTIVE.with(|a| a.set(ctx));
}

fn active_context(vm: &VmRef) -> u32 {
    let active = ACTIVE.with(std::cell::Cell::get);
    if active == 0 {
        vm.try_borrow().map_or(0, |v| v.root_id)
    } else {
        active
    }
}

fn dispatch_jwks(vm: &VmRef) -> Option<u32> {
    let (cluster, authority, path, timeout) = {
        let v = vm.try_borrow().ok()?;
        let j = &v.config().jwks;
        (
            j.cluster.clone(),
            j.authority.clone(),
            j.path.clone(),
            Duration::from_millis(j.timeout_ms),
        )
    };
    let headers = vec![
        (":method", "GET"),
        (":path", path.as_str()),
        (":authority", authority.as_str()),
        (":scheme", "https"),
        ("accept", "application/json"),
    ];
    hostcalls::dispatch_http_call(&cluster, headers, None, vec![], timeout).ok()
}

/// Where a JSON `POST` of the flow goes.
#[derive(Debug, Clone, Copy)]
enum Target {
    Pdp,
    Usage,
}

fn dispatch_post(vm: &VmRef, target: Target, body: &str, timeout_ms: u64) -> Option<u32> {
    let (cluster, authority, path) = {
        let v = vm.try_borrow().ok()?;
        let c = v.config();
        match target {
            Target::Pdp => (
                c.pdp.cluster.clone(),
                c.pdp.authority.clone(),
                c.pdp.path.clone(),
            ),
            Target::Usage => {
                let (cluster, authority) = c.usage_target()?;
                let path = c.usage.as_ref()?.path.clone();
                (cluster.to_owned(), authority.to_owned(), path)
            }
        }
    };
    let headers = vec![
        (":method", "POST"),
        (":path", path.as_str()),
        (":authority", authority.as_str()),
        (":scheme", "https"),
        ("content-type", "application/json"),
    ];
    hostcalls::dispatch_http_call(
        &cluster,
        headers,
        Some(body.as_bytes()),
        vec![],
        Duration::from_millis(timeout_ms),
    )
    .ok()
}

/// The status and body of the call response being delivered; the body only if it is at most
/// `max` bytes (a larger one is treated as no answer).
pub(crate) fn call_response(body_size: usize, max: usize) -> (Option<u32>, Vec<u8>) {
    let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|s| s.parse().ok());
    if body_size == 0 || body_size > max {
        return (status.filter(|_| body_size <= max), Vec::new());
    }
    let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
        .ok()
        .flatten()
        .unwrap_or_default();
    (status, body)
}

/// A call's answer arrived in context `receiver` (root or a request).
pub fn on_call_response(vm: &VmRef, receiver: u32, token: u32, body_size: usize) {
    let call = match vm.try_borrow_mut() {
        Ok(mut v) => v.calls.remove(&token),
        Err(_) => None,
    };
    if call.is_none() && crate::revocation::owns(vm, token) {
        crate::revocation::on_response(vm, token, body_size);
        return;
    }
    match call {
        Some(Call::Jwks { .. }) => on_jwks_response(vm, receiver, body_size),
        Some(Call::Pdp { ctx, .. }) => {
            on_flow_call_response(vm, receiver, ctx, token, |flow, engine, now| {
                let (status, body) = call_response(body_size, MAX_DECISION_BYTES);
                flow.pdp_answered(engine, status, &body, now)
            })
        }
        Some(Call::Usage { ctx, .. }) => {
            on_flow_call_response(vm, receiver, ctx, token, |flow, engine, _| {
                let (status, body) = call_response(body_size, MAX_USE_ANSWER_BYTES);
                flow.usage_answered(engine, status, &body)
            })
        }
        // A late answer for a request that is gone, or a repeated callback.
        None => {}
    }
}

fn on_jwks_response(vm: &VmRef, receiver: u32, body_size: usize) {
    let now = now_ms();
    let (status, body) = call_response(body_size, MAX_JWKS_BYTES);
    let installed = match vm.try_borrow_mut() {
        Ok(mut v) if status == Some(200) => {
            v.engine.install_jwks(&body, now).map_err(|e| e.to_string())
        }
        Ok(_) => Err(format!("status {status:?}")),
        Err(_) => return,
    };
    let Ok((set_key, fetch_key, root_id)) = vm
        .try_borrow()
        .map(|v| (v.set_key.clone(), v.fetch_key.clone(), v.root_id))
    else {
        return;
    };
    match &installed {
        Ok(()) => {
            let _ =
                hostcalls::set_shared_data(&set_key, Some(&encode_shared_set(now, &body)), None);
            let (_, cas) = hostcalls::get_shared_data(&set_key).unwrap_or((None, None));
            if let Ok(mut v) = vm.try_borrow_mut() {
                v.jwks_cas = cas;
                v.metrics.bump(Counter::JwksFetchOk);
            }
            log::info!("certbind JWKS installed");
        }
        Err(e) => {
            if let Ok(v) = vm.try_borrow() {
                v.metrics.bump(Counter::JwksFetchFailed);
            }
            log::warn!("certbind JWKS fetch failed: {e}; keeping the last good set");
        }
    }
    let ok = installed.is_ok();
    update_fetch_record(&fetch_key, |r| r.finish(ok, now));
    if receiver == root_id {
        resume_jwks_waiters(vm, now, true);
    } else {
        // Resume the receiving request itself; the root resumes the others on its next tick,
        // so their PDP calls are answered to a context that outlives them.
        resume_one_jwks_waiter(vm, receiver, now, false);
        if let Ok(mut v) = vm.try_borrow_mut() {
            v.wake_pending = true;
            set_tick(&mut v, FAST_TICK);
        }
    }
}

/// Re-runs the flows waiting for keys or revocations (all of them, or only those past their
/// deadline).
fn resume_jwks_waiters(vm: &VmRef, now: u64, all: bool) {
    resume_waiters(vm, now, |wait| match wait {
        Wait::Jwks { until_ms } | Wait::Revocations { until_ms } => all || now >= until_ms,
        Wait::Pdp { .. } | Wait::Usage { .. } => false,
    });
}

/// Re-runs the requests waiting for the first revocation snapshot (root context).
pub(crate) fn resume_revocation_waiters(vm: &VmRef, now: u64) {
    resume_waiters(vm, now, |wait| matches!(wait, Wait::Revocations { .. }));
}

fn resume_waiters(vm: &VmRef, now: u64, due: impl Fn(Wait) -> bool) {
    let waiting: Vec<u32> = match vm.try_borrow() {
        Ok(v) => v
            .parked
            .iter()
            .filter_map(|(ctx, p)| due(p.wait).then_some(*ctx))
            .collect(),
        Err(_) => return,
    };
    for ctx in waiting {
        resume_one_jwks_waiter(vm, ctx, now, true);
    }
    if let Ok(root) = vm.try_borrow().map(|v| v.root_id) {
        let _ = hostcalls::set_effective_context(root);
    }
}

fn resume_one_jwks_waiter(vm: &VmRef, ctx: u32, now: u64, switch_context: bool) {
    let parked = match vm.try_borrow_mut() {
        Ok(mut v) => match v.parked.get(&ctx).map(|p| p.wait) {
            Some(Wait::Jwks { .. } | Wait::Revocations { .. }) => v.parked.remove(&ctx),
            _ => None,
        },
        Err(_) => None,
    };
    let Some(Parked { mut flow, .. }) = parked else {
        return;
    };
    if switch_context && hostcalls::set_effective_context(ctx).is_err() {
        // The request is gone.
        return;
    }
    let Some(step) = resume_jwks(vm, &mut flow, now) else {
        return;
    };
    act(vm, ctx, flow, step, now, true);
}

/// The answer to a call request `ctx` waits for (the PDP's or the usage counter's):
/// `answered` reads it (while the call's answer is the current one) and moves the flow on.
fn on_flow_call_response(
    vm: &VmRef,
    receiver: u32,
    ctx: u32,
    token: u32,
    answered: impl FnOnce(&mut Flow, &mut Engine, u64) -> Option<Step>,
) {
    let now = now_ms();
    let parked = match vm.try_borrow_mut() {
        Ok(mut v) => match v.parked.get(&ctx).map(|p| p.wait) {
            Some(Wait::Pdp { token: t } | Wait::Usage { token: t }) if t == token => {
                v.parked.remove(&ctx)
            }
            _ => None,
        },
        Err(_) => None,
    };
    let Some(Parked { mut flow, .. }) = parked else {
        return;
    };
    // Read the answer before switching context: it belongs to the call being delivered.
    let step = match vm.try_borrow_mut() {
        Ok(mut v) => answered(&mut flow, &mut v.engine, now),
        Err(_) => None,
    };
    if receiver != ctx && hostcalls::set_effective_context(ctx).is_err() {
        return;
    }
    if let Some(step) = step {
        act(vm, ctx, flow, step, now, true);
    }
    if receiver != ctx {
        let _ = hostcalls::set_effective_context(receiver);
    }
}

// ---------------------------------------------------------------------------------------
// Root tick

/// The root's periodic work: adopt a newer shared JWKS, start a due fetch, resume or time
/// out waiting requests, and pick the next tick period.
pub fn on_tick(vm: &VmRef) {
    follow_log_level();
    let now = now_ms();
    let changed = sync_jwks(vm);
    crate::revocation::on_tick(vm, now);
    let due = vm
        .try_borrow()
        .is_ok_and(|v| v.engine.jwks().needs_refresh(now));
    if due {
        start_jwks_fetch(vm, FetchKind::Scheduled, now);
    }
    let wake = match vm.try_borrow_mut() {
        Ok(mut v) => std::mem::take(&mut v.wake_pending),
        Err(_) => false,
    };
    resume_jwks_waiters(vm, now, changed || wake);
    if let Ok(mut v) = vm.try_borrow_mut() {
        let waiting = v
            .parked
            .values()
            .any(|p| matches!(p.wait, Wait::Jwks { .. } | Wait::Revocations { .. }));
        let period = if waiting
            || v.engine.jwks().keys().is_none()
            || crate::revocation::wants_fast_tick(&v, now)
        {
            FAST_TICK
        } else {
            SLOW_TICK
        };
        set_tick(&mut v, period);
    }
}

fn set_tick(v: &mut Vm, period: Duration) {
    if v.tick != Some(period) {
        v.tick = Some(period);
        let _ = hostcalls::set_tick_period(period);
    }
}

/// Follows Envoy's log level for Wasm, so a line Envoy would drop (the per-request decision
/// line at `info` under `--log-level warn`) is neither formatted nor handed to the host.
fn follow_log_level() {
    if let Ok(level) = hostcalls::get_log_level() {
        proxy_wasm::set_log_level(level);
    }
}

/// After configuration: adopt a shared JWKS if one exists and tick fast until keys arrive.
pub fn configured(vm: &VmRef) {
    follow_log_level();
    sync_jwks(vm);
    if let Ok(mut v) = vm.try_borrow_mut() {
        set_tick(&mut v, FAST_TICK);
    }
}
