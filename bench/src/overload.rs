//! `certbind-bench overload` (`make overload`): certbind with the sidecar's overload protections
//! (scenario S5o: its circuit breakers, overload manager and PDP timeout) offered more than it
//! can serve. One run: the closed-loop maximum of the traffic mix, a baseline at a fraction of
//! it, open-loop overload at a multiple of it, then the fraction again to watch recovery. Every
//! answer is checked against the set allowed for its kind; per second: sent, accepted, refused,
//! shed by reason, wrong answers, p99 of the accepted requests from their intended send time,
//! Envoy's RSS and CPU. Writes `overload.json` and `overload.png`.
//!
//! Open loop here means the requests go out at their times whatever the earlier answers do:
//! each takes an idle keep-alive connection or opens a new one (up to [`Plan::max_connections`]),
//! so Envoy sees the backlog as concurrent requests, as it would from many clients, and its
//! shed points can act; a fixed set of connections would hold the backlog in the client instead.

use crate::load::{Sender, Target, connect};
use crate::procstat;
use crate::scenarios::Scenario;
use crate::setup::{Bench, Prerequisites};
use crate::traffic::{self, Current, Kind, Minter};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Out of every 20 requests (indexes into [`traffic::kinds`]): 12 `valid_fresh` (an order of
/// their own, so a PDP decision each), 2 `valid` (the cached decision), one of each hostile kind.
const PATTERN: [usize; 20] = [7, 7, 0, 7, 1, 7, 7, 2, 7, 3, 7, 0, 7, 4, 7, 7, 5, 7, 6, 7];

/// How long one request may take before the generator gives up on it (an error, not an answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_LATENCY_US: u64 = 60_000_000;

/// The phases of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Closed loop on `closed_connections` connections: the maximum of the traffic mix.
    pub measure_s: f64,
    pub closed_connections: usize,
    /// Open loop at `low` × the maximum before the overload: what "normal" is.
    pub baseline_s: f64,
    /// Open loop at `factor` × the maximum.
    pub overload_s: f64,
    pub factor: f64,
    /// Open loop at `low` × the maximum after it: recovery.
    pub recovery_s: f64,
    pub low: f64,
    /// The generator's connection cap (Envoy's own cap is 10,000).
    pub max_connections: usize,
    /// Connections opened before the open loop starts (under S5o's listener limit of 512), so a
    /// short stall at the start does not turn into a burst of new handshakes.
    pub warm_connections: usize,
}

impl Plan {
    /// `make overload`: `overload_s` at twice the maximum.
    pub fn full(overload_s: f64) -> Self {
        Self {
            measure_s: 5.0,
            closed_connections: 64,
            baseline_s: 10.0,
            overload_s,
            factor: 2.0,
            recovery_s: 30.0,
            low: 0.5,
            max_connections: 4096,
            warm_connections: 448,
        }
    }

    /// A few seconds in all, for `make test` (numbers mean nothing).
    pub fn smoke() -> Self {
        Self {
            measure_s: 1.0,
            closed_connections: 4,
            baseline_s: 1.0,
            overload_s: 2.0,
            factor: 2.0,
            recovery_s: 2.0,
            low: 0.5,
            max_connections: 1024,
            warm_connections: 32,
        }
    }
}

/// How one answer counts.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// 200 for a kind that must be allowed.
    Accepted,
    /// The refusal the kind must get (its status and reason).
    Refused,
    /// A fail-closed answer of a shed point, allowed for this kind (never a 200).
    Shed(&'static str),
    /// Anything else: a hostile request let through, or an answer not allowed for its kind.
    Wrong(String),
    /// No answer: connection failure or timeout.
    Error(String),
}

/// A new connection closed by Envoy before the TLS handshake completed: the listener's
/// connection limit (`downstream_cx_overflow`), or the global one. Not an HTTP answer, and allowed
/// for every kind: nothing was admitted.
const CONNECTION_REFUSED: &str = "connection refused (listener limit)";

fn is_refusal(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    e.starts_with("tls handshake")
        && (e.contains("reset")
            || e.contains("eof")
            || e.contains("closed")
            || e.contains("broken pipe"))
}

/// Like a client's connection pool, the generator does not try a new connection for
/// [`BACKOFF`] after Envoy refused one: a request finding no idle connection then is refused
/// on the spot. Without this, one load-generator core spends itself on refused handshakes
/// (a run at 2x did: the generator at 94 % CPU, Envoy idle at 40 %, answers 10 s late).
const BACKOFF: Duration = Duration::from_millis(10);
const BACKED_OFF: &str = "backed off after a refused connection";
const CONNECTION_BACKED_OFF: &str = "connection refused (listener limit; generator backing off)";

/// Envoy's overload manager refusing a request (`stop_accepting_requests`).
const ENVOY_OVERLOADED: &str = "envoy overloaded";

