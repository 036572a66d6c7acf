//! authz-server replicas on PostgreSQL (issue 20, Measure): token issuance latency through one
//! replica and through three (the same PostgreSQL, callers spread round robin), and revocation
//! propagation from the replica that records it to the sidecar whose feed follows the others.
//! A real PostgreSQL cluster of the run's own (Debian's package), the services from
//! `certbind_tests::prereq` (release binaries unless `CERTBIND_BIN_DIR` says otherwise).

use crate::revocation::{admitted_token, call_orders};
use certbind_tests::ports::{free_port, loopback};
use certbind_tests::postgres::Postgres;
use certbind_tests::{Request, System, spiffe_id};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Concurrent callers asking for tokens.
const CALLERS: usize = 8;
/// A revocation still admitted this long after its `200` is a failure, not a sample.
const GIVE_UP: Duration = Duration::from_secs(10);

fn pct_ms(sorted: &[Duration], p: f64) -> f64 {
    let ms: Vec<f64> = sorted.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    (crate::stats::percentile(&ms, p) * 100.0).round() / 100.0
}

/// `per_caller` token requests by each of [`CALLERS`] threads, round robin over `targets`
/// (each request a new mTLS connection, as a workload renewing its token makes); latencies.
fn issuance(
    system: &System,
    targets: &[SocketAddr],
    per_caller: usize,
) -> Result<(Vec<Duration>, f64), String> {
    let aud = spiffe_id("orders");
    let form = [
        ("grant_type", "client_credentials"),
        ("audience", aud.as_str()),
        ("scope", "orders:read"),
    ];
    let request = Request::post("/token").form(&form);
    let client = system.client(Some("consumer")).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let results: Vec<Result<Vec<Duration>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CALLERS)
            .map(|c| {
                let (client, request) = (&client, &request);
                s.spawn(move || {
                    let mut samples = Vec::with_capacity(per_caller);
                    for i in 0..per_caller {
                        let at = targets[(c + i) % targets.len()];
                        let t0 = Instant::now();
                        let r = client.send(at, request).map_err(|e| e.to_string())?;
                        if r.status != 200 {
                            return Err(format!("{at}: {} {}", r.status, r.text()));
                        }
                        samples.push(t0.elapsed());
                    }
                    Ok(samples)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("caller panicked".into())))
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    all.sort();
    let rate = all.len() as f64 / elapsed.max(1e-9);
    Ok((all, rate))
}

/// Revokes `n` tokens at replica A (admin API) and times until the sidecar, whose feed follows
/// B and C, refuses each.
fn propagation(system: &System, n: usize) -> Result<Vec<Duration>, String> {
    let operator = system.client(Some("operator")).map_err(|e| e.to_string())?;
    let consumer = system.client(Some("consumer")).map_err(|e| e.to_string())?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let token = admitted_token(system, &consumer, i)?;
        let call = || call_orders(system, &consumer, &token);
        let jti = certbind_tests::tokens::decode_claims(&token)
            .map_err(|e| e.to_string())?
            .get("jti")
            .and_then(|j| j.as_str())
            .map(str::to_owned)
            .ok_or("token without jti")?;
        let body = serde_json::json!({"kind": "jti", "value": jti, "reason": "bench"});
        let r = operator
            .send(
                system.authz_addr(),
                &Request::post("/v1/admin/revocations").json(&body),
            )
            .map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        if r.status != 200 {
            return Err(format!("revocation at A answered {}", r.status));
        }
        loop {
            let r = call()?;
            if r.status == 401 && r.json_str("reason").as_deref() == Some("revoked") {
                samples.push(t0.elapsed());
                break;
            }
            if r.status != 200 || t0.elapsed() > GIVE_UP {
                return Err(format!(
                    "token {i}: {} {} after {:?}",
                    r.status,
                    r.text(),
                    t0.elapsed()
                ));
            }
        }
    }
    samples.sort();
    Ok(samples)
}

/// The whole measurement: `tokens` token requests per configuration, `revocations` samples.
pub fn measure(tokens: usize, revocations: usize) -> Result<serde_json::Value, String> {
    let pg = Postgres::start().map_err(|e| e.to_string())?;
    let url = pg.url();
    let (b, c) = (
        free_port().map_err(|e| e.to_string())?,
        free_port().map_err(|e| e.to_string())?,
    );
    let system = System::builder()
        .authz_args(&["--store", &url])
        .authz_replicas(&[b, c])
        .try_start()
        .map_err(|e| e.to_string())?;
    let mut replicas = Vec::new();
    for (name, port) in [("authz-b", b), ("authz-c", c)] {
        let mut p = system
            .authz_replica(name, port, &["--store", &url])
            .map_err(|e| e.to_string())?;
        p.start(System::authz_ready(), Duration::from_secs(20))
            .map_err(|e| e.to_string())?;
        replicas.push(p);
    }
    let a = system.authz_addr();
    let three = [a, loopback(b), loopback(c)];
    let per_caller = tokens.div_ceil(CALLERS).max(1);
    // Warm-up: every replica's connection and key cache.
    issuance(&system, &three, 4)?;
    let (one, one_rate) = issuance(&system, &[a], per_caller)?;
    let (spread, spread_rate) = issuance(&system, &three, per_caller)?;
    let propagated = propagation(&system, revocations)?;
    drop(replicas);
    drop(system);
    drop(pg);
    let now = crate::stats::unix_now_s();
    Ok(serde_json::json!({
        "what": "authz-server replicas on one PostgreSQL: token issuance through 1 vs 3 replicas, revocation propagation across replicas",
        "callers": CALLERS,
        "tokens_per_configuration": per_caller * CALLERS,
        "issuance_1_replica": {"p50_ms": pct_ms(&one, 50.0), "p99_ms": pct_ms(&one, 99.0), "tokens_per_s": one_rate.round()},
        "issuance_3_replicas": {"p50_ms": pct_ms(&spread, 50.0), "p99_ms": pct_ms(&spread, 99.0), "tokens_per_s": spread_rate.round()},
        "revocations": revocations,
        "propagation_p50_ms": pct_ms(&propagated, 50.0),
        "propagation_p99_ms": pct_ms(&propagated, 99.0),
        "propagation_max_ms": pct_ms(&propagated, 100.0),
        "method": "PostgreSQL (Debian's package) in a temporary cluster; the System's authz-server is replica A, B and C share its database; Envoy's certbind_authz cluster is B and C (health-checked), so the feed never comes from A. Issuance: 8 threads, each POST /token on a new mTLS connection, round robin over the targets, all processes on the same machine. Propagation: the consumer's token used once through the orders sidecar, revoked by jti at A's admin API, then the sidecar called back to back until 401 revoked",
        "measured_at_unix_s": now,
    }))
}
