//! The JWKS lifecycle: the first fetch (requests wait, then pass or get 503), failures and
//! garbage that never replace a good set, the unknown-`kid` refetch and its rate limit,
//! staleness, late answers, and one fetch shared by several worker VMs.

use super::scenario::*;
use super::tokens::{Key, jwks};
use serde_json::json;
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The JWKS the sidecar's active key is published in.
fn good_jwks(sidecar: &Sidecar) -> String {
    jwks(&[&sidecar.key])
}

#[test]
fn fetches_the_jwks_as_the_readme_says() {
    let sidecar = Sidecar::new();
    let fetches = sidecar.calls_for(Endpoint::Jwks);
    assert_eq!(fetches.len(), 1);
    let f = fetches[0];
    assert_eq!(f.header(":method").as_deref(), Some("GET"));
    assert_eq!(f.header(":path").as_deref(), Some("/.well-known/jwks.json"));
    assert_eq!(f.header(":authority").as_deref(), Some("127.0.0.1:9443"));
    assert_eq!(f.header("accept").as_deref(), Some("application/json"));
    assert_eq!(sidecar.counter("certbind.jwks.fetch_ok"), 1);
}

#[test]
fn requests_wait_for_the_first_jwks_then_resume_with_one_fetch() {
    let mut sidecar = Sidecar::builder().cold().jwks(|_| Answer::Silent).start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    let mut waiting: Vec<_> = (0..3)
        .map(|_| sidecar.request(&pki.consumer, &token).send())
        .collect();
    for ex in &mut waiting {
        sidecar.verdict(ex).stays_paused();
    }
    assert_eq!(
        sidecar.pending_calls(Endpoint::Jwks),
        1,
        "one fetch for all"
    );
    let body = good_jwks(&sidecar);
    sidecar.advance(ms(300));
    sidecar.answer_pending(Endpoint::Jwks, Answer::json(200, body));
    sidecar.advance(ms(200));
    for ex in &mut waiting {
        sidecar.verdict(ex).admitted();
    }
    assert_eq!(sidecar.jwks_fetches(), 1);
}

#[test]
fn answers_jwks_unavailable_when_every_first_fetch_fails_for_the_whole_wait() {
    let mut sidecar = Sidecar::builder().cold().jwks(|_| Answer::fail()).start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    let mut ex = sidecar.request(&pki.consumer, &token).send();
    sidecar.advance(ms(4_800));
    sidecar.verdict(&mut ex).stays_paused();
    sidecar.advance(ms(300));
    sidecar.verdict(&mut ex).answers(503, "jwks_unavailable");
    assert!(sidecar.counter("certbind.jwks.fetch_failed") >= 2);
    assert!(
        sidecar.jwks_fetches() <= 5,
        "failed fetches back off: {}",
        sidecar.jwks_fetches()
    );
}

#[test]
fn answers_jwks_unavailable_when_the_first_fetch_times_out() {
    let mut sidecar = Sidecar::builder().cold().jwks(|_| Answer::Silent).start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    let mut ex = sidecar.request(&pki.consumer, &token).send();
    sidecar.advance(ms(5_100));
    sidecar.verdict(&mut ex).answers(503, "jwks_unavailable");
    assert!(sidecar.counter("certbind.jwks.fetch_failed") >= 1);
}

