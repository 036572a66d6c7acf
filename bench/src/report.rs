//! The results: `<scenario>.json` per scenario, `summary.json` with every key of issue 10
//! (a key that cannot be measured is `null` with a `notes` entry saying why) and the table.

use crate::method::{Measurements, Plan, Sample, ScenarioData};
use crate::scenarios::Scenario;
use crate::stats::{median_diff, median_ratio, paired_diff_ci95, round3};
use serde_json::{Map, Value, json};
use std::path::Path;

/// The project's targets (issues 10 and 18): key, comparison, bound.
pub const GOALS: [(&str, &str, f64); 13] = [
    ("R1_filter_vs_mtls_rps", ">=", 0.90),
    ("R2_filter_vs_jwt_authn_rps", ">=", 0.95),
    ("R4_filter_vs_ext_authz_rps", ">=", 1.5),
    ("R5_added_p99_us", "<=", 200.0),
    ("R7_added_cpu_us_per_req", "<=", 30.0),
    ("R9_wasm_es256_verify_us", "<=", 60.0),
    ("R11_added_rss_mb", "<=", 30.0),
    ("revocation_p99_ms", "<=", 1000.0),
    ("R1w_filter_vs_noop_wasm_rps", ">=", 0.95),
    ("R7w_added_cpu_over_noop_wasm_us", "<=", 6.0),
    ("R2e_filter_vs_native_binding_rps", ">=", 1.0),
    ("R2c_fresh_token_vs_jwt_authn_uncached_rps", ">=", 0.90),
    ("R12_dpop_vs_jwt_authn_uncached_rps", ">=", 0.80),
];

fn series(
    m: &Measurements,
    s: Scenario,
    pick: fn(&ScenarioData) -> &Vec<Sample>,
    f: fn(&Sample) -> f64,
) -> Vec<f64> {
    m.data
        .get(&s)
        .map(|d| {
            let mut v: Vec<&Sample> = pick(d).iter().collect();
            v.sort_by_key(|x| x.round);
            v.into_iter().map(f).collect()
        })
        .unwrap_or_default()
}

fn closed(d: &ScenarioData) -> &Vec<Sample> {
    &d.closed
}
fn open(d: &ScenarioData) -> &Vec<Sample> {
    &d.open
}
fn new_conn(d: &ScenarioData) -> &Vec<Sample> {
    &d.new_conn
}

/// Pairs only where both scenarios ran the same rounds.
fn paired(
    m: &Measurements,
    a: Scenario,
    b: Scenario,
    pick: fn(&ScenarioData) -> &Vec<Sample>,
    f: fn(&Sample) -> f64,
) -> (Vec<f64>, Vec<f64>) {
    let (x, y) = (series(m, a, pick, f), series(m, b, pick, f));
    let n = x.len().min(y.len());
    (x[..n].to_vec(), y[..n].to_vec())
}

fn num(x: Option<f64>) -> Value {
    x.map_or(Value::Null, |v| json!(round3(v)))
}

