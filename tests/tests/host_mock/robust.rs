//! Seeded randomized robustness: random and mutated requests (headers, tokens, certificates,
//! connection properties, bodies), JWKS and PDP answers (garbage, failures, delays that
//! reorder callbacks), clock jumps and clients that leave, against the real `.wasm`.
//! Zero traps, zero host panics, every answer one of CONTRACT §4's, nothing unsound passes.
//!
//! `CERTBIND_FUZZ_CASES` (requests; default 3,000, `make fuzz-wasm` runs 100,000),
//! `CERTBIND_FUZZ_SEED` (default fixed) and `CERTBIND_FUZZ_EPISODE` (replay one episode).
//! `CERTBIND_FUZZ_ASCII_HEADERS=1` (diagnosis only) sends no header bytes outside ASCII, to
//! look past a known UTF-8 trap.

use super::certs::{Cert, Pki};
use super::contract;
use super::scenario::*;
use super::tokens::{Key, TokenBuilder, b64, jwks};
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::time::{Duration, Instant};

const DEFAULT_CASES: usize = 3_000;
const DEFAULT_SEED: u64 = 0xce27_b1d0_2026_0001;
const DPOP_ORIGIN: &str = "https://127.0.0.1:8445";
/// Requests per episode (one sidecar, one configuration, one upstream behaviour).
const REQUESTS_PER_EPISODE: usize = 40;

fn ascii_headers() -> bool {
    std::env::var_os("CERTBIND_FUZZ_ASCII_HEADERS").is_some_and(|v| v == "1")
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| {
        let v = v.replace('_', "");
        v.strip_prefix("0x")
            .map_or_else(|| v.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
    })
}

/// What one episode (or the whole run) saw.
#[derive(Debug, Default)]
struct Tally {
    episodes: usize,
    requests: usize,
    replied: usize,
    forwarded: usize,
    abandoned: usize,
    jwks_answers: usize,
    pdp_answers: usize,
    reasons: BTreeMap<String, usize>,
    traps: Vec<(u64, String)>,
    host_panics: Vec<(u64, String)>,
    violations: Vec<(u64, String)>,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.episodes += o.episodes;
        self.requests += o.requests;
        self.replied += o.replied;
        self.forwarded += o.forwarded;
        self.abandoned += o.abandoned;
        self.jwks_answers += o.jwks_answers;
        self.pdp_answers += o.pdp_answers;
        for (k, v) in o.reasons {
            *self.reasons.entry(k).or_default() += v;
        }
        self.traps.extend(o.traps);
        self.host_panics.extend(o.host_panics);
        self.violations.extend(o.violations);
    }
}

#[test]
fn random_and_mutated_inputs_never_trap_and_only_get_contract_answers() {
    let cases = env_u64("CERTBIND_FUZZ_CASES").map_or(DEFAULT_CASES, |n| n as usize);
    let seed = env_u64("CERTBIND_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let replay = env_u64("CERTBIND_FUZZ_EPISODE");
    let episodes: Vec<u64> = match replay {
        Some(e) => vec![e],
        None => (0..cases.div_ceil(REQUESTS_PER_EPISODE) as u64).collect(),
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Instant::now();
    let mut total = Tally::default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mine: Vec<u64> = episodes
                    .iter()
                    .copied()
                    .filter(|e| (*e as usize) % threads == t)
                    .collect();
                scope.spawn(move || {
                    let fixtures = Fixtures::new(seed);
                    let mut tally = Tally::default();
                    for e in mine {
                        tally.add(run_episode(seed, e, &fixtures));
                    }
                    tally
                })
            })
            .collect();
        for h in handles {
            total.add(h.join().unwrap_or_else(|_| Tally {
                host_panics: vec![(u64::MAX, "a fuzz thread died".into())],
                ..Tally::default()
            }));
        }
    });
    let elapsed = started.elapsed();
    eprintln!(
        "host_mock fuzz: seed {seed:#x}, {} episodes, {} requests ({} answered, {} forwarded, \
         {} abandoned), {} JWKS and {} PDP answers in {:.1?} ({:.0} requests/s, {threads} threads)\n\
         answers by reason: {:?}",
        total.episodes,
        total.requests,
        total.replied,
        total.forwarded,
        total.abandoned,
        total.jwks_answers,
        total.pdp_answers,
        elapsed,
        total.requests as f64 / elapsed.as_secs_f64(),
        total.reasons
    );
    // Group by message: one bug usually fails many episodes the same way.
    let show = |what: &str, list: &[(u64, String)]| -> String {
        let mut kinds: BTreeMap<String, (usize, u64, &str)> = BTreeMap::new();
        for (e, msg) in list {
            // Digits differ between instances of one bug (bytes, offsets): group without them.
            let key: String = msg
                .split(" { bytes")
                .next()
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_ascii_digit())
                .take(300)
                .collect();
            kinds.entry(key).or_insert((0, *e, msg)).0 += 1;
        }
        let mut out = format!("{} {what} of {} kinds", list.len(), kinds.len());
        for (count, e, msg) in kinds.values().take(8) {
            let msg: String = msg.chars().take(3000).collect();
            out.push_str(&format!("\n  {count}x, first in "));
            out.push_str(&format!(
                "episode {e} (CERTBIND_FUZZ_SEED={seed:#x} CERTBIND_FUZZ_EPISODE={e}): {msg}"
            ));
        }
        out
    };
    assert!(
        total.traps.is_empty() && total.host_panics.is_empty() && total.violations.is_empty(),
        "{}\n{}\n{}",
        show("traps", &total.traps),
        show("host panics", &total.host_panics),
        show("contract violations", &total.violations)
    );
    assert!(
        replay.is_some() || total.requests >= cases,
        "ran {} of {cases}",
        total.requests
    );
}

