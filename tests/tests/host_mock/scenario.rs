//! The behaviour API: a sidecar (one or more worker VMs of the real filter sharing one
//! shared-data store), its upstreams (JWKS, PDP) answering as the test says, a clock the test
//! moves, and requests whose outcomes (reply, forwarded headers, calls, counters) are asserted.

use super::certs::{Cert, Pki, spiffe};
use super::contract;
use super::host::{
    CallResponse, Clock, ForeignVerify, HeaderMap, HttpCall, LocalResponse, Shared, Stream,
};
use super::tokens::{Key, TokenBuilder, jwks};
use super::vm::{FIRST_STREAM, Trap, Vm, host_state};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

pub const ISSUER: &str = "https://127.0.0.1:9443";
pub const JWKS_CLUSTER: &str = "certbind_authz";
pub const PDP_CLUSTER: &str = "certbind_pdp";
/// 2027-01-15T08:00:00Z: far from any epoch edge.
pub const START_S: u64 = 1_800_000_000;
const ROOT: u32 = 1;
/// Deliveries in one pump before the test calls it a livelock (a call storm).
const PUMP_LIMIT: usize = 10_000;
/// How long a warm start runs the clock so the first JWKS fetch completes.
pub const WARM_UP_MS: u64 = 250;

pub fn audience() -> String {
    spiffe("orders")
}

/// The plugin configuration every scenario starts from (CONTRACT §4 defaults otherwise).
pub fn base_config() -> Value {
    json!({
        "issuer": ISSUER,
        "audience": audience(),
        "trust_domain": "certbind.test",
        "jwks": {"cluster": JWKS_CLUSTER, "authority": "127.0.0.1:9443"},
        "pdp": {"cluster": PDP_CLUSTER, "authority": "127.0.0.1:9191"},
    })
}

/// How an upstream answers one call.
#[derive(Debug, Clone)]
pub enum Answer {
    /// An HTTP response, `after_ms` after the call (later than the call's timeout: a timeout).
    Respond {
        status: u32,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        after_ms: u64,
    },
    /// The connection fails (Envoy delivers a response without headers or body).
    Fail { after_ms: u64 },
    /// No answer yet: the test may answer later, else Envoy times the call out.
    Silent,
}

impl Answer {
    pub fn json(status: u32, body: impl Into<String>) -> Self {
        Self::Respond {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into().into_bytes(),
            after_ms: 0,
        }
    }
    pub fn raw(status: u32, body: &[u8]) -> Self {
        Self::Respond {
            status,
            headers: vec![],
            body: body.to_vec(),
            after_ms: 0,
        }
    }
    pub fn after(self, ms: u64) -> Self {
        match self {
            Self::Respond {
                status,
                headers,
                body,
                ..
            } => Self::Respond {
                status,
                headers,
                body,
                after_ms: ms,
            },
            Self::Fail { .. } => Self::Fail { after_ms: ms },
            Self::Silent => Self::Silent,
        }
    }
    /// The same answer with another HTTP status.
    pub fn with_status(self, new: u32) -> Self {
        match self {
            Self::Respond {
                headers,
                body,
                after_ms,
                ..
            } => Self::Respond {
                status: new,
                headers,
                body,
                after_ms,
            },
            other => other,
        }
    }
    pub fn fail() -> Self {
        Self::Fail { after_ms: 0 }
    }
}

/// A PDP decision (CONTRACT §5) as JSON.
pub fn decision(allow: bool, reason: &str, ttl_s: u64) -> Answer {
    Answer::json(
        200,
        json!({"allow": allow, "policy_id": "test", "reason": reason, "ttl_s": ttl_s}).to_string(),
    )
}

/// Which upstream endpoint a call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Jwks,
    Pdp,
    /// The authz-server's revocation feed (`/v1/revocations`).
    Revocations,
    /// The authz-server's usage counter (`/v1/usage/consume`).
    Usage,
    Other,
}

/// A call the filter made, as the upstream sees it.
#[derive(Debug, Clone)]
pub struct Dispatched {
    pub vm: usize,
    pub endpoint: Endpoint,
    pub call: HttpCall,
}

impl Dispatched {
    pub fn header(&self, name: &str) -> Option<String> {
        self.call.headers.get_str(name)
    }
    pub fn body_json(&self) -> Value {
        serde_json::from_slice(&self.call.body).unwrap_or(Value::Null)
    }
}

pub type Responder = Box<dyn FnMut(&Dispatched) -> Answer>;

struct Pending {
    vm: usize,
    /// The root context of the context that made the call: Envoy answers it there.
    root: u32,
    token: u32,
    endpoint: Endpoint,
    seq: u64,
    /// When Envoy gives up on the call (its timeout).
    deadline_ms: u64,
    /// The upstream's answer and when it arrives, if it answers.
    answer: Option<(u64, CallResponse)>,
}

