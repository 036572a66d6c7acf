//! `certbind-bench`: `all` runs the benchmark (or `--smoke`).

use certbind_bench::scenarios::Scenario;
use certbind_bench::{Options, method::Plan, run_all};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "certbind's benchmark (issue 10)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every scenario, interleaved rounds; writes bench/results/*.json and bench/figures/*.png.
    All {
        /// A few seconds in all, to check the harness works (numbers mean nothing).
        #[arg(long)]
        smoke: bool,
        /// Only these scenarios (comma separated, e.g. S2,S5).
        #[arg(long, value_delimiter = ',')]
        scenarios: Option<Vec<String>>,
        /// Rounds (A/B pairs) instead of the plan's.
        #[arg(long)]
        rounds: Option<usize>,
        /// Seconds of each closed-loop and open-loop run instead of the plan's.
        #[arg(long)]
        seconds: Option<f64>,
        /// The open loop's rate as a fraction of S5's closed-loop throughput (the plan's 0.5).
        #[arg(long)]
        open_fraction: Option<f64>,
        #[arg(long)]
        results: Option<PathBuf>,
        #[arg(long)]
        figures: Option<PathBuf>,
    },
    /// certbind under mixed valid and hostile traffic at a fraction of its maximum, checking
    /// every answer, Envoy's RSS and the filter's counters; writes soak.json and soak.png.
    Soak {
        #[arg(long, default_value_t = 600.0)]
        seconds: f64,
        #[arg(long, default_value_t = 0.5)]
        fraction: f64,
        #[arg(long)]
        results: Option<PathBuf>,
        #[arg(long)]
        figures: Option<PathBuf>,
    },
    /// certbind (S5o: the sidecar's circuit breakers, overload manager, PDP timeout) above its
    /// maximum: closed-loop maximum, baseline, open-loop overload, recovery; every answer
    /// checked; writes overload.json and overload.png.
    Overload {
        /// Seconds of the overload phase.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        /// Offered rate of the overload phase, as a multiple of the measured maximum.
        #[arg(long, default_value_t = 2.0)]
        factor: f64,
        /// Seconds of the recovery phase (at half the maximum, like the baseline).
        #[arg(long, default_value_t = 30.0)]
        recovery_seconds: f64,
        #[arg(long)]
        results: Option<PathBuf>,
        #[arg(long)]
        figures: Option<PathBuf>,
    },
    /// One workload floods `/revoke` with its own fresh tokens while another calls a sidecar:
    /// a quiet phase, the flood (`seconds`), a quiet phase again; writes revocation_flood.json.
    RevocationFlood {
        #[arg(long, default_value_t = 300.0)]
        seconds: f64,
        /// `split`: authz-server and flooders on one CPU, the victim's path on the other (as on
        /// separate nodes); `shared`: no pinning.
        #[arg(long, default_value = "split")]
        placement: String,
        #[arg(long)]
        results: Option<PathBuf>,
    },
    /// authz-server replicas on a real PostgreSQL: token issuance p50/p99 through 1 vs 3
    /// replicas, revocation propagation across replicas; writes replicas.json.
    Replicas {
        /// Token requests per configuration.
        #[arg(long, default_value_t = 2000)]
        tokens: usize,
        /// Revocations timed.
        #[arg(long, default_value_t = 100)]
        revocations: usize,
        #[arg(long)]
        results: Option<PathBuf>,
    },
    /// Instructions per request under valgrind's callgrind (fixed request count, exact
    /// repeats; issue 18): writes instr.json.
    Instr {
        /// Scenarios (comma separated); default S2,S2w,S5.
        #[arg(long, value_delimiter = ',')]
        scenarios: Option<Vec<String>>,
        /// Requests counted per repeat.
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// Uncounted requests before the first repeat.
        #[arg(long, default_value_t = 500)]
        warmup: usize,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// A certbind .wasm to count instead of the built one.
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// Keep callgrind's dumps in this directory (for `callgrind_annotate`).
        #[arg(long)]
        dumps: Option<PathBuf>,
        #[arg(long)]
        results: Option<PathBuf>,
    },
    /// Idle and after-load RSS and heap of bare mTLS, the no-op Wasm filter and certbind
    /// (issue 18, R11): writes memory.json.
    Memory {
        /// A certbind .wasm to measure instead of the built one (e.g. a wasm-opt variant).
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// Seconds of closed-loop load before the second reading.
        #[arg(long, default_value_t = 3.0)]
        load_seconds: f64,
        #[arg(long)]
        results: Option<PathBuf>,
    },
    /// The added latency of a usage-bound token (issue 22): ordinary vs usage-bound requests,
    /// alternating on one connection; writes usage.json.
    Usage {
        /// Samples of each kind.
        #[arg(long, default_value_t = 2000)]
        samples: usize,
        #[arg(long)]
        results: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Soak {
            seconds,
            fraction,
            results,
            figures,
        } => soak(seconds, fraction, results, figures),
        Command::Overload {
            seconds,
            factor,
            recovery_seconds,
            results,
            figures,
        } => overload(seconds, factor, recovery_seconds, results, figures),
        Command::Usage { samples, results } => usage(samples, results),
        Command::Instr {
            scenarios,
            requests,
            warmup,
            repeats,
            wasm,
            dumps,
            results,
        } => instr(
            scenarios,
            certbind_bench::instr::InstrPlan {
                requests: requests.max(1),
                warmup,
                repeats: repeats.max(1),
                wasm,
                dumps,
                ..Default::default()
            },
            results,
        ),
        Command::Memory {
            wasm,
            load_seconds,
            results,
        } => memory(wasm, load_seconds, results),
        Command::All {
            smoke,
            scenarios,
            rounds,
            seconds,
            open_fraction,
            results,
            figures,
        } => all(
            smoke,
            scenarios,
            rounds,
            seconds,
            open_fraction,
            results,
            figures,
        ),
        Command::RevocationFlood {
            seconds,
            placement,
            results,
        } => revocation_flood(seconds, &placement, results),
        Command::Replicas {
            tokens,
            revocations,
            results,
        } => replicas(tokens, revocations, results),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certbind-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn scenario_list(ids: &[String]) -> Result<Vec<Scenario>, String> {
    ids.iter()
        .map(|id| Scenario::from_id(id).ok_or_else(|| format!("unknown scenario {id}")))
        .collect()
}

/// Writes `report` as `<results>/<name>` (pretty JSON) and prints it.
fn write_report(
    results: Option<PathBuf>,
    name: &str,
    report: &serde_json::Value,
) -> Result<(), String> {
    let (results, _) = outputs(results, None);
    std::fs::create_dir_all(&results).map_err(|e| format!("{}: {e}", results.display()))?;
    let path = results.join(name);
    let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    std::fs::write(&path, format!("{text}\n")).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("{text}\nwritten to {}", path.display());
    Ok(())
}

fn usage(samples: usize, results: Option<PathBuf>) -> Result<(), String> {
    let report = certbind_bench::usage::measure(samples)?;
    write_report(results, "usage.json", &report)
}

fn instr(
    scenarios: Option<Vec<String>>,
    mut plan: certbind_bench::instr::InstrPlan,
    results: Option<PathBuf>,
) -> Result<(), String> {
    if let Some(list) = scenarios {
        plan.scenarios = scenario_list(&list)?;
    }
    let report = certbind_bench::instr::measure(&plan, &mut progress())?;
    write_report(results, "instr.json", &report)
}

fn memory(
    wasm: Option<PathBuf>,
    load_seconds: f64,
    results: Option<PathBuf>,
) -> Result<(), String> {
    let report = certbind_bench::memory::measure(wasm, load_seconds)?;
    write_report(results, "memory.json", &report)
}

fn all(
    smoke: bool,
    scenarios: Option<Vec<String>>,
    rounds: Option<usize>,
    seconds: Option<f64>,
    open_fraction: Option<f64>,
    results: Option<PathBuf>,
    figures: Option<PathBuf>,
) -> Result<(), String> {
    let mut opts = Options::full();
    if smoke {
        opts.plan = Plan::smoke();
        let tmp = std::env::temp_dir().join("certbind-bench-smoke");
        opts.results_dir = tmp.join("results");
        opts.figures_dir = tmp.join("figures");
    }
    if let Some(list) = scenarios {
        opts.scenarios = scenario_list(&list)?;
    }
    if let Some(r) = rounds {
        opts.plan.rounds = r.max(1);
    }
    if let Some(s) = seconds {
        opts.plan.closed_s = s;
        opts.plan.open_s = s;
    }
    if let Some(f) = open_fraction {
        if !(f > 0.0 && f <= 1.0) {
            return Err(format!("--open-fraction must be in (0, 1], got {f}"));
        }
        opts.plan.open_fraction = f;
    }
    if let Some(r) = results {
        opts.results_dir = r;
    }
    if let Some(f) = figures {
        opts.figures_dir = f;
    }
    let started = std::time::Instant::now();
    let (_, table) = run_all(&opts, &mut |line| {
        println!("[{:>6.1}s] {line}", started.elapsed().as_secs_f64())
    })?;
    println!("\n{table}");
    println!(
        "results: {}  figures: {}  ({:.0} s)",
        opts.results_dir.display(),
        opts.figures_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Where a long run writes: the given directories, else the committed `bench/results` and
/// `bench/figures`.
fn outputs(results: Option<PathBuf>, figures: Option<PathBuf>) -> (PathBuf, PathBuf) {
    let full = Options::full();
    (
        results.unwrap_or(full.results_dir),
        figures.unwrap_or(full.figures_dir),
    )
}

/// Prints a run's progress lines with the seconds since it started.
fn progress() -> impl FnMut(String) {
    let started = std::time::Instant::now();
    move |line| println!("[{:>6.1}s] {line}", started.elapsed().as_secs_f64())
}

fn replicas(tokens: usize, revocations: usize, results: Option<PathBuf>) -> Result<(), String> {
    let (results, _) = outputs(results, None);
    let report = certbind_bench::replicas::measure(tokens, revocations)?;
    std::fs::create_dir_all(&results).map_err(|e| format!("{}: {e}", results.display()))?;
    let path = results.join("replicas.json");
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&path, json + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    for k in ["issuance_1_replica", "issuance_3_replicas"] {
        println!("{k}: {}", report[k]);
    }
    println!(
        "propagation across replicas: p50 {} ms, p99 {} ms, max {} ms ({})",
        report["propagation_p50_ms"],
        report["propagation_p99_ms"],
        report["propagation_max_ms"],
        path.display()
    );
    Ok(())
}

fn soak(
    seconds: f64,
    fraction: f64,
    results: Option<PathBuf>,
    figures: Option<PathBuf>,
) -> Result<(), String> {
    let (results, figures) = outputs(results, figures);
    let report = certbind_bench::soak::run(seconds, fraction, &results, &figures, &mut progress())?;
    let summary = |k: &str| report[k].clone();
    println!(
        "requests {}  unexpected {}  RSS {} -> {} MB ({}%)  counters consistent {}",
        summary("requests"),
        summary("unexpected_answers"),
        summary("rss_mb_after_warmup"),
        summary("rss_mb_end"),
        summary("rss_growth_percent"),
        summary("counters_consistent")
    );
    let growth = report["rss_growth_percent"]
        .as_f64()
        .unwrap_or(f64::INFINITY);
    if report["unexpected_answers"] != 0 || report["counters_consistent"] != true || growth > 5.0 {
        return Err(format!(
            "soak failed: unexpected answers, inconsistent counters or RSS growth over 5 % (see {})",
            results.join("soak.json").display()
        ));
    }
    Ok(())
}

fn overload(
    seconds: f64,
    factor: f64,
    recovery_seconds: f64,
    results: Option<PathBuf>,
    figures: Option<PathBuf>,
) -> Result<(), String> {
    let (results, figures) = outputs(results, figures);
    let mut plan = certbind_bench::overload::Plan::full(seconds);
    plan.factor = factor;
    plan.recovery_s = recovery_seconds;
    let report = certbind_bench::overload::run(&plan, &results, &figures, &mut progress())?;
    for phase in ["baseline", "overload", "recovery"] {
        let p = &report[phase];
        println!(
            "{phase:>9}: sent {} rps, accepted {} rps (p99 {} ms), shed {} rps {}, errors {}",
            p["sent_rps"],
            p["accepted_rps"],
            p["accepted_p99_ms"],
            p["shed_rps"],
            p["shed"],
            p["errors"]
        );
    }
    println!(
        "maximum {:.0} rps; wrong answers {}; after the drop: no shedding from second {}, p99 normal from second {}; RSS {}",
        report["max_rps"].as_f64().unwrap_or(0.0),
        report["wrong_answers"],
        report["recovery_shed_free_after_s"],
        report["recovery_p99_normal_after_s"],
        report["rss_mb"]
    );
    if report["wrong_answers"] != 0 {
        return Err(format!(
            "overload run failed: wrong answers (see {})",
            results.join("overload.json").display()
        ));
    }
    Ok(())
}

fn revocation_flood(seconds: f64, placement: &str, results: Option<PathBuf>) -> Result<(), String> {
    let (results, _) = outputs(results, None);
    let placement = certbind_bench::revocation_flood::Placement::parse(placement)?;
    let report = certbind_bench::revocation_flood::run(seconds, placement, &mut progress())?;
    std::fs::create_dir_all(&results).map_err(|e| format!("{}: {e}", results.display()))?;
    let file = results.join("revocation_flood.json");
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&file, text + "\n").map_err(|e| format!("{}: {e}", file.display()))?;
    for phase in ["quiet", "flood", "quiet_after"] {
        let p = &report[phase];
        println!(
            "{phase:>5}: {} requests, p50 {} ms, p99 {} ms, non-200 {} (503: {})",
            p["requests"], p["p50_ms"], p["p99_ms"], p["non_200"], p["unavailable_503"]
        );
    }
    println!(
        "flood: {} revocations ({} /s), list entries max {} (after {}), last revoked token refused: {}",
        report["revocations_answered_200"],
        report["revocations_per_s"],
        report["list_entries_max"],
        report["list_entries_after"],
        report["last_revoked_token_refused"]
    );
    if report["flood"]["non_200"] != 0 || report["last_revoked_token_refused"] != true {
        return Err(format!("revocation flood failed (see {})", file.display()));
    }
    Ok(())
}
