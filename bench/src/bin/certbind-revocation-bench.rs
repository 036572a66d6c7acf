//! certbind-revocation-bench: revocation propagation alone (`certbind-bench all` runs it too):
//! writes `bench/results/revocation.json` (`revocation_p99_ms`, see `certbind_bench::revocation`).
//!
//! `cargo build --release --bins && make wasm &&
//!  cargo run --release -p certbind-bench --bin certbind-revocation-bench -- [N]`

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    match run(n) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certbind-revocation-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(n: usize) -> Result<(), String> {
    let report = certbind_bench::revocation::measure(n)?;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/revocation.json");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&path, format!("{text}\n")).map_err(|e| e.to_string())?;
    println!("{text}");
    println!("written to {}", path.display());
    Ok(())
}