impl Pending {
    /// When and what gets delivered: the answer if it beats the deadline, else a failure.
    fn due(&self) -> (u64, CallResponse) {
        match &self.answer {
            Some((at, r)) if *at <= self.deadline_ms => (*at, r.clone()),
            _ => (self.deadline_ms, CallResponse::default()),
        }
    }
}

/// What became of a request.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The filter answered locally.
    Replied(LocalResponse),
    /// The request went upstream with these headers.
    Forwarded(HeaderMap),
    /// Still paused (waiting for a call or a tick).
    Paused,
    /// The filter reset the stream.
    Reset,
}

/// One request in flight: enough to find it again and to judge it.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub vm: usize,
    pub ctx: u32,
    pub request_id: String,
    pub token: Option<String>,
    finished: bool,
}

pub struct Builder {
    config: Value,
    raw_config: Option<Vec<u8>>,
    vms: usize,
    plugins: u32,
    jwks: Option<Responder>,
    pdp: Option<Responder>,
    seed: u64,
    pki: Option<Rc<Pki>>,
    key: Option<Key>,
    warm: bool,
    verify_signature: ForeignVerify,
}

impl Builder {
    /// Starts without letting the first JWKS fetch happen (requests find no keys).
    pub fn cold(mut self) -> Self {
        self.warm = false;
        self
    }
    /// Edits the plugin configuration (JSON) before the VMs start.
    pub fn config(mut self, edit: impl FnOnce(&mut Value)) -> Self {
        edit(&mut self.config);
        self
    }
    /// A configuration given as raw bytes (for refusals of non-JSON).
    pub fn raw_config(mut self, bytes: &[u8]) -> Self {
        self.raw_config = Some(bytes.to_vec());
        self
    }
    pub fn vms(mut self, n: usize) -> Self {
        self.vms = n;
        self
    }
    /// Plugin configurations per VM (root contexts 1..=n, the same configuration), as the
    /// sidecar's listeners share one VM per worker.
    pub fn plugins(mut self, n: u32) -> Self {
        assert!((1..FIRST_STREAM).contains(&n));
        self.plugins = n;
        self
    }
    pub fn jwks(mut self, f: impl FnMut(&Dispatched) -> Answer + 'static) -> Self {
        self.jwks = Some(Box::new(f));
        self
    }
    pub fn pdp(mut self, f: impl FnMut(&Dispatched) -> Answer + 'static) -> Self {
        self.pdp = Some(Box::new(f));
        self
    }
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    pub fn pki(mut self, pki: Rc<Pki>) -> Self {
        self.pki = Some(pki);
        self
    }
    pub fn key(mut self, key: Key) -> Self {
        self.key = Some(key);
        self
    }
    /// What every VM's host does on `verify_signature` (default: verifies natively).
    pub fn verify_signature(mut self, host: ForeignVerify) -> Self {
        self.verify_signature = host;
        self
    }

    /// Starts the VMs; panics unless every VM accepts the configuration.
    pub fn start(self) -> Sidecar {
        match self.try_start() {
            Ok(s) => s,
            Err((why, logs)) => panic!("the filter refused to start: {why}\n{logs:#?}"),
        }
    }

    /// Starts the VMs: `Err((why, logs))` if `on_vm_start`/`on_configure` refused or trapped.
    pub fn try_start(self) -> Result<Sidecar, (String, Vec<String>)> {
        let clock = Clock::at_ns(START_S * 1_000_000_000);
        let key = self
            .key
            .unwrap_or_else(|| Key::from_seed(self.seed ^ 0xc0ffee));
        let published = vec![key.clone()];
        let plugin_config = self
            .raw_config
            .clone()
            .unwrap_or_else(|| self.config.to_string().into_bytes());
        let clusters: Vec<String> = [
            &self.config["jwks"]["cluster"],
            &self.config["pdp"]["cluster"],
        ]
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
        let mut sidecar = Sidecar {
            vms: Vec::new(),
            ticks_stopped: Vec::new(),
            shared: Shared::default(),
            clock,
            config: self.config,
            pki: self.pki.unwrap_or_else(|| Rc::new(Pki::generate())),
            key,
            published: Rc::new(std::cell::RefCell::new(published)),
            jwks: None,
            pdp: None,
            revocations: None,
            usage: None,
            pending: Vec::new(),
            dispatched: Vec::new(),
            seq: 0,
            traps: Vec::new(),
            next_request: 1,
        };
        let published = sidecar.published.clone();
        sidecar.jwks = Some(self.jwks.unwrap_or_else(|| {
            Box::new(move |_| {
                let keys = published.borrow();
                Answer::json(200, jwks(&keys.iter().collect::<Vec<_>>()))
            })
        }));
        sidecar.pdp = Some(
            self.pdp
                .unwrap_or_else(|| Box::new(|_| decision(true, "allowed", 60))),
        );
        for i in 0..self.vms.max(1) {
            let mut state = host_state(&sidecar.clock, self.seed.wrapping_add(i as u64));
            state.vm_id = "certbind".into();
            state.plugin_config = plugin_config.clone();
            state.faults.clusters = clusters.clone();
            state.faults.verify_signature = self.verify_signature;
            state
                .vm_properties
                .insert("plugin_name".into(), b"certbind".to_vec());
            let mut vm = Vm::new(state).map_err(|t| (t.0, vec![]))?;
            let sh = &mut sidecar.shared;
            for root in ROOT..ROOT + self.plugins {
                let started = vm
                    .context_create(sh, root, 0)
                    .and_then(|()| vm.vm_start(sh, root))
                    .map_err(|t| (format!("trap: {}", t.0), logs_of(&vm)))?;
                if !started {
                    return Err(("on_vm_start returned false".into(), logs_of(&vm)));
                }
                let configured = vm
                    .configure(sh, root)
                    .map_err(|t| (format!("trap: {}", t.0), logs_of(&vm)))?;
                if !configured {
                    return Err(("on_configure returned false".into(), logs_of(&vm)));
                }
            }
            sidecar.vms.push(vm);
            sidecar.ticks_stopped.push(false);
            sidecar.pump();
        }
        if self.warm {
            // The first root tick (100 ms) fetches the JWKS; let it happen.
            sidecar.advance(Duration::from_millis(WARM_UP_MS));
        }
        Ok(sidecar)
    }
}

