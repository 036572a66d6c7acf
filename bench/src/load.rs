//! The load generator: HTTP/1.1 over plain TCP or rustls (with a client certificate for mTLS),
//! closed-loop on N keep-alive connections, open-loop at a fixed rate with latency taken from
//! the request's *intended* send time whenever an earlier answer held it back (free of
//! coordinated omission), or one new connection per request. Latencies go into an HdrHistogram in microseconds.

use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Latencies above this are recorded as this (a stalled run still produces a histogram).
const MAX_LATENCY_US: u64 = 60_000_000;
/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the load goes and what each request carries.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `None`: plain HTTP.
    pub tls: Option<Arc<ClientConfig>>,
    pub path: String,
    /// The bearer token of each request (`None`: no Authorization header).
    pub tokens: Option<Tokens>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({}, tls={})", self.addr, self.tls.is_some())
    }
}

/// The token of each request: always the same one, or the next one of a pool (round robin),
/// or one DPoP-bound token with the next single-use proof of a pool minted before the run.
#[derive(Clone, Debug)]
pub enum Tokens {
    Same(Arc<str>),
    Pool(Arc<Vec<String>>, Arc<AtomicU64>),
    Dpop(Arc<DpopCredentials>),
}

/// S5d's credentials: a DPoP-bound token, proofs minted before the run, and the key to mint
/// more on the spot should the run outlast them (a proof is never sent twice). Signing on the
/// spot costs the generator's core, so `signed_late` counts it and the run is flagged.
pub struct DpopCredentials {
    pub token: String,
    pub proofs: Vec<String>,
    pub key: certbind_tests::tokens::EcKey,
    pub htu: String,
    pub next: AtomicU64,
    pub signed_late: AtomicU64,
}

impl std::fmt::Debug for DpopCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DpopCredentials({} proofs for {})",
            self.proofs.len(),
            self.htu
        )
    }
}

impl Tokens {
    pub fn pool(tokens: Vec<String>) -> Self {
        Self::Pool(Arc::new(tokens), Arc::new(AtomicU64::new(0)))
    }

    /// For DPoP credentials: the proofs signed during the run so far, and how many were
    /// minted before it.
    pub fn signed_late(&self) -> Option<(u64, usize)> {
        match self {
            Self::Dpop(c) => Some((c.signed_late.load(Ordering::Relaxed), c.proofs.len())),
            _ => None,
        }
    }

    /// The `Authorization` value and, for DPoP, the `DPoP` proof of the next request.
    fn next(&self) -> (String, Option<String>) {
        fn cycle<'a>(pool: &'a [String], next: &AtomicU64) -> &'a str {
            let i = next.fetch_add(1, Ordering::Relaxed) as usize;
            pool.get(i % pool.len().max(1)).map_or("", String::as_str)
        }
        match self {
            Self::Same(t) => (format!("Bearer {t}"), None),
            Self::Pool(pool, next) => (format!("Bearer {}", cycle(pool, next)), None),
            Self::Dpop(c) => {
                let i = c.next.fetch_add(1, Ordering::Relaxed) as usize;
                let proof = match c.proofs.get(i) {
                    Some(p) => p.clone(),
                    None => {
                        c.signed_late.fetch_add(1, Ordering::Relaxed);
                        certbind_tests::tokens::dpop_proof(&c.key, "GET", &c.htu, Some(&c.token))
                            .unwrap_or_default()
                    }
                };
                (format!("DPoP {}", c.token), Some(proof))
            }
        }
    }
}

/// How the load is offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// As fast as the server answers, on this many keep-alive connections.
    Closed { connections: usize },
    /// `rate` requests per second spread over this many keep-alive connections; latency from
    /// each request's intended send time.
    Open { connections: usize, rate: f64 },
    /// This many workers, each opening a new connection (full handshake) for every request.
    NewConn { workers: usize },
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Answers with status 200.
    pub ok: u64,
    /// Answers with another status.
    pub bad_status: u64,
    /// Connection, TLS or timeout failures.
    pub errors: u64,
    pub elapsed: Duration,
    /// Latency of the 200 answers, µs.
    pub latency_us: Histogram<u64>,
    /// The first failure, for the report (never a token).
    pub first_error: Option<String>,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.ok as f64 / s } else { 0.0 }
    }

    pub fn requests(&self) -> u64 {
        self.ok + self.bad_status + self.errors
    }

    /// The latency at `q` (0..=1) in µs.
    pub fn quantile_us(&self, q: f64) -> u64 {
        self.latency_us.value_at_quantile(q)
    }
}

fn new_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).map_err(|e| e.to_string())
}

