//! authz-server replicas on a real PostgreSQL behind a real Envoy (issue 20): revocations
//! written at one replica reach the sidecar that follows another within a second; the follower
//! moved to a third misses nothing; a replica killed under load costs no call; a replica cut
//! from the database stops answering as current and recovers; a database restart loses no
//! revocation; a key rotation under load happens once and is published by all.

// A test target, test code throughout: the workspace lints apply with clippy.toml's
// allow-*-in-tests, as inside #[test] functions.
#![cfg(test)]

use certbind_tests::ports::{free_port, loopback};
use certbind_tests::postgres::Postgres;
use certbind_tests::proc::Proc;
use certbind_tests::replicas::CutProxy;
use certbind_tests::tokens::decode_claims;
use certbind_tests::{Request, Response, System, spiffe_id};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const READY: Duration = Duration::from_secs(20);

/// The database, the System (its own authz-server is replica A) and more replicas. Fields drop
/// in order: replicas, then the System, then the database.
struct Ha {
    replicas: Vec<(SocketAddr, Proc)>,
    system: System,
    pg: Postgres,
}

impl Ha {
    /// Replica A (the System's) plus one replica per port of `extra` (B, C, …), all on one
    /// database; Envoy's cluster is `in_envoy` (ports; 0 is A).
    fn start(extra: &[u16], in_envoy: &[u16], args: &[&str]) -> Self {
        Self::start_with(Postgres::start().unwrap(), extra, in_envoy, args, &[])
    }

    /// As [`Ha::start`]; `urls[i]` (when given) is replica `extra[i]`'s database URL.
    fn start_with(
        pg: Postgres,
        extra: &[u16],
        in_envoy: &[u16],
        args: &[&str],
        urls: &[String],
    ) -> Self {
        let url = pg.url();
        let mut a_args = vec!["--store", url.as_str()];
        a_args.extend_from_slice(args);
        let system = System::builder()
            .authz_args(&a_args)
            .authz_replicas(in_envoy)
            .start();
        let mut replicas = Vec::new();
        for (i, port) in extra.iter().enumerate() {
            let url = urls.get(i).cloned().unwrap_or_else(|| url.clone());
            let mut r_args = vec!["--store", url.as_str()];
            r_args.extend_from_slice(args);
            let name = format!("authz-{}", (b'b' + i as u8) as char);
            let mut p = system.authz_replica(&name, *port, &r_args).unwrap();
            p.start(System::authz_ready(), READY).unwrap();
            replicas.push((loopback(*port), p));
        }
        Self {
            replicas,
            system,
            pg,
        }
    }

    fn a(&self) -> SocketAddr {
        self.system.authz_addr()
    }

    /// Every replica's address, A first.
    fn all(&self) -> Vec<SocketAddr> {
        std::iter::once(self.a())
            .chain(self.replicas.iter().map(|(a, _)| *a))
            .collect()
    }

    fn send(&self, who: &str, at: SocketAddr, req: &Request) -> Result<Response, String> {
        self.system
            .client(Some(who))
            .map_err(|e| e.to_string())?
            .send(at, req)
            .map_err(|e| e.to_string())
    }

    /// A token for consumer → `service` from the replica at `at`.
    fn token_at(&self, at: SocketAddr, service: &str, scope: &str) -> Result<String, String> {
        let aud = spiffe_id(service);
        let form = [
            ("grant_type", "client_credentials"),
            ("audience", aud.as_str()),
            ("scope", scope),
        ];
        let r = self.send("consumer", at, &Request::post("/token").form(&form))?;
        if r.status != 200 {
            return Err(format!("{at}: {} {}", r.status, r.text()));
        }
        r.json_str("access_token")
            .ok_or_else(|| "no access_token".to_owned())
    }