/// Which answers `kind` may get besides its own: the shed points' fail-closed answers, each only
/// where the request can meet that shed point.
fn classify(kind: &Kind, status: u16, body: &str) -> Answer {
    let reason = traffic::reason(body);
    if status == kind.status && reason.as_deref() == kind.reason() {
        return if status == 200 {
            Answer::Accepted
        } else {
            Answer::Refused
        };
    }
    // A token refused before any key is needed never waits for the JWKS.
    let needs_keys = !matches!(kind.reason(), Some("missing_token" | "malformed_token"));
    match (status, reason.as_deref()) {
        (503, Some("pdp_unavailable")) if kind.asks_the_pdp() => {
            Answer::Shed("503 pdp_unavailable")
        }
        (503, Some("jwks_unavailable")) if needs_keys => Answer::Shed("503 jwks_unavailable"),
        (503, None) if body.starts_with(ENVOY_OVERLOADED) => Answer::Shed("503 envoy overloaded"),
        // Envoy's own 503 when the upstream cluster's breaker is open: only after certbind admitted.
        (503, None) if kind.status == 200 && body.contains("overflow") => {
            Answer::Shed("503 upstream overflow")
        }
        _ => Answer::Wrong(format!(
            "{}: {status} {}",
            kind.name,
            body.chars().take(120).collect::<String>()
        )),
    }
}

fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).map_err(|e| e.to_string())
}

/// What one second (by intended send time) or one phase saw.
struct Tally {
    sent: u64,
    accepted: u64,
    refused: u64,
    shed: BTreeMap<&'static str, u64>,
    wrong: u64,
    errors: u64,
    accepted_us: Histogram<u64>,
    shed_us: Histogram<u64>,
    /// How late the generator sent (its own error, not Envoy's), worst of the second, µs.
    late_us: u64,
}

impl Tally {
    fn new() -> Result<Self, String> {
        Ok(Self {
            sent: 0,
            accepted: 0,
            refused: 0,
            shed: BTreeMap::new(),
            wrong: 0,
            errors: 0,
            accepted_us: histogram()?,
            shed_us: histogram()?,
            late_us: 0,
        })
    }

    fn record(&mut self, answer: &Answer, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(MAX_LATENCY_US)
            .clamp(1, MAX_LATENCY_US);
        self.sent += 1;
        match answer {
            Answer::Accepted => {
                self.accepted += 1;
                let _ = self.accepted_us.record(us);
            }
            Answer::Refused => self.refused += 1,
            Answer::Shed(why) => {
                *self.shed.entry(why).or_default() += 1;
                let _ = self.shed_us.record(us);
            }
            Answer::Wrong(_) => self.wrong += 1,
            Answer::Error(_) => self.errors += 1,
        }
    }

    fn add(&mut self, other: &Tally) -> Result<(), String> {
        self.sent += other.sent;
        self.accepted += other.accepted;
        self.refused += other.refused;
        for (k, v) in &other.shed {
            *self.shed.entry(k).or_default() += v;
        }
        self.wrong += other.wrong;
        self.errors += other.errors;
        self.accepted_us
            .add(&other.accepted_us)
            .map_err(|e| e.to_string())?;
        self.shed_us
            .add(&other.shed_us)
            .map_err(|e| e.to_string())?;
        self.late_us = self.late_us.max(other.late_us);
        Ok(())
    }

    fn shed_total(&self) -> u64 {
        self.shed.values().sum()
    }

    fn quantile_ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
        (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
    }

    fn json(&self, seconds: f64) -> Value {
        let rate = |n: u64| (n as f64 / seconds.max(1e-9)).round();
        json!({
            "sent": self.sent, "accepted": self.accepted, "refused_as_expected": self.refused,
            "shed": self.shed, "shed_total": self.shed_total(), "wrong": self.wrong, "errors": self.errors,
            "sent_rps": rate(self.sent), "accepted_rps": rate(self.accepted), "shed_rps": rate(self.shed_total()),
            "accepted_p50_ms": Self::quantile_ms(&self.accepted_us, 0.5),
            "accepted_p99_ms": Self::quantile_ms(&self.accepted_us, 0.99),
            "accepted_max_ms": Self::quantile_ms(&self.accepted_us, 1.0),
            "shed_p99_ms": Self::quantile_ms(&self.shed_us, 0.99),
            "generator_late_max_ms": self.late_us as f64 / 1000.0,
        })
    }
}

/// Everything the run records, shared by the request tasks.
struct Record {
    /// Index: second of the intended send time since the open loop began.
    seconds: Vec<Tally>,
    /// kind → answer → count.
    by_kind: BTreeMap<&'static str, BTreeMap<String, u64>>,
    wrong_examples: Vec<String>,
    error_examples: Vec<String>,
}

impl Record {
    fn new() -> Self {
        Self {
            seconds: Vec::new(),
            by_kind: BTreeMap::new(),
            wrong_examples: Vec::new(),
            error_examples: Vec::new(),
        }
    }