/// Bodies no JWKS endpoint should serve; none of them may become the key set.
fn garbage_bodies(good: &Key) -> Vec<(&'static str, Vec<u8>)> {
    let mut with_private = good.jwk();
    with_private["d"] = json!("AAAA");
    let mut rsa = good.jwk();
    rsa["kty"] = json!("RSA");
    vec![
        ("not JSON", b"<html>502</html>".to_vec()),
        ("no keys array", br#"{"keys":"k"}"#.to_vec()),
        ("empty set", br#"{"keys":[]}"#.to_vec()),
        (
            "private key",
            json!({"keys": [with_private]}).to_string().into_bytes(),
        ),
        ("no EC key", json!({"keys": [rsa]}).to_string().into_bytes()),
        (
            "duplicate kid",
            json!({"keys": [good.jwk(), good.jwk()]})
                .to_string()
                .into_bytes(),
        ),
        ("oversized", {
            let mut b = br#"{"keys":[],"pad":""#.to_vec();
            b.extend(std::iter::repeat_n(b'x', 70_000));
            b.extend_from_slice(b"\"}");
            b
        }),
        ("invalid UTF-8", b"{\"keys\":[\"\xff\"]}".to_vec()),
    ]
}

#[test]
fn a_garbage_first_jwks_is_never_used_and_requests_get_503() {
    let key = Key::from_seed(7);
    for (what, body) in garbage_bodies(&key) {
        let mut sidecar = Sidecar::builder()
            .cold()
            .key(key.clone())
            .config(|c| c["jwks"]["first_fetch_wait_ms"] = json!(500))
            .jwks(move |_| Answer::raw(200, &body))
            .start();
        let pki = sidecar.pki.clone();
        let token = sidecar.token(&pki.consumer).build();
        let mut ex = sidecar.request(&pki.consumer, &token).send();
        sidecar.advance(ms(600));
        assert!(
            sidecar.counter("certbind.jwks.fetch_failed") >= 1,
            "{what} counted as a good fetch"
        );
        sidecar.verdict(&mut ex).answers(503, "jwks_unavailable");
    }
}

#[test]
fn a_failed_or_garbage_refresh_keeps_the_last_good_set() {
    let key = Key::from_seed(8);
    let mut bodies = garbage_bodies(&key);
    bodies.push(("HTTP 503", Vec::new()));
    for (what, body) in bodies {
        let mut sidecar = Sidecar::builder().key(key.clone()).start();
        let pki = sidecar.pki.clone();
        let status = if what == "HTTP 503" { 503 } else { 200 };
        sidecar.set_jwks(move |_| Answer::raw(status, &body));
        sidecar.advance_s(301);
        assert!(sidecar.jwks_fetches() >= 2, "{what}: the refresh happened");
        assert!(sidecar.counter("certbind.jwks.fetch_failed") >= 1, "{what}");
        assert_eq!(sidecar.counter("certbind.jwks.fetch_ok"), 1, "{what}");
        let token = sidecar.token(&pki.consumer).build();
        sidecar.request(&pki.consumer, &token).admitted();
    }
}

#[test]
fn a_jwks_with_too_many_keys_is_refused_whole() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let many: Vec<Key> = (0..17).map(|i| Key::from_seed(1000 + i)).collect();
    let mut listed: Vec<&Key> = many.iter().collect();
    listed.push(&sidecar.key);
    let body = jwks(&listed);
    sidecar.set_jwks(move |_| Answer::json(200, body.clone()));
    sidecar.advance_s(301);
    assert!(sidecar.counter("certbind.jwks.fetch_failed") >= 1);
    assert_eq!(sidecar.counter("certbind.jwks.fetch_ok"), 1);
    // The new keys never arrived; the old set still serves.
    let token = sidecar.token(&pki.consumer).signed_by(&many[0]);
    let token = token.clone().header("kid", json!(many[0].kid)).build();
    sidecar
        .request(&pki.consumer, &token)
        .answers(401, "unknown_kid");
    let token = sidecar.token(&pki.consumer).build();
    sidecar.request(&pki.consumer, &token).admitted();
}

#[test]
fn a_jwks_of_sixteen_keys_is_accepted() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let many: Vec<Key> = (0..15).map(|i| Key::from_seed(2000 + i)).collect();
    let mut listed: Vec<&Key> = many.iter().collect();
    listed.push(&sidecar.key);
    let body = jwks(&listed);
    sidecar.set_jwks(move |_| Answer::json(200, body.clone()));
    sidecar.advance_s(301);
    assert_eq!(sidecar.counter("certbind.jwks.fetch_failed"), 0);
    let token = sidecar.token(&pki.consumer).signed_by(&many[3]);
    let token = token.clone().header("kid", json!(many[3].kid)).build();
    sidecar.request(&pki.consumer, &token).admitted();
}

/// A token signed by `key`, naming its kid.
fn token_by(sidecar: &mut Sidecar, cert: &super::certs::Cert, key: &Key) -> String {
    sidecar
        .token(cert)
        .signed_by(key)
        .header("kid", json!(key.kid))
        .build()
}

