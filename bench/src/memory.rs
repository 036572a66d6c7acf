//! Where Envoy's memory goes (issue 18, R11): idle Envoys for bare mTLS (S2), the no-op Wasm
//! filter (S2w) and certbind (S5, the sidecar's three plugin configurations), each after one
//! request and again after a short load: `VmRSS` split into anonymous and file-backed pages,
//! and Envoy's own heap from the admin `/memory` endpoint (tcmalloc). V8's code space and
//! the Wasm linear memories are outside that heap, so RSS − heap is mostly V8.
//! `certbind-bench memory [--wasm <file>]` (a `.wasm` variant in place of the built one).

use crate::load::{self, Mode, Tokens};
use crate::mint;
use crate::scenarios::Scenario;
use crate::setup::{Bench, Prerequisites};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const SCENARIOS: [Scenario; 3] = [Scenario::S2, Scenario::S2w, Scenario::S5];
/// Idle time after the first request: the filter's first ticks, JWKS and revocation snapshot.
const SETTLE: Duration = Duration::from_secs(3);

fn mb(kb: u64) -> f64 {
    (kb as f64 / 1024.0 * 10.0).round() / 10.0
}

/// `VmRSS`, `RssAnon` and `RssFile` (kB) of `pid`.
fn rss_parts(pid: u32) -> Result<[u64; 3], String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok([field("VmRSS:"), field("RssAnon:"), field("RssFile:")])
}

/// Envoy's heap (admin `/memory`, bytes as strings) in MB.
fn heap(bench: &Bench, scenario: Scenario) -> Value {
    let Some(envoy) = bench.envoys.get(&scenario) else {
        return Value::Null;
    };
    let request = certbind_tests::Request::get("/memory");
    let Ok(r) = certbind_tests::client::http_plain(envoy.admin.addr(), &request) else {
        return Value::Null;
    };
    let Ok(body) = r.json() else {
        return Value::Null;
    };
    let field = |k: &str| {
        body.get(k)
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|b| mb(b / 1024))
    };
    json!({
        "allocated_mb": field("allocated"),
        "heap_size_mb": field("heap_size"),
        "physical_mb": field("total_physical_bytes"),
        "pageheap_free_mb": field("pageheap_free"),
        "pageheap_unmapped_mb": field("pageheap_unmapped"),
        "thread_cache_mb": field("total_thread_cache"),
    })
}

fn snapshot(bench: &Bench, scenario: Scenario) -> Result<Value, String> {
    let pid = bench
        .envoys
        .get(&scenario)
        .ok_or_else(|| format!("{} has no Envoy", scenario.id()))?
        .pid()?;
    let [rss, anon, file] = rss_parts(pid)?;
    Ok(json!({
        "rss_mb": mb(rss),
        "rss_anon_mb": mb(anon),
        "rss_file_mb": mb(file),
        "heap": heap(bench, scenario),
    }))
}

/// Idle and after-load figures of S2, S2w and S5, and S5's and S2w's additions.
pub fn measure(wasm: Option<PathBuf>, load_seconds: f64) -> Result<Value, String> {
    let mut bins = Prerequisites::check()?;
    if let Some(w) = wasm {
        bins.certbind_wasm = w;
    }
    let bench = Bench::start(&bins, &SCENARIOS)?;
    let token: Arc<str> = bench
        .tokens(1)?
        .pop()
        .ok_or("the authz-server minted no token")?
        .into();
    for s in SCENARIOS {
        let (status, body) = bench.probe(s, &token)?;
        if status != 200 {
            return Err(format!("{} answered {status}: {body}", s.id()));
        }
    }
    std::thread::sleep(SETTLE);
    let mut idle = serde_json::Map::new();
    for s in SCENARIOS {
        idle.insert(s.id().to_owned(), snapshot(&bench, s)?);
    }
    let mut loaded = serde_json::Map::new();
    for s in SCENARIOS {
        let envoy = bench
            .envoys
            .get(&s)
            .ok_or_else(|| format!("{} has no Envoy", s.id()))?;
        let target = load::Target {
            addr: envoy.listen,
            tls: Some(Arc::clone(&bench.mtls)),
            path: mint::PATH.to_owned(),
            tokens: Some(Tokens::Same(Arc::clone(&token))),
        };
        let r = load::run(
            &target,
            Mode::Closed { connections: 16 },
            Duration::from_secs_f64(load_seconds),
        )?;
        if r.ok == 0 || r.bad_status + r.errors > 0 {
            return Err(format!("{} under load: {:?}", s.id(), r.first_error));
        }
        loaded.insert(s.id().to_owned(), snapshot(&bench, s)?);
    }
    let rss = |m: &serde_json::Map<String, Value>, s: &str| {
        m.get(s)
            .and_then(|v| v.get("rss_mb"))
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    let added = |m: &serde_json::Map<String, Value>| {
        json!({
            "S5_over_S2_mb": rss(m, "S5") - rss(m, "S2"),
            "S5_over_S2w_mb": rss(m, "S5") - rss(m, "S2w"),
            "S2w_over_S2_mb": rss(m, "S2w") - rss(m, "S2"),
        })
    };
    Ok(json!({
        "certbind_wasm": bins.certbind_wasm.display().to_string(),
        "wasm_bytes": std::fs::metadata(&bins.certbind_wasm).map(|m| m.len()).ok(),
        "added_idle": added(&idle),
        "added_after_load": added(&loaded),
        "idle": idle,
        "after_load": loaded,
        "load_seconds": load_seconds,
    }))
}
