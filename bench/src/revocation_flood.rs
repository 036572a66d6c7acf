//! Revocation flood (issue 16, "any workload can make every sidecar answer 503"): one workload
//! (`consumer`) mints and revokes its own tokens with `POST /revoke` as fast as it can from
//! several threads, while another (`inventory`) calls the `orders` sidecar. First a quiet phase
//! (the victim alone, at most a minute), then the flood phase. Reported: the victim's
//! p50/p99 in both phases, its non-200 answers (503s apart), the flood's rate, the largest
//! revocation list the feed served, and whether the flooder's revoked tokens are refused.
//! A second quiet phase after the flood gives the noise: the quiet phases' p99s bracket what
//! "unchanged" can mean on this machine.
//!
//! Placement: in a fleet the authz-server does not run on the victim's node, so by default the
//! authz-server and the flooding threads are pinned to one CPU and the victim's path (its client
//! thread, Envoy, the PDP, the upstream) to the other; what remains is what the flood does to the
//! victim through the system itself (the revocation feed, the sidecar's revocation set).
//! `shared` leaves everything on every CPU (the flooder's TLS handshakes and signatures then
//! compete with the victim for this machine's 2 cores).

use certbind_tests::{Request, System};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Threads flooding `/revoke` (each: mint a token, revoke it).
const FLOODERS: usize = 4;
/// The victim renews its token this often (tokens live 300 s).
const RENEW: Duration = Duration::from_secs(60);

/// The victim's answers in one phase.
#[derive(Debug, Default)]
struct Phase {
    ms: Vec<f64>,
    non_200: u64,
    unavailable_503: u64,
    examples: Vec<String>,
}

impl Phase {
    fn pct(&self, p: f64) -> f64 {
        let mut s = self.ms.clone();
        s.sort_by(f64::total_cmp);
        crate::stats::percentile(&s, p)
    }

    fn json(&self) -> serde_json::Value {
        let round = |v: f64| (v * 100.0).round() / 100.0;
        serde_json::json!({
            "requests": self.ms.len() as u64 + self.non_200,
            "p50_ms": round(self.pct(50.0)),
            "p99_ms": round(self.pct(99.0)),
            "non_200": self.non_200,
            "unavailable_503": self.unavailable_503,
            "examples": self.examples,
        })
    }
}

/// The victim calls the sidecar back to back (a new TLS connection per call) for `seconds`.
fn victim(system: &System, seconds: f64) -> Result<Phase, String> {
    let err = |e: certbind_tests::Error| e.to_string();
    let client = system.client(Some("inventory")).map_err(err)?;
    let mut token = system
        .token("inventory", "orders", "orders:read")
        .map_err(err)?;
    let mut renewed = Instant::now();
    let mut phase = Phase::default();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds {
        if renewed.elapsed() > RENEW {
            token = system
                .token("inventory", "orders", "orders:read")
                .map_err(err)?;
            renewed = Instant::now();
        }
        let t0 = Instant::now();
        let r = client
            .send(
                system.sidecar("orders"),
                &Request::get("/orders/1").bearer(&token),
            )
            .map_err(err)?;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if r.status == 200 {
            phase.ms.push(ms);
        } else {
            phase.non_200 += 1;
            phase.unavailable_503 += u64::from(r.status == 503);
            if phase.examples.len() < 5 {
                phase.examples.push(format!("{} {}", r.status, r.text()));
            }
        }
    }
    Ok(phase)
}

/// Entries in the revocation list the feed serves now (a first poll: a snapshot).
fn feed_entries(system: &System) -> Result<usize, String> {
    let r = system
        .client(Some("envoy"))
        .and_then(|c| c.send(system.authz_addr(), &Request::get("/v1/revocations")))
        .map_err(|e| e.to_string())?;
    let json = r.json().map_err(|e| e.to_string())?;
    json["revocations"]
        .as_array()
        .map(Vec::len)
        .ok_or_else(|| format!("feed answered {} {}", r.status, r.text()))
}