#[test]
fn an_unknown_kid_causes_exactly_one_refetch_within_the_rate_limit_window() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let stranger = Key::from_seed(99);
    let fetches_at_start = sidecar.jwks_fetches();
    sidecar.set_jwks(|_| Answer::Silent);
    // Five concurrent requests name the unknown kid: one refetch, all wait for it.
    let mut waiting: Vec<_> = (0..5)
        .map(|_| {
            let t = token_by(&mut sidecar, &pki.consumer, &stranger);
            sidecar.request(&pki.consumer, &t).send()
        })
        .collect();
    assert_eq!(sidecar.jwks_fetches(), fetches_at_start + 1);
    let body = good_jwks(&sidecar);
    sidecar.answer_pending(Endpoint::Jwks, Answer::json(200, body));
    sidecar.advance(ms(200));
    for ex in &mut waiting {
        sidecar.verdict(ex).answers(401, "unknown_kid");
    }
    // More requests inside the 30 s window: refused at once, no refetch.
    for _ in 0..20 {
        let t = token_by(&mut sidecar, &pki.consumer, &stranger);
        sidecar
            .request(&pki.consumer, &t)
            .answers(401, "unknown_kid");
        sidecar.advance(ms(1_000));
    }
    assert_eq!(sidecar.jwks_fetches(), fetches_at_start + 1);
    // After the window, the next unknown kid may refetch once more.
    sidecar.set_jwks({
        let body = good_jwks(&sidecar);
        move |_| Answer::json(200, body.clone())
    });
    sidecar.advance_s(11);
    let t = token_by(&mut sidecar, &pki.consumer, &stranger);
    sidecar
        .request(&pki.consumer, &t)
        .answers(401, "unknown_kid");
    assert_eq!(sidecar.jwks_fetches(), fetches_at_start + 2);
}

#[test]
fn a_rotated_signing_key_is_learned_by_the_unknown_kid_refetch() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let next = Key::from_seed(4242);
    sidecar.published.borrow_mut().push(next.clone());
    let token = token_by(&mut sidecar, &pki.consumer, &next);
    sidecar.request(&pki.consumer, &token).admitted();
    assert_eq!(sidecar.jwks_fetches(), 2);
    let old = sidecar.token(&pki.consumer).build();
    sidecar.request(&pki.consumer, &old).admitted();
}

#[test]
fn refreshes_the_jwks_every_refresh_interval() {
    let mut sidecar = Sidecar::new();
    sidecar.advance_s(299);
    assert_eq!(sidecar.jwks_fetches(), 1);
    sidecar.advance_s(2);
    assert_eq!(sidecar.jwks_fetches(), 2);
    sidecar.advance_s(300);
    assert_eq!(sidecar.jwks_fetches(), 3);
}

#[test]
fn a_jwks_older_than_max_stale_is_not_trusted() {
    let mut sidecar = Sidecar::builder()
        .config(|c| {
            c["jwks"]["refresh_interval_s"] = json!(300);
            c["jwks"]["max_stale_s"] = json!(600);
        })
        .start();
    let pki = sidecar.pki.clone();
    sidecar.set_jwks(|_| Answer::fail());
    sidecar.advance_s(590);
    let token = sidecar.token(&pki.consumer).build();
    sidecar.request(&pki.consumer, &token).admitted();
    sidecar.advance_s(20);
    let token = sidecar.token(&pki.consumer).build();
    sidecar
        .request(&pki.consumer, &token)
        .answers(503, "jwks_unavailable");
    // The endpoint recovers: within the capped backoff the set is fresh again.
    sidecar.set_jwks({
        let body = good_jwks(&sidecar);
        move |_| Answer::json(200, body.clone())
    });
    sidecar.advance_s(31);
    let token = sidecar.token(&pki.consumer).build();
    sidecar.request(&pki.consumer, &token).admitted();
}