fn logs_of(vm: &Vm) -> Vec<String> {
    vm.host().logs.iter().map(|l| l.message.clone()).collect()
}

/// The system under test: N worker VMs of the filter, their upstreams, and the clock.
pub struct Sidecar {
    pub vms: Vec<Vm>,
    ticks_stopped: Vec<bool>,
    pub shared: Shared,
    pub clock: Clock,
    pub config: Value,
    pub pki: Rc<Pki>,
    /// The authz-server's active signing key.
    pub key: Key,
    /// What the default JWKS endpoint publishes (the active key unless the test changes it).
    pub published: Rc<std::cell::RefCell<Vec<Key>>>,
    jwks: Option<Responder>,
    pdp: Option<Responder>,
    revocations: Option<Responder>,
    usage: Option<Responder>,
    pending: Vec<Pending>,
    /// Every call the filter made, in order.
    pub dispatched: Vec<Dispatched>,
    seq: u64,
    /// Every trap, with the VM it happened in.
    pub traps: Vec<(usize, Trap)>,
    next_request: u64,
}

impl Sidecar {
    pub fn builder() -> Builder {
        Builder {
            config: base_config(),
            raw_config: None,
            vms: 1,
            plugins: 1,
            jwks: None,
            pdp: None,
            seed: 1,
            pki: None,
            key: None,
            warm: true,
            verify_signature: ForeignVerify::default(),
        }
    }

    /// One VM, the default configuration, a JWKS publishing the active key, a PDP that allows.
    pub fn new() -> Self {
        Self::builder().start()
    }

    // --- the world ------------------------------------------------------------------------

    pub fn now_s(&self) -> u64 {
        self.clock.now_s()
    }

    /// A token the authz-server would issue to `cert` now (scope `orders:read`).
    pub fn token(&mut self, cert: &Cert) -> TokenBuilder {
        self.seq += 1;
        let jti = format!("{:016x}{:016x}", self.seq, self.clock.now_ns());
        TokenBuilder::for_cert(&self.key, cert, ISSUER, &audience(), self.now_s()).jti(&jti)
    }

    /// Replaces what the JWKS endpoint answers from now on.
    pub fn set_jwks(&mut self, f: impl FnMut(&Dispatched) -> Answer + 'static) {
        self.jwks = Some(Box::new(f));
    }

    /// Replaces what the revocation feed answers from now on (default: silence).
    pub fn set_revocations(&mut self, f: impl FnMut(&Dispatched) -> Answer + 'static) {
        self.revocations = Some(Box::new(f));
    }

    /// Replaces what the usage counter answers from now on (default: silence).
    pub fn set_usage(&mut self, f: impl FnMut(&Dispatched) -> Answer + 'static) {
        self.usage = Some(Box::new(f));
    }

    /// Replaces what the PDP answers from now on.
    pub fn set_pdp(&mut self, f: impl FnMut(&Dispatched) -> Answer + 'static) {
        self.pdp = Some(Box::new(f));
    }

