//! What the run watches besides the answers: every second, Envoy's RSS and in-flight gauges, the
//! CPU of Envoy, the PDP and the generator, and the generator's connections; and which of
//! Envoy's stats, read before and after, are about shedding.

use super::pool::Pool;
use crate::procstat;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// CPU time used so far by `pid`, µs ([`procstat::cpu_us`]); none without a pid or a reading.
pub(super) fn cpu(pid: Option<u32>) -> Option<u64> {
    pid.and_then(|p| procstat::cpu_us(p).ok())
}

/// Starts the sampler's thread: every second until `end`, Envoy's RSS, CPU and in-flight gauges,
/// the CPU of the PDP and of this generator, and the generator's connections, into `samples`.
pub(super) fn spawn_sampler(
    pid: u32,
    pdp_pid: Option<u32>,
    admin: std::net::SocketAddr,
    pool: Arc<Pool>,
    samples: Arc<Mutex<Vec<Value>>>,
    t0: Instant,
    end: Instant,
) -> std::thread::JoinHandle<()> {
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
pub(super) fn shedding_stat(name: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