    fn second(&mut self, s: usize) -> Result<&mut Tally, String> {
        while self.seconds.len() <= s {
            self.seconds.push(Tally::new()?);
        }
        self.seconds
            .get_mut(s)
            .ok_or_else(|| "second out of range".to_owned())
    }

    fn note(&mut self, kind: &Kind, answer: &Answer) {
        let label = match answer {
            Answer::Accepted => "accepted".to_owned(),
            Answer::Refused => format!("refused {}", kind.reason().unwrap_or("?")),
            Answer::Shed(why) => (*why).to_owned(),
            Answer::Wrong(_) => "WRONG".to_owned(),
            Answer::Error(_) => "error".to_owned(),
        };
        *self
            .by_kind
            .entry(kind.name)
            .or_default()
            .entry(label)
            .or_default() += 1;
        match answer {
            Answer::Wrong(e) if self.wrong_examples.len() < 5 => {
                self.wrong_examples.push(e.clone())
            }
            Answer::Error(e) if self.error_examples.len() < 5 => {
                self.error_examples.push(format!("{}: {e}", kind.name))
            }
            _ => {}
        }
    }
}

/// Keep-alive connections to Envoy: an idle one if there is one, else a new one up to the cap,
/// else the request waits for one to come back (and its clock keeps running).
struct Pool {
    target: Target,
    idle: Mutex<Vec<Sender>>,
    open: AtomicUsize,
    cap: usize,
    freed: Notify,
    opened_total: AtomicU64,
    /// After Envoy refused a new connection, no new one is tried until then.
    refused_until: Mutex<Option<tokio::time::Instant>>,
}

impl Pool {
    fn new(target: Target, cap: usize) -> Self {
        Self {
            target,
            idle: Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
            cap: cap.max(1),
            freed: Notify::new(),
            opened_total: AtomicU64::new(0),
            refused_until: Mutex::new(None),
        }
    }

    /// Opens connections until `n` are open (clients already connected when the load starts).
    async fn warm(self: &Arc<Self>, n: usize) -> Result<(), String> {
        let mut batch = Vec::new();
        while self.open.load(Ordering::Relaxed) < n.min(self.cap) {
            let lease = self.checkout_new().await?;
            batch.push(lease);
        }
        for lease in batch {
            lease.give_back();
        }
        Ok(())
    }

    async fn checkout_new(self: &Arc<Self>) -> Result<Lease, String> {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.opened_total.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(self);
        let sender = connect(&self.target).await?;
        std::mem::forget(slot);
        Ok(Lease {
            pool: Arc::clone(self),
            sender: Some(sender),
        })
    }

    fn pop_idle(&self) -> Option<Sender> {
        self.idle.lock().ok()?.pop()
    }

    async fn checkout(self: &Arc<Self>) -> Result<Lease, String> {
        let lease = |sender| Lease {
            pool: Arc::clone(self),
            sender: Some(sender),
        };
        loop {
            if let Some(s) = self.pop_idle() {
                if s.is_closed() {
                    self.lost();
                    continue;
                }
                return Ok(lease(s));
            }
            if self.open.load(Ordering::Relaxed) < self.cap {
                let now = tokio::time::Instant::now();
                if self
                    .refused_until
                    .lock()
                    .is_ok_and(|until| until.is_some_and(|u| now < u))
                {
                    return Err(BACKED_OFF.into());
                }
                let fresh = self.checkout_new().await;
                if let Err(e) = &fresh
                    && is_refusal(e)
                    && let Ok(mut until) = self.refused_until.lock()
                {
                    *until = Some(tokio::time::Instant::now() + BACKOFF);
                }
                return fresh;
            }
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let any_idle = self.idle.lock().map(|i| !i.is_empty()).unwrap_or(false);
            if !any_idle {
                freed.await;
            }
        }
    }

    fn checkin(&self, sender: Sender) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(sender);
        }
        self.freed.notify_one();
    }

    /// A connection broke or was dropped: its slot is free for a new one.
    fn lost(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.freed.notify_one();
    }
}

/// A connection taken from the pool: given back with [`Lease::give_back`] after an answer;
/// dropped otherwise (an error, or the request abandoned mid-way), its slot is freed.
struct Lease {
    pool: Arc<Pool>,
    sender: Option<Sender>,
}

impl Lease {
    fn sender(&mut self) -> Option<&mut Sender> {
        self.sender.as_mut()
    }

    fn give_back(mut self) {
        if let Some(s) = self.sender.take() {
            self.pool.checkin(s);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.sender.take().is_some() {
            self.pool.lost();
        }
    }
}

/// A connection slot being filled; dropped unfilled, it frees the slot.
struct Slot<'a>(&'a Pool);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.lost();
    }
}

