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

mod answer;
mod pool;
mod tally;
mod watch;

use crate::load::Target;
use crate::procstat;
use crate::scenarios::Scenario;
use crate::setup::{Bench, Prerequisites};
use crate::traffic::{self, Current, Minter};
use answer::{Answer, CONNECTION_BACKED_OFF, CONNECTION_REFUSED, kind_of};
use pool::{Pool, REQUEST_TIMEOUT, leased_exchange};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tally::{Record, Tally, recovery};
use watch::{cpu, shedding_stat, spawn_sampler};

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
        let sampler = spawn_sampler(
            pid,
            pdp_pid,
            envoy.admin.addr(),
            Arc::clone(&pool),
            Arc::clone(&samples),
            t0.into_std(),
            end.into_std(),
        );
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