/// What every episode of a run shares (deterministic from the seed; built once per thread
/// because key generation is slow in a debug build).
struct Fixtures {
    pki: Rc<Pki>,
    /// The authz-server's keys: the active one, and one only some JWKS answers publish.
    keys: Vec<Key>,
    /// Never published.
    stranger: Key,
    /// Signs under a published kid without being published.
    forger: Key,
    /// Seventeen keys: one more than a JWKS may hold.
    crowd: Rc<Vec<Key>>,
}

impl Fixtures {
    fn new(seed: u64) -> Self {
        Self {
            pki: Rc::new(Pki::generate()),
            keys: vec![Key::from_seed(seed ^ 1), Key::from_seed(seed ^ 2)],
            stranger: Key::from_seed(seed ^ 3),
            forger: Key::from_seed(seed ^ 4),
            crowd: Rc::new((0..17).map(|i| Key::from_seed(seed ^ (900 + i))).collect()),
        }
    }
}

fn run_episode(seed: u64, episode: u64, fixtures: &Fixtures) -> Tally {
    let outcome = catch_unwind(AssertUnwindSafe(|| Episode::run(seed, episode, fixtures)));
    match outcome {
        Ok(t) => t,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "non-string panic".into());
            Tally {
                episodes: 1,
                host_panics: vec![(episode, msg)],
                ..Tally::default()
            }
        }
    }
}

/// What the test knows about a request it sent, to judge its outcome.
struct Sent {
    ex: Exchange,
    /// The test built every part of it to pass (a valid bound token, its own certificate);
    /// `None` when the connection facts contradict each other (no expectation).
    sound: Option<bool>,
    /// How it was built.
    trace: String,
    /// Earliest moment the token may be judged (its `exp` + skew must lie after it).
    sent_s: u64,
    exp: Option<u64>,
    subject: String,
    token: Option<String>,
}

/// How an episode's sidecar is configured (kept to boot it again after a trap).
struct Setup {
    config: Value,
    vms: usize,
    cold: bool,
    timeout_jwks: u64,
    timeout_pdp: u64,
}

impl Setup {
    fn boot(
        &self,
        rng: &mut ChaCha8Rng,
        pki: &Rc<Pki>,
        keys: &[Key],
        stranger: &Key,
        crowd: &Rc<Vec<Key>>,
        episode: u64,
    ) -> Sidecar {
        let jwks_rng = ChaCha8Rng::seed_from_u64(rng.random());
        let pdp_rng = ChaCha8Rng::seed_from_u64(rng.random());
        let config = self.config.clone();
        let mut builder = Sidecar::builder()
            .seed(episode)
            .pki(pki.clone())
            .key(keys[0].clone())
            .vms(self.vms)
            .config(move |c| *c = config)
            .jwks(jwks_responder(
                jwks_rng,
                keys.to_vec(),
                stranger.clone(),
                crowd.clone(),
                self.timeout_jwks,
            ))
            .pdp(pdp_responder(pdp_rng, self.timeout_pdp));
        if self.cold {
            builder = builder.cold();
        }
        builder.start()
    }
}

struct Episode {
    rng: ChaCha8Rng,
    sidecar: Sidecar,
    setup: Setup,
    pki: Rc<Pki>,
    keys: Vec<Key>,
    stranger: Key,
    /// Signs under a published kid without being published (never served by the JWKS).
    forger: Key,
    crowd: Rc<Vec<Key>>,
    skew: u64,
    shadow: bool,
    forward_token: bool,
    /// An edge listener: DPoP-bound tokens and proofs, no expectation about passing.
    dpop: bool,
    /// Proofs sent before (for replays).
    proofs: Vec<String>,
    /// Tokens built earlier (for cache hits and expiry): (token, cert index, exp, sound).
    pool: Vec<(String, usize, u64, bool)>,
    in_flight: Vec<Sent>,
    tally: Tally,
    episode: u64,
    /// What the request being built went through (for violation messages).
    trace: Vec<String>,
}

fn certs(pki: &Pki) -> [&Cert; 6] {
    [
        &pki.consumer,
        &pki.inventory,
        &pki.consumer_reissued,
        &pki.foreign,
        &pki.no_san,
        &pki.two_sans,
    ]
}

impl Episode {
    fn run(seed: u64, episode: u64, fx: &Fixtures) -> Tally {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ episode.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let pki = &fx.pki;
        let keys = fx.keys.clone();
        let stranger = fx.stranger.clone();
        let shadow = rng.random_bool(0.15);
        let forward_token = rng.random_bool(0.2);
        // Some episodes play the edge listener (RFC 9449 DPoP instead of mTLS).
        let dpop = rng.random_bool(0.15);
        let skew: u64 = *[0u64, 5, 30, 60].choose(&mut rng).unwrap_or(&30);
        let timeout_jwks: u64 = rng.random_range(100..3000);
        let timeout_pdp: u64 = rng.random_range(50..500);
        let refresh: u64 = rng.random_range(1..400);
        let mut config = base_config();
        {
            let c = &mut config;
            let max_stale: u64 = refresh * rng.random_range(1..4);
            let caches: [u64; 4] = [0, 1, 3, 1024];
            c["mode"] = json!(if shadow { "shadow" } else { "enforce" });
            c["forward_token"] = json!(forward_token);
            c["clock_skew_s"] = json!(skew);
            c["decision_cache_size"] = json!(*caches.choose(&mut rng).unwrap_or(&1024));
            c["token_cache_size"] = json!(*caches.choose(&mut rng).unwrap_or(&1024));
            c["jwks"]["timeout_ms"] = json!(timeout_jwks);
            c["jwks"]["first_fetch_wait_ms"] = json!(rng.random_range(100..6000u64));
            c["jwks"]["refresh_interval_s"] = json!(refresh);
            c["jwks"]["min_refetch_interval_s"] = json!(rng.random_range(1..60u64));
            c["jwks"]["max_stale_s"] = json!(max_stale);
            c["pdp"]["timeout_ms"] = json!(timeout_pdp);
            if dpop {
                c["binding"] = json!("dpop");
                c["dpop"] = json!({"public_origin": DPOP_ORIGIN,
                                   "max_age_s": rng.random_range(1..120u64),
                                   "replay_cache_size": *[1usize, 4, 16_384].choose(&mut rng).unwrap_or(&16)});
            }
        }
        let vms = rng.random_range(1..=3usize);
        let cold = rng.random_bool(0.3);
        let setup = Setup {
            config,
            vms,
            cold,
            timeout_jwks,
            timeout_pdp,
        };
        let sidecar = setup.boot(&mut rng, pki, &keys, &stranger, &fx.crowd, episode);
        let mut ep = Episode {
            rng,
            sidecar,
            setup,
            pki: pki.clone(),
            keys,
            stranger,
            forger: fx.forger.clone(),
            crowd: fx.crowd.clone(),
            skew,
            shadow,
            forward_token,
            dpop,
            proofs: Vec::new(),
            pool: Vec::new(),
            in_flight: Vec::new(),
            tally: Tally {
                episodes: 1,
                ..Tally::default()
            },
            episode,
            trace: Vec::new(),
        };
        ep.play();
        ep.tally.jwks_answers += ep.sidecar.jwks_fetches();
        ep.tally.pdp_answers += ep.sidecar.pdp_calls();
        ep.tally
    }

