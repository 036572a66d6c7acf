//! The binary: `check`, `eval`, and `serve` (startup refusal, the listening line, SIGTERM).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Pki, demo_policy_path, policy_file};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_certbind-pdp"))
}

#[test]
fn check_accepts_the_demo_policy() {
    let out = bin().arg("check").arg(demo_policy_path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("ok: ") && stdout.contains("4 rules"),
        "{stdout}"
    );
}

#[test]
fn check_refuses_an_invalid_policy_naming_file_line_and_column() {
    let text = std::fs::read_to_string(demo_policy_path())
        .unwrap()
        .replacen("methods: [GET]", "methods: [GET]\n    verbs: [GET]", 1);
    let (_dir, path) = policy_file(&text);
    let out = bin().arg("check").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.starts_with(&format!("{}:11:5: ", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("verbs"), "{stderr}");
}

#[test]
fn eval_prints_the_decision_and_the_deciding_rule() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(
        &input,
        r#"{"input":{"subject":"spiffe://certbind.test/ns/demo/sa/consumer","client_id":"consumer",
        "action":"POST","resource":"/orders","audience":"spiffe://certbind.test/ns/demo/sa/orders",
        "scopes":["orders:read"]}}"#,
    )
    .unwrap();
    let out = bin()
        .arg("eval")
        .arg(demo_policy_path())
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success());
    let decision: certbind_core::decision::Decision = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!decision.allow);
    assert_eq!(decision.reason, "missing_scope");
    assert_eq!(decision.policy_id, "consumer-orders-write");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("denied by rule `consumer-orders-write` (missing_scope)"),
        "{stderr}"
    );

    std::fs::write(&input, "not json").unwrap();
    let out = bin()
        .arg("eval")
        .arg(demo_policy_path())
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn serve_refuses_to_start_with_an_invalid_policy() {
    let pki = Pki::new();
    let pdp = pki.leaf("pdp");
    let (_dir, path) = policy_file("rules:\n  - id: x\n    effect: maybe\n");
    let out = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--policies"])
        .arg(&path)
        .arg("--cert")
        .arg(&pdp.cert_path)
        .arg("--key")
        .arg(&pdp.key_path)
        .arg("--ca")
        .arg(pki.ca_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:3:13: ", path.display())),
        "{stderr}"
    );
}

#[test]
fn serve_prints_its_address_and_exits_cleanly_on_sigterm() {
    let pki = Pki::new();
    let pdp = pki.leaf("pdp");
    let mut child = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--policies"])
        .arg(demo_policy_path())
        .arg("--cert")
        .arg(&pdp.cert_path)
        .arg("--key")
        .arg(&pdp.key_path)
        .arg("--ca")
        .arg(pki.ca_path())
        .args([
            "--callers",
            "spiffe://certbind.test/ns/demo/sa/envoy",
            "--callers",
            "spiffe://certbind.test/ns/demo/sa/other",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("no listening line within 20 s");
        if let Some(addr) = line.strip_prefix("certbind-pdp listening on https://") {
            break addr.to_owned();
        }
    };
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    assert_ne!(sock.port(), 0);
    std::net::TcpStream::connect(sock).unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = std::time::Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no exit within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit:?}");
}