    pub fn calls_to(&self, cluster: &str) -> Vec<&Dispatched> {
        self.dispatched
            .iter()
            .filter(|d| d.call.cluster == cluster)
            .collect()
    }
    pub fn calls_for(&self, endpoint: Endpoint) -> Vec<&Dispatched> {
        self.dispatched
            .iter()
            .filter(|d| d.endpoint == endpoint)
            .collect()
    }
    pub fn jwks_fetches(&self) -> usize {
        self.calls_for(Endpoint::Jwks).len()
    }
    pub fn pdp_calls(&self) -> usize {
        self.calls_for(Endpoint::Pdp).len()
    }
    pub fn pending_calls(&self, endpoint: Endpoint) -> usize {
        self.pending
            .iter()
            .filter(|p| p.endpoint == endpoint)
            .count()
    }

    /// Which endpoint a call goes to (by cluster and path, as the configuration says).
    pub fn endpoint_of(&self, call: &HttpCall) -> Endpoint {
        let path = call.headers.get_str(":path").unwrap_or_default();
        let path = path.split('?').next().unwrap_or_default();
        let jwks = &self.config["jwks"];
        if Some(call.cluster.as_str()) == self.config["pdp"]["cluster"].as_str() {
            Endpoint::Pdp
        } else if path.starts_with("/v1/revocations") {
            Endpoint::Revocations
        } else if path == "/v1/usage/consume" {
            Endpoint::Usage
        } else if Some(call.cluster.as_str()) == jwks["cluster"].as_str()
            && path == jwks["path"].as_str().unwrap_or("/.well-known/jwks.json")
        {
            Endpoint::Jwks
        } else {
            Endpoint::Other
        }
    }

    /// A stat's value (0 if the filter never defined it).
    pub fn counter(&self, name: &str) -> u64 {
        self.shared.metric(name).unwrap_or(0)
    }

    /// A counter of the allow path (`certbind.allowed`, the cache hits), which the filter sums
    /// and hands to Envoy on its root tick: the clock moves a second first.
    pub fn tallied(&mut self, name: &str) -> u64 {
        self.advance_s(1);
        self.counter(name)
    }
    pub fn stats(&self) -> BTreeMap<String, u64> {
        self.shared
            .metrics
            .iter()
            .map(|m| (m.name.clone(), m.value))
            .collect()
    }

    pub fn logs(&self) -> Vec<String> {
        self.vms
            .iter()
            .flat_map(|vm| vm.host().logs.iter().map(|l| l.message.clone()))
            .collect()
    }

    /// Every ABI misuse any VM committed (the filter should commit none).
    pub fn abi_errors(&self) -> Vec<String> {
        self.vms
            .iter()
            .flat_map(|vm| vm.host().abi_errors.clone())
            .collect()
    }

    /// Answers every pending call to `endpoint` now with `answer` (then delivers it).
    pub fn answer_pending(&mut self, endpoint: Endpoint, answer: Answer) {
        let now = self.clock.now_ms();
        for p in self.pending.iter_mut().filter(|p| p.endpoint == endpoint) {
            p.answer = response_of(&answer).map(|(after, r)| (now + after, r));
        }
        self.pump();
    }

    /// Moves the clock forward, firing ticks and call deliveries/timeouts in time order.
    pub fn advance(&mut self, by: Duration) {
        let target = self.clock.now_ms() + by.as_millis() as u64;
        loop {
            self.pump();
            let next_tick = self
                .vms
                .iter()
                .flat_map(|v| v.ticks.values().filter_map(|t| t.next_ms))
                .min();
            let next_call = self.pending.iter().map(|p| p.due().0).min();
            let next = match (next_tick, next_call) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > target {
                break;
            }
            if next > self.clock.now_ms() {
                self.clock.set_ns(next * 1_000_000);
            }
            self.fire_ticks();
        }
        self.clock.set_ns(target * 1_000_000);
        self.pump();
    }

    pub fn advance_s(&mut self, s: u64) {
        self.advance(Duration::from_secs(s));
    }

    /// VM `vm` gets no more root ticks, like a worker VM torn down or stuck (its calls are
    /// still answered).
    pub fn stop_ticks(&mut self, vm: usize) {
        self.ticks_stopped[vm] = true;
    }

    fn fire_ticks(&mut self) {
        let now = self.clock.now_ms();
        for i in 0..self.vms.len() {
            if self.ticks_stopped[i] {
                self.vms[i].ticks.clear();
                continue;
            }
            let due: Vec<u32> = self.vms[i]
                .ticks
                .iter()
                .filter(|(_, t)| t.next_ms.is_some_and(|n| n <= now))
                .map(|(root, _)| *root)
                .collect();
            for root in due {
                let period = self.vms[i].host().tick_periods.get(&root).copied();
                let period = u64::from(period.unwrap_or(0));
                if let Some(t) = self.vms[i].ticks.get_mut(&root) {
                    t.next_ms = (period > 0).then_some(now + period);
                }
                let r = self.vms[i].tick(&mut self.shared, root);
                self.note(i, r);
                self.pump();
            }
        }
    }