    /// After a trap the VMs are dead (as in Envoy): note it, then carry on with fresh VMs so
    /// one bug does not hide the next. Requests in flight are lost with the VM.
    fn restart(&mut self) {
        self.tally.jwks_answers += self.sidecar.jwks_fetches();
        self.tally.pdp_answers += self.sidecar.pdp_calls();
        self.check_logs();
        self.in_flight.clear();
        self.sidecar = self.setup.boot(
            &mut self.rng,
            &self.pki,
            &self.keys,
            &self.stranger,
            &self.crowd,
            self.episode,
        );
    }

    fn play(&mut self) {
        let mut sent = 0;
        while sent < REQUESTS_PER_EPISODE {
            match self.rng.random_range(0..100) {
                0..70 => {
                    self.send();
                    sent += 1;
                }
                70..85 => {
                    let ms = self.rng.random_range(0..800);
                    self.sidecar.advance(Duration::from_millis(ms));
                }
                85..90 => {
                    let s = self.rng.random_range(1..500);
                    self.sidecar.advance_s(s);
                }
                _ => self.abandon_one(),
            }
            if !self.judge_finished() {
                if !self.tally.violations.is_empty() {
                    return;
                }
                self.restart();
            }
        }
        // Every wait of the filter is bounded: after a while nothing may still be pending.
        self.sidecar.advance_s(20);
        if !self.judge_finished() {
            return;
        }
        for s in std::mem::take(&mut self.in_flight) {
            self.violation(format!(
                "request {} still paused 20 s after the last event",
                s.ex.request_id
            ));
        }
        self.check_logs();
    }

    fn violation(&mut self, msg: String) {
        self.tally.violations.push((self.episode, msg));
    }

    /// Judges every request whose outcome is final; false once the VM trapped.
    fn judge_finished(&mut self) -> bool {
        if let Some((vm, trap)) = self.sidecar.traps.first() {
            let logs: Vec<String> = self.sidecar.vms[*vm]
                .host()
                .logs
                .iter()
                .filter(|l| l.level >= 4)
                .map(|l| l.message.clone())
                .collect();
            let first_line = trap.0.lines().next().unwrap_or_default().to_owned();
            self.tally.traps.push((
                self.episode,
                format!("{first_line}; critical logs: {logs:?}"),
            ));
            return false;
        }
        let abi = self.sidecar.abi_errors();
        if !abi.is_empty() {
            self.violation(format!("ABI misuse: {abi:?}"));
            return false;
        }
        let mut still = Vec::new();
        for mut s in std::mem::take(&mut self.in_flight) {
            match self.sidecar.outcome(&s.ex) {
                Outcome::Paused => {
                    still.push(s);
                    continue;
                }
                Outcome::Replied(reply) => self.judge_reply(&s, &reply),
                Outcome::Forwarded(headers) => self.judge_forward(&s, &headers),
                Outcome::Reset => self.violation("the filter reset a stream".into()),
            }
            let early = self.sidecar.vms[s.ex.vm].host().streams[&s.ex.ctx].body_released_early;
            if early {
                self.violation(format!(
                    "{}: body released before the decision",
                    s.ex.request_id
                ));
            }
            self.sidecar.finish(&mut s.ex);
        }
        self.in_flight = still;
        true
    }

    fn judge_reply(&mut self, s: &Sent, reply: &super::host::LocalResponse) {
        self.tally.replied += 1;
        if self.shadow {
            self.violation(format!("shadow mode answered {}", reply.status));
        }
        match contract::check_reply(reply, Some(&s.ex.request_id)) {
            Ok(a) => {
                let key = match a.error.as_deref() {
                    Some("insufficient_scope") => "policy_denied/insufficient_scope".to_owned(),
                    _ => a.reason,
                };
                *self.tally.reasons.entry(key).or_default() += 1;
            }
            Err(e) => self.violation(format!("{}: {e}", s.ex.request_id)),
        }
    }

