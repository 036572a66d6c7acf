//! The method of issue 10: warm every scenario up, then rounds in which each scenario runs once
//! (the order rotates each round, so A/B pairs are interleaved and drift cancels), closed-loop
//! for throughput and Envoy CPU per request, open-loop at half of S5's throughput for latency,
//! and new-connection-per-request for the handshake path.

use crate::load::{self, LoadResult, Mode, Target, Tokens};
use crate::mint;
use crate::procstat;
use crate::scenarios::Scenario;
use crate::setup::Bench;
use crate::stats::{median, round3};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long and how hard.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub rounds: usize,
    /// Closed-loop load before the first round, per scenario (JIT, caches, JWKS, connections).
    pub warmup_s: f64,
    /// Load just before each measured run, not measured.
    pub settle_s: f64,
    pub closed_s: f64,
    pub open_s: f64,
    pub new_conn_s: f64,
    /// Keep-alive connections of the closed loop.
    pub connections: usize,
    /// Keep-alive connections the open loop spreads its rate over.
    pub open_connections: usize,
    pub new_conn_workers: usize,
    /// Tokens S5c cycles through: more than the filter's token cache (1024, FIFO), so every
    /// request is a miss and one ES256 verify.
    pub fresh_token_pool: usize,
    /// The open loop runs at this fraction of S5's closed-loop throughput (S2's without S5).
    pub open_fraction: f64,
    /// Scenarios measured open-loop (latency CDFs; S2 and S5 give R5).
    pub open_scenarios: Vec<Scenario>,
    /// Scenarios measured with a new connection per request (S2 and S5 give R10).
    pub new_conn_scenarios: Vec<Scenario>,
    /// S5d's proofs minted before a run, per second of it: above S5d's throughput, so the
    /// generator does not sign while it measures (it would, rather than resend a proof, and
    /// the run gets a note). 5,000 had been enough on the VMs of runs A–G; run H's served
    /// ~9,400 a second.
    pub dpop_proofs_per_s: f64,
    /// Revocations timed at the end (`revocation_p99_ms`), on a separate system.
    pub revocations: usize,
    pub smoke: bool,
}

impl Plan {
    /// `make bench`: about 10 minutes on the 2-core machine.
    pub fn full() -> Self {
        Self {
            rounds: 5,
            warmup_s: 3.0,
            settle_s: 0.5,
            closed_s: 5.0,
            open_s: 5.0,
            new_conn_s: 3.0,
            connections: 16,
            open_connections: 32,
            new_conn_workers: 4,
            fresh_token_pool: 3000,
            open_fraction: 0.5,
            open_scenarios: vec![
                Scenario::S2,
                Scenario::S2w,
                Scenario::S3,
                Scenario::S4,
                Scenario::S5,
            ],
            new_conn_scenarios: vec![Scenario::S2, Scenario::S5],
            dpop_proofs_per_s: 15_000.0,
            revocations: 200,
            smoke: false,
        }
    }