/// The `ratios` and `metrics` objects and the notes explaining every `null`.
pub fn summary_figures(m: &Measurements) -> (Map<String, Value>, Map<String, Value>, Vec<String>) {
    use Scenario::*;
    let rps = |s: &Sample| s.rps;
    let cpu = |s: &Sample| s.cpu_us_per_req;
    let rss = |s: &Sample| s.rss_mb;
    let p99 = |s: &Sample| s.p99_us as f64;
    let mut notes = Vec::new();
    let ratio = |a, b, pick| {
        let (x, y) = paired(m, a, b, pick, rps);
        median_ratio(&x, &y)
    };
    let diff = |a, b, pick, f| {
        let (x, y) = paired(m, a, b, pick, f);
        median_diff(&x, &y)
    };
    let mut ratios = Map::new();
    for (key, a, b, pick) in [
        (
            "R1_filter_vs_mtls_rps",
            S5,
            S2,
            closed as fn(&ScenarioData) -> &Vec<Sample>,
        ),
        ("R2_filter_vs_jwt_authn_rps", S5, S3, closed),
        ("R2u_filter_vs_jwt_authn_uncached_rps", S5, S3u, closed),
        ("R1w_filter_vs_noop_wasm_rps", S5, S2w, closed),
        ("R4_filter_vs_ext_authz_rps", S5, S4, closed),
        ("R10_new_conn_ratio", S5, S2, new_conn),
        // Issue 18: against the best native equal-function peer, and the cold paths against
        // uncached jwt_authn (a fresh token, or a DPoP proof, on every request).
        ("R2e_filter_vs_native_binding_rps", S5, S3b, closed),
        (
            "R2c_fresh_token_vs_jwt_authn_uncached_rps",
            S5c,
            S3u,
            closed,
        ),
        ("R12_dpop_vs_jwt_authn_uncached_rps", S5d, S3u, closed),
    ] {
        let v = ratio(a, b, pick);
        if v.is_none() {
            notes.push(format!("{key}: {} or {} was not measured", a.id(), b.id()));
        }
        ratios.insert(key.into(), num(v));
    }
    let mut metrics = Map::new();
    let r5 = diff(S5, S2, open, p99);
    if r5.is_none() {
        notes.push("R5_added_p99_us: the open-loop runs of S2 and S5 are missing".into());
    }
    metrics.insert("R5_added_p99_us".into(), num(r5));
    metrics.insert(
        "R7_added_cpu_us_per_req".into(),
        num(diff(S5, S2, closed, cpu)),
    );
    metrics.insert(
        "R7w_added_cpu_over_noop_wasm_us".into(),
        num(diff(S5, S2w, closed, cpu)),
    );
    // The same difference as a mean over paired rounds with its 95 % interval: the per-round
    // noise is larger than a few µs, the interval says what the rounds can resolve.
    let (x, y) = paired(m, S5, S2w, closed, cpu);
    let ci = paired_diff_ci95(&x, &y);
    metrics.insert(
        "R7w_ci95_us".into(),
        ci.map_or(Value::Null, |(mean, lo, hi)| {
            json!({"mean": round3(mean), "low": round3(lo), "high": round3(hi), "pairs": x.len()})
        }),
    );
    let r9 = diff(S5c, S5, closed, cpu);
    metrics.insert("R9_wasm_es256_verify_us".into(), num(r9));
    notes.push(
        "R9_wasm_es256_verify_us: Envoy CPU per request of S5c (fresh token each request) minus S5 \
         (same token): one ES256 verify (through Envoy's verify_signature when the host has it) plus \
         parsing and caching one new token, so an upper bound \
         (null when either was not measured)"
            .into(),
    );
    // What R9 stands on, measured in the same run: the host's verify alone through the ABI
    // (S2v - S2w), what R9 adds to it, and what a fresh token costs jwt_authn (S3u - S3).
    let floor = diff(S2v, S2w, closed, cpu);
    metrics.insert("R9_verify_floor_us".into(), num(floor));
    let over = r9.zip(floor).map(|(r9, floor)| r9 - floor);
    metrics.insert("R9_over_floor_us".into(), num(over));
    metrics.insert(
        "R9n_jwt_authn_fresh_token_us".into(),
        num(diff(S3u, S3, closed, cpu)),
    );
    notes.push(
        "R9_verify_floor_us: S2v minus S2w, one call of Envoy's verify_signature (BoringSSL \
         ES256 over a token-sized input) from a no-op filter: no filter can verify a fresh token \
         for less on this machine; R9_over_floor_us is R9 minus it (certbind's own work for a \
         fresh token); R9n_jwt_authn_fresh_token_us is S3u minus S3, the same for jwt_authn"
            .into(),
    );
    metrics.insert("R11_added_rss_mb".into(), num(diff(S5, S2, closed, rss)));
    let revocation = m
        .revocation
        .as_ref()
        .and_then(|r| r["revocation_p99_ms"].as_f64());
    let failed = m.revocation.as_ref().and_then(|r| r["error"].as_str());
    match (revocation, failed) {
        (None, Some(e)) => notes.push(format!("revocation_p99_ms: the measurement failed: {e}")),
        (None, None) => {
            notes.push("revocation_p99_ms: the revocation measurement did not run".into())
        }
        (Some(_), _) => notes.push(
            "revocation_p99_ms: the operator's revocation answered 200 -> the sidecar answers \
             401 revoked, on a separate system (Envoy --concurrency 2); details in revocation.json"
                .into(),
        ),
    }
    metrics.insert("revocation_p99_ms".into(), num(revocation));
    (ratios, metrics, notes)
}