    fn judge_forward(&mut self, s: &Sent, headers: &super::host::HeaderMap) {
        self.tally.forwarded += 1;
        let identity = [
            "x-certbind-subject",
            "x-certbind-client-id",
            "x-certbind-scope",
            "x-certbind-jti",
        ];
        let stray: Vec<_> = headers
            .0
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .filter(|k| k.starts_with("x-certbind-") && !identity.contains(&k.as_str()))
            .collect();
        if !stray.is_empty() {
            self.violation(format!(
                "{}: caller headers went upstream: {stray:?}",
                s.ex.request_id
            ));
        }
        let verified = !headers.all("x-certbind-subject").is_empty();
        if !self.shadow || verified {
            if s.sound == Some(false) {
                self.violation(format!(
                    "{}: forwarded with identity although the test built it to fail [{}] (token {:?})",
                    s.ex.request_id,
                    s.trace,
                    s.token.as_deref().map(|t| format!("{} | {t}", describe(t)))
                ));
            }
            if let Some(exp) = s.exp
                && exp.saturating_add(self.skew) <= s.sent_s
            {
                self.violation(format!("{}: forwarded an expired token", s.ex.request_id));
            }
            for h in identity {
                if headers.all(h).len() != 1 {
                    self.violation(format!("{}: {h} is {:?}", s.ex.request_id, headers.all(h)));
                }
            }
            if headers.get_str("x-certbind-subject").as_deref() != Some(s.subject.as_str()) {
                self.violation(format!("{}: forwarded the wrong subject", s.ex.request_id));
            }
        }
        if !self.forward_token && headers.get(b"authorization").is_some() {
            self.violation(format!("{}: the token went upstream", s.ex.request_id));
        }
    }

    fn check_logs(&mut self) {
        let logs = self.sidecar.logs().join("\n");
        let leaked = self
            .pool
            .iter()
            .map(|(t, ..)| t)
            .filter(|t| t.len() > 40)
            .any(|t| logs.contains(t.as_str()));
        if leaked {
            self.violation("a token appeared in the logs".into());
        }
        if logs.contains("BEGIN CERTIFICATE") {
            self.violation("a certificate appeared in the logs".into());
        }
    }

    fn abandon_one(&mut self) {
        if self.in_flight.is_empty() {
            return;
        }
        let i = self.rng.random_range(0..self.in_flight.len());
        let mut s = self.in_flight.swap_remove(i);
        self.sidecar.finish(&mut s.ex);
        self.tally.abandoned += 1;
    }

    // --- building one request -------------------------------------------------------------

    fn send(&mut self) {
        if self.dpop {
            return self.send_dpop();
        }
        let all = certs(&self.pki);
        let conn = match self.rng.random_range(0..10) {
            0..5 => 0,
            5..7 => 1,
            7 => 2,
            _ => self.rng.random_range(3..6),
        };
        let cert = all[conn].clone();
        self.trace.push(format!("conn={conn}"));
        let mut properties = cert.properties();
        let facts = if self.rng.random_bool(0.15) {
            self.mutate_properties(&mut properties, &cert)
        } else {
            Some(true)
        };
        // A workload certificate proves its SPIFFE ID. The two-SAN one is judged by whichever
        // view of it the filter parsed first (its PEM: refused; Envoy's first URI SAN: passes)
        // and cached by digest, so the test expects nothing of it.
        let sound_conn = match conn {
            0..3 => facts,
            5 => None,
            _ => facts.map(|_| false),
        };
        let (authorization, token, sound_token, exp, subject) = self.authorization(conn);
        let n = self.tally.requests;
        let mut headers: Vec<(String, Vec<u8>)> = vec![
            (
                ":method".into(),
                self.pick(&["GET", "POST", "DELETE", "PUT", "get", ""])
                    .into(),
            ),
            (":path".into(), self.path().into_bytes()),
            (":authority".into(), b"orders".to_vec()),
            (":scheme".into(), b"https".to_vec()),
            ("x-request-id".into(), self.request_id(n).into_bytes()),
        ];
        if let Some(a) = authorization {
            headers.push(("authorization".into(), a));
        }
        for _ in 0..self.rng.random_range(0..4) {
            let (k, v) = self.extra_header();
            headers.push((k, v));
        }
        if self.rng.random_bool(0.05) {
            // A second Authorization header: Envoy passes both.
            headers.push(("authorization".into(), b"Bearer x.y.z".to_vec()));
        }
        let body = self
            .rng
            .random_bool(0.1)
            .then(|| vec![b'x'; self.rng.random_range(0..2048)]);
        let vm = self.rng.random_range(0..self.sidecar.vms.len());
        let sent_s = self.sidecar.now_s();
        let parts = Parts {
            headers,
            properties,
            token: token.clone(),
            body,
        };
        let ex = self.sidecar.start_request(vm, parts);
        self.tally.requests += 1;
        self.in_flight.push(Sent {
            ex,
            sound: sound_conn.map(|c| c && sound_token),
            trace: std::mem::take(&mut self.trace).join(" "),
            sent_s,
            exp,
            subject: subject.unwrap_or_default(),
            token,
        });
    }