/// What the flooders did.
#[derive(Debug, Default)]
struct Flood {
    revoked: AtomicU64,
    refused: AtomicU64,
    failures: AtomicU64,
}

/// The quiet phase lasts at most this long (it is the reference, not the test).
const QUIET_MAX_S: f64 = 60.0;

/// Where the processes and threads run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The authz-server and the flooders on CPU 0, the victim's path on CPU 1.
    Split,
    /// No pinning.
    Shared,
}

impl Placement {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "split" => Ok(Self::Split),
            "shared" => Ok(Self::Shared),
            _ => Err(format!("placement {s:?}: split or shared")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Split => "split",
            Self::Shared => "shared",
        }
    }
}

/// CPU of the authz-server and the flooders; the victim's path gets [`VICTIM_CPU`].
const FLOOD_CPU: u32 = 0;
const VICTIM_CPU: u32 = 1;

/// [`crate::setup::pin`] with the `taskset` on `PATH`.
fn pin(id: u32, cpu: u32, all: bool) -> Result<(), String> {
    crate::setup::pin(Path::new("taskset"), id, cpu as usize, all)
}

/// Pins the calling thread.
fn pin_this_thread(cpu: u32) -> Result<(), String> {
    let link = std::fs::read_link("/proc/thread-self").map_err(|e| e.to_string())?;
    let tid = link
        .file_name()
        .and_then(|t| t.to_str())
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("/proc/thread-self is {}", link.display()))?;
    pin(tid, cpu, false)
}

/// This process's descendants with their command names (`/proc/<pid>/stat`: pid (comm) state ppid).
fn descendants() -> Vec<(u32, String)> {
    let mut parents = vec![std::process::id()];
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    let stats: Vec<(u32, u32, String)> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, tail) = stat.rsplit_once(") ")?;
            let comm = head.split_once(" (")?.1.to_owned();
            let ppid = tail.split(' ').nth(1)?.parse().ok()?;
            Some((pid, ppid, comm))
        })
        .collect();
    while let Some(parent) = parents.pop() {
        for (pid, ppid, comm) in &stats {
            if *ppid == parent {
                found.push((*pid, comm.clone()));
                parents.push(*pid);
            }
        }
    }
    found
}

/// Pins the system's processes: the authz-server to [`FLOOD_CPU`], every other one (Envoy,
/// PDP, upstream) to [`VICTIM_CPU`]. Returns what went where, for the report.
fn place_processes() -> Result<Vec<String>, String> {
    let mut placed = Vec::new();
    for (pid, comm) in descendants() {
        let cpu = if comm.contains("authz") {
            FLOOD_CPU
        } else {
            VICTIM_CPU
        };
        pin(pid, cpu, true)?;
        placed.push(format!("{comm}:{cpu}"));
    }
    if !placed.iter().any(|p| p.contains("authz")) {
        return Err(format!(
            "no authz-server among this run's processes: {placed:?}"
        ));
    }
    Ok(placed)
}

