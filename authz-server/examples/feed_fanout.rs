//! Revocation feed fan-out over real mTLS: the real `certbind-authz serve` binary (its own
//! process, so its memory is measured alone), N simulated sidecars each holding one TLS 1.3
//! keep-alive connection with the `envoy` certificate and long-polling
//! `/v1/revocations?since=<seq>`, and an operator revoking R times through the admin API.
//! For each revocation, the delay from the admin `200` to each subscriber receiving it;
//! prints p50/p99/max and the server's RSS (VmRSS now, VmHWM peak) from /proc.
//!
//! Run (the server binary must be built in the same profile first):
//! `cargo build -p certbind-authz --release --bins --examples &&
//!  target/release/examples/feed_fanout [subscribers=1000] [rounds=20]`
// A measurement tool: a failed step should abort loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use certbind_core::revocation::parse_feed;
use common::{Conn, Pki, client_config};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

fn server_binary() -> std::path::PathBuf {
    // target/<profile>/examples/feed_fanout → target/<profile>/certbind-authz
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .join("certbind-authz");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p certbind-authz --release --bins --examples`",
        bin.display()
    );
    bin
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn at(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let subscribers: usize = args.next().map_or(1000, |a| a.parse().unwrap());
    let rounds: u64 = args.next().map_or(20, |a| a.parse().unwrap());

    let pki = Pki::new();
    let state = tempfile::tempdir().unwrap();
    let clients = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients.yaml");
    let mut child = Command::new(server_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--pki-dir"])
        .arg(pki.path())
        .arg("--state-dir")
        .arg(state.path())
        .arg("--clients")
        .arg(&clients)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("certbind-authz listening on https://") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let addr: std::net::SocketAddr = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap()
        .parse()
        .unwrap();
    let (idle_rss, _) = rss_kib(pid);

    // Subscribers: connect, take the snapshot, then long-poll forever, reporting each
    // revocation's (seq, arrival) to the collector.
    let envoy = client_config(pki.path(), Some((pki.path(), "envoy")));
    let (arrivals, mut arrived) = mpsc::unbounded_channel::<(u64, Instant)>();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<()>();
    let connect_started = Instant::now();
    for _ in 0..subscribers {
        let envoy = Arc::clone(&envoy);
        let arrivals = arrivals.clone();
        let ready_tx = ready_tx.clone();
        tokio::spawn(async move {
            let mut conn = Conn::open(addr, envoy).await.unwrap();
            let (status, _, body) = conn.send("GET", "/v1/revocations", None, "").await.unwrap();
            assert_eq!(status, 200);
            let mut since = parse_feed(&body).unwrap().seq;
            let _ = ready_tx.send(());
            loop {
                let path = format!("/v1/revocations?since={since}");
                let Ok((status, _, body)) = conn.send("GET", &path, None, "").await else {
                    return;
                };
                let now = Instant::now();
                assert_eq!(status, 200);
                let answer = parse_feed(&body).unwrap();
                for r in &answer.revocations {
                    let _ = arrivals.send((r.seq, now));
                }
                since = answer.seq;
            }
        });
    }
    for _ in 0..subscribers {
        ready_rx.recv().await.unwrap();
    }
    let connected_in = connect_started.elapsed();
    // Let every long-poll reach the server.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (waiting_rss, _) = rss_kib(pid);

    let mut operator = Conn::open(
        addr,
        client_config(pki.path(), Some((pki.path(), "operator"))),
    )
    .await
    .unwrap();
    let mut delays = Vec::with_capacity(subscribers * rounds as usize);
    let mut from_sent = Vec::with_capacity(subscribers * rounds as usize);
    let mut admin_rtt = Vec::with_capacity(rounds as usize);
    let mut early = 0usize;
    for round in 1..=rounds {
        let body = serde_json::json!({"kind": "jti", "value": format!("fanout-{round}")});
        let sent = Instant::now();
        let (status, _, answer) = operator
            .send(
                "POST",
                "/v1/admin/revocations",
                Some("application/json"),
                &body.to_string(),
            )
            .await
            .unwrap();
        let answered = Instant::now();
        admin_rtt.push(answered - sent);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        let seq = serde_json::from_slice::<serde_json::Value>(&answer).unwrap()["seq"]
            .as_u64()
            .unwrap();
        let mut got = 0;
        while got < subscribers {
            let (s, t) = tokio::time::timeout(Duration::from_secs(10), arrived.recv())
                .await
                .expect("a subscriber did not receive the revocation within 10 s")
                .unwrap();
            if s != seq {
                continue;
            }
            got += 1;
            if t < answered {
                early += 1;
            }
            delays.push(t.saturating_duration_since(answered));
            from_sent.push(t.saturating_duration_since(sent));
        }
        // Let every subscriber re-poll before the next revocation.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (end_rss, peak_rss) = rss_kib(pid);
    delays.sort_unstable();
    from_sent.sort_unstable();
    admin_rtt.sort_unstable();
    println!(
        "subscribers={subscribers} rounds={rounds} connected_in={:.2}s",
        connected_in.as_secs_f64()
    );
    println!(
        "delivery after the admin 200: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms (delivered before the 200 reached the operator: {early})",
        delays.len(),
        at(&delays, 0.50),
        at(&delays, 0.99),
        at(&delays, 1.0),
    );
    println!(
        "delivery after the admin request was sent (includes the fsynced commit): p50={:.1} ms p99={:.1} ms max={:.1} ms; admin round trip p50={:.1} ms max={:.1} ms",
        at(&from_sent, 0.50),
        at(&from_sent, 0.99),
        at(&from_sent, 1.0),
        at(&admin_rtt, 0.50),
        at(&admin_rtt, 1.0),
    );
    println!(
        "server RSS: idle {:.1} MiB, {subscribers} waiting {:.1} MiB, after {:.1} MiB, peak {:.1} MiB",
        idle_rss as f64 / 1024.0,
        waiting_rss as f64 / 1024.0,
        end_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
    let _ = child.kill();
    let _ = child.wait();
}
