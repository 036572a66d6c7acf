//! The real `certbind-authz` binary on a free port: a revocation answered `200` survives a
//! `kill -9` at once after the answer, and `certbind-authz revoke` writing the same store while
//! the server runs reaches a waiting feed subscriber within a second.
// Helpers here run only inside tests: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use certbind_core::binding::CertThumbprint;
use certbind_core::revocation::{FeedAnswer, Kind, parse_feed};
use common::{Conn, ORDERS, client_config, enc, token_body};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_certbind-authz");
const INVENTORY: &str = "spiffe://certbind.test/ns/demo/sa/inventory";

struct Dirs {
    _root: tempfile::TempDir,
    pki: PathBuf,
    state: PathBuf,
}

fn dirs() -> Dirs {
    let root = tempfile::tempdir().unwrap();
    let pki = root.path().join("pki");
    let state = root.path().join("authz");
    let out = Command::new(BIN)
        .args(["pki", "init", "--dir", pki.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Dirs {
        _root: root,
        pki,
        state,
    }
}

/// The server, killed with SIGKILL when dropped (never left running by a failed test).
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(d: &Dirs) -> Self {
        let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients.yaml");
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--pki-dir",
                d.pki.to_str().unwrap(),
                "--state-dir",
                d.state.to_str().unwrap(),
                "--clients",
                clients.to_str().unwrap(),
                "--feed-wait",
                "5",
            ])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
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
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("no 'listening on' line from certbind-authz serve")
            .parse()
            .unwrap();
        Self { child, addr }
    }

    /// SIGKILL: no shutdown path runs, nothing is flushed by us.
    fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    async fn conn(&self, d: &Dirs, name: &str) -> Conn {
        Conn::open(self.addr, client_config(&d.pki, Some((&d.pki, name))))
            .await
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn poll(conn: &mut Conn, since: Option<u64>) -> FeedAnswer {
    let path = match since {
        None => "/v1/revocations".to_owned(),
        Some(n) => format!("/v1/revocations?since={n}"),
    };
    let (status, _, body) = conn.send("GET", &path, None, "").await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    parse_feed(&body).unwrap()
}

async fn admin(conn: &mut Conn, body: serde_json::Value) -> serde_json::Value {
    let (status, _, answer) = conn
        .send(
            "POST",
            "/v1/admin/revocations",
            Some("application/json"),
            &body.to_string(),
        )
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(status, 200, "{answer}");
    answer
}

#[tokio::test]
async fn a_revocation_answered_200_survives_kill_9_right_after() {
    let d = dirs();

    // 1. The consumer revokes its own token; SIGKILL the moment the 200 arrives.
    let server = Server::start(&d);
    let mut consumer = server.conn(&d, "consumer").await;
    let (status, answer) = consumer.form("/token", &token_body(ORDERS, "")).await;
    assert_eq!(status, 200, "{answer}");
    let token = answer["access_token"].as_str().unwrap().to_owned();
    let (status, _) = consumer
        .form("/revoke", &format!("token={}", enc(&token)))
        .await;
    assert_eq!(status, 200);
    server.kill_9();

    // 2. Restarted: the token is inactive. An operator bans a subject; SIGKILL again.
    let server = Server::start(&d);
    let mut envoy = server.conn(&d, "envoy").await;
    let (status, answer) = envoy
        .form("/introspect", &format!("token={}", enc(&token)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["active"], false, "{answer}");
    let mut operator = server.conn(&d, "operator").await;
    let row = admin(
        &mut operator,
        serde_json::json!({"kind": "subject", "value": INVENTORY, "reason": "host compromised"}),
    )
    .await;
    assert_eq!(row["seq"], 2);
    server.kill_9();

    // 3. Restarted: both are in the feed, in order, and the banned subject gets no token.
    let server = Server::start(&d);
    let mut envoy = server.conn(&d, "envoy").await;
    let snap = poll(&mut envoy, None).await;
    assert!(snap.snapshot);
    assert_eq!(snap.seq, 2);
    let kinds: Vec<(u64, Kind)> = snap.revocations.iter().map(|r| (r.seq, r.kind)).collect();
    assert_eq!(kinds, [(1, Kind::Jti), (2, Kind::Subject)]);
    assert_eq!(snap.revocations[1].value, INVENTORY);
    let mut inventory = server.conn(&d, "inventory").await;
    let (status, answer) = inventory.form("/token", &token_body(ORDERS, "")).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"], "invalid_client");
}

#[tokio::test]
async fn the_revoke_command_reaches_a_waiting_subscriber_of_the_running_server_within_a_second() {
    let d = dirs();
    let server = Server::start(&d);
    let mut envoy = server.conn(&d, "envoy").await;
    let first = poll(&mut envoy, None).await;
    assert_eq!(first.seq, 0);
    let waiting = tokio::spawn(async move {
        let answer = poll(&mut envoy, Some(0)).await;
        (Instant::now(), answer)
    });
    // Let the long-poll reach the server before revoking.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cert_der = certbind_authz::ca::read_cert_der(&d.pki.join("consumer.crt")).unwrap();
    let thumb = CertThumbprint::from_der(&cert_der).to_cnf();
    let out = Command::new(BIN)
        .args([
            "revoke",
            "--cert",
            &thumb,
            "--reason",
            "key leaked",
            "--state-dir",
            d.state.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let done = Instant::now();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["kind"], "cert");
    assert_eq!(printed["seq"], 1);
    let (at, answer) = tokio::time::timeout(Duration::from_secs(3), waiting)
        .await
        .expect("the waiting subscriber was not woken")
        .unwrap();
    let delay = at.saturating_duration_since(done);
    assert!(delay < Duration::from_secs(1), "{delay:?}");
    assert_eq!(answer.revocations.len(), 1);
    assert_eq!(answer.revocations[0].kind, Kind::Cert);
    assert_eq!(answer.revocations[0].value, thumb);
    // The server refuses that certificate new tokens.
    let mut consumer = server.conn(&d, "consumer").await;
    let (status, _) = consumer.form("/token", &token_body(ORDERS, "")).await;
    assert_eq!(status, 401);
    server.kill_9();
}

#[test]
fn the_revoke_command_refuses_bad_input_and_needs_exactly_one_kind() {
    let d = dirs();
    let state = d.state.to_str().unwrap();
    for args in [
        vec!["revoke", "--state-dir", state],
        vec![
            "revoke",
            "--jti",
            "a",
            "--subject",
            INVENTORY,
            "--state-dir",
            state,
        ],
        vec!["revoke", "--subject", "inventory", "--state-dir", state],
        vec!["revoke", "--cert", "abcd", "--state-dir", state],
        vec!["revoke", "--jti", "a", "--lift", "--state-dir", state],
        vec![
            "revoke",
            "--subject",
            INVENTORY,
            "--lift",
            "--state-dir",
            state,
        ],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
    }
    let out = Command::new(BIN)
        .args(["revoke", "--subject", INVENTORY, "--state-dir", state])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args([
            "revoke",
            "--subject",
            INVENTORY,
            "--lift",
            "--state-dir",
            state,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(row["banned"], false);
    assert_eq!(row["seq"], 2);
}