    /// An edge-listener request: a DPoP-bound token and zero, one or two proofs, each maybe
    /// bent (method, URL, `ath`, age, key, replay). Answers are judged; passing is not expected.
    fn send_dpop(&mut self) {
        let client = self.keys[1].clone();
        let jkt = certbind_core::binding::ec_p256_jwk_thumbprint(&client.x, &client.y);
        let cert = self.pki.consumer.clone();
        let mut t = self.sidecar.token(&cert);
        if self.rng.random_bool(0.9) {
            t = t.claim("cnf", json!({"jkt": jkt}));
        }
        let now = self.sidecar.now_s();
        let mut signature_ok = true;
        for _ in 0..self.rng.random_range(0..2) {
            t = self.mutate_token(t, now, &mut signature_ok).0;
        }
        let token = if signature_ok {
            t.build()
        } else {
            t.build_with_bad_signature()
        };
        let path = self.path();
        let method = self.pick(&["GET", "POST"]);
        let mut headers: Vec<(String, Vec<u8>)> = vec![
            (":method".into(), method.into()),
            (":path".into(), path.clone().into_bytes()),
            (":authority".into(), b"127.0.0.1:8445".to_vec()),
            (
                "x-request-id".into(),
                self.request_id(self.tally.requests).into_bytes(),
            ),
        ];
        let scheme = if self.rng.random_bool(0.85) {
            "DPoP"
        } else {
            "Bearer"
        };
        headers.push((
            "authorization".into(),
            format!("{scheme} {token}").into_bytes(),
        ));
        let proofs = match self.rng.random_range(0..10) {
            0 => 0,
            1 => 2,
            _ => 1,
        };
        for _ in 0..proofs {
            let p = self.dpop_proof(&client, method, &path, &token, now);
            self.proofs.push(p.clone());
            if self.proofs.len() > 16 {
                self.proofs.remove(0);
            }
            headers.push(("dpop".into(), p.into_bytes()));
        }
        if self.rng.random_bool(0.1) {
            headers.push((
                "x-certbind-subject".into(),
                b"spiffe://certbind.test/ns/demo/sa/admin".to_vec(),
            ));
        }
        let properties = if self.rng.random_bool(0.7) {
            super::certs::no_client_cert_properties()
        } else {
            cert.properties()
        };
        let vm = self.rng.random_range(0..self.sidecar.vms.len());
        let sent_s = self.sidecar.now_s();
        let exp = t.claims["exp"].as_u64();
        let parts = Parts {
            headers,
            properties,
            token: Some(token.clone()),
            body: None,
        };
        let ex = self.sidecar.start_request(vm, parts);
        self.tally.requests += 1;
        self.pool.push((token.clone(), 0, exp.unwrap_or(0), false));
        if self.pool.len() > 32 {
            self.pool.remove(0);
        }
        self.in_flight.push(Sent {
            ex,
            sound: None,
            trace: std::mem::take(&mut self.trace).join(" "),
            sent_s,
            exp,
            // No certificate to compare: the identity is the verified token's `sub`.
            subject: token_sub(&token).unwrap_or_default(),
            token: Some(token),
        });
    }

    fn dpop_proof(&mut self, key: &Key, method: &str, path: &str, token: &str, now: u64) -> String {
        use sha2::{Digest, Sha256};
        if !self.proofs.is_empty() && self.rng.random_bool(0.1) {
            let i = self.rng.random_range(0..self.proofs.len());
            return self.proofs[i].clone();
        }
        if self.rng.random_bool(0.05) {
            return String::from_utf8_lossy(&self.random_bytes(0..120, true)).into_owned();
        }
        let mut signer = key.clone();
        let mut jwk = json!({"kty": "EC", "crv": "P-256", "x": key.x, "y": key.y});
        let mut claims = json!({
            "jti": format!("{}", self.rng.random::<u64>()),
            "htm": method,
            "htu": format!("{DPOP_ORIGIN}{}", path.split('?').next().unwrap_or_default()),
            "iat": now,
            "ath": b64(&Sha256::digest(token.as_bytes())),
        });
        let n = self.rng.random_range(0..16);
        self.trace.push(format!("proof{n}"));
        match n {
            0 => claims["htm"] = json!("DELETE"),
            1 => claims["htu"] = json!("https://evil.example/orders/1"),
            2 => claims["ath"] = json!(b64(b"other")),
            3 => claims["iat"] = json!(now.saturating_sub(self.rng.random_range(0..400))),
            4 => claims["iat"] = json!(now + self.rng.random_range(0..120)),
            5 => signer = self.forger.clone(),
            6 => jwk = json!({"kty": "EC", "crv": "P-256", "x": self.forger.x, "y": self.forger.y}),
            7 => {
                if let Some(o) = claims.as_object_mut() {
                    o.remove("ath");
                }
            }
            8 => jwk["d"] = json!("AAAA"),
            9 => claims["htu"] = json!(format!("{DPOP_ORIGIN}:443{path}")),
            _ => {}
        }
        let typ = if n == 10 { "JWT" } else { "dpop+jwt" };
        TokenBuilder {
            header: json!({"typ": typ, "alg": "ES256", "jwk": jwk}),
            claims,
            key: signer,
        }
        .build()
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from.choose(&mut self.rng).copied().unwrap_or_default()
    }

    fn request_id(&mut self, n: usize) -> String {
        match self.rng.random_range(0..20) {
            0 => String::new(),
            1 => "quote\"back\\slash".into(),
            2 => "x".repeat(300),
            3 => "ünïcödé-☃".into(),
            _ => format!("fz-{}-{n}", self.episode),
        }
    }

    fn path(&mut self) -> String {
        match self.rng.random_range(0..10) {
            0 => format!(
                "/orders/{}?q={}#f",
                self.rng.random_range(0..9),
                "a".repeat(50)
            ),
            1 => "/".into(),
            2 => format!("/{}", "seg/".repeat(self.rng.random_range(1..200))),
            3 => "/orders/%2e%2e/admin".into(),
            4 => String::new(),
            _ => format!("/orders/{}", self.rng.random_range(0..5)),
        }
    }

    fn extra_header(&mut self) -> (String, Vec<u8>) {
        match self.rng.random_range(0..10) {
            0 => (
                "x-certbind-subject".into(),
                b"spiffe://certbind.test/ns/demo/sa/admin".to_vec(),
            ),
            1 => ("X-CertBind-Scope".into(), b"orders:admin".to_vec()),
            2 => ("x-certbind-whatever".into(), b"1".to_vec()),
            // Envoy passes obs-text (0x80-0xff) in header values through to filters.
            3 if !ascii_headers() => ("user-agent".into(), vec![b'c', b'a', b'f', 0xe9]),
            4 => (
                "x-long".into(),
                vec![b'a'; self.rng.random_range(0..16_384)],
            ),
            5 => ("cookie".into(), b"a=b; c=d".to_vec()),
            _ => (
                format!("x-h{}", self.rng.random_range(0..100)),
                self.random_bytes(0..64, true),
            ),
        }
    }