/// Whether each goal is met (`null` when its figure is `null`).
pub fn goals_met(ratios: &Map<String, Value>, metrics: &Map<String, Value>) -> Map<String, Value> {
    GOALS
        .iter()
        .map(|(key, cmp, bound)| {
            let v = ratios
                .get(*key)
                .or_else(|| metrics.get(*key))
                .and_then(Value::as_f64);
            let met = v.map(|v| {
                if *cmp == ">=" {
                    v >= *bound
                } else {
                    v <= *bound
                }
            });
            (
                (*key).to_owned(),
                json!({"goal": format!("{cmp} {bound}"), "value": v, "met": met}),
            )
        })
        .collect()
}

fn scenario_json(s: Scenario, d: &ScenarioData, m: &Measurements) -> Value {
    let med = |v: &Vec<Sample>, f: fn(&Sample) -> f64| num(ScenarioData::median_of(v, f));
    let sum = |v: &Vec<Sample>| {
        json!({
            "runs": v.len(),
            "rps": med(v, |s| s.rps),
            "p50_us": med(v, |s| s.p50_us as f64),
            "p99_us": med(v, |s| s.p99_us as f64),
            "p999_us": med(v, |s| s.p999_us as f64),
            "cpu_us_per_req": med(v, |s| s.cpu_us_per_req),
            "rss_mb": med(v, |s| s.rss_mb),
        })
    };
    let cdf: Vec<Value> = d
        .open_hist
        .as_ref()
        .map(|h| {
            [0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 0.9999, 1.0]
                .iter()
                .map(|q| json!({"quantile": q, "us": h.value_at_quantile(*q)}))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "scenario": s.id(),
        "description": s.describe(),
        "median": {"closed": sum(&d.closed), "open": sum(&d.open), "new_conn": sum(&d.new_conn)},
        "open_rate_rps": m.open_rate,
        "open_latency_quantiles": cdf,
        "closed": d.closed,
        "open": d.open,
        "new_conn": d.new_conn,
        "notes": d.notes,
    })
}

/// Facts about where and what was measured.
pub fn env_json(cores: &crate::setup::Cores, envoy: &Path, wasm: &Path) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let envoy_version = run(&envoy.display().to_string(), &["--version"]).and_then(|v| {
        v.lines()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_owned())
    });
    let git = run("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = run("git", &["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    let date = run("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]);
    json!({
        "cpu": cpu,
        // The machine's cores (this process is pinned to one by now, so not its affinity).
        "cores": std::fs::read_to_string("/proc/cpuinfo")
            .map(|t| t.lines().filter(|l| l.starts_with("processor")).count())
            .unwrap_or(0),
        "envoy_core": cores.envoy,
        "load_core": cores.load,
        "envoy": envoy_version,
        "git": git.map(|g| if dirty { format!("{g}-dirty") } else { g }),
        "date": date,
        "certbind_wasm_bytes": std::fs::metadata(wasm).ok().map(|m| m.len()),
        "loadavg": std::fs::read_to_string("/proc/loadavg").ok().map(|s| s.trim().to_owned()),
    })
}

/// Writes every JSON file into `dir` and returns the summary.
pub fn write(dir: &Path, m: &Measurements, plan: &Plan, env: Value) -> Result<Value, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let write_json = |name: &str, v: &Value| {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
        std::fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
    };
    for (s, d) in &m.data {
        write_json(&format!("{}.json", s.id()), &scenario_json(*s, d, m))?;
    }
    if let Some(r) = &m.revocation {
        write_json("revocation.json", r)?;
    }
    let (ratios, metrics, mut notes) = summary_figures(m);
    if plan.smoke {
        notes.push("smoke run: a few hundred ms per scenario, the numbers mean nothing".into());
    }
    let scenarios: Map<String, Value> = m
        .data
        .iter()
        .map(|(s, d)| {
            let med = |v: &Vec<Sample>, f: fn(&Sample) -> f64| num(ScenarioData::median_of(v, f));
            (
                s.id().to_owned(),
                json!({
                        "description": s.describe(),
                        "rps": med(&d.closed, |x| x.rps),
                        "p99_us_closed": med(&d.closed, |x| x.p99_us as f64),
                        "p99_us_open": med(&d.open, |x| x.p99_us as f64),
                        "cpu_us_per_req": med(&d.closed, |x| x.cpu_us_per_req),
                        "rss_mb": med(&d.closed, |x| x.rss_mb),
                        "envoy_core_util": med(&d.closed, |x| x.envoy_core_util),
                        "new_conn_rps": med(&d.new_conn, |x| x.rps),
                }),
            )
        })
        .collect();
    let goals = goals_met(&ratios, &metrics);
    let summary = json!({
        "ratios": ratios,
        "metrics": metrics,
        "env": env,
        "goals": goals,
        "scenarios": scenarios,
        "open_rate_rps": m.open_rate,
        "open_rate_basis": m.open_rate_basis.map(Scenario::id),
        "plan": plan,
        "notes": notes,
    });
    write_json("summary.json", &summary)?;
    Ok(summary)
}