    /// The consumer's token with one retry per other replica, starting at `first`.
    fn token_retrying(&self, first: usize, service: &str, scope: &str) -> Result<String, String> {
        let all = self.all();
        let mut errors = Vec::new();
        for i in 0..all.len() {
            match self.token_at(all[(first + i) % all.len()], service, scope) {
                Ok(t) => return Ok(t),
                Err(e) => errors.push(e),
            }
        }
        Err(errors.join("; "))
    }

    /// Revokes a `jti` through the admin API of the replica at `at`; returns the recorded seq.
    fn revoke_at(&self, at: SocketAddr, jti: &str) -> Result<u64, Response> {
        let body = serde_json::json!({"kind": "jti", "value": jti, "reason": "test"});
        let r = self
            .send(
                "operator",
                at,
                &Request::post("/v1/admin/revocations").json(&body),
            )
            .unwrap();
        match r.json().ok().and_then(|j| j["seq"].as_u64()) {
            Some(seq) if r.status == 200 => Ok(seq),
            _ => Err(r),
        }
    }

    /// The feed at `at` (as a sidecar): `(status, seqs, latest seq)`.
    fn feed(&self, at: SocketAddr, since: Option<u64>) -> (u16, Vec<u64>, u64) {
        let path = match since {
            Some(s) => format!("/v1/revocations?since={s}"),
            None => "/v1/revocations".to_owned(),
        };
        let r = self.send("envoy", at, &Request::get(&path)).unwrap();
        let Ok(j) = r.json() else {
            return (r.status, Vec::new(), 0);
        };
        let seqs = j["revocations"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["seq"].as_u64()).collect())
            .unwrap_or_default();
        (r.status, seqs, j["seq"].as_u64().unwrap_or(0))
    }

    fn health(&self, at: SocketAddr) -> u16 {
        self.send("envoy", at, &Request::get("/v1/health"))
            .map(|r| r.status)
            .unwrap_or(0)
    }

    fn call(&self, service: &str, token: &str) -> Response {
        let path = if service == "billing" {
            "/billing/1"
        } else {
            "/orders/1"
        };
        self.system
            .call(Some("consumer"), service, &Request::get(path).bearer(token))
            .unwrap()
    }

    fn logs(&self) -> String {
        let mut out = self.system.logs_tail(30);
        for (_, p) in &self.replicas {
            out.push_str(&format!("\n---- {} ----\n{}", p.name(), p.log_tail(30)));
        }
        out
    }
}

