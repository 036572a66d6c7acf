//! certbind-bench: what zero trust costs per stage, against Envoy's native alternatives
//! (issue 10). `load` generates the load, `scenarios` writes each scenario's Envoy, `setup`
//! starts the system pinned to its cores, `method` runs interleaved rounds, `stats` does the
//! arithmetic, `report` and `figures` write the results; S4's `ext_authz` service is the PDP itself.

pub mod figures;
pub mod instr;
pub mod load;
pub mod memory;
pub mod method;
pub mod mint;
pub mod native_peer;
pub mod overload;
pub mod procstat;
pub mod replicas;
pub mod report;
pub mod revocation;
pub mod revocation_flood;
pub mod scenarios;
pub mod setup;
pub mod soak;
pub mod stats;
pub mod traffic;
pub mod usage;

use method::Plan;
use scenarios::Scenario;
use std::path::PathBuf;

/// What one invocation runs and where it writes.
#[derive(Debug, Clone)]
pub struct Options {
    pub plan: Plan,
    pub scenarios: Vec<Scenario>,
    pub results_dir: PathBuf,
    pub figures_dir: PathBuf,
}

impl Options {
    /// `make bench`: every scenario, results and figures under `bench/`.
    pub fn full() -> Self {
        let bench = certbind_tests::prereq::repo_root().join("bench");
        Self {
            plan: Plan::full(),
            scenarios: Scenario::ALL.to_vec(),
            results_dir: bench.join("results"),
            figures_dir: bench.join("figures"),
        }
    }
}

/// The whole benchmark: prerequisites, system, rounds, JSON, figures. Returns the summary and
/// the printed table.
pub fn run_all(
    opts: &Options,
    log: &mut dyn FnMut(String),
) -> Result<(serde_json::Value, String), String> {
    let bins = setup::Prerequisites::check()?;
    log(format!(
        "starting the system and {} Envoys",
        opts.scenarios.len()
    ));
    let bench = setup::Bench::start(&bins, &opts.scenarios)?;
    log(format!(
        "Envoy on core {}, load generator and services on core {} (logs: {})",
        bench.cores.envoy,
        bench.cores.load,
        bench.dir().join("logs").display()
    ));
    let env_before = report::env_json(&bench.cores, &bins.envoy, &bins.certbind_wasm);
    let mut measurements = method::run(&bench, &opts.plan, &opts.scenarios, log)
        .map_err(|e| format!("{e}\n{}", bench.logs_tail(10)))?;
    let mut env = env_before;
    if let Some(obj) = env.as_object_mut() {
        obj.insert(
            "loadavg_end".into(),
            serde_json::json!(
                std::fs::read_to_string("/proc/loadavg")
                    .ok()
                    .map(|s| s.trim().to_owned())
            ),
        );
    }
    drop(bench);
    log(format!(
        "revocation propagation: {} revocations on a separate system",
        opts.plan.revocations
    ));
    // A failure here is reported (a null figure with its note), not allowed to lose the run.
    measurements.revocation = match revocation::measure(opts.plan.revocations) {
        Ok(report) => Some(report),
        Err(e) => {
            log(format!("revocation propagation failed: {e}"));
            Some(serde_json::json!({ "error": e }))
        }
    };
    let summary = report::write(&opts.results_dir, &measurements, &opts.plan, env)?;
    let figures = figures::draw_all(&measurements, &opts.figures_dir)?;
    for f in figures {
        log(format!("wrote {}", f.display()));
    }
    Ok((summary.clone(), report::table(&summary)))
}