/// Runs the quiet phase (`seconds`, at most a minute) and the flood phase (`seconds`).
pub fn run(
    seconds: f64,
    placement: Placement,
    progress: &mut dyn FnMut(String),
) -> Result<serde_json::Value, String> {
    let system = System::builder()
        .concurrency(2)
        .try_start()
        .map_err(|e| e.to_string())?;
    let split = placement == Placement::Split;
    let placed = if split {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus < 2 {
            return Err(format!(
                "--placement split needs 2 CPUs, this machine has {cpus}"
            ));
        }
        pin_this_thread(VICTIM_CPU)?;
        place_processes()?
    } else {
        Vec::new()
    };
    let quiet_s = seconds.min(QUIET_MAX_S);
    progress(format!("quiet phase: the victim alone for {quiet_s:.0} s"));
    let quiet = victim(&system, quiet_s)?;
    let list_before = feed_entries(&system)?;
    progress(format!(
        "quiet p99 {:.1} ms; flood phase: {FLOODERS} threads mint and revoke for {seconds:.0} s",
        quiet.pct(99.0)
    ));
    let flood = Arc::new(Flood::default());
    let stop = AtomicBool::new(false);
    let max_list = AtomicU64::new(list_before as u64);
    let last_revoked = std::sync::Mutex::new(None::<String>);
    let started = Instant::now();
    let under_flood = std::thread::scope(|scope| {
        for _ in 0..FLOODERS {
            scope.spawn(|| {
                if split && pin_this_thread(FLOOD_CPU).is_err() {
                    flood.failures.fetch_add(1, Ordering::Relaxed);
                }
                while !stop.load(Ordering::Relaxed) {
                    let Ok(token) = system.token("consumer", "orders", "orders:read") else {
                        flood.failures.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    match system.revoke_token("consumer", &token) {
                        Ok(r) if r.status == 200 => {
                            flood.revoked.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut last) = last_revoked.lock() {
                                *last = Some(token);
                            }
                        }
                        Ok(_) => {
                            flood.refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            flood.failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        scope.spawn(|| {
            if split {
                let _ = pin_this_thread(FLOOD_CPU);
            }
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = feed_entries(&system) {
                    max_list.fetch_max(n as u64, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        let phase = victim(&system, seconds);
        stop.store(true, Ordering::Relaxed);
        phase
    })?;
    let flood_s = started.elapsed().as_secs_f64();
    progress(format!(
        "flood p99 {:.1} ms; quiet again for {quiet_s:.0} s (the noise)",
        under_flood.pct(99.0)
    ));
    let after = victim(&system, quiet_s)?;
    // The flood must still have revoked what it asked: its last revoked token is refused.
    let last = last_revoked
        .lock()
        .map_err(|_| "flooder panicked".to_owned())?
        .clone()
        .ok_or("the flood revoked nothing")?;
    std::thread::sleep(Duration::from_secs(1));
    let check = system
        .call(
            Some("consumer"),
            "orders",
            &Request::get("/orders/1").bearer(&last),
        )
        .map_err(|e| e.to_string())?;
    let last_refused =
        check.status == 401 && check.json_str("reason").as_deref() == Some("revoked");
    let revoked = flood.revoked.load(Ordering::Relaxed);
    let round = |v: f64| (v * 100.0).round() / 100.0;
    let now = crate::stats::unix_now_s();
    Ok(serde_json::json!({
        "what": "one workload floods POST /revoke with its own fresh tokens while another calls the orders sidecar",
        "quiet_seconds": quiet_s,
        "flood_seconds": seconds,
        "quiet": quiet.json(),
        "flood": under_flood.json(),
        "quiet_after": after.json(),
        "p99_ratio_flood_over_quiet": round(under_flood.pct(99.0) / quiet.pct(99.0).max(0.001)),
        "p99_ratio_quiet_after_over_quiet": round(after.pct(99.0) / quiet.pct(99.0).max(0.001)),
        "placement": placement.name(),
        "pinned": placed,
        "revocations_answered_200": revoked,
        "revocations_per_s": round(revoked as f64 / flood_s),
        "revoke_non_200": flood.refused.load(Ordering::Relaxed),
        "flooder_transport_failures": flood.failures.load(Ordering::Relaxed),
        "list_entries_before": list_before,
        "list_entries_max": max_list.load(Ordering::Relaxed),
        "list_entries_after": feed_entries(&system)?,
        "last_revoked_token_refused": last_refused,
        "method": "one system on free ports, Envoy --concurrency 2, debug or release services as certbind_tests::prereq finds them; the victim (inventory) calls GET /orders/1 back to back, a new TLS connection per call, alone, then during the flood, then alone again (the two quiet phases bracket the noise); placement split: authz-server and flooders on CPU 0, the victim thread, Envoy, PDP and upstream on CPU 1 (taskset); the flood: 4 threads, each minting a consumer token over mTLS and revoking it (RFC 7009); the list size is the feed's snapshot polled every 0.5 s",
        "measured_at_unix_s": now,
    }))
}