/// Sends the `n`-th request of the run on `sender` and classifies its answer.
async fn exchange(sender: &mut Sender, kind: &Kind, n: u64) -> Answer {
    let path = kind.path_of(n);
    match tokio::time::timeout(REQUEST_TIMEOUT, traffic::one(sender, kind, &path)).await {
        Ok(Ok((status, body))) => classify(kind, status, &body),
        Ok(Err(e)) => Answer::Error(e),
        Err(_) => Answer::Error("timeout".into()),
    }
}

/// One request on a pooled connection; the connection goes back only after a full answer.
async fn leased_exchange(pool: &Arc<Pool>, kind: &Kind, n: u64) -> Answer {
    let mut lease = match pool.checkout().await {
        Ok(l) => l,
        // Envoy closes a connection over its listener's limit right after accepting it.
        Err(e) if is_refusal(&e) => return Answer::Shed(CONNECTION_REFUSED),
        Err(e) if e == BACKED_OFF => return Answer::Shed(CONNECTION_BACKED_OFF),
        Err(e) => return Answer::Error(e),
    };
    let Some(sender) = lease.sender() else {
        return Answer::Error("empty lease".into());
    };
    let answer = exchange(sender, kind, n).await;
    if !matches!(answer, Answer::Error(_)) {
        lease.give_back();
    }
    answer
}

fn kind_of(current: &Current, n: u64) -> Option<(Arc<Vec<Kind>>, usize)> {
    let kinds = current.read().ok().map(|k| Arc::clone(&k))?;
    let index = *PATTERN.get((n % PATTERN.len() as u64) as usize)?;
    (index < kinds.len()).then_some((kinds, index))
}

/// One open-loop request, sent at its time whatever came before it.
async fn open_request(
    pool: Arc<Pool>,
    current: Current,
    record: Arc<Mutex<Record>>,
    n: u64,
    second: usize,
    clock_from: tokio::time::Instant,
    in_flight: Arc<AtomicUsize>,
) {
    if let Some((kinds, index)) = kind_of(&current, n)
        && let Some(kind) = kinds.get(index)
    {
        // Waiting for a connection counts against the request's time limit too.
        let attempt = async { leased_exchange(&pool, kind, n).await };
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| Answer::Error("no connection and answer within 10 s".into()));
        let latency = clock_from.elapsed();
        if let Ok(mut r) = record.lock() {
            r.note(kind, &answer);
            if let Ok(t) = r.second(second) {
                t.record(&answer, latency);
            }
        }
    }
    in_flight.fetch_sub(1, Ordering::Relaxed);
}

/// Phase 1: as fast as Envoy answers, on a few connections: the maximum of this traffic mix.
/// Its connections stay in the pool for the open loop (clients already connected).
async fn closed_loop(
    pool: Arc<Pool>,
    current: Current,
    connections: usize,
    seconds: f64,
) -> Result<(f64, Tally), String> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let (pool, current, next) = (Arc::clone(&pool), Arc::clone(&current), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::new()?;
            while Instant::now() < end {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some((kinds, index)) = kind_of(&current, n) else {
                    break;
                };
                let Some(kind) = kinds.get(index) else { break };
                let sent = Instant::now();
                let answer = leased_exchange(&pool, kind, n).await;
                tally.record(&answer, sent.elapsed());
            }
            Ok::<Tally, String>(tally)
        }));
    }
    let mut total = Tally::new()?;
    for t in tasks {
        total.add(&t.await.map_err(|e| e.to_string())??)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let answered = total.sent - total.errors;
    Ok((answered as f64 / elapsed, total))
}

/// One open-loop phase: `rate` requests per second from `from` for `seconds`.
#[allow(clippy::too_many_arguments)]
async fn open_phase(
    pool: &Arc<Pool>,
    current: &Current,
    record: &Arc<Mutex<Record>>,
    in_flight: &Arc<AtomicUsize>,
    next: &mut u64,
    t0: tokio::time::Instant,
    from: tokio::time::Instant,
    seconds: f64,
    rate: f64,
) {
    let period = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let count = (seconds * rate).floor() as u64;
    let pacer = crate::load::Pacer::start(from.into_std(), period, count);
    while let Some(slot) = pacer.next().await {
        let intended = tokio::time::Instant::from_std(slot.intended);
        let clock_from = tokio::time::Instant::from_std(slot.clock_from);
        let late = clock_from.saturating_duration_since(intended);
        let second = intended.saturating_duration_since(t0).as_secs() as usize;
        if let Ok(mut r) = record.lock()
            && let Ok(t) = r.second(second)
        {
            t.late_us = t.late_us.max(late.as_micros() as u64);
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(open_request(
            Arc::clone(pool),
            Arc::clone(current),
            Arc::clone(record),
            *next,
            second,
            clock_from,
            Arc::clone(in_flight),
        ));
        *next += 1;
    }
}

/// Envoy's gauges of what is in flight now: downstream connections and requests, the PDP
/// cluster's connections, requests and pending requests (sampled every second).
fn active_gauges(admin: std::net::SocketAddr) -> Value {
    const NAMES: [&str; 5] = [
        "http.bench.downstream_cx_active",
        "http.bench.downstream_rq_active",
        "cluster.certbind_pdp.upstream_cx_active",
        "cluster.certbind_pdp.upstream_rq_active",
        "cluster.certbind_pdp.upstream_rq_pending_active",
    ];
    let request = certbind_tests::Request::get("/stats?filter=_active$");
    let Ok(response) = certbind_tests::client::http_plain(admin, &request) else {
        return Value::Null;
    };
    let text = response.text();
    let values: serde_json::Map<String, Value> = text
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(": ")?;
            NAMES
                .contains(&name)
                .then(|| (name.to_owned(), json!(value.trim().parse::<u64>().ok())))
        })
        .collect();
    Value::Object(values)
}