#[test]
fn a_late_jwks_answer_after_the_waiting_request_finished_is_harmless() {
    let mut sidecar = Sidecar::builder()
        .cold()
        .config(|c| {
            c["jwks"]["first_fetch_wait_ms"] = json!(1000);
            c["jwks"]["timeout_ms"] = json!(4000);
        })
        .start();
    let body = good_jwks(&sidecar);
    sidecar.set_jwks(move |_| Answer::json(200, body.clone()).after(2500));
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    let mut ex = sidecar.request(&pki.consumer, &token).send();
    sidecar.advance(ms(1_100));
    sidecar.verdict(&mut ex).answers(503, "jwks_unavailable");
    // The first answer (for the finished request) and any later one arrive now.
    sidecar.advance(ms(5_000));
    sidecar.assert_healthy();
    let token = sidecar.token(&pki.consumer).build();
    sidecar.request(&pki.consumer, &token).admitted();
}

#[test]
fn a_late_pdp_answer_after_the_client_went_away_is_ignored() {
    let mut sidecar = Sidecar::builder()
        .pdp(|_| decision(true, "matched", 60).after(100))
        .start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    let mut ex = sidecar.request(&pki.consumer, &token).send();
    sidecar.verdict(&mut ex).stays_paused();
    sidecar.finish(&mut ex);
    sidecar.advance(ms(150));
    sidecar.assert_healthy();
    assert_eq!(sidecar.tallied("certbind.allowed"), 0);
    sidecar.set_pdp(|_| decision(true, "matched", 60));
    sidecar.request(&pki.consumer, &token).admitted();
}

#[test]
fn two_worker_vms_share_one_fetched_jwks() {
    let mut sidecar = Sidecar::builder().vms(2).start();
    let pki = sidecar.pki.clone();
    assert_eq!(sidecar.jwks_fetches(), 1, "one fetch for both VMs");
    assert!(
        sidecar
            .shared
            .data
            .contains_key("certbind.jwks.v1:certbind_authz/.well-known/jwks.json"),
        "{:?}",
        sidecar.shared.data.keys().collect::<Vec<_>>()
    );
    for vm in [0, 1] {
        let token = sidecar.token(&pki.consumer).build();
        sidecar.request(&pki.consumer, &token).on_vm(vm).admitted();
    }
    sidecar.advance_s(301);
    assert_eq!(sidecar.jwks_fetches(), 2, "one refresh for both VMs");
}

#[test]
fn two_worker_vms_share_the_unknown_kid_rate_limit_and_the_learned_key() {
    let mut sidecar = Sidecar::builder().vms(2).start();
    let pki = sidecar.pki.clone();
    let next = Key::from_seed(777);
    sidecar.published.borrow_mut().push(next.clone());
    let token = token_by(&mut sidecar, &pki.consumer, &next);
    sidecar.request(&pki.consumer, &token).on_vm(0).admitted();
    assert_eq!(sidecar.jwks_fetches(), 2);
    // VM 1 never fetched, yet knows the new key from the shared copy.
    let token = token_by(&mut sidecar, &pki.consumer, &next);
    sidecar.request(&pki.consumer, &token).on_vm(1).admitted();
    let stranger = Key::from_seed(778);
    let token = token_by(&mut sidecar, &pki.consumer, &stranger);
    sidecar
        .request(&pki.consumer, &token)
        .on_vm(1)
        .answers(401, "unknown_kid");
    assert_eq!(
        sidecar.jwks_fetches(),
        2,
        "the window is shared by both VMs"
    );
}

#[test]
fn losing_every_shared_data_race_still_ends_each_request() {
    let mut sidecar = Sidecar::builder()
        .cold()
        .vms(2)
        .jwks(|_| Answer::Silent)
        .start();
    sidecar.shared.cas_always_fails = true;
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    let mut waiting: Vec<_> = (0..4)
        .map(|i| sidecar.request(&pki.consumer, &token).on_vm(i % 2).send())
        .collect();
    sidecar.advance(ms(6_000));
    for ex in &mut waiting {
        let outcome = sidecar.outcome(ex);
        assert!(
            !matches!(outcome, Outcome::Paused),
            "a request still waits: {outcome:?}"
        );
        sidecar.finish(ex);
    }
    sidecar.assert_healthy();
}