    fn random_bytes(&mut self, len: std::ops::Range<usize>, printable: bool) -> Vec<u8> {
        let n = self.rng.random_range(len);
        (0..n)
            .map(|_| {
                if printable {
                    self.rng.random_range(0x20u8..0x7f)
                } else {
                    self.rng.random()
                }
            })
            .collect()
    }

    /// Bends the connection's properties: `Some(true)` if they still prove the certificate,
    /// `Some(false)` if they prove no certificate, `None` if they contradict each other in a
    /// way Envoy never reports (the filter may trust the digest it already parsed).
    fn mutate_properties(
        &mut self,
        p: &mut BTreeMap<String, Vec<u8>>,
        cert: &Cert,
    ) -> Option<bool> {
        let other = if cert.name == "inventory" {
            &self.pki.consumer
        } else {
            &self.pki.inventory
        };
        let n = self.rng.random_range(0..10);
        self.trace.push(format!("prop{n}"));
        match n {
            0 => {
                p.insert("connection.mtls".into(), vec![0]);
                Some(false)
            }
            1 => {
                let v = self.random_bytes(0..3, false);
                let sound = v == [1];
                p.insert("connection.mtls".into(), v);
                Some(sound)
            }
            2 => {
                p.insert(
                    "connection.sha256_peer_certificate_digest".into(),
                    other.hex_digest().into_bytes(),
                );
                None
            }
            3 => {
                p.insert(
                    "connection.sha256_peer_certificate_digest".into(),
                    cert.hex_digest().to_uppercase().into_bytes(),
                );
                Some(true)
            }
            4 => {
                p.insert(
                    "connection.peer_certificate".into(),
                    other.pem.clone().into_bytes(),
                );
                None
            }
            5 => {
                let mut pem = cert.pem.clone().into_bytes();
                let cut = self.rng.random_range(0..pem.len());
                pem.truncate(cut);
                p.insert("connection.peer_certificate".into(), pem);
                None
            }
            6 => {
                // No PEM, the first URI SAN only: the validity window is unknown, so the
                // filter refuses (certificate_expired), unless it parsed this digest's PEM
                // on an earlier connection and remembers the window.
                p.remove("connection.peer_certificate");
                None
            }
            7 => {
                p.remove("connection.peer_certificate");
                p.insert(
                    "connection.uri_san_peer_certificate".into(),
                    self.random_bytes(0..80, true),
                );
                None
            }
            8 => {
                p.remove("connection.sha256_peer_certificate_digest");
                Some(false)
            }
            _ => {
                p.clear();
                Some(false)
            }
        }
    }

    /// The Authorization header: (value, token inside, sound, exp, sub).
    #[allow(clippy::type_complexity)]
    fn authorization(
        &mut self,
        conn: usize,
    ) -> (
        Option<Vec<u8>>,
        Option<String>,
        bool,
        Option<u64>,
        Option<String>,
    ) {
        let all = certs(&self.pki);
        let n = self.rng.random_range(0..100);
        self.trace.push(format!("auth{n}"));
        match n {
            0..5 => (None, None, false, None, None),
            5..10 => {
                let v = self.pick(&["Basic Zm9vOmJhcg==", "Bearer", "Bearer ", "DPoP a.b.c", ""]);
                (Some(v.as_bytes().to_vec()), None, false, None, None)
            }
            10..15 => {
                let printable = self.rng.random_bool(0.8) || ascii_headers();
                let junk = self.random_bytes(0..200, printable);
                let mut v = b"Bearer ".to_vec();
                v.extend_from_slice(&junk);
                (Some(v), None, false, None, None)
            }
            15..25 if !self.pool.is_empty() => {
                let i = self.rng.random_range(0..self.pool.len());
                let (t, bound_to, exp, sound) = self.pool[i].clone();
                self.trace
                    .push(format!("pool bound_to={bound_to} sound={sound}"));
                let sub = all[bound_to].spiffe_id();
                let sound = sound && bound_to == conn;
                (
                    Some(format!("Bearer {t}").into_bytes()),
                    Some(t),
                    sound,
                    Some(exp),
                    Some(sub),
                )
            }
            _ => {
                let bound_to = if self.rng.random_bool(0.85) {
                    conn
                } else {
                    self.rng.random_range(0..6)
                };
                let cert = all[bound_to].clone();
                let (token, sound, exp) = self.token_for(&cert);
                let mut sound = sound;
                let token = if self.rng.random_bool(0.1) {
                    self.trace.push("text".into());
                    let edited = self.mutate_text(&token);
                    // Edits can cancel out (a duplicated tail cut off again).
                    sound &= edited == token;
                    edited
                } else {
                    token
                };
                let token_sound = sound;
                sound &= bound_to == conn;
                self.pool.push((token.clone(), bound_to, exp, token_sound));
                if self.pool.len() > 32 {
                    self.pool.remove(0);
                }
                let f = self.rng.random_range(0..12);
                self.trace.push(format!("bound_to={bound_to} format{f}"));
                let (value, format_ok) = match f {
                    0 => (format!("bearer {token}"), true),
                    1 => (format!("Bearer   {token}  "), true),
                    2 => (format!("Bearer\t{token}"), true),
                    3 => (format!("Bearer {token} extra"), false),
                    4 => (format!("Bearer{token}"), false),
                    _ => (format!("Bearer {token}"), true),
                };
                let sub = token_sub(&token).unwrap_or_default();
                (
                    Some(value.into_bytes()),
                    Some(token),
                    sound && format_ok,
                    Some(exp),
                    Some(sub),
                )
            }
        }
    }