/// Envoy counters and gauges about shedding, certbind's counters, and the overload manager.
fn shedding_stat(name: &str) -> bool {
    const SUFFIXES: [&str; 14] = [
        "upstream_rq_pending_overflow",
        "upstream_cx_overflow",
        "upstream_cx_pool_overflow",
        "upstream_rq_retry_overflow",
        "upstream_rq_timeout",
        "upstream_rq_total",
        "upstream_rq_pending_total",
        "upstream_cx_total",
        "upstream_cx_connect_fail",
        "downstream_cx_overflow",
        "downstream_global_cx_overflow",
        "downstream_cx_total",
        "downstream_rq_overload_close",
        "downstream_rq_5xx",
    ];
    name.starts_with("overload.")
        || name.starts_with("wasmcustom.certbind.")
        || (SUFFIXES.iter().any(|s| name.ends_with(s))
            && !name.contains(".circuit_breakers.")
            && (name.starts_with("cluster.certbind_")
                || name.starts_with("cluster.upstream.")
                || name.starts_with("listener.")
                || name.starts_with("http.bench.")))
}

/// How fast the system came back after the load dropped, in seconds after the drop.
#[derive(Debug, PartialEq)]
struct Recovery {
    /// From this second on, no second sheds anything or has an error.
    shed_free_after_s: Option<usize>,
    /// The first second that starts [`NORMAL_RUN`] seconds in a row whose accepted p99 is
    /// within twice the baseline's (an isolated slow second later on does not undo it).
    p99_normal_after_s: Option<usize>,
}

const NORMAL_RUN: usize = 3;

fn recovery(seconds: &[Tally], from: usize, baseline_p99_ms: Option<f64>) -> Recovery {
    let clean = |t: &Tally| t.shed_total() == 0 && t.errors == 0 && t.wrong == 0;
    let normal = |t: &Tally| match (Tally::quantile_ms(&t.accepted_us, 0.99), baseline_p99_ms) {
        (Some(p), Some(b)) => p <= 2.0 * b,
        _ => false,
    };
    let tail = seconds.get(from..).unwrap_or(&[]);
    // Leave out the last, partly filled second.
    let tail = tail.get(..tail.len().saturating_sub(1)).unwrap_or(&[]);
    let shed_free_after_s =
        (0..tail.len()).find(|&k| tail.get(k..).is_some_and(|r| r.iter().all(clean)));
    let p99_normal_after_s = (0..tail.len()).find(|&k| {
        tail.get(k..k + NORMAL_RUN)
            .is_some_and(|r| r.iter().all(normal))
    });
    Recovery {
        shed_free_after_s,
        p99_normal_after_s,
    }
}

