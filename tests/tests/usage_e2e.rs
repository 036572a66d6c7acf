//! Usage-bound tokens end to end (issue 22) on real Envoys with the real filter, the real
//! authz-server and its SQLite counter: exactly N of 100 concurrent attempts pass, spread over
//! two Envoy processes of two workers each and both sidecar listeners; a restart of the
//! authz-server in the middle of a run loses no use and grants no extra one.

// A test target, test code throughout: the workspace lints apply with clippy.toml's
// allow-*-in-tests, as inside #[test] functions.
#![cfg(test)]

use certbind_core::config::Mode;
use certbind_tests::envoy::{self, EnvoyVars, FilterTuning};
use certbind_tests::ports::{free_port, loopback};
use certbind_tests::proc::{Proc, write_file};
use certbind_tests::{Request, Response, System, TlsClient, prereq, spiffe_id};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const ORDER: &str = "/orders/1";

/// Generous timeouts for a loaded machine (100 cold decisions at once against a debug PDP):
/// what is under test is the count, and a timed-out counter call may have spent a use it
/// cannot report (fail closed: one fewer admitted, never one more).
fn tuning(t: &mut FilterTuning) {
    t.usage_timeout_ms = Some(15_000);
    t.pdp_timeout_ms = Some(15_000);
}