/// A rustls client trusting `ca_pem`, presenting (`cert_pem`, `key_pem`) if given, speaking
/// HTTP/1.1, accepting only the `orders` sidecar's SPIFFE ID (every bench listener serves it).
/// Resumption is off so that a new connection is always a full handshake.
pub fn client_config(
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<Arc<ClientConfig>, String> {
    client_config_for(ca, identity, "orders")
}

/// [`client_config`] for another server: `server` is the demo workload whose SPIFFE ID the
/// server must present (e.g. `authz` for minting tokens).
pub fn client_config_for(
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
    server: &str,
) -> Result<Arc<ClientConfig>, String> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let expected = certbind_tls::demo_id(server).map_err(|e| e.to_string())?;
    let verifier = certbind_tls::SpiffeServerVerifier::from_file(ca, vec![expected])
        .map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some((cert, key)) => {
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("key {}: {e}", key.display()))?;
            let chain = certbind_tests::client::read_certs(cert).map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// One keep-alive HTTP/1.1 connection's request handle.
pub type Sender = SendRequest<Empty<Bytes>>;

/// Sends one request on an HTTP/1 connection once it is ready and reads the whole answer.
pub async fn exchange<B>(
    sender: &mut SendRequest<B>,
    request: hyper::Request<B>,
) -> Result<(u16, Bytes), String>
where
    B: hyper::body::Body + 'static,
{
    sender.ready().await.map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

async fn handshake<I>(io: I) -> Result<Sender, String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A new connection to `target` (TLS when it has a client configuration).
pub async fn connect(target: &Target) -> Result<Sender, String> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", target.addr))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    match &target.tls {
        None => handshake(tcp).await,
        Some(config) => {
            let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
            let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            handshake(tls).await
        }
    }
}

enum Outcome {
    Ok,
    Status(u16),
}

