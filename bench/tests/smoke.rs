//! `--smoke`: the whole benchmark harness, every scenario, for a few seconds, so it cannot rot.
//! No speed is asserted; every scenario must answer its legitimate request with 200, the
//! summary must carry every key of issue 10 and the figures must be drawn. A missing .wasm,
//! Envoy or binary fails with how to get it, never a skip.

use certbind_bench::method::Plan;
use certbind_bench::scenarios::Scenario;
use certbind_bench::{Options, run_all};

#[test]
fn smoke_run_measures_every_scenario_and_writes_every_summary_key() {
    let out = tempfile::tempdir().unwrap();
    let opts = Options {
        plan: Plan::smoke(),
        scenarios: Scenario::ALL.to_vec(),
        results_dir: out.path().join("results"),
        figures_dir: out.path().join("figures"),
    };
    let (summary, table) = match run_all(&opts, &mut |line| eprintln!("{line}")) {
        Ok(r) => r,
        Err(e) => panic!("the benchmark smoke run failed:\n{e}"),
    };
    eprintln!("{table}");
    for key in [
        "R1_filter_vs_mtls_rps",
        "R2_filter_vs_jwt_authn_rps",
        "R2u_filter_vs_jwt_authn_uncached_rps",
        "R1w_filter_vs_noop_wasm_rps",
        "R4_filter_vs_ext_authz_rps",
        "R10_new_conn_ratio",
    ] {
        assert!(
            summary["ratios"][key].is_number(),
            "ratio {key}: {}",
            summary["ratios"]
        );
    }
    for key in [
        "R5_added_p99_us",
        "R7_added_cpu_us_per_req",
        "R7w_added_cpu_over_noop_wasm_us",
        "R9_wasm_es256_verify_us",
        "R11_added_rss_mb",
    ] {
        assert!(
            summary["metrics"][key].is_number(),
            "metric {key}: {}",
            summary["metrics"]
        );
    }
    assert!(summary["metrics"]["revocation_p99_ms"].is_number());
    for key in ["cpu", "envoy", "git", "date"] {
        assert!(summary["env"].get(key).is_some(), "env {key}");
    }
    for s in Scenario::ALL {
        let file = out.path().join("results").join(format!("{}.json", s.id()));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let closed = json["closed"].as_array().unwrap();
        assert!(!closed.is_empty(), "{} has no closed-loop run", s.id());
        for run in closed {
            assert!(run["ok"].as_u64().unwrap() > 0, "{}: {run}", s.id());
            assert_eq!(run["bad_status"], 0, "{}: {run}", s.id());
        }
    }
    for f in ["throughput.png", "latency_cdf.png", "stage_cost.png"] {
        let png = std::fs::read(out.path().join("figures").join(f)).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{f}");
    }
}
