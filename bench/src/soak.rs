//! `certbind-bench soak` (`make soak`): certbind (scenario S5's Envoy) under mixed valid and
//! hostile traffic at a fixed rate for a long time. Every answer is checked against what that
//! kind of request must get (status and CONTRACT §4 reason); Envoy's RSS is sampled every
//! second, the p99 of the valid calls per window; at the end the filter's counters must match
//! what was sent. Writes `soak.json` and `soak.png`.

use crate::load::{Sender, Target, connect};
use crate::mint;
use crate::procstat;
use crate::scenarios::Scenario;
use crate::setup::{Bench, Prerequisites};
use crate::traffic::{self, Current, Kind, Minter, one};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Out of every 20 requests: 14 valid, one of each hostile kind (indexes into
/// [`traffic::kinds`]; `valid_fresh` is the overload run's, not the soak's).
const PATTERN: [usize; 20] = [0, 0, 1, 0, 0, 2, 0, 0, 3, 0, 0, 4, 0, 0, 5, 0, 0, 6, 0, 0];

/// What the run saw.
#[derive(Default)]
struct Tally {
    sent: BTreeMap<&'static str, u64>,
    unexpected: u64,
    examples: Vec<String>,
    /// (seconds since start, latency µs) of the valid calls.
    valid_latency: Vec<(f64, u64)>,
}

fn expected(kind: &Kind, status: u16, body: &str) -> bool {
    if status != kind.status {
        return false;
    }
    if status == 200 {
        return true;
    }
    traffic::reason(body).as_deref() == kind.reason()
}

async fn worker(
    target: Target,
    current: Current,
    tally: Arc<Mutex<Tally>>,
    start: Instant,
    end: Instant,
    period: Duration,
    offset: usize,
) {
    let mut sender: Option<Sender> = None;
    let mut i = offset;
    let mut next = start + period.mul_f64(offset as f64 / 16.0);
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        let Ok(kinds) = current.read().map(|k| Arc::clone(&k)) else {
            return;
        };
        let Some(kind) = PATTERN.get(i % PATTERN.len()).and_then(|k| kinds.get(*k)) else {
            return;
        };
        let sent_at = Instant::now();
        let outcome = match sender.as_mut() {
            Some(s) => one(s, kind, kind.path).await,
            None => match connect(&target).await {
                Ok(mut s) => {
                    let r = one(&mut s, kind, kind.path).await;
                    sender = Some(s);
                    r
                }
                Err(e) => Err(e),
            },
        };
        let latency = sent_at.elapsed();
        if let Ok(mut t) = tally.lock() {
            *t.sent.entry(kind.name).or_default() += 1;
            match &outcome {
                Ok((status, body)) if expected(kind, *status, body) => {
                    if kind.status == 200 {
                        t.valid_latency.push((
                            sent_at.duration_since(start).as_secs_f64(),
                            latency.as_micros() as u64,
                        ));
                    }
                }
                other => {
                    t.unexpected += 1;
                    if t.examples.len() < 5 {
                        t.examples.push(format!("{}: {other:?}", kind.name));
                    }
                }
            }
        }
        if outcome.is_err() {
            sender = None;
        }
        i += 1;
        next += period;
    }
}