    /// A token for `cert` with random neutral or breaking changes: (token, sound, exp).
    fn token_for(&mut self, cert: &Cert) -> (String, bool, u64) {
        let now = self.sidecar.now_s();
        let key = if self.rng.random_bool(0.8) {
            self.keys[0].clone()
        } else {
            self.keys[1].clone()
        };
        let mut t: TokenBuilder = self
            .sidecar
            .token(cert)
            .signed_by(&key)
            .header("kid", json!(key.kid));
        let mut signature_ok = true;
        for _ in 0..self.rng.random_range(0..3) {
            t = self.mutate_token(t, now, &mut signature_ok).0;
        }
        // Judged on the final token, so a later edit that undoes an earlier one counts right.
        let sound = signature_ok && self.token_sound(&t, cert, now);
        let exp = t.claims["exp"].as_u64().unwrap_or(0);
        let token = if signature_ok {
            t.build()
        } else {
            t.build_with_bad_signature()
        };
        (token, sound, exp)
    }

    /// Whether the test expects this token (for `cert`) to pass every check of CONTRACT §4.
    fn token_sound(&self, t: &TokenBuilder, cert: &Cert, now: u64) -> bool {
        let (h, c) = (&t.header, &t.claims);
        // Either key may pass: the second one is published by some JWKS answers.
        let key_ok = self.keys.iter().any(|k| k.kid == t.key.kid) && h["kid"] == json!(t.key.kid);
        let header_ok = h["alg"] == json!("ES256")
            && h["typ"] == json!("at+jwt")
            && h.get("crit").is_none()
            && key_ok;
        let aud_ok = match &c["aud"] {
            Value::String(a) => *a == audience(),
            Value::Array(list) => list.contains(&json!(audience())),
            _ => false,
        };
        let exp_ok = c["exp"]
            .as_u64()
            .is_some_and(|exp| exp.saturating_add(self.skew) > now);
        // `max_token_lifetime_s` (600 by default): neither `exp - iat` nor `exp - now`
        // (beyond the skew) may exceed it.
        let lifetime_ok = match (c["exp"].as_u64(), c["iat"].as_u64()) {
            (Some(exp), Some(iat)) => {
                exp.saturating_sub(iat) <= 600 && exp.saturating_sub(now) <= 600 + self.skew
            }
            _ => false,
        };
        let nbf_ok = match c.get("nbf") {
            None => true,
            Some(v) => v.as_u64().is_some_and(|nbf| nbf <= now + self.skew),
        };
        let claims_ok = c["iss"] == json!(ISSUER)
            && aud_ok
            && c["sub"] == json!(cert.spiffe_id())
            && c["client_id"].is_string()
            && c["jti"].is_string()
            && c["iat"].is_u64()
            && exp_ok
            && lifetime_ok
            && nbf_ok
            && c["cnf"] == json!({"x5t#S256": cert.cnf()});
        header_ok && claims_ok
    }

    fn mutate_token(
        &mut self,
        t: TokenBuilder,
        now: u64,
        signature_ok: &mut bool,
    ) -> (TokenBuilder, bool) {
        let skew = self.skew;
        let n = self.rng.random_range(0..26);
        self.trace.push(format!("tok{n}"));
        match n {
            // neutral
            0 => (
                t.scope(self.pick(&["", "orders:write", "a b c", "orders:read billing:read"])),
                true,
            ),
            1 => (t.claim("ext", json!({"n": [1, 2, {"x": null}]})), true),
            2 => (t.jti(&format!("{}", self.rng.random::<u64>())), true),
            3 => (
                t.claim("exp", json!(now + self.rng.random_range(1..300))),
                true,
            ),
            4 => (
                t.claim("iat", json!(now - self.rng.random_range(0..300))),
                true,
            ),
            // breaking
            5 => {
                let alg = self.pick(&["HS256", "none", "ES384", "RS256", ""]);
                (t.header("alg", json!(alg)), false)
            }
            6 => {
                let typ = [json!("JWT"), json!(null), json!(1), json!("AT+JWT2")];
                let typ = typ.choose(&mut self.rng).cloned().unwrap_or_default();
                (t.header("typ", typ), false)
            }
            7 => {
                let kid = self.stranger.kid.clone();
                (
                    t.header("kid", json!(kid))
                        .signed_by(&self.stranger.clone()),
                    false,
                )
            }
            8 => (t.header("kid", json!(self.rng.random::<u32>())), false),
            9 => {
                *signature_ok = false;
                (t, false)
            }
            10 => (t.signed_by(&self.forger.clone()), false),
            11 => (t.claim("iss", json!("https://evil.example")), false),
            12 => {
                let aud = [
                    json!("spiffe://certbind.test/ns/demo/sa/billing"),
                    json!([]),
                    json!(7),
                ];
                let aud = aud.choose(&mut self.rng).cloned().unwrap_or_default();
                (t.claim("aud", aud), false)
            }
            13 => (
                t.claim(
                    "exp",
                    json!(now.saturating_sub(skew + 1 + self.rng.random_range(0..5000))),
                ),
                false,
            ),
            14 => (t.claim("exp", json!("tomorrow")), false),
            15 => (
                t.claim(
                    "nbf",
                    json!(now + skew + 2 + self.rng.random_range(0..5000)),
                ),
                false,
            ),
            16 => (
                t.claim("sub", json!("spiffe://certbind.test/ns/demo/sa/admin")),
                false,
            ),
            17 => (t.without_claim("cnf"), false),
            18 => {
                let cnf = json!({"x5t#S256": b64(&self.rng.random::<[u8; 32]>())});
                (t.claim("cnf", cnf), false)
            }
            19 => (t.claim("cnf", json!({"jkt": b64(b"k")})), false),
            20 => {
                let claim = self.pick(&["iss", "sub", "aud", "exp", "iat", "jti", "client_id"]);
                (t.without_claim(claim), false)
            }
            21 => (t.header("crit", json!(["exp"])), false),
            22 => (t.claim("cnf", json!("x")), false),
            // Far future: longer than `max_token_lifetime_s`, refused as `expired`.
            23 => (t.claim("exp", json!(u64::MAX)), false),
            24 => (t.claim("exp", json!(-1)), false),
            _ => (t.claim("exp", json!(1.5)), false),
        }
    }