fn usage_token(system: &System, max_uses: u32) -> String {
    let n = max_uses.to_string();
    let r = system
        .token_request(
            "consumer",
            &[
                ("grant_type", "client_credentials"),
                ("audience", &spiffe_id("orders")),
                ("scope", "orders:read"),
                ("max_uses", &n),
            ],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json_str("access_token").unwrap()
}

fn reason(r: &Response) -> String {
    r.json_str("reason").unwrap_or_default()
}

/// A second Envoy (its own process, two workers) in front of the same authz-server, PDP and
/// upstreams. Its billing listener is given the orders audience, so the same usage-bound token
/// is valid on both of its listeners; the count must hold across all of them.
struct SecondEnvoy {
    orders: SocketAddr,
    billing: SocketAddr,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl SecondEnvoy {
    fn start(system: &System) -> Self {
        let p = system.ports;
        let mut t = FilterTuning {
            jwks_first_fetch_wait_ms: Some(2000),
            ..FilterTuning::default()
        };
        tuning(&mut t);
        let vars = EnvoyVars {
            pki_dir: system.pki_dir().to_path_buf(),
            wasm: prereq::wasm().unwrap(),
            admin_port: free_port().unwrap(),
            orders_port: free_port().unwrap(),
            billing_port: free_port().unwrap(),
            edge_port: free_port().unwrap(),
            baseline_orders_port: free_port().unwrap(),
            baseline_billing_port: free_port().unwrap(),
            authz_port: p.authz,
            pdp_port: p.pdp,
            orders_upstream_port: p.orders_upstream,
            billing_upstream_port: p.billing_upstream,
            issuer: system.issuer().to_owned(),
            mode: Mode::Enforce,
            tuning: t,
        };
        let billing_audience = format!("\"audience\": \"{}\"", spiffe_id("billing"));
        let rendered = vars.render_sidecar().unwrap();
        assert_eq!(
            rendered.matches(&billing_audience).count(),
            1,
            "one billing filter"
        );
        let rendered = rendered.replace(
            &billing_audience,
            &format!("\"audience\": \"{}\"", spiffe_id("orders")),
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("envoy.yaml");
        write_file(&config, &rendered).unwrap();
        let proc = envoy::start(&config, vars.admin_port, 2, dir.path()).unwrap();
        Self {
            orders: loopback(vars.orders_port),
            billing: loopback(vars.billing_port),
            _proc: proc,
            _dir: dir,
        }
    }
}

fn send(system: &System, addr: SocketAddr, token: &str) -> Option<Response> {
    send_from(system.pki_dir(), addr, token)
}

/// One call as `consumer` on a new connection (`None`: no answer, e.g. refused).
fn send_from(pki: &Path, addr: SocketAddr, token: &str) -> Option<Response> {
    let client = TlsClient::for_workload(pki, Some("consumer")).ok()?;
    client.send(addr, &Request::get(ORDER).bearer(token)).ok()
}

/// Waits until `addr` admits an ordinary token (the filter has its keys and revocations).
fn until_ready(system: &System, addr: SocketAddr) {
    let token = system.token("consumer", "orders", "orders:read").unwrap();
    let start = Instant::now();
    loop {
        if send(system, addr, &token).is_some_and(|r| r.status == 200) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{addr} never admitted an ordinary token\n{}",
            system.logs_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn exactly_n_of_100_concurrent_attempts_pass_across_two_envoys_their_workers_and_both_listeners() {
    let system = System::builder().concurrency(2).tuning(tuning).start();
    let second = SecondEnvoy::start(&system);
    let targets = [system.sidecar("orders"), second.orders, second.billing];
    for t in targets {
        until_ready(&system, t);
    }
    const N: usize = 20;
    let token = usage_token(&system, N as u32);
    let barrier = Arc::new(Barrier::new(100));
    let answers: Vec<(usize, u16, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..100)
            .map(|i| {
                let (barrier, token, system) = (barrier.clone(), token.clone(), &system);
                let target = targets[i % targets.len()];
                scope.spawn(move || {
                    let client =
                        TlsClient::for_workload(system.pki_dir(), Some("consumer")).unwrap();
                    barrier.wait();
                    let r = client
                        .send(target, &Request::get(ORDER).bearer(&token))
                        .unwrap();
                    (i % targets.len(), r.status, reason(&r))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let admitted: Vec<usize> = answers
        .iter()
        .filter(|(_, s, _)| *s == 200)
        .map(|(t, _, _)| *t)
        .collect();
    let other: Vec<_> = answers
        .iter()
        .filter(|(_, s, r)| *s != 200 && !(*s == 401 && r == "usage_exhausted"))
        .collect();
    assert!(
        other.is_empty(),
        "unexpected answers: {other:?}\n{}",
        system.logs_tail(30)
    );
    assert_eq!(admitted.len(), N, "admitted per target: {admitted:?}");
    // Spent: the token is refused everywhere from now on, cached or not.
    for t in targets {
        let r = send(&system, t, &token).unwrap();
        assert_eq!(
            (r.status, reason(&r)),
            (401, "usage_exhausted".into()),
            "{t}"
        );
    }
    // An ordinary token still passes on every listener: nothing else was affected.
    let ordinary = system.token("consumer", "orders", "orders:read").unwrap();
    for t in targets {
        assert_eq!(send(&system, t, &ordinary).unwrap().status, 200);
    }
}

#[test]
fn a_restart_of_the_authz_server_mid_run_loses_no_use_and_grants_no_extra_one() {
    let mut system = System::builder().concurrency(2).tuning(tuning).start();
    let targets = [system.sidecar("orders")];
    until_ready(&system, targets[0]);
    const N: usize = 30;
    const BEFORE: usize = 10;
    let token = usage_token(&system, N as u32);
    for i in 0..BEFORE {
        let r = send(&system, targets[0], &token).unwrap();
        assert_eq!(r.status, 200, "use {i}: {}", r.text());
    }
    // 100 callers, each retrying 503s (the counter is down) until a definite answer.
    let admitted = AtomicUsize::new(0);
    let unavailable = AtomicUsize::new(0);
    let wrong = Mutex::new(Vec::new());
    let deadline = Instant::now() + Duration::from_secs(90);
    let pki = system.pki_dir().to_path_buf();
    std::thread::scope(|scope| {
        for i in 0..100 {
            let (token, pki) = (&token, pki.as_path());
            let (admitted, unavailable, wrong) = (&admitted, &unavailable, &wrong);
            scope.spawn(move || {
                // Spread the callers over the restart.
                std::thread::sleep(Duration::from_millis(20 * i));
                loop {
                    match send_from(pki, targets[0], token) {
                        Some(r) if r.status == 200 => {
                            admitted.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        Some(r) if r.status == 401 && reason(&r) == "usage_exhausted" => return,
                        Some(r) if r.status == 503 && reason(&r) == "usage_unavailable" => {
                            unavailable.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(r) => {
                            wrong.lock().unwrap().push((r.status, r.text()));
                            return;
                        }
                        None => {}
                    }
                    if Instant::now() > deadline {
                        wrong
                            .lock()
                            .unwrap()
                            .push((0, "no definite answer in time".into()));
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        // Restart while the callers are running (they started 0..2 s from now).
        std::thread::sleep(Duration::from_millis(300));
        let before_restart = admitted.load(Ordering::SeqCst);
        system.terminate_authz().unwrap();
        assert!(
            BEFORE + before_restart < N,
            "the run was over before the restart ({before_restart} admitted)"
        );
        std::thread::sleep(Duration::from_millis(500));
        system.start_authz().unwrap();
    });
    let wrong = wrong.into_inner().unwrap();
    assert!(
        wrong.is_empty(),
        "unexpected answers: {wrong:?}\n{}",
        system.logs_tail(30)
    );
    assert!(
        unavailable.load(Ordering::SeqCst) > 0,
        "no call met the counter while it was down: the restart was not mid-run"
    );
    assert_eq!(
        BEFORE + admitted.load(Ordering::SeqCst),
        N,
        "every use granted exactly once across the restart"
    );
    let r = send(&system, targets[0], &token).unwrap();
    assert_eq!((r.status, reason(&r)), (401, "usage_exhausted".into()));
}
