//! Revocation propagation (issue 8, Measure; `revocation_p99_ms` of issue 10): a whole system on
//! free ports (Envoy with two workers); for each of N tokens the consumer uses it once (token
//! and decision cached), the operator revokes its `jti` (`POST /v1/admin/revocations`) and, from
//! the `200`, the consumer calls the sidecar back to back until it answers 401 `revoked`. The
//! operator writes the rows because a client's own `/revoke` keeps at most 64 live `jti` rows
//! and coalesces the rest into a subject row that also covers the next token minted in the same
//! second. The report is a JSON object with p50/p90/p99/max.

use certbind_tests::{Request, Response, System, TlsClient};
use std::time::{Duration, Instant};

/// A token still admitted this long after `/revoke` is a failure, not a sample.
const GIVE_UP: Duration = Duration::from_secs(10);
/// Refusals in a row, on new connections, that count as every worker refusing.
const STREAK: usize = 8;

/// Times `n` revocations; the services come from `certbind_tests::prereq` (release binaries
/// unless `CERTBIND_BIN_DIR` says otherwise).
pub fn measure(n: usize) -> Result<serde_json::Value, String> {
    let system = System::builder()
        .concurrency(2)
        .try_start()
        .map_err(|e| e.to_string())?;
    let consumer = system.client(Some("consumer")).map_err(|e| e.to_string())?;
    let mut first_ms: Vec<f64> = Vec::with_capacity(n);
    let mut all_ms: Vec<f64> = Vec::with_capacity(n);
    let mut calls_after = 0usize;
    for i in 0..n {
        let token = admitted_token(&system, &consumer, i)?;
        let call = || call_orders(&system, &consumer, &token);
        let jti = certbind_tests::tokens::decode_claims(&token)
            .ok()
            .and_then(|c| c["jti"].as_str().map(str::to_owned))
            .ok_or("a token without jti")?;
        let revoked = system.revoke("jti", &jti).map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        if revoked.status != 200 {
            return Err(format!(
                "/v1/admin/revocations answered {}: {}",
                revoked.status,
                revoked.text()
            ));
        }
        // The first 401 may come from either worker; new connections spread over both, so
        // STREAK refusals in a row (from the first of them) is "every worker refuses".
        let mut streak: Option<(usize, f64)> = None;
        loop {
            let r = call()?;
            calls_after += 1;
            let at_ms = t0.elapsed().as_secs_f64() * 1000.0;
            if r.status == 401 && r.json_str("reason").as_deref() == Some("revoked") {
                let (n, since) = streak.unwrap_or((0, at_ms));
                if first_ms.len() == i {
                    first_ms.push(at_ms);
                }
                if n + 1 == STREAK {
                    all_ms.push(since);
                    break;
                }
                streak = Some((n + 1, since));
            } else if r.status == 200 {
                streak = None;
            } else {
                return Err(format!("unexpected answer {} {}", r.status, r.text()));
            }
            if t0.elapsed() > GIVE_UP {
                return Err(format!(
                    "token {i} still admitted {GIVE_UP:?} after /revoke"
                ));
            }
        }
    }
    first_ms.sort_by(f64::total_cmp);
    all_ms.sort_by(f64::total_cmp);
    let pct = crate::stats::percentile;
    let round = |v: f64| (v * 100.0).round() / 100.0;
    let now = crate::stats::unix_now_s();
    Ok(serde_json::json!({
        "what": "revocation propagation: the operator's POST /v1/admin/revocations (jti) answered 200 -> the orders sidecar answers 401 revoked",
        "revocations": n,
        "revocation_p50_ms": round(pct(&first_ms, 50.0)),
        "revocation_p90_ms": round(pct(&first_ms, 90.0)),
        "revocation_p99_ms": round(pct(&first_ms, 99.0)),
        "revocation_max_ms": round(first_ms.last().copied().unwrap_or_default()),
        "every_worker_p50_ms": round(pct(&all_ms, 50.0)),
        "every_worker_p99_ms": round(pct(&all_ms, 99.0)),
        "every_worker_max_ms": round(all_ms.last().copied().unwrap_or_default()),
        "goal_p99_ms": 1000,
        "sidecar_calls_after_revoke": calls_after,
        "method": "one system on free ports, Envoy --concurrency 2, each token used once (token and decision cached), its jti revoked by the operator (POST /v1/admin/revocations; a client's own RFC 7009 /revoke coalesces past 64 live rows), then the sidecar is called back to back (a new TLS connection per call, ~ms resolution) until 401 revoked (revocation_*: the first 401; every_worker_*: the first of 8 refusals in a row, new connections spreading over both workers, one of which follows the feed and publishes it to the other through shared data)",
        "measured_at_unix_s": now,
    }))
}

/// `GET /orders/1` at the orders sidecar with `token`, over `consumer`'s mTLS.
pub(crate) fn call_orders(
    system: &System,
    consumer: &TlsClient,
    token: &str,
) -> Result<Response, String> {
    consumer
        .send(
            system.sidecar("orders"),
            &Request::get("/orders/1").bearer(token),
        )
        .map_err(|e| e.to_string())
}

/// A fresh consumer token for orders that the sidecar admits (the `i`-th of a run).
pub(crate) fn admitted_token(
    system: &System,
    consumer: &TlsClient,
    i: usize,
) -> Result<String, String> {
    let token = system
        .token("consumer", "orders", "orders:read")
        .map_err(|e| e.to_string())?;
    let first = call_orders(system, consumer, &token)?;
    if first.status != 200 {
        return Err(format!(
            "token {i} refused before revocation: {}",
            first.text()
        ));
    }
    Ok(token)
}