    /// A few random edits of `text` (flip, insert, delete, duplicate a segment).
    fn mutate_text(&mut self, text: &str) -> String {
        let mut b = text.as_bytes().to_vec();
        for _ in 0..self.rng.random_range(1..4) {
            if b.is_empty() {
                break;
            }
            let i = self.rng.random_range(0..b.len());
            match self.rng.random_range(0..5) {
                0 => b[i] = self.rng.random_range(0x21u8..0x7f),
                1 => b.insert(i, *b".-_=+/A".choose(&mut self.rng).unwrap_or(&b'A')),
                2 => {
                    b.remove(i);
                }
                3 => {
                    let tail = b[i..].to_vec();
                    b.extend_from_slice(&tail);
                }
                _ => b.truncate(i),
            }
        }
        String::from_utf8_lossy(&b).into_owned()
    }
}

/// The decoded header and claims of a compact JWS, for a violation message.
fn describe(token: &str) -> String {
    use base64::Engine as _;
    token
        .split('.')
        .take(2)
        .map(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|_| format!("<{p}>"))
        })
        .collect::<Vec<_>>()
        .join(" . ")
}

/// The `sub` claim of a compact JWS (unverified), for the forwarded-identity oracle.
fn token_sub(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v["sub"].as_str().map(str::to_owned)
}

/// The authz-server as a random upstream: mostly good answers, sometimes garbage, failures,
/// silence, other statuses, or answers late enough to reorder callbacks.
fn jwks_responder(
    mut rng: ChaCha8Rng,
    keys: Vec<Key>,
    stranger: Key,
    crowd: Rc<Vec<Key>>,
    timeout: u64,
) -> impl FnMut(&Dispatched) -> Answer {
    move |_| {
        let good = jwks(&[&keys[0]]);
        let body: Vec<u8> = match rng.random_range(0..100) {
            0..55 => good.into_bytes(),
            55..65 => jwks(&[&keys[0], &keys[1]]).into_bytes(),
            65..68 => jwks(&[&keys[1]]).into_bytes(),
            68..70 => jwks(&crowd.iter().collect::<Vec<_>>()).into_bytes(),
            70..75 => mutate_bytes(&mut rng, good.as_bytes()),
            75..78 => {
                let mut k = stranger.jwk();
                k["kid"] = json!(keys[0].kid);
                json!({"keys": [k]}).to_string().into_bytes()
            }
            78..80 => {
                let mut k = keys[0].jwk();
                k["d"] = json!("AAAA");
                json!({"keys": [k]}).to_string().into_bytes()
            }
            80..85 => (0..rng.random_range(0..300))
                .map(|_| rng.random())
                .collect(),
            85..90 => return Answer::fail().after(rng.random_range(0..timeout * 2)),
            90..94 => return Answer::Silent,
            _ => {
                let status = *[404u32, 500, 503, 302].choose(&mut rng).unwrap_or(&500);
                return Answer::raw(status, good.as_bytes());
            }
        };
        let after = if rng.random_bool(0.7) {
            0
        } else {
            rng.random_range(0..timeout * 3 / 2)
        };
        Answer::raw(200, &body).after(after)
    }
}

/// The PDP as a random upstream.
fn pdp_responder(mut rng: ChaCha8Rng, timeout: u64) -> impl FnMut(&Dispatched) -> Answer {
    move |_| {
        let ttl = json!(*[0u64, 1, 5, 60, 3600].choose(&mut rng).unwrap_or(&60));
        let body: Vec<u8> = match rng.random_range(0..100) {
            0..55 => json!({"allow": true, "policy_id": "p", "reason": "matched", "ttl_s": ttl}),
            55..65 => json!({"allow": false, "policy_id": "p", "reason": "no_rule", "ttl_s": 0}),
            65..72 => {
                json!({"allow": false, "policy_id": "p", "reason": "missing_scope", "ttl_s": 0})
            }
            72..75 => json!({"allow": true, "policy_id": "p", "reason": "m", "ttl_s": -5}),
            75..78 => json!({"allow": "true", "policy_id": "p", "reason": "m", "ttl_s": 1}),
            78..83 => {
                let good = json!({"allow": true, "policy_id": "p", "reason": "m", "ttl_s": 60});
                return Answer::raw(200, &mutate_bytes(&mut rng, good.to_string().as_bytes()));
            }
            83..87 => {
                return Answer::raw(
                    200,
                    &(0..rng.random_range(0..100))
                        .map(|_| rng.random())
                        .collect::<Vec<u8>>(),
                );
            }
            87..91 => return Answer::fail().after(rng.random_range(0..timeout * 2)),
            91..94 => return Answer::Silent,
            _ => {
                return decision(true, "matched", 60)
                    .after(timeout + rng.random_range(1..500))
                    .with_status(500);
            }
        }
        .to_string()
        .into_bytes();
        let after = if rng.random_bool(0.7) {
            0
        } else {
            rng.random_range(0..timeout * 3 / 2)
        };
        Answer::raw(200, &body).after(after)
    }
}

fn mutate_bytes(rng: &mut ChaCha8Rng, input: &[u8]) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..rng.random_range(1..5) {
        if b.is_empty() {
            break;
        }
        let i = rng.random_range(0..b.len());
        match rng.random_range(0..4) {
            0 => b[i] = rng.random(),
            1 => {
                b.remove(i);
            }
            2 => b.insert(i, *b"{}[]\",:0\\".choose(rng).unwrap_or(&b'0')),
            _ => b.truncate(i),
        }
    }
    b
}