fn jti_of(token: &str) -> String {
    decode_claims(token).unwrap()["jti"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let bytes =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap();
    serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until `check` holds, or fails with `what` and the logs after `within`.
fn eventually(ha: &Ha, within: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < within,
            "{what} not within {within:?}\n{}",
            ha.logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Load in the background: round after round, a token from the next replica (retrying on the
/// others) and a call through the sidecar, which must be 200. Set the flag to stop; the thread
/// returns the calls made and the failures.
fn load(ha: &Arc<Ha>) -> (Arc<AtomicBool>, std::thread::JoinHandle<(u64, Vec<String>)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (h, s) = (Arc::clone(ha), Arc::clone(&stop));
    let thread = std::thread::spawn(move || {
        let (mut calls, mut failures) = (0u64, Vec::new());
        while !s.load(Ordering::SeqCst) {
            calls += 1;
            let outcome = h
                .token_retrying(calls as usize, "orders", "orders:read")
                .and_then(|t| {
                    let r = h.call("orders", &t);
                    if r.status == 200 {
                        Ok(())
                    } else {
                        Err(format!("call: {} {}", r.status, r.text()))
                    }
                });
            if let Err(e) = outcome {
                failures.push(e);
            }
        }
        (calls, failures)
    });
    (stop, thread)
}

#[test]
fn revocations_at_one_replica_reach_the_sidecar_following_another_and_a_killed_follower_misses_nothing()
 {
    let (b, c) = (free_port().unwrap(), free_port().unwrap());
    // The sidecar's feed follows B or C, never A, where every revocation is written.
    let ha = Arc::new(Ha::start(&[b, c], &[b, c], &[]));
    let a = ha.a();
    let first = ha.token_at(a, "orders", "orders:read").unwrap();
    eventually(
        &ha,
        Duration::from_secs(20),
        "a first 200 through the sidecar",
        || ha.call("orders", &first).status == 200,
    );
    let (stop, thread) = load(&ha);
    let mut revoked: Vec<(String, String)> = Vec::new();
    let mut before_move = Vec::new();
    let mut after_move = Vec::new();
    for round in 0..24 {
        if round == 12 {
            // The follower's replica dies (SIGKILL) mid-stream: the feed moves on.
            let pid = ha.replicas[0].1.pid().unwrap();
            certbind_tests::system::signal(pid, "KILL").unwrap();
        }
        for (service, scope) in [("orders", "orders:read"), ("billing", "billing:read")] {
            let token = ha.token_retrying(round, service, scope).unwrap();
            assert_eq!(ha.call(service, &token).status, 200, "{}", ha.logs());
            let jti = jti_of(&token);
            ha.revoke_at(a, &jti).unwrap();
            let took = eventually(
                &ha,
                Duration::from_secs(10),
                "the revocation at the sidecar",
                || {
                    let r = ha.call(service, &token);
                    r.status == 401 && r.json_str("reason").as_deref() == Some("revoked")
                },
            );
            if round < 12 {
                before_move.push(took)
            } else {
                after_move.push(took)
            }
            revoked.push((service.to_owned(), token));
        }
    }
    stop.store(true, Ordering::SeqCst);
    let (calls, failed) = thread.join().unwrap();
    // Nothing revoked is ever admitted, before or after the move.
    for (service, token) in &revoked {
        let r = ha.call(service, token);
        assert_eq!(
            (r.status, r.json_str("reason").as_deref()),
            (401, Some("revoked"))
        );
    }
    assert!(
        failed.is_empty(),
        "{} of {} calls failed: {failed:?}\n{}",
        failed.len(),
        calls,
        ha.logs()
    );
    before_move.sort();
    after_move.sort();
    let max_before = *before_move.last().unwrap();
    eprintln!(
        "propagation A -> sidecar via B: p50 {:?} p99 {:?} max {max_before:?}; after B was killed, via C: p50 {:?} max {:?}; {} load calls, 0 failed",
        percentile(&before_move, 0.5),
        percentile(&before_move, 0.99),
        percentile(&after_move, 0.5),
        after_move.last().unwrap(),
        calls
    );
    assert!(
        max_before <= Duration::from_secs(1),
        "propagation {max_before:?} > 1 s"
    );
    // The feed says the same at every replica still alive: same rows for the same since.
    let (s_a, seqs_a, latest_a) = ha.feed(a, None);
    let (s_c, seqs_c, latest_c) = ha.feed(ha.replicas[1].0, None);
    assert_eq!((s_a, s_c), (200, 200));
    assert_eq!((latest_a, latest_c), (48, 48));
    assert_eq!(seqs_a, (1..=48).collect::<Vec<_>>());
    assert_eq!(seqs_a, seqs_c);
    assert_eq!(
        ha.feed(ha.replicas[1].0, Some(40)).1,
        (41..=48).collect::<Vec<_>>()
    );
}

#[test]
fn writes_at_every_replica_share_one_gap_free_order() {
    let (b, c) = (free_port().unwrap(), free_port().unwrap());
    let ha = Arc::new(Ha::start(&[b, c], &[b, c], &[]));
    let all = ha.all();
    let writers: Vec<_> = all
        .iter()
        .enumerate()
        .map(|(w, at)| {
            let (ha, at) = (Arc::clone(&ha), *at);
            std::thread::spawn(move || {
                (0..10)
                    .map(|i| {
                        ha.revoke_at(at, &format!("w{w}-{i}"))
                            .map_err(|r| r.text())
                            .unwrap()
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    // The replicated cluster Envoy runs with is a valid config naming both replicas.
    let config = ha.system.dir().join("envoy.yaml");
    certbind_tests::envoy::validate(&config).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("path: /v1/health"));
    for port in [b, c] {
        assert!(text.contains(&format!("port_value: {port} }}")), "{port}");
    }
    let mut seqs: Vec<u64> = writers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    seqs.sort();
    assert_eq!(
        seqs,
        (1..=30).collect::<Vec<_>>(),
        "every write got its own seq, no gap"
    );
    for at in &all {
        eventually(
            &ha,
            Duration::from_secs(2),
            "every replica at seq 30",
            || ha.feed(*at, None).2 == 30,
        );
        assert_eq!(ha.feed(*at, None).1, (1..=30).collect::<Vec<_>>());
        assert_eq!(
            ha.feed(*at, Some(17)).1,
            (18..=30).collect::<Vec<_>>(),
            "since=17 at {at}"
        );
        // A follower ahead of the store itself (a replaced database) gets a snapshot at 30.
        assert_eq!(
            ha.feed(*at, Some(35)),
            (200, (1..=30).collect::<Vec<_>>(), 30)
        );
    }
}

#[test]
fn a_replica_cut_from_the_database_stops_answering_as_current_and_recovers() {
    let pg = Postgres::start().unwrap();
    let proxy = CutProxy::start(loopback(pg.port())).unwrap();
    let b = free_port().unwrap();
    let via_proxy = format!("postgres://certbind@{}/certbind", proxy.addr());
    let ha = Ha::start_with(pg, &[b], &[0, b], &[], &[via_proxy]);
    let (a, b) = (ha.a(), ha.replicas[0].0);
    assert_eq!(ha.health(b), 200);
    ha.token_at(b, "orders", "orders:read").unwrap();
    ha.revoke_at(a, "before-the-cut").unwrap();
    proxy.cut();
    let took = eventually(&ha, Duration::from_secs(5), "B unhealthy", || {
        ha.health(b) == 503
    });
    eprintln!("B answered 503 {took:?} after the cut");
    // No token it cannot stand behind, no feed served as current.
    let refused = ha.token_at(b, "orders", "orders:read").unwrap_err();
    assert!(
        refused.contains("503") && refused.contains("temporarily_unavailable"),
        "{refused}"
    );
    assert_eq!(ha.feed(b, None).0, 503);
    assert_eq!(ha.feed(b, Some(0)).0, 503);
    // A, on the database, goes on; what it records during the cut reaches B afterwards.
    ha.revoke_at(a, "during-the-cut").unwrap();
    assert_eq!(ha.health(a), 200);
    ha.token_at(a, "orders", "orders:read").unwrap();
    proxy.heal();
    let took = eventually(&ha, Duration::from_secs(10), "B healthy again", || {
        ha.health(b) == 200
    });
    eprintln!("B healthy {took:?} after the heal");
    ha.token_at(b, "orders", "orders:read").unwrap();
    assert_eq!(ha.feed(b, None), (200, vec![1, 2], 2));
}

#[test]
fn a_database_restart_loses_no_revocation() {
    let (b, c) = (free_port().unwrap(), free_port().unwrap());
    let ha = Ha::start(&[b, c], &[b, c], &[]);
    let all = ha.all();
    for i in 0..9 {
        ha.revoke_at(all[i % 3], &format!("before-{i}")).unwrap();
    }
    ha.pg.stop().unwrap();
    for at in &all {
        eventually(
            &ha,
            Duration::from_secs(5),
            "503 while the database is down",
            || ha.health(*at) == 503,
        );
    }
    let refused = ha.revoke_at(all[0], "while-down").unwrap_err();
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(
        ha.token_at(all[1], "orders", "orders:read")
            .unwrap_err()
            .contains("503")
    );
    ha.pg.restart().unwrap();
    for at in &all {
        eventually(&ha, Duration::from_secs(15), "reconnected", || {
            ha.health(*at) == 200
        });
    }
    for i in 0..9 {
        ha.revoke_at(all[i % 3], &format!("after-{i}")).unwrap();
    }
    for at in &all {
        eventually(&ha, Duration::from_secs(2), "18 revocations", || {
            ha.feed(*at, None).2 == 18
        });
        assert_eq!(
            ha.feed(*at, None).1,
            (1..=18).collect::<Vec<_>>(),
            "at {at}"
        );
    }
    let token = ha.token_at(all[2], "orders", "orders:read").unwrap();
    eventually(&ha, Duration::from_secs(10), "calls pass again", || {
        ha.call("orders", &token).status == 200
    });
}

#[test]
fn key_rotation_with_three_replicas_under_load_publishes_one_new_key_everywhere() {
    let (b, c) = (free_port().unwrap(), free_port().unwrap());
    let ha = Arc::new(Ha::start(
        &[b, c],
        &[0, b, c],
        &["--rotate-keys-every", "10"],
    ));
    let all = ha.all();
    let jwks = |at: SocketAddr| -> Vec<String> {
        let r = ha
            .send("consumer", at, &Request::get("/.well-known/jwks.json"))
            .unwrap();
        let mut kids: Vec<String> = r.json().unwrap()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        kids.sort();
        kids
    };
    let first_kid = kid_of(&ha.token_at(all[0], "orders", "orders:read").unwrap());
    for at in &all {
        assert_eq!(
            jwks(*at),
            vec![first_kid.clone()],
            "one key at {at} before the rotation"
        );
    }
    let token = ha.token_at(all[0], "orders", "orders:read").unwrap();
    eventually(&ha, Duration::from_secs(20), "a first 200", || {
        ha.call("orders", &token).status == 200
    });
    let (stop, thread) = load(&ha);
    // Every replica signs with the same new key.
    eventually(
        &ha,
        Duration::from_secs(30),
        "the new key signing at every replica",
        || {
            all.iter().all(|at| {
                ha.token_at(*at, "orders", "orders:read")
                    .is_ok_and(|t| kid_of(&t) != first_kid)
            })
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let (calls, failed) = thread.join().unwrap();
    let published: Vec<Vec<String>> = all.iter().map(|at| jwks(*at)).collect();
    assert_eq!(published[0].len(), 2, "exactly one new key: {published:?}");
    assert!(
        published.iter().all(|p| *p == published[0]),
        "{published:?}"
    );
    let kids: Vec<String> = all
        .iter()
        .map(|at| kid_of(&ha.token_at(*at, "orders", "orders:read").unwrap()))
        .collect();
    assert!(
        kids.iter().all(|k| *k == kids[0] && *k != first_kid),
        "{kids:?}"
    );
    assert!(
        failed.is_empty(),
        "{} of {} calls failed: {failed:?}",
        failed.len(),
        calls
    );
    eprintln!("rotation under load: {} calls, 0 failed", calls);
}

#[test]
fn a_dpop_proof_spent_at_one_replica_is_a_replay_at_another() {
    use certbind_tests::tokens::{EcKey, dpop_proof};
    let b = free_port().unwrap();
    let ha = Ha::start(&[b], &[0, b], &[]);
    let key = EcKey::generate().unwrap();
    let htu = format!("{}/token", ha.system.issuer());
    let aud = spiffe_id("orders");
    let request = |proof: &str| {
        Request::post("/token").header("dpop", proof).form(&[
            ("grant_type", "client_credentials"),
            ("audience", aud.as_str()),
            ("scope", "orders:read"),
        ])
    };
    let proof = dpop_proof(&key, "POST", &htu, None).unwrap();
    let first = ha.send("consumer", ha.a(), &request(&proof)).unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json_str("token_type").as_deref(), Some("DPoP"));
    // The same proof at B: a replay, though B never saw it.
    let replay = ha
        .send("consumer", ha.replicas[0].0, &request(&proof))
        .unwrap();
    assert_eq!(
        (replay.status, replay.json_str("error").as_deref()),
        (400, Some("invalid_dpop_proof")),
        "{}",
        replay.text()
    );
    // A fresh proof is admitted at B.
    let fresh = dpop_proof(&key, "POST", &htu, None).unwrap();
    let ok = ha
        .send("consumer", ha.replicas[0].0, &request(&fresh))
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
}

#[test]
fn posture_reports_at_one_replica_keep_the_subject_in_good_standing_at_another() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("posture.yaml");
    let inventory = spiffe_id("inventory");
    std::fs::write(
        &policy,
        format!(
            "rules: {{require_firewall: true}}\nreport_interval_s: 3\nrequired: [{inventory}]\n"
        ),
    )
    .unwrap();
    let policy = policy.display().to_string();
    let b = free_port().unwrap();
    let ha = Ha::start(&[b], &[0, b], &["--posture", &policy]);
    let (a, b) = (ha.a(), ha.replicas[0].0);
    let token = |at: SocketAddr| {
        let aud = spiffe_id("orders");
        let form = [
            ("grant_type", "client_credentials"),
            ("audience", aud.as_str()),
            ("scope", "orders:read"),
        ];
        ha.send("inventory", at, &Request::post("/token").form(&form))
            .unwrap()
    };
    let report =
        serde_json::json!({"firewall": true, "blocked_processes": [], "os_patch_age_days": 1});
    // Reports go to A only, for longer than twice the interval: B must not call them missing.
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let r = ha
            .send("inventory", a, &Request::post("/v1/posture").json(&report))
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        std::thread::sleep(Duration::from_millis(700));
    }
    let at_b = token(b);
    assert_eq!(
        at_b.status,
        200,
        "banned at B: {}\n{}",
        at_b.text(),
        ha.logs()
    );
    assert_eq!(ha.feed(b, None).1, Vec::<u64>::new(), "no ban recorded");
    // Reports stop: the subject is banned (once), and refused at every replica.
    eventually(&ha, Duration::from_secs(10), "banned at B", || {
        token(b).status == 401
    });
    // The ban row reaches A through the store's notification (the replicas' ≤ 1 s bound; a
    // loaded machine stretches it), unless A's own check bans first.
    eventually(&ha, Duration::from_secs(3), "banned at A", || {
        token(a).status == 401
    });
    // One live ban row (two replicas banning at the same instant replace each other's row).
    assert_eq!(ha.feed(a, None).1.len(), 1, "one ban row");
}

#[test]
fn a_usage_bound_tokens_uses_are_spent_once_across_replicas() {
    let b = free_port().unwrap();
    let ha = Ha::start(&[b], &[0, b], &[]);
    let (a, b) = (ha.a(), ha.replicas[0].0);
    let aud = spiffe_id("orders");
    let issued = ha
        .send(
            "consumer",
            a,
            &Request::post("/token").form(&[
                ("grant_type", "client_credentials"),
                ("audience", aud.as_str()),
                ("scope", "orders:read"),
                ("max_uses", "3"),
            ]),
        )
        .unwrap();
    assert_eq!(issued.status, 200, "{}", issued.text());
    let jti = jti_of(&issued.json_str("access_token").unwrap());
    let consume = |at: SocketAddr| {
        let r = ha
            .send(
                "envoy",
                at,
                &Request::post("/v1/usage/consume").json(&serde_json::json!({ "jti": jti })),
            )
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        r.json_str("outcome").unwrap()
    };
    // Issued at A, spent alternately at B and A: three uses in all, then exhausted at both.
    let outcomes: Vec<String> = [b, a, b, a, b].into_iter().map(consume).collect();
    assert_eq!(
        outcomes,
        ["consumed", "consumed", "consumed", "exhausted", "exhausted"],
        "uses spent across replicas"
    );
    // A jti never issued as usage-bound is unknown everywhere.
    let stranger = ha
        .send(
            "envoy",
            b,
            &Request::post("/v1/usage/consume")
                .json(&serde_json::json!({ "jti": "AAAAAAAAAAAAAAAAAAAAAA" })),
        )
        .unwrap();
    assert_eq!(stranger.json_str("outcome").as_deref(), Some("unknown"));
}
