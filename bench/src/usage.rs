//! The added latency of a usage-bound token (issue 22): one system on free ports (Envoy with two
//! workers), one keep-alive mTLS connection as the consumer (so one worker, its caches warm),
//! and alternating requests with an ordinary token and with usage-bound tokens (100 uses
//! each; the first use of every new token, which also asks the PDP, is not a sample). The
//! difference is the counter call: Envoy → authz-server → one SQLite `UPDATE` (fsynced) → back.

use crate::load::{Target, client_config, connect, exchange};
use certbind_tests::{System, spiffe_id};
use http_body_util::Empty;
use hyper::body::Bytes;
use std::time::Instant;

/// The most uses the demo registry lets the consumer ask for.
const USES_PER_TOKEN: u32 = 100;

fn usage_token(system: &System) -> Result<String, String> {
    let n = USES_PER_TOKEN.to_string();
    let audience = spiffe_id("orders");
    let r = system
        .token_request(
            "consumer",
            &[
                ("grant_type", "client_credentials"),
                ("audience", &audience),
                ("scope", "orders:read"),
                ("max_uses", &n),
            ],
        )
        .map_err(|e| e.to_string())?;
    r.json_str("access_token")
        .filter(|_| r.status == 200)
        .ok_or_else(|| format!("no usage-bound token: {} {}", r.status, r.text()))
}

/// `pairs` samples of each kind, interleaved; the report as JSON.
pub fn measure(pairs: usize) -> Result<serde_json::Value, String> {
    let system = System::builder()
        .concurrency(2)
        .try_start()
        .map_err(|e| e.to_string())?;
    let pki = system.pki_dir();
    let tls = client_config(
        &pki.join("ca.crt"),
        Some((&pki.join("consumer.crt"), &pki.join("consumer.key"))),
    )?;
    let target = Target {
        addr: system.sidecar("orders"),
        tls: Some(tls),
        path: "/orders/1".into(),
        tokens: None,
    };
    let ordinary = system
        .token("consumer", "orders", "orders:read")
        .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (mut plain_ms, mut usage_ms) = (Vec::with_capacity(pairs), Vec::with_capacity(pairs));
    let mut tokens_minted = 0usize;
    runtime.block_on(async {
        let mut sender = connect(&target).await?;
        let mut call = async |token: &str| -> Result<f64, String> {
            let request = hyper::Request::get(target.path.as_str())
                .header("host", "localhost")
                .header("authorization", format!("Bearer {token}"))
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let t0 = Instant::now();
            let (status, body) = exchange(&mut sender, request).await?;
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            if status != 200 {
                return Err(format!(
                    "answered {status}: {}",
                    String::from_utf8_lossy(&body)
                ));
            }
            Ok(ms)
        };
        call(&ordinary).await?;
        let mut usage = String::new();
        let mut left = 0u32;
        while usage_ms.len() < pairs {
            if left == 0 {
                usage = usage_token(&system)?;
                tokens_minted += 1;
                // The first use also asks the PDP (the decision cache is keyed on the jti).
                call(&usage).await?;
                left = USES_PER_TOKEN - 1;
            }
            plain_ms.push(call(&ordinary).await?);
            usage_ms.push(call(&usage).await?);
            left -= 1;
        }
        Ok::<(), String>(())
    })?;
    plain_ms.sort_by(f64::total_cmp);
    usage_ms.sort_by(f64::total_cmp);
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    let (p50, p99) = (
        |s: &[f64]| crate::stats::percentile(s, 50.0),
        |s: &[f64]| crate::stats::percentile(s, 99.0),
    );
    let now = crate::stats::unix_now_s();
    Ok(serde_json::json!({
        "what": "client-observed latency of GET /orders/1 through the orders sidecar: an ordinary certificate-bound token vs a usage-bound one (one counter call to the authz-server per request)",
        "samples_each": pairs,
        "usage_tokens_minted": tokens_minted,
        "ordinary_p50_ms": round(p50(&plain_ms)),
        "ordinary_p99_ms": round(p99(&plain_ms)),
        "usage_bound_p50_ms": round(p50(&usage_ms)),
        "usage_bound_p99_ms": round(p99(&usage_ms)),
        "added_p50_ms": round(p50(&usage_ms) - p50(&plain_ms)),
        "added_p99_ms": round(p99(&usage_ms) - p99(&plain_ms)),
        "method": "one system on free ports (release binaries unless CERTBIND_BIN_DIR), Envoy --concurrency 2, one keep-alive mTLS connection (one worker, token and decision caches warm), ordinary and usage-bound requests alternating one by one; a usage-bound token carries 100 uses and its first use (a PDP call) is not sampled; the counter is the authz-server's SQLite in WAL mode with synchronous=FULL (an fsync per use), on this machine's disk, while other work shares its 2 cores",
        "measured_at_unix_s": now,
    }))
}