/// Runs the soak for `seconds` at `fraction` of S5's closed-loop maximum (measured first).
pub fn run(
    seconds: f64,
    fraction: f64,
    results: &Path,
    figures: &Path,
    log: &mut dyn FnMut(String),
) -> Result<Value, String> {
    let bins = Prerequisites::check()?;
    let bench = Bench::start(&bins, &[Scenario::S5])?;
    let envoy = bench.envoys.get(&Scenario::S5).ok_or("no S5 Envoy")?;
    let pid = envoy.pid()?;
    let minter = Minter::new(&bench)?;
    let kinds = Arc::new(minter.kinds()?);
    let token = match kinds.first().and_then(|k| k.authorization.as_deref()) {
        Some(a) => a.trim_start_matches("Bearer ").to_owned(),
        None => return Err("no valid kind".into()),
    };
    let current: Current = Arc::new(std::sync::RwLock::new(Arc::clone(&kinds)));
    let target = Target {
        addr: envoy.listen,
        tls: Some(Arc::clone(&bench.mtls)),
        path: mint::PATH.to_owned(),
        tokens: Some(crate::load::Tokens::Same(token.into())),
    };
    let max = crate::load::run(
        &target,
        crate::load::Mode::Closed { connections: 16 },
        Duration::from_secs(5),
    )?
    .rps();
    let rate = (max * fraction).max(1.0);
    log(format!(
        "S5 maximum {max:.0} rps; soaking at {rate:.0} rps for {seconds:.0} s"
    ));
    // Settled: the filter hands over the maximum run's allow-path counts on its next tick.
    let before = envoy.admin.settled_stats().map_err(|e| e.to_string())?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let rss: Arc<Mutex<Vec<(f64, f64)>>> = Arc::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let connections = 16usize;
    let period = Duration::from_secs_f64(connections as f64 / rate);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let refresher = traffic::refresh_until(minter, Arc::clone(&current), end);
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..connections {
            tasks.push(tokio::spawn(worker(
                target.clone(),
                Arc::clone(&current),
                Arc::clone(&tally),
                start,
                end,
                period,
                c,
            )));
        }
        let rss2 = Arc::clone(&rss);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                if let (Ok(kb), Ok(mut v)) = (procstat::rss_kb(pid), rss2.lock()) {
                    v.push((start.elapsed().as_secs_f64(), kb as f64 / 1024.0));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
        for t in tasks {
            let _ = t.await;
        }
    });
    let refreshed = refresher
        .join()
        .map_err(|_| "the token refresher died".to_owned())??;
    let after = envoy.admin.settled_stats().map_err(|e| e.to_string())?;
    let tally = tally.lock().map_err(|_| "tally poisoned")?;
    let rss = rss.lock().map_err(|_| "rss poisoned")?.clone();
    // Counters: each kind's counter moved by exactly what was sent of it.
    let delta = |name: &str| {
        let get =
            |m: &BTreeMap<String, u64>| m.get(&format!("wasmcustom.{name}")).copied().unwrap_or(0);
        get(&after).saturating_sub(get(&before))
    };
    let mut counters = serde_json::Map::new();
    let mut counters_ok = true;
    for k in kinds.iter().filter(|k| !k.distinct) {
        let sent = tally.sent.get(k.name).copied().unwrap_or(0);
        let counted = delta(k.counter);
        counters_ok &= sent == counted;
        counters.insert(
            k.name.into(),
            json!({"sent": sent, "counter": k.counter, "counted": counted}),
        );
    }
    // RSS growth: from the end of the first tenth (warm-up) to the end.
    let warm = rss.iter().find(|(t, _)| *t >= seconds / 10.0).map(|x| x.1);
    let last = rss.last().map(|x| x.1);
    let growth = match (warm, last) {
        (Some(a), Some(b)) if a > 0.0 => Some((b - a) / a * 100.0),
        _ => None,
    };
    // p99 of the valid calls per window (20 windows).
    let window = seconds / 20.0;
    let mut p99 = Vec::new();
    for w in 0..20 {
        let (lo, hi) = (w as f64 * window, (w + 1) as f64 * window);
        let mut h = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
        for (_, l) in tally
            .valid_latency
            .iter()
            .filter(|(t, _)| *t >= lo && *t < hi)
        {
            let _ = h.record(*l);
        }
        if !h.is_empty() {
            p99.push((hi, h.value_at_quantile(0.99) as f64 / 1000.0));
        }
    }
    let total: u64 = tally.sent.values().sum();
    let report = json!({
        "what": "certbind (S5 Envoy) under mixed traffic: 14 valid of every 20 requests, one each of policy_denied, expired, bad_signature, missing_token, binding_mismatch (a token bound to another certificate), malformed_token",
        "seconds": seconds, "rate_rps": rate, "max_rps": max, "fraction": fraction,
        "requests": total, "token_refreshes": refreshed, "unexpected_answers": tally.unexpected, "unexpected_examples": tally.examples,
        "rss_mb_after_warmup": warm, "rss_mb_end": last, "rss_growth_percent": growth,
        "counters": counters, "counters_consistent": counters_ok,
        "rss_mb": rss, "valid_p99_ms_per_window": p99,
        "env": crate::report::env_json(&bench.cores, &bins.envoy, &bins.certbind_wasm),
    });
    std::fs::create_dir_all(results).map_err(|e| e.to_string())?;
    let path = results.join("soak.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())? + "\n",
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    crate::figures::soak(&report, figures)?;
    Ok(report)
}