/// Runs the plan against S5o and writes `overload.json` and `overload.png`.
pub fn run(
    plan: &Plan,
    results: &Path,
    figures: &Path,
    log: &mut dyn FnMut(String),
) -> Result<Value, String> {
    let bins = Prerequisites::check()?;
    let bench = Bench::start(&bins, &[Scenario::S5o])?;
    let envoy = bench.envoys.get(&Scenario::S5o).ok_or("no S5o Envoy")?;
    let pid = envoy.pid()?;
    let minter = Minter::new(&bench)?;
    let current: Current = Arc::new(std::sync::RwLock::new(Arc::new(minter.kinds()?)));
    let target = Target {
        addr: envoy.listen,
        tls: Some(Arc::clone(&bench.mtls)),
        path: String::new(),
        tokens: None,
    };
    let total_s = plan.measure_s + plan.baseline_s + plan.overload_s + plan.recovery_s;
    let refresher = traffic::refresh_until(
        minter,
        Arc::clone(&current),
        Instant::now() + Duration::from_secs_f64(total_s),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let rss_start = procstat::rss_kb(pid)? as f64 / 1024.0;
    let pool = Arc::new(Pool::new(target, plan.max_connections));

    // Phase 1: the maximum of this mix, measured now on this machine.
    let cpu = |pid: Option<u32>| pid.and_then(|p| procstat::cpu_us(p).ok());
    let (envoy_cpu0, started) = (cpu(Some(pid)), Instant::now());
    let (max, measured) = runtime.block_on(closed_loop(
        Arc::clone(&pool),
        Arc::clone(&current),
        plan.closed_connections,
        plan.measure_s,
    ))?;
    let measure_envoy_cpu = match (envoy_cpu0, cpu(Some(pid))) {
        (Some(a), Some(b)) => Some((b - a) as f64 / started.elapsed().as_micros() as f64),
        _ => None,
    };
    let high = max * plan.factor;
    let low = (max * plan.low).max(1.0);
    log(format!(
        "maximum {max:.0} rps (closed loop, {} connections); baseline {low:.0} rps for {} s, \
         overload {high:.0} rps for {} s, recovery {low:.0} rps for {} s",
        plan.closed_connections, plan.baseline_s, plan.overload_s, plan.recovery_s
    ));
    runtime.block_on(pool.warm(plan.warm_connections))?;
    // Settled: the filter hands over the warm-up's allow-path counts on its next tick.
    let before = envoy.admin.settled_stats().map_err(|e| e.to_string())?;
    let pdp_pid = bench.service_pid("pdp");

    // Phases 2-4, open loop; a sampler records Envoy's RSS and CPU and the generator's
    // connections every second.
    let record = Arc::new(Mutex::new(Record::new()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let samples: Arc<Mutex<Vec<Value>>> = Arc::default();
    let open_s = plan.baseline_s + plan.overload_s + plan.recovery_s;
    let drained = runtime.block_on(async {
        let t0 = tokio::time::Instant::now();
        let end = t0 + Duration::from_secs_f64(open_s);
        // A thread of its own: the admin call blocks, and the generator must not wait for it.
        let sampler = {
            let (samples, pool) = (Arc::clone(&samples), Arc::clone(&pool));
            let (admin, t0, end) = (envoy.admin.addr(), t0.into_std(), end.into_std());
            // CPU of Envoy (core 0), and of the PDP and this generator (sharing the other core).
            let pids = [Some(pid), pdp_pid, Some(std::process::id())];
            std::thread::spawn(move || {
                let mut cpu_before = pids.map(cpu);
                let mut at = Instant::now();
                while at < end {
                    std::thread::sleep(Duration::from_secs(1));
                    let now = Instant::now();
                    let cpu_now = pids.map(cpu);
                    let span = now.duration_since(at).as_micros() as f64;
                    let util: Vec<Option<f64>> = cpu_before
                        .iter()
                        .zip(&cpu_now)
                        .map(|(a, b)| Some(b.as_ref()?.saturating_sub(*a.as_ref()?) as f64 / span))
                        .collect();
                    (cpu_before, at) = (cpu_now, now);
                    let rss = procstat::rss_kb(pid).ok().map(|kb| kb as f64 / 1024.0);
                    let gauges = active_gauges(admin);
                    if let Ok(mut s) = samples.lock() {
                        s.push(json!({
                            "t": now.duration_since(t0).as_secs_f64(),
                            "rss_mb": rss, "envoy_cpu": util.first(), "pdp_cpu": util.get(1),
                            "generator_cpu": util.get(2),
                            "connections": pool.open.load(Ordering::Relaxed),
                            "envoy": gauges,
                        }));
                    }
                }
            })
        };
        let mut next = 0u64;
        let phases = [
            (0.0, plan.baseline_s, low),
            (plan.baseline_s, plan.overload_s, high),
            (plan.baseline_s + plan.overload_s, plan.recovery_s, low),
        ];
        for (offset, seconds, rate) in phases {
            let from = t0 + Duration::from_secs_f64(offset);
            open_phase(
                &pool, &current, &record, &in_flight, &mut next, t0, from, seconds, rate,
            )
            .await;
        }
        // The last requests' answers (or their timeouts).
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT + Duration::from_secs(2);
        while in_flight.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (in_flight.load(Ordering::Relaxed) == 0, sampler)
    });
    let (drained, sampler) = drained;
    let _ = sampler.join();
    let refreshed = refresher
        .join()
        .map_err(|_| "the token refresher died".to_owned())??;
    let after = envoy.admin.settled_stats().map_err(|e| e.to_string())?;
    let rss_end = procstat::rss_kb(pid)? as f64 / 1024.0;

    let record = record.lock().map_err(|_| "record poisoned")?;
    let samples = samples.lock().map_err(|_| "samples poisoned")?.clone();
    // Phase totals by intended send time.
    let (b_end, o_end) = (
        plan.baseline_s.round() as usize,
        (plan.baseline_s + plan.overload_s).round() as usize,
    );
    let phase = |lo: usize, hi: usize| -> Result<Tally, String> {
        let mut t = Tally::new()?;
        for s in record
            .seconds
            .get(lo..hi.min(record.seconds.len()))
            .unwrap_or(&[])
        {
            t.add(s)?;
        }
        Ok(t)
    };
    let (baseline, overload, recovering) = (
        phase(0, b_end)?,
        phase(b_end, o_end)?,
        phase(o_end, usize::MAX)?,
    );
    let mut all = Tally::new()?;
    all.add(&baseline)?;
    all.add(&overload)?;
    all.add(&recovering)?;
    let baseline_p99 = Tally::quantile_ms(&baseline.accepted_us, 0.99);
    let recovered = recovery(&record.seconds, o_end, baseline_p99);
    let per_second: Vec<Value> = record
        .seconds
        .iter()
        .enumerate()
        .map(|(s, t)| {
            json!({
                "t": s, "sent": t.sent, "accepted": t.accepted, "refused_as_expected": t.refused,
                "shed": t.shed, "wrong": t.wrong, "errors": t.errors,
                "accepted_p99_ms": Tally::quantile_ms(&t.accepted_us, 0.99),
                "shed_p99_ms": Tally::quantile_ms(&t.shed_us, 0.99),
                "generator_late_max_ms": t.late_us as f64 / 1000.0,
            })
        })
        .collect();
    let stats: BTreeMap<&String, Value> = after
        .iter()
        .filter(|(k, _)| shedding_stat(k))
        .map(|(k, v)| {
            let b = before.get(k).copied().unwrap_or(0);
            (k, json!({"end": v, "delta": v.saturating_sub(b)}))
        })
        .collect();
    // certbind's own counters against what the generator saw (open-loop phases).
    let delta = |name: &str| {
        let k = format!("wasmcustom.certbind.{name}");
        after
            .get(&k)
            .copied()
            .unwrap_or(0)
            .saturating_sub(before.get(&k).copied().unwrap_or(0))
    };
    let seen_pdp = all.shed.get("503 pdp_unavailable").copied().unwrap_or(0);
    let overflow: u64 = after
        .iter()
        .filter(|(k, _)| k.starts_with("listener.") && k.ends_with(".downstream_cx_overflow"))
        .map(|(k, v)| v.saturating_sub(before.get(k).copied().unwrap_or(0)))
        .sum();
    let seen_refused = all.shed.get(CONNECTION_REFUSED).copied().unwrap_or(0);
    let backed_off = all.shed.get(CONNECTION_BACKED_OFF).copied().unwrap_or(0);
    let counters = json!({
        "listener.downstream_cx_overflow": {"counted": overflow, "seen_refused_connections": seen_refused, "requests_not_tried_while_backing_off": backed_off},
        "allowed": {"counted": delta("allowed"), "seen_accepted": all.accepted},
        "denied.pdp_unavailable": {"counted": delta("denied.pdp_unavailable"), "seen": seen_pdp},
        "denied.jwks_unavailable": {"counted": delta("denied.jwks_unavailable")},
    });
    let peak = samples
        .iter()
        .filter_map(|s| s["rss_mb"].as_f64())
        .fold(rss_start, f64::max);
    let report = json!({
        "what": "certbind (S5o: S5 with envoy/sidecar.yaml.tmpl's circuit breakers, overload manager and default 200 ms PDP timeout; Envoy --concurrency 1 on one core) offered an open-loop mix: of every 20 requests 12 valid_fresh (an allowed order of their own, so a PDP decision each), 2 valid (cached decision), one each of policy_denied, expired, bad_signature, missing_token, binding_mismatch, malformed_token",
        "plan": {
            "measure_s": plan.measure_s, "closed_connections": plan.closed_connections,
            "baseline_s": plan.baseline_s, "overload_s": plan.overload_s, "recovery_s": plan.recovery_s,
            "factor": plan.factor, "low": plan.low, "max_connections": plan.max_connections,
            "warm_connections": plan.warm_connections,
        },
        "max_rps": max, "measure": measured.json(plan.measure_s), "measure_envoy_cpu": measure_envoy_cpu,
        "offered_rps": {"baseline": low, "overload": high, "recovery": low},
        "baseline": baseline.json(plan.baseline_s),
        "overload": overload.json(plan.overload_s),
        "recovery": recovering.json(plan.recovery_s),
        "total": {"sent": all.sent, "wrong": all.wrong + measured.wrong, "errors": all.errors + measured.errors},
        "wrong_answers": all.wrong + measured.wrong, "wrong_examples": record.wrong_examples,
        "error_examples": record.error_examples,
        "recovery_shed_free_after_s": recovered.shed_free_after_s,
        "recovery_p99_normal_after_s": recovered.p99_normal_after_s,
        "by_kind": record.by_kind,
        "rss_mb": {"start": rss_start, "peak": peak, "end": rss_end},
        "connections_opened": pool.opened_total.load(Ordering::Relaxed),
        "all_answered": drained, "token_refreshes": refreshed,
        "counters": counters, "envoy_stats": stats,
        "per_second": per_second, "samples": samples,
        "env": crate::report::env_json(&bench.cores, &bins.envoy, &bins.certbind_wasm),
    });
    std::fs::create_dir_all(results).map_err(|e| e.to_string())?;
    let path = results.join("overload.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())? + "\n",
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    crate::figures::overload(&report, figures)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &'static str, status: u16, counter: &'static str) -> Kind {
        Kind {
            name,
            path: "/orders/1",
            distinct: false,
            authorization: Some("Bearer x".into()),
            status,
            counter,
        }
    }

    #[test]
    fn the_pattern_is_twelve_fresh_two_cached_and_one_of_each_hostile_kind() {
        let count = |k| PATTERN.iter().filter(|&&i| i == k).count();
        assert_eq!(count(traffic::VALID_FRESH), 12);
        assert_eq!(count(traffic::VALID), 2);
        for k in traffic::POLICY_DENIED..=traffic::MALFORMED_TOKEN {
            assert_eq!(count(k), 1, "{k}");
        }
    }

    #[test]
    fn a_hostile_request_let_through_is_a_wrong_answer() {
        let expired = kind("expired", 401, "certbind.denied.expired");
        assert!(matches!(classify(&expired, 200, "{}"), Answer::Wrong(_)));
        assert_eq!(
            classify(&expired, 401, r#"{"reason":"expired"}"#),
            Answer::Refused
        );
        assert!(matches!(
            classify(&expired, 401, r#"{"reason":"bad_signature"}"#),
            Answer::Wrong(_)
        ));
    }

    #[test]
    fn only_requests_that_reach_the_pdp_may_be_shed_there() {
        let valid = kind("valid", 200, "certbind.allowed");
        let denied = kind("policy_denied", 403, "certbind.denied.policy_denied");
        let malformed = kind("malformed_token", 401, "certbind.denied.malformed_token");
        let pdp = r#"{"error":"temporarily_unavailable","reason":"pdp_unavailable"}"#;
        assert_eq!(classify(&valid, 200, "{}"), Answer::Accepted);
        assert_eq!(
            classify(&valid, 503, pdp),
            Answer::Shed("503 pdp_unavailable")
        );
        assert_eq!(
            classify(&denied, 503, pdp),
            Answer::Shed("503 pdp_unavailable")
        );
        assert!(matches!(classify(&malformed, 503, pdp), Answer::Wrong(_)));
        assert_eq!(
            classify(&malformed, 503, "envoy overloaded"),
            Answer::Shed("503 envoy overloaded")
        );
        // An upstream overflow means the request was admitted: wrong for a hostile kind.
        let overflow =
            "upstream connect error or disconnect/reset before headers. reset reason: overflow";
        assert_eq!(
            classify(&valid, 503, overflow),
            Answer::Shed("503 upstream overflow")
        );
        assert!(matches!(classify(&denied, 503, overflow), Answer::Wrong(_)));
        assert!(matches!(
            classify(&valid, 429, "slow down"),
            Answer::Wrong(_)
        ));
    }

    #[test]
    fn recovery_counts_from_the_drop_and_ignores_a_lone_slow_second_later() {
        let second = |shed: u64, p99_us: u64| {
            let mut t = Tally::new().unwrap();
            t.record(&Answer::Accepted, Duration::from_micros(p99_us));
            for _ in 0..shed {
                t.record(
                    &Answer::Shed("503 pdp_unavailable"),
                    Duration::from_micros(10),
                );
            }
            t
        };
        let seconds = vec![
            second(9, 1000), // overload phase, not looked at
            second(5, 900),  // recovery starts: still shedding
            second(0, 9000), // no more shedding, but slow
            second(0, 1500), // normal from here
            second(0, 1200),
            second(0, 1900),
            second(0, 7000), // a lone slow second
            second(0, 1000),
            second(3, 1000), // the last second is left out (partly filled)
        ];
        assert_eq!(
            recovery(&seconds, 1, Some(1.0)),
            Recovery {
                shed_free_after_s: Some(1),
                p99_normal_after_s: Some(2)
            }
        );
        assert_eq!(recovery(&seconds, 1, None).p99_normal_after_s, None);
    }

    #[test]
    fn picks_the_stats_about_shedding() {
        for name in [
            "cluster.certbind_pdp.upstream_rq_pending_overflow",
            "cluster.certbind_authz.upstream_cx_overflow",
            "cluster.upstream.upstream_rq_timeout",
            "listener.127.0.0.1_1234.downstream_cx_overflow",
            "overload.envoy.overload_actions.stop_accepting_requests.active",
            "wasmcustom.certbind.denied.pdp_unavailable",
        ] {
            assert!(shedding_stat(name), "{name}");
        }
        assert!(!shedding_stat("cluster.certbind_pdp.upstream_rq_200"));
        assert!(!shedding_stat("server.uptime"));
    }
}
