//! Token issuance latency over real mTLS: 1000 `/token` requests on one keep-alive TLS 1.3
//! connection with the consumer's certificate, then 200 with a fresh mTLS handshake each.
//! Prints p50/p90/p99. Run: `cargo run -p certbind-authz --example issuance_latency [--release]`.
// A measurement tool: a failed step should abort loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use certbind_authz::{app, server, tls};
use common::{Conn, ORDERS, Pki, client_config, state, token_body};
use std::time::{Duration, Instant};

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    format!(
        "n={} p50={:.3} ms p90={:.3} ms p99={:.3} ms",
        samples.len(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.90).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3
    )
}

#[tokio::main]
async fn main() {
    let pki = Pki::new();
    let (_state_dir, st) = state();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = tls::server_config(pki.path(), "authz").unwrap();
    tokio::spawn(server::serve(
        listener,
        config,
        app(st),
        std::future::pending(),
    ));
    let client = client_config(pki.path(), Some((pki.path(), "consumer")));
    let body = token_body(ORDERS, "&scope=orders%3Aread");

    let mut conn = Conn::open(addr, client.clone()).await.unwrap();
    for _ in 0..50 {
        assert_eq!(conn.form("/token", &body).await.0, 200); // warm-up
    }
    let mut kept = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let t = Instant::now();
        let (status, _) = conn.form("/token", &body).await;
        kept.push(t.elapsed());
        assert_eq!(status, 200);
    }
    println!("keep-alive mTLS connection:   {}", percentiles(kept));

    let mut fresh = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        let mut c = Conn::open(addr, client.clone()).await.unwrap();
        let (status, _) = c.form("/token", &body).await;
        fresh.push(t.elapsed());
        assert_eq!(status, 200);
    }
    println!("new mTLS handshake each time: {}", percentiles(fresh));
}