    fn note<T>(&mut self, vm: usize, r: Result<T, Trap>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(t) => {
                if !self.traps.iter().any(|(v, _)| *v == vm) {
                    self.traps.push((vm, t));
                }
                None
            }
        }
    }

    /// Collects new calls and tick periods, then delivers everything due, until quiet.
    pub fn pump(&mut self) {
        for _ in 0..PUMP_LIMIT {
            self.collect();
            let now = self.clock.now_ms();
            let next = self
                .pending
                .iter()
                .enumerate()
                .map(|(i, p)| (p.due().0, p.seq, i))
                .filter(|(due, _, _)| *due <= now)
                .min();
            let Some((_, _, index)) = next else {
                return;
            };
            let p = self.pending.remove(index);
            let (_, response) = p.due();
            // Envoy (proxy-wasm-cpp-host) makes every call on the root context: the answer
            // goes to the root id whichever context dispatched it, and only the root's end
            // cancels it. The SDK then routes it by token to the context that dispatched.
            let vm = &mut self.vms[p.vm];
            let r = vm.http_call_response(&mut self.shared, p.root, p.token, response);
            self.note(p.vm, r);
        }
        panic!("livelock: more than {PUMP_LIMIT} call deliveries without the clock moving");
    }

    fn collect(&mut self) {
        let now = self.clock.now_ms();
        for i in 0..self.vms.len() {
            if !self.ticks_stopped[i] {
                let periods = self.vms[i].host().tick_periods.clone();
                for (root, period) in periods {
                    let tick = self.vms[i].ticks.entry(root).or_default();
                    if period != tick.period_ms {
                        tick.period_ms = period;
                        tick.next_ms = (period > 0).then_some(now + u64::from(period));
                    }
                }
            }
            let calls = std::mem::take(&mut self.vms[i].host_mut().outbox);
            for call in calls {
                let endpoint = self.endpoint_of(&call);
                let d = Dispatched {
                    vm: i,
                    endpoint,
                    call,
                };
                let responder = match endpoint {
                    Endpoint::Pdp => self.pdp.as_mut(),
                    Endpoint::Jwks => self.jwks.as_mut(),
                    Endpoint::Revocations => self.revocations.as_mut(),
                    Endpoint::Usage => self.usage.as_mut(),
                    Endpoint::Other => None,
                };
                let answer = responder.map_or(Answer::Silent, |f| f(&d));
                self.seq += 1;
                self.pending.push(Pending {
                    vm: i,
                    root: self.vms[i].host().root_of(d.call.from_context),
                    token: d.call.token,
                    endpoint,
                    seq: self.seq,
                    deadline_ms: d.call.at_ms + u64::from(d.call.timeout_ms),
                    answer: response_of(&answer).map(|(after, r)| (now + after, r)),
                });
                self.dispatched.push(d);
            }
        }
    }

    // --- requests -------------------------------------------------------------------------

    /// A request from a client presenting `cert` with `Authorization: Bearer <token>`.
    pub fn request(&mut self, cert: &Cert, token: &str) -> Request<'_> {
        let mut r = self.request_without_token(cert);
        r.headers.push((
            "authorization".into(),
            format!("Bearer {token}").into_bytes(),
        ));
        r.token = Some(token.to_owned());
        r
    }

    /// A request from a client presenting `cert`, without an Authorization header.
    pub fn request_without_token(&mut self, cert: &Cert) -> Request<'_> {
        let n = self.next_request;
        self.next_request += 1;
        Request {
            headers: vec![
                (":method".into(), b"GET".to_vec()),
                (":path".into(), b"/orders/1".to_vec()),
                (":authority".into(), b"orders".to_vec()),
                (":scheme".into(), b"https".to_vec()),
                ("x-request-id".into(), format!("req-{n}").into_bytes()),
                ("user-agent".into(), b"certbind-host-mock".to_vec()),
            ],
            properties: cert.properties(),
            token: None,
            vm: 0,
            root: ROOT,
            body: None,
            sidecar: self,
        }
    }

    /// Starts a request with exactly these parts on `vm`: headers (end of stream unless a
    /// body follows), then the body, as Envoy delivers them before any call is answered.
    pub fn start_request(&mut self, vm: usize, parts: Parts) -> Exchange {
        self.start_request_on(vm, ROOT, parts)
    }

    /// As [`Self::start_request`], on the plugin configuration of root context `root`.
    pub fn start_request_on(&mut self, vm: usize, root: u32, parts: Parts) -> Exchange {
        let Parts {
            headers,
            properties,
            token,
            body,
        } = parts;
        let vmr = &mut self.vms[vm];
        let ctx = vmr.next_context;
        vmr.next_context += 1;
        let request_id = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-request-id"))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        vmr.host_mut().streams.insert(
            ctx,
            Stream {
                request_headers: HeaderMap::from_pairs(&headers),
                request_body: body.clone().unwrap_or_default(),
                properties,
                ..Stream::default()
            },
        );
        let r = vmr.context_create(&mut self.shared, ctx, root);
        if self.note(vm, r).is_some() {
            let r = self.vms[vm].request_headers(&mut self.shared, ctx, body.is_none());
            if let Some(cont) = self.note(vm, r)
                && let Some(s) = self.vms[vm].host_mut().streams.get_mut(&ctx)
                && cont
            {
                s.resumed += 1;
            }
            if let Some(body) = &body {
                let r = self.vms[vm].request_body(&mut self.shared, ctx, body.len() as u32, true);
                if let Some(cont) = self.note(vm, r)
                    && let Some(s) = self.vms[vm].host_mut().streams.get_mut(&ctx)
                    && cont
                    && s.resumed == 0
                    && s.local_response.is_none()
                {
                    // Envoy would let the body (and with it the stopped headers) go on.
                    s.body_released_early = true;
                }
            }
        }
        self.pump();
        Exchange {
            vm,
            ctx,
            request_id,
            token,
            finished: false,
        }
    }

    pub fn outcome(&self, ex: &Exchange) -> Outcome {
        let Some(s) = self.vms[ex.vm].host().streams.get(&ex.ctx) else {
            return Outcome::Paused;
        };
        if let Some(r) = &s.local_response {
            Outcome::Replied(r.clone())
        } else if s.resumed > 0 {
            Outcome::Forwarded(s.request_headers.clone())
        } else if s.reset {
            Outcome::Reset
        } else {
            Outcome::Paused
        }
    }

    /// Ends the stream as Envoy does when it completes or the client goes away:
    /// `on_done`, `on_log`, `on_delete`. Calls it dispatched stay pending: Envoy owns them
    /// on the root context.
    pub fn finish(&mut self, ex: &mut Exchange) {
        if ex.finished {
            return;
        }
        ex.finished = true;
        let (vm, ctx) = (ex.vm, ex.ctx);
        let r = self.vms[vm].done(&mut self.shared, ctx);
        self.note(vm, r);
        let r = self.vms[vm].log(&mut self.shared, ctx);
        self.note(vm, r);
        let r = self.vms[vm].delete(&mut self.shared, ctx);
        self.note(vm, r);
        if let Some(s) = self.vms[vm].host_mut().streams.get_mut(&ctx) {
            s.deleted = true;
        }
        self.pump();
    }

    /// Removes the plugin as Envoy does when its configuration goes away: the root context's
    /// `on_done`, then (it answered true) `on_delete`, in every VM.
    pub fn remove_plugin(&mut self) {
        self.remove_root(ROOT);
    }

    /// Removes the plugin configuration of root context `root` from every VM (see
    /// [`Self::remove_plugin`]); the VMs' other root contexts go on.
    pub fn remove_root(&mut self, root: u32) {
        for i in 0..self.vms.len() {
            let r = self.vms[i].done(&mut self.shared, root);
            let done = matches!(r, Ok(true));
            self.note(i, r);
            if done {
                let r = self.vms[i].delete(&mut self.shared, root);
                self.note(i, r);
            }
            self.vms[i].ticks.remove(&root);
            self.vms[i].host_mut().tick_periods.remove(&root);
        }
    }

    /// Panics with the trap, the ABI errors and the logs if any VM misbehaved.
    pub fn assert_healthy(&self) {
        if !self.traps.is_empty() || !self.abi_errors().is_empty() {
            panic!(
                "the filter trapped or misused the ABI:\ntraps: {:#?}\nABI errors: {:#?}\nlogs: {:#?}",
                self.traps,
                self.abi_errors(),
                self.logs()
            );
        }
    }

    /// The judgement of an exchange.
    pub fn verdict<'a>(&'a mut self, ex: &'a mut Exchange) -> Verdict<'a> {
        Verdict { sidecar: self, ex }
    }

    /// Asserts the logs never carried `secret` (a token, or a part of it long enough to matter).
    pub fn assert_not_logged(&self, secret: &str) {
        for line in self.logs() {
            assert!(
                !line.contains(secret),
                "a log line carries a secret: {line:?}"
            );
            assert!(
                !line.contains("BEGIN CERTIFICATE"),
                "a log line carries a certificate: {line:?}"
            );
        }
    }
}