    /// The whole harness in seconds, to keep it from rotting; its numbers mean nothing.
    pub fn smoke() -> Self {
        Self {
            rounds: 1,
            warmup_s: 0.3,
            settle_s: 0.1,
            closed_s: 0.3,
            open_s: 0.3,
            new_conn_s: 0.3,
            connections: 4,
            open_connections: 4,
            new_conn_workers: 2,
            fresh_token_pool: 50,
            dpop_proofs_per_s: 200.0,
            revocations: 5,
            smoke: true,
            ..Self::full()
        }
    }
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub round: usize,
    pub rps: f64,
    pub ok: u64,
    pub bad_status: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Envoy's CPU (all threads, user + system) per request, µs.
    pub cpu_us_per_req: f64,
    /// Envoy's share of its core during the run.
    pub envoy_core_util: f64,
    /// Envoy's resident memory after the run, MB.
    pub rss_mb: f64,
    /// The machine's 1-minute load average when the run ended (others' work adds noise).
    pub loadavg_1m: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offered_rps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// Everything measured for one scenario.
#[derive(Debug, Clone, Default)]
pub struct ScenarioData {
    pub closed: Vec<Sample>,
    pub open: Vec<Sample>,
    pub new_conn: Vec<Sample>,
    /// The open-loop latencies of every round, merged (for the CDF figure).
    pub open_hist: Option<Histogram<u64>>,
    pub notes: Vec<String>,
}

impl ScenarioData {
    pub fn median_of(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> Option<f64> {
        median(&samples.iter().map(f).collect::<Vec<_>>())
    }
}

/// The whole run.
#[derive(Debug, Default)]
pub struct Measurements {
    pub data: BTreeMap<Scenario, ScenarioData>,
    pub open_rate: Option<f64>,
    /// The scenario whose closed-loop throughput set `open_rate` (S5, else S2).
    pub open_rate_basis: Option<Scenario>,
    /// The revocation propagation report (`revocation::measure`), when it ran.
    pub revocation: Option<serde_json::Value>,
}

pub(crate) fn target(bench: &Bench, scenario: Scenario, tokens: Tokens) -> Result<Target, String> {
    let envoy = bench
        .envoys
        .get(&scenario)
        .ok_or_else(|| format!("{} has no Envoy", scenario.id()))?;
    Ok(Target {
        addr: envoy.listen,
        tls: match (scenario.tls(), scenario.mtls()) {
            (false, _) => None,
            (true, false) => Some(Arc::clone(&bench.tls_only)),
            (true, true) => Some(Arc::clone(&bench.mtls)),
        },
        path: mint::PATH.to_owned(),
        tokens: Some(tokens),
    })
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn sample(round: usize, r: &LoadResult, cpu_us: u64, rss_kb: u64) -> Sample {
    let requests = r.requests().max(1) as f64;
    Sample {
        round,
        rps: round3(r.rps()),
        ok: r.ok,
        bad_status: r.bad_status,
        errors: r.errors,
        p50_us: r.quantile_us(0.50),
        p90_us: r.quantile_us(0.90),
        p99_us: r.quantile_us(0.99),
        p999_us: r.quantile_us(0.999),
        max_us: r.latency_us.max(),
        cpu_us_per_req: round3(cpu_us as f64 / requests),
        envoy_core_util: round3(cpu_us as f64 / 1e6 / r.elapsed.as_secs_f64().max(1e-9)),
        rss_mb: round3(rss_kb as f64 / 1024.0),
        loadavg_1m: procstat::loadavg_1m(),
        offered_rps: None,
        first_error: r.first_error.clone(),
    }
}

/// One measured run: settle (unmeasured), then `mode` for `duration` with Envoy's CPU read
/// around it and its RSS after it.
fn measure(
    bench: &Bench,
    scenario: Scenario,
    tokens: Tokens,
    mode: Mode,
    settle: Duration,
    duration: Duration,
    round: usize,
) -> Result<(Sample, LoadResult), String> {
    let pid = bench
        .envoys
        .get(&scenario)
        .ok_or_else(|| format!("{} has no Envoy", scenario.id()))?
        .pid()?;
    let t = target(bench, scenario, tokens)?;
    if !settle.is_zero() {
        load::run(&t, mode, settle)?;
    }
    let cpu_before = procstat::cpu_us(pid)?;
    let result = load::run(&t, mode, duration)?;
    let cpu_after = procstat::cpu_us(pid)?;
    let rss = procstat::rss_kb(pid)?;
    let s = sample(round, &result, cpu_after.saturating_sub(cpu_before), rss);
    Ok((s, result))
}

/// The tokens of one run of `seconds`: a pool of fresh ones for S5c, a DPoP-bound token with
/// enough fresh proofs for S5d, else the round's token.
fn tokens_for(
    bench: &Bench,
    plan: &Plan,
    scenario: Scenario,
    token: &Arc<str>,
    seconds: f64,
) -> Result<Tokens, String> {
    match scenario {
        Scenario::S5c => Ok(Tokens::pool(bench.tokens(plan.fresh_token_pool)?)),
        Scenario::S5d => {
            let proofs = (seconds * plan.dpop_proofs_per_s).ceil() as usize;
            bench.dpop_credentials(scenario, proofs)
        }
        _ => Ok(Tokens::Same(Arc::clone(token))),
    }
}

/// A run whose generator had to sign DPoP proofs while it measured (its pool ran out) may
/// have been held back by the generator rather than by Envoy: say so in the results.
fn note_late_proofs(m: &mut Measurements, s: Scenario, round: usize, mode: &str, t: &Tokens) {
    if let Some((late, minted)) = t.signed_late()
        && late > 0
    {
        let note = format!(
            "round {round} {mode}: {late} proofs signed during the run after the {minted} minted \
             before it ran out (the generator's core, not Envoy, may have limited this run)"
        );
        eprintln!("warning: {} {note}", s.id());
        m.data.entry(s).or_default().notes.push(note);
    }
}

fn check_first_request(bench: &Bench, scenario: Scenario, token: &str) -> Result<(), String> {
    let (status, body) = bench.probe(scenario, token)?;
    if status == 200 {
        Ok(())
    } else {
        Err(format!(
            "{} ({}) answered {status} to a legitimate request: {body}\n{}",
            scenario.id(),
            scenario.describe(),
            bench.logs_tail(15)
        ))
    }
}

/// `log` gets one line per run (progress on the terminal).
pub fn run(
    bench: &Bench,
    plan: &Plan,
    scenarios: &[Scenario],
    log: &mut dyn FnMut(String),
) -> Result<Measurements, String> {
    let runnable: Vec<Scenario> = scenarios.to_vec();
    let mut m = Measurements::default();
    for s in scenarios {
        m.data.entry(*s).or_default();
    }

    let token: Arc<str> = bench
        .tokens(1)?
        .pop()
        .ok_or("authz-server gave no token")?
        .into();
    for &s in &runnable {
        check_first_request(bench, s, &token)?;
        let t = target(bench, s, tokens_for(bench, plan, s, &token, plan.warmup_s)?)?;
        load::run(
            &t,
            Mode::Closed {
                connections: plan.connections,
            },
            secs(plan.warmup_s),
        )?;
        log(format!("warmed up {} ({})", s.id(), s.describe()));
    }

    let closed = Mode::Closed {
        connections: plan.connections,
    };
    for round in 0..plan.rounds {
        // A token per round: tokens live 300 s, a full run is longer.
        let token: Arc<str> = bench.tokens(1)?.pop().ok_or("no token")?.into();
        let n = runnable.len().max(1);
        for i in 0..n {
            let Some(&s) = runnable.get((i + round) % n) else {
                continue;
            };
            let tokens = tokens_for(bench, plan, s, &token, plan.settle_s + plan.closed_s)?;
            let hits_before = cache_hits(bench, s);
            let (sample, _) = measure(
                bench,
                s,
                tokens.clone(),
                closed,
                secs(plan.settle_s),
                secs(plan.closed_s),
                round,
            )?;
            note_late_proofs(&mut m, s, round, "closed", &tokens);
            if s == Scenario::S5c
                && let (Some(a), Some(b)) = (hits_before, cache_hits(bench, s))
            {
                m.data.entry(s).or_default().notes.push(format!(
                    "round {round}: {} token-cache hits in {} requests (settle included)",
                    b.saturating_sub(a),
                    sample.ok
                ));
            }
            log(format!(
                "round {}/{} closed {:>4}: {:>8.0} rps  p99 {:>6} µs  cpu {:>6.1} µs/req  Envoy core {:>3.0}%  rss {:>5.1} MB{}",
                round + 1,
                plan.rounds,
                s.id(),
                sample.rps,
                sample.p99_us,
                sample.cpu_us_per_req,
                sample.envoy_core_util * 100.0,
                sample.rss_mb,
                bad(&sample)
            ));
            m.data.entry(s).or_default().closed.push(sample);
        }
    }

    // R5 (issue 18): at half of certbind's own maximum, a rate S2 and S5 both sustain.
    let basis = [Scenario::S5, Scenario::S2].into_iter().find_map(|s| {
        let d = m.data.get(&s)?;
        ScenarioData::median_of(&d.closed, |x| x.rps)
            .filter(|r| *r > 0.0)
            .map(|r| (s, r))
    });
    if let Some((basis, basis_rps)) = basis {
        let rate = (basis_rps * plan.open_fraction).max(1.0);
        m.open_rate = Some(round3(rate));
        m.open_rate_basis = Some(basis);
        let open = Mode::Open {
            connections: plan.open_connections,
            rate,
        };
        let list: Vec<Scenario> = plan
            .open_scenarios
            .iter()
            .copied()
            .filter(|s| runnable.contains(s))
            .collect();
        for round in 0..plan.rounds {
            let token: Arc<str> = bench.tokens(1)?.pop().ok_or("no token")?.into();
            let n = list.len().max(1);
            for i in 0..n {
                let Some(&s) = list.get((i + round) % n) else {
                    continue;
                };
                let tokens = tokens_for(bench, plan, s, &token, plan.settle_s + plan.closed_s)?;
                let (mut sample, result) = measure(
                    bench,
                    s,
                    tokens.clone(),
                    open,
                    secs(plan.settle_s),
                    secs(plan.open_s),
                    round,
                )?;
                sample.offered_rps = Some(round3(rate));
                note_late_proofs(&mut m, s, round, "open", &tokens);
                log(format!(
                    "round {}/{} open {:>4} @ {:.0} rps: p50 {:>6} µs  p99 {:>6} µs  p99.9 {:>6} µs{}",
                    round + 1,
                    plan.rounds,
                    s.id(),
                    rate,
                    sample.p50_us,
                    sample.p99_us,
                    sample.p999_us,
                    bad(&sample)
                ));
                let data = m.data.entry(s).or_default();
                match &mut data.open_hist {
                    Some(h) => h.add(&result.latency_us).map_err(|e| e.to_string())?,
                    None => data.open_hist = Some(result.latency_us.clone()),
                }
                data.open.push(sample);
            }
        }
    } else {
        log(
            "neither S5 nor S2 was measured closed-loop: no open-loop rate, open-loop runs skipped"
                .into(),
        );
    }

    let nc = Mode::NewConn {
        workers: plan.new_conn_workers,
    };
    let list: Vec<Scenario> = plan
        .new_conn_scenarios
        .iter()
        .copied()
        .filter(|s| runnable.contains(s))
        .collect();
    for round in 0..plan.rounds {
        let token: Arc<str> = bench.tokens(1)?.pop().ok_or("no token")?.into();
        let n = list.len().max(1);
        for i in 0..n {
            let Some(&s) = list.get((i + round) % n) else {
                continue;
            };
            let tokens = tokens_for(bench, plan, s, &token, plan.settle_s + plan.closed_s)?;
            let (sample, _) = measure(
                bench,
                s,
                tokens,
                nc,
                Duration::ZERO,
                secs(plan.new_conn_s),
                round,
            )?;
            log(format!(
                "round {}/{} new-conn {:>4}: {:>7.0} rps  cpu {:>6.1} µs/req{}",
                round + 1,
                plan.rounds,
                s.id(),
                sample.rps,
                sample.cpu_us_per_req,
                bad(&sample)
            ));
            m.data.entry(s).or_default().new_conn.push(sample);
        }
    }
    Ok(m)
}

fn bad(s: &Sample) -> String {
    if s.bad_status + s.errors == 0 {
        String::new()
    } else {
        format!(
            "  [{} bad status, {} errors: {}]",
            s.bad_status,
            s.errors,
            s.first_error.as_deref().unwrap_or("?")
        )
    }
}

fn cache_hits(bench: &Bench, scenario: Scenario) -> Option<u64> {
    if !scenario.certbind() {
        return None;
    }
    bench
        .envoys
        .get(&scenario)?
        .admin
        .counter("certbind.token_cache.hit")
        .ok()
}
