//! certbind-revocation-bench: revocation propagation (issue 8, Measure). A whole system on free
//! ports (release binaries, Envoy with two workers); for each of N tokens the consumer uses it
//! once (token and decision cached), revokes it with `POST /revoke`, and from the `200` calls
//! the sidecar back to back until it answers 401 `revoked`. Writes p50/p90/p99/max to
//! `bench/results/revocation.json` (`revocation_p99_ms`).
//!
//! `cargo build --release --bins && make wasm &&
//!  cargo run --release -p certbind-bench --bin certbind-revocation-bench -- [N]`

use certbind_tests::{Request, System};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const GIVE_UP: Duration = Duration::from_secs(10);

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
    let system = System::builder()
        .concurrency(2)
        .try_start()
        .map_err(|e| e.to_string())?;
    let consumer = system.client(Some("consumer")).map_err(|e| e.to_string())?;
    let mut samples_ms: Vec<f64> = Vec::with_capacity(n);
    let mut calls_after = 0usize;
    for i in 0..n {
        let token = system
            .token("consumer", "orders", "orders:read")
            .map_err(|e| e.to_string())?;
        let call = || {
            consumer
                .send(
                    system.sidecar("orders"),
                    &Request::get("/orders/1").bearer(&token),
                )
                .map_err(|e| e.to_string())
        };
        let first = call()?;
        if first.status != 200 {
            return Err(format!(
                "token {i} refused before revocation: {}",
                first.text()
            ));
        }
        let revoked = system
            .revoke_token("consumer", &token)
            .map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        if revoked.status != 200 {
            return Err(format!("/revoke answered {}", revoked.status));
        }
        loop {
            let r = call()?;
            calls_after += 1;
            if r.status == 401 && r.json_str("reason").as_deref() == Some("revoked") {
                samples_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if r.status != 200 {
                return Err(format!("unexpected answer {} {}", r.status, r.text()));
            }
            if t0.elapsed() > GIVE_UP {
                return Err(format!(
                    "token {i} still admitted {GIVE_UP:?} after /revoke"
                ));
            }
        }
    }
    let mut sorted = samples_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let idx = ((p / 100.0) * (sorted.len() as f64)).ceil() as usize;
        sorted
            .get(idx.saturating_sub(1).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let round = |v: f64| (v * 100.0).round() / 100.0;
    let (p50, p90, p99) = (round(pct(50.0)), round(pct(90.0)), round(pct(99.0)));
    let max = round(sorted.last().copied().unwrap_or_default());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let report = serde_json::json!({
        "what": "revocation propagation: POST /revoke answered 200 -> the orders sidecar answers 401 revoked",
        "revocations": n,
        "revocation_p50_ms": p50,
        "revocation_p90_ms": p90,
        "revocation_p99_ms": p99,
        "revocation_max_ms": max,
        "goal_p99_ms": 1000,
        "sidecar_calls_after_revoke": calls_after,
        "method": "one system on free ports (release binaries), Envoy --concurrency 2, each token used once (token and decision cached), revoked by its client (RFC 7009), then the sidecar is called back to back (a new TLS connection per call, ~ms resolution) until 401 revoked",
        "measured_at_unix_s": now,
    });
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