impl Default for Sidecar {
    fn default() -> Self {
        Self::new()
    }
}

fn response_of(answer: &Answer) -> Option<(u64, CallResponse)> {
    match answer {
        Answer::Respond {
            status,
            headers,
            body,
            after_ms,
        } => {
            let mut h = HeaderMap::default();
            h.add(b":status", status.to_string().as_bytes());
            for (k, v) in headers {
                h.add(k.as_bytes(), v.as_bytes());
            }
            h.add(b"content-length", body.len().to_string().as_bytes());
            Some((
                *after_ms,
                CallResponse {
                    headers: h,
                    body: body.clone(),
                    trailers: HeaderMap::default(),
                },
            ))
        }
        Answer::Fail { after_ms } => Some((*after_ms, CallResponse::default())),
        Answer::Silent => None,
    }
}

/// A request being built. `send` starts it; `answers`/`admitted` also judge it.
pub struct Request<'a> {
    sidecar: &'a mut Sidecar,
    pub headers: Vec<(String, Vec<u8>)>,
    pub properties: BTreeMap<String, Vec<u8>>,
    token: Option<String>,
    vm: usize,
    root: u32,
    body: Option<Vec<u8>>,
}

/// What a client sends: headers, the connection's properties, maybe a body.
#[derive(Debug, Clone, Default)]
pub struct Parts {
    pub headers: Vec<(String, Vec<u8>)>,
    pub properties: BTreeMap<String, Vec<u8>>,
    /// The token inside, if any (so no log line may show it).
    pub token: Option<String>,
    pub body: Option<Vec<u8>>,
}