async fn send(sender: &mut Sender, target: &Target, close: bool) -> Result<Outcome, String> {
    let mut request = hyper::Request::get(target.path.as_str()).header("host", "localhost");
    if let Some(tokens) = &target.tokens {
        let (authorization, proof) = tokens.next();
        request = request.header("authorization", authorization);
        if let Some(proof) = proof {
            request = request.header("dpop", proof);
        }
    }
    if close {
        request = request.header("connection", "close");
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(if status == 200 {
        Outcome::Ok
    } else {
        Outcome::Status(status)
    })
}

/// One worker's tally, merged at the end (no shared lock on the request path).
struct Tally {
    ok: u64,
    bad_status: u64,
    errors: u64,
    hist: Histogram<u64>,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Result<Self, String> {
        Ok(Self {
            ok: 0,
            bad_status: 0,
            errors: 0,
            hist: new_histogram()?,
            first_error: None,
        })
    }

    fn record(&mut self, outcome: Result<Outcome, String>, latency: Duration) {
        match outcome {
            Ok(Outcome::Ok) => {
                self.ok += 1;
                let us = u64::try_from(latency.as_micros()).unwrap_or(MAX_LATENCY_US);
                let _ = self.hist.record(us.clamp(1, MAX_LATENCY_US));
            }
            Ok(Outcome::Status(status)) => {
                self.bad_status += 1;
                self.first_error
                    .get_or_insert_with(|| format!("status {status}"));
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

async fn timed(
    fut: impl std::future::Future<Output = Result<Outcome, String>>,
) -> Result<Outcome, String> {
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

async fn closed_worker(target: Target, end: Instant) -> Result<Tally, String> {
    let mut tally = Tally::new()?;
    let mut sender: Option<Sender> = None;
    while Instant::now() < end {
        let started = Instant::now();
        let outcome = match sender.as_mut() {
            Some(s) => timed(send(s, &target, false)).await,
            None => match connect(&target).await {
                Ok(mut s) => {
                    let r = timed(send(&mut s, &target, false)).await;
                    sender = Some(s);
                    r
                }
                Err(e) => Err(e),
            },
        };
        if outcome.is_err() {
            // A broken connection is replaced; back off a little so a dead server is not spun on.
            sender = None;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tally.record(outcome, started.elapsed());
    }
    Ok(tally)
}

/// The open loop's clock: a thread of its own hands out each request's intended send time at
/// that time. Tokio's timer rounds up to whole milliseconds, which sent a second's requests in
/// bursts of `rate / 1000` and put the generator's own queueing into every percentile; a
/// thread's sleep wakes within tens of µs. Shared by any number of workers.
pub struct Pacer(tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Instant>>);

/// One request's turn: when it was meant to go out and when its latency clock starts.
pub struct Slot {
    pub intended: Instant,
    pub clock_from: Instant,
}

impl Pacer {
    /// `count` turns, `period` apart, the first at `start`.
    pub fn start(start: Instant, period: Duration, count: u64) -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for k in 0..count {
                let intended = start + period.mul_f64(k as f64);
                if let Some(wait) = intended.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if tx.send(intended).is_err() {
                    break; // nobody takes turns any more
                }
            }
        });
        Self(tokio::sync::Mutex::new(rx))
    }

    /// The next turn, `None` after the last. A caller waiting when its turn came starts the
    /// clock when the request really goes out (the pacer's wake-up error is the generator's,
    /// not the server's); one that only asked after it (an earlier slow answer held it back)
    /// starts it at the intended time: no coordinated omission.
    pub async fn next(&self) -> Option<Slot> {
        let asked = Instant::now();
        let intended = self.0.lock().await.recv().await?;
        let clock_from = if asked <= intended {
            Instant::now()
        } else {
            intended
        };
        Some(Slot {
            intended,
            clock_from,
        })
    }
}

async fn open_worker(target: Target, pacer: Arc<Pacer>) -> Result<Tally, String> {
    let mut tally = Tally::new()?;
    let mut sender: Option<Sender> = None;
    while let Some(slot) = pacer.next().await {
        let outcome = match sender.as_mut() {
            Some(s) => timed(send(s, &target, false)).await,
            None => match connect(&target).await {
                Ok(mut s) => {
                    let r = timed(send(&mut s, &target, false)).await;
                    sender = Some(s);
                    r
                }
                Err(e) => Err(e),
            },
        };
        if outcome.is_err() {
            sender = None;
        }
        tally.record(outcome, slot.clock_from.elapsed());
    }
    Ok(tally)
}

async fn new_conn_worker(target: Target, end: Instant) -> Result<Tally, String> {
    let mut tally = Tally::new()?;
    while Instant::now() < end {
        let started = Instant::now();
        let outcome = timed(async {
            let mut s = connect(&target).await?;
            send(&mut s, &target, true).await
        })
        .await;
        tally.record(outcome, started.elapsed());
    }
    Ok(tally)
}

/// `n` requests one after another on one keep-alive connection, every answer a 200 (an
/// instruction count wants the same work repeated exactly: the `instr` mode).
pub fn sequential(target: &Target, n: usize, timeout: Duration) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async {
        let mut sender = connect(target).await?;
        for i in 0..n {
            let answer = tokio::time::timeout(timeout, send(&mut sender, target, false))
                .await
                .map_err(|_| format!("request {i}: no answer in {timeout:?}"))??;
            if let Outcome::Status(status) = answer {
                return Err(format!("request {i} answered {status}"));
            }
        }
        Ok(())
    })
}

/// Runs `mode` against `target` for `duration` on a single-threaded runtime (the generator
/// stays on the core it was pinned to) and returns what it measured.
pub fn run(target: &Target, mode: Mode, duration: Duration) -> Result<LoadResult, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(run_async(target, mode, duration))
}

async fn run_async(target: &Target, mode: Mode, duration: Duration) -> Result<LoadResult, String> {
    let started = Instant::now();
    let end = started + duration;
    let mut tasks = Vec::new();
    match mode {
        Mode::Closed { connections } => {
            for _ in 0..connections.max(1) {
                tasks.push(tokio::spawn(closed_worker(target.clone(), end)));
            }
        }
        Mode::Open { connections, rate } => {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(format!("open-loop rate must be positive, got {rate}"));
            }
            let period = Duration::from_secs_f64(1.0 / rate);
            let count = (duration.as_secs_f64() * rate).ceil() as u64;
            let pacer = Arc::new(Pacer::start(started, period, count));
            for _ in 0..connections.max(1) {
                tasks.push(tokio::spawn(open_worker(
                    target.clone(),
                    Arc::clone(&pacer),
                )));
            }
        }
        Mode::NewConn { workers } => {
            for _ in 0..workers.max(1) {
                tasks.push(tokio::spawn(new_conn_worker(target.clone(), end)));
            }
        }
    }
    let mut total = Tally::new()?;
    for task in tasks {
        let tally = task.await.map_err(|e| format!("load task: {e}"))??;
        total.ok += tally.ok;
        total.bad_status += tally.bad_status;
        total.errors += tally.errors;
        total
            .hist
            .add(&tally.hist)
            .map_err(|e| format!("histogram: {e}"))?;
        if total.first_error.is_none() {
            total.first_error = tally.first_error;
        }
    }
    Ok(LoadResult {
        ok: total.ok,
        bad_status: total.bad_status,
        errors: total.errors,
        elapsed: started.elapsed(),
        latency_us: total.hist,
        first_error: total.first_error,
    })
}