/// The table printed at the end.
pub fn table(summary: &Value) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<5} {:<36} {:>9} {:>9} {:>9} {:>10} {:>8} {:>9} {:>7}\n",
        "", "scenario", "rps", "p99 µs", "open p99", "cpu µs/rq", "RSS MB", "newconn", "Envoy%"
    ));
    let f = |v: &Value, k: &str, prec: usize| {
        v.get(k)
            .and_then(Value::as_f64)
            .map_or("-".to_owned(), |x| format!("{x:.prec$}"))
    };
    if let Some(map) = summary.get("scenarios").and_then(Value::as_object) {
        for s in Scenario::ALL {
            let Some(v) = map.get(s.id()) else { continue };
            out.push_str(&format!(
                "{:<5} {:<36} {:>9} {:>9} {:>9} {:>10} {:>8} {:>9} {:>7}\n",
                s.id(),
                s.describe(),
                f(v, "rps", 0),
                f(v, "p99_us_closed", 0),
                f(v, "p99_us_open", 0),
                f(v, "cpu_us_per_req", 1),
                f(v, "rss_mb", 1),
                f(v, "new_conn_rps", 0),
                v.get("envoy_core_util")
                    .and_then(Value::as_f64)
                    .map_or("-".to_owned(), |u| format!("{:.0}", u * 100.0)),
            ));
        }
    }
    out.push('\n');
    if let Some(goals) = summary.get("goals").and_then(Value::as_object) {
        for (key, g) in goals {
            let value = g
                .get("value")
                .and_then(Value::as_f64)
                .map_or("null".into(), |v| format!("{v:.3}"));
            let met = match g.get("met").and_then(Value::as_bool) {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            };
            out.push_str(&format!(
                "{key:<40} {value:>10}  goal {:<8} {met}\n",
                g.get("goal").and_then(Value::as_str).unwrap_or("")
            ));
        }
    }
    for key in [
        "R2u_filter_vs_jwt_authn_uncached_rps",
        "R1w_filter_vs_noop_wasm_rps",
        "R10_new_conn_ratio",
    ] {
        let v = summary["ratios"]
            .get(key)
            .and_then(Value::as_f64)
            .map_or("null".into(), |v| format!("{v:.3}"));
        out.push_str(&format!("{key:<40} {v:>10}\n"));
    }
    let v = summary["metrics"]
        .get("R7w_added_cpu_over_noop_wasm_us")
        .and_then(Value::as_f64)
        .map_or("null".into(), |v| format!("{v:.3}"));
    out.push_str(&format!(
        "{:<40} {v:>10}\n",
        "R7w_added_cpu_over_noop_wasm_us"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(round: usize, rps: f64, cpu: f64, p99: u64, rss: f64) -> Sample {
        Sample {
            round,
            rps,
            ok: 1,
            bad_status: 0,
            errors: 0,
            p50_us: 1,
            p90_us: 1,
            p99_us: p99,
            p999_us: 1,
            max_us: 1,
            cpu_us_per_req: cpu,
            envoy_core_util: 1.0,
            rss_mb: rss,
            loadavg_1m: None,
            offered_rps: None,
            first_error: None,
        }
    }

    #[test]
    fn summary_has_every_key_and_nulls_what_was_not_measured() {
        let mut m = Measurements::default();
        let d = |rps, cpu, rss| ScenarioData {
            closed: vec![s(0, rps, cpu, 100, rss), s(1, rps * 0.5, cpu, 100, rss)],
            open: vec![s(0, 1.0, 0.0, 300, rss)],
            ..ScenarioData::default()
        };
        m.data.insert(Scenario::S2, d(1000.0, 100.0, 70.0));
        m.data.insert(Scenario::S5, d(900.0, 120.0, 95.0));
        let (ratios, metrics, notes) = summary_figures(&m);
        for key in [
            "R1_filter_vs_mtls_rps",
            "R2_filter_vs_jwt_authn_rps",
            "R2u_filter_vs_jwt_authn_uncached_rps",
            "R1w_filter_vs_noop_wasm_rps",
            "R4_filter_vs_ext_authz_rps",
            "R10_new_conn_ratio",
            "R2e_filter_vs_native_binding_rps",
            "R2c_fresh_token_vs_jwt_authn_uncached_rps",
            "R12_dpop_vs_jwt_authn_uncached_rps",
        ] {
            assert!(ratios.contains_key(key), "{key}");
        }
        for key in [
            "R5_added_p99_us",
            "R7_added_cpu_us_per_req",
            "R7w_added_cpu_over_noop_wasm_us",
            "R7w_ci95_us",
            "R9_wasm_es256_verify_us",
            "R9_verify_floor_us",
            "R9_over_floor_us",
            "R9n_jwt_authn_fresh_token_us",
            "R11_added_rss_mb",
            "revocation_p99_ms",
        ] {
            assert!(metrics.contains_key(key), "{key}");
        }
        assert_eq!(ratios["R1_filter_vs_mtls_rps"], json!(0.9));
        assert_eq!(metrics["R7_added_cpu_us_per_req"], json!(20.0));
        assert_eq!(metrics["R11_added_rss_mb"], json!(25.0));
        assert_eq!(metrics["R5_added_p99_us"], json!(0.0));
        assert!(metrics["R9_verify_floor_us"].is_null() && metrics["R9_over_floor_us"].is_null());
        m.data.insert(Scenario::S2w, d(1000.0, 80.0, 70.0));
        m.data.insert(Scenario::S2v, d(800.0, 130.0, 70.0));
        m.data.insert(Scenario::S5c, d(500.0, 200.0, 95.0));
        let (_, with_floor, _) = summary_figures(&m);
        assert_eq!(with_floor["R9_verify_floor_us"], json!(50.0));
        assert_eq!(with_floor["R9_over_floor_us"], json!(30.0));
        assert!(ratios["R2_filter_vs_jwt_authn_rps"].is_null());
        assert!(metrics["revocation_p99_ms"].is_null());
        assert!(notes.iter().any(|n| n.starts_with("revocation_p99_ms")));
        m.revocation = Some(json!({"revocation_p99_ms": 3.5}));
        let (_, metrics, _) = summary_figures(&m);
        assert_eq!(metrics["revocation_p99_ms"], json!(3.5));
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("R2_filter_vs_jwt_authn_rps"))
        );
        let goals = goals_met(&ratios, &metrics);
        assert_eq!(goals["R1_filter_vs_mtls_rps"]["met"], json!(true));
        assert_eq!(goals["R2_filter_vs_jwt_authn_rps"]["met"], Value::Null);
    }
}