impl<'a> Request<'a> {
    /// Sets a header (replacing any of the same name).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }
    /// Adds a header (keeping any of the same name).
    pub fn add_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }
    pub fn without_header(mut self, name: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }
    pub fn path(self, path: &str) -> Self {
        self.header(":path", path)
    }
    pub fn method(self, method: &str) -> Self {
        self.header(":method", method)
    }
    pub fn property(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.properties.insert(name.into(), value.as_ref().to_vec());
        self
    }
    pub fn without_property(mut self, name: &str) -> Self {
        self.properties.remove(name);
        self
    }
    /// Which worker VM handles it.
    pub fn on_vm(mut self, vm: usize) -> Self {
        self.vm = vm;
        self
    }
    /// Which of the VM's plugin configurations (root context) handles it.
    pub fn on_root(mut self, root: u32) -> Self {
        self.root = root;
        self
    }

    /// The request carries a body (headers are then not the end of the stream).
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = Some(body.as_ref().to_vec());
        self
    }

    pub fn send(self) -> Exchange {
        self.send_keep().1
    }

    /// Sends, then asserts the contract answer `status`/`reason` (see [`Verdict::answers`]).
    pub fn answers(self, status: u32, reason: &str) -> LocalResponse {
        let (s, mut ex) = self.send_keep();
        s.verdict(&mut ex).answers(status, reason)
    }

    /// Sends, then asserts 403 `policy_denied` with `error` `insufficient_scope`.
    pub fn answers_insufficient_scope(self) -> LocalResponse {
        let (s, mut ex) = self.send_keep();
        s.verdict(&mut ex)
            .answers_with_error(403, "policy_denied", "insufficient_scope")
    }

    /// Sends, then asserts it was forwarded; returns the headers the upstream got.
    pub fn admitted(self) -> HeaderMap {
        let (s, mut ex) = self.send_keep();
        s.verdict(&mut ex).admitted()
    }

    /// Sends and returns the exchange with the sidecar, for a later verdict.
    fn send_keep(self) -> (&'a mut Sidecar, Exchange) {
        let Request {
            sidecar,
            headers,
            properties,
            token,
            vm,
            root,
            body,
        } = self;
        let parts = Parts {
            headers,
            properties,
            token,
            body,
        };
        let ex = sidecar.start_request_on(vm, root, parts);
        (sidecar, ex)
    }
}

/// Assertions about one exchange's outcome. Each finishes the stream (the request is over).
pub struct Verdict<'a> {
    sidecar: &'a mut Sidecar,
    ex: &'a mut Exchange,
}

impl Verdict<'_> {
    fn context(&self) -> String {
        format!(
            "outcome: {:?}\ncalls: {:?}\nstats: {:?}\nlogs: {:#?}",
            self.sidecar.outcome(self.ex),
            self.sidecar
                .dispatched
                .iter()
                .map(|d| (d.call.cluster.clone(), d.call.at_ms))
                .collect::<Vec<_>>(),
            self.sidecar.stats(),
            self.sidecar.logs()
        )
    }

    /// How often `name` was incremented while this request was the effective context, i.e.
    /// by this request's decision (concurrent requests do not disturb it).
    fn counted(&self, name: &str) -> u64 {
        self.sidecar.vms[self.ex.vm]
            .host()
            .streams
            .get(&self.ex.ctx)
            .map_or(0, |s| {
                s.counted.iter().filter(|n| *n == name).count() as u64
            })
    }

    /// Asserts the filter refused with `status` and `reason` exactly as CONTRACT §4 says
    /// (status, `error` in body and `WWW-Authenticate`, request id, JSON), nothing went
    /// upstream, and `certbind.denied.<reason>` counted it.
    pub fn answers(self, status: u32, reason: &str) -> LocalResponse {
        let error = contract::error_of(reason);
        self.judge(status, reason, error)
    }

    pub fn answers_with_error(self, status: u32, reason: &str, error: &str) -> LocalResponse {
        self.judge(status, reason, Some(error))
    }

    fn judge(self, status: u32, reason: &str, error: Option<&str>) -> LocalResponse {
        self.sidecar.assert_healthy();
        assert_eq!(
            contract::status_of(reason),
            Some(status),
            "the test itself asks for a status CONTRACT §4 does not give {reason}"
        );
        let Outcome::Replied(reply) = self.sidecar.outcome(self.ex) else {
            panic!("expected {status} {reason}, got\n{}", self.context());
        };
        let parsed = contract::check_reply(&reply, Some(&self.ex.request_id))
            .unwrap_or_else(|e| panic!("not a contract answer: {e}\n{}", self.context()));
        // CONTRACT §4 gives `missing_token` no RFC 6750 error; the body may still name it.
        let body_error = match (reason, parsed.error.as_deref()) {
            ("missing_token", Some("missing_token")) => None,
            (_, e) => e,
        };
        assert_eq!(
            (parsed.status, parsed.reason.as_str(), body_error),
            (status, reason, error),
            "{}",
            self.context()
        );
        let s = &self.sidecar.vms[self.ex.vm].host().streams[&self.ex.ctx];
        assert_eq!(s.resumed, 0, "a refused request was resumed upstream");
        assert!(
            !s.body_released_early,
            "the body went on before the decision"
        );
        if status == 503 {
            assert!(
                reply.headers.get(b"retry-after").is_some(),
                "a 503 without Retry-After"
            );
        }
        let stat = format!("certbind.denied.{reason}");
        assert_eq!(
            self.counted(&stat),
            1,
            "{stat} not counted once\n{}",
            self.context()
        );
        if let Some(t) = &self.ex.token {
            self.sidecar.assert_not_logged(t);
        }
        self.sidecar.finish(self.ex);
        self.sidecar.assert_healthy();
        reply
    }

    /// Asserts the request went upstream (counted in `certbind.allowed` at the next tick:
    /// `caches.rs`); returns the headers the upstream received.
    pub fn admitted(self) -> HeaderMap {
        self.sidecar.assert_healthy();
        let Outcome::Forwarded(headers) = self.sidecar.outcome(self.ex) else {
            panic!("expected the request upstream, got\n{}", self.context());
        };
        let s = &self.sidecar.vms[self.ex.vm].host().streams[&self.ex.ctx];
        assert!(
            !s.body_released_early,
            "the body went on before the decision"
        );
        if let Some(t) = &self.ex.token {
            self.sidecar.assert_not_logged(t);
        }
        self.sidecar.finish(self.ex);
        self.sidecar.assert_healthy();
        headers
    }

    /// Asserts shadow mode let the request through although `reason` would deny it.
    pub fn passes_in_shadow_despite(self, reason: &str) -> HeaderMap {
        self.sidecar.assert_healthy();
        let Outcome::Forwarded(headers) = self.sidecar.outcome(self.ex) else {
            panic!("shadow mode must pass, got\n{}", self.context());
        };
        let stat = format!("certbind.denied.{reason}");
        assert_eq!(
            self.counted(&stat),
            1,
            "{stat} not counted\n{}",
            self.context()
        );
        assert_eq!(
            self.counted("certbind.shadow.passed"),
            1,
            "{}",
            self.context()
        );
        self.sidecar.finish(self.ex);
        self.sidecar.assert_healthy();
        headers
    }

    /// Asserts the request is still paused (not answered, not forwarded); does not finish it.
    pub fn stays_paused(self) {
        self.sidecar.assert_healthy();
        assert!(
            matches!(self.sidecar.outcome(self.ex), Outcome::Paused),
            "expected a paused request, got\n{}",
            self.context()
        );
    }
}

/// Asserts the upstream got the identity of `token` in `x-certbind-*` and no Authorization.
pub fn assert_identity(headers: &HeaderMap, token: &TokenBuilder) {
    let c = &token.claims;
    assert_eq!(
        headers.all("x-certbind-subject"),
        vec![c["sub"].as_str().unwrap_or_default().to_owned()]
    );
    assert_eq!(
        headers.all("x-certbind-client-id"),
        vec![c["client_id"].as_str().unwrap_or_default().to_owned()]
    );
    assert_eq!(
        headers.all("x-certbind-scope"),
        vec![c["scope"].as_str().unwrap_or_default().to_owned()]
    );
    assert_eq!(
        headers.all("x-certbind-jti"),
        vec![c["jti"].as_str().unwrap_or_default().to_owned()]
    );
    assert_eq!(
        headers.get(b"authorization"),
        None,
        "the token went upstream"
    );
}
