//! Flow tests with a revocation feed: revoked tokens, subjects and certificates, the first
//! snapshot wait, a stale feed failing closed or (fail_open) open.

use super::*;

fn revoking(max_staleness_s: u64, fail_open: bool) -> World {
    world_with(|c| {
        c["revocation"] = serde_json::json!({
            "max_staleness_s": max_staleness_s, "fail_open": fail_open,
            "first_sync_wait_ms": 1000
        })
    })
}

fn feed(w: &mut World, body: &str, now_ms: u64) {
    w.engine
        .revocations_mut()
        .unwrap()
        .install(body.as_bytes(), now_ms)
        .unwrap();
}

fn empty_snapshot(w: &mut World, now_ms: u64) {
    feed(w, r#"{"seq":1,"snapshot":true,"revocations":[]}"#, now_ms);
}

fn revoke_jti(w: &mut World, jti: &str, now_ms: u64) {
    let body = format!(
        r#"{{"seq":2,"snapshot":false,"revocations":[{{"seq":2,"kind":"jti","value":"{jti}","expires_at":null}}]}}"#
    );
    feed(w, &body, now_ms);
}

#[test]
fn refuses_a_revoked_token_even_with_its_token_and_decision_cached() {
    let mut w = revoking(30, false);
    empty_snapshot(&mut w, NOW_MS);
    full_allow(&mut w, NOW_MS);
    revoke_jti(&mut w, "j-1", NOW_MS);
    let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
    let (flow, step) = Flow::start(&mut w.engine, f, NOW_MS);
    assert!(flow.token_cache_hit());
    let Step::Deny(d) = step else {
        panic!("{step:?}")
    };
    assert_eq!((d.reason, d.status), (Reason::Revoked, 401));
    assert_eq!(flow.revoked(), Some(Kind::Jti));
}

#[test]
fn refuses_a_revoked_subject_and_admits_another_subject() {
    let mut w = revoking(30, false);
    let body = format!(
        r#"{{"seq":1,"snapshot":true,"revocations":[{{"seq":1,"kind":"subject","value":"{INVENTORY}","not_before_iat":{NOW},"expires_at":null}}]}}"#
    );
    feed(&mut w, &body, NOW_MS);
    full_allow(&mut w, NOW_MS);
    let mut c = claims();
    c["sub"] = INVENTORY.into();
    c["cnf"] = serde_json::json!({"x5t#S256": CertThumbprint::from_der(&w.inventory.0).to_cnf()});
    let f = facts(&w.inventory, bearer_of(&sign(&header(), &c)));
    let (flow, step) = Flow::start(&mut w.engine, f, NOW_MS);
    assert_eq!(denied(step), Reason::Revoked);
    assert_eq!(flow.revoked(), Some(Kind::Subject));
}

#[test]
fn refuses_a_revoked_certificate() {
    let mut w = revoking(30, false);
    let t = CertThumbprint::from_der(&w.consumer.0).to_cnf();
    let body = format!(
        r#"{{"seq":1,"snapshot":true,"revocations":[{{"seq":1,"kind":"cert","value":"{t}","expires_at":null}}]}}"#
    );
    feed(&mut w, &body, NOW_MS);
    let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
    assert_eq!(
        denied(Flow::start(&mut w.engine, f, NOW_MS).1),
        Reason::Revoked
    );
}

#[test]
fn waits_for_the_first_snapshot_then_answers() {
    let mut w = revoking(30, false);
    let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
    let (mut flow, step) = Flow::start(&mut w.engine, f.clone(), NOW_MS);
    assert_eq!(
        step,
        Step::AwaitRevocations {
            wait_until_ms: NOW_MS + 1000
        }
    );
    empty_snapshot(&mut w, NOW_MS + 10);
    let step = flow.resume_jwks(&mut w.engine, NOW_MS + 10).unwrap();
    assert!(matches!(step, Step::AskPdp { .. }), "{step:?}");
    // It verified the token itself before waiting: the rerun is not a cache hit.
    assert!(!flow.token_cache_hit());
    // Without a snapshot in time: 503.
    let mut w = revoking(30, false);
    let (mut flow, _) = Flow::start(&mut w.engine, f, NOW_MS);
    let step = flow.resume_jwks(&mut w.engine, NOW_MS + 1000).unwrap();
    let Step::Deny(d) = step else {
        panic!("{step:?}")
    };
    assert_eq!((d.reason, d.status), (Reason::RevocationUnavailable, 503));
    assert!(d.body.contains("\"error\":\"temporarily_unavailable\""));
}

#[test]
fn fails_closed_when_the_feed_is_stale_and_recovers() {
    let mut w = revoking(2, false);
    empty_snapshot(&mut w, NOW_MS - 2000);
    full_allow(&mut w, NOW_MS);
    let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
    let late = NOW_MS + 1;
    assert_eq!(
        denied(Flow::start(&mut w.engine, f.clone(), late).1),
        Reason::RevocationUnavailable
    );
    feed(
        &mut w,
        r#"{"seq":1,"snapshot":false,"revocations":[]}"#,
        late,
    );
    assert!(matches!(
        Flow::start(&mut w.engine, f, late).1,
        Step::Allow(_)
    ));
}

#[test]
fn fail_open_admits_a_stale_feed_but_still_refuses_known_revocations() {
    let mut w = revoking(2, true);
    empty_snapshot(&mut w, NOW_MS - 10_000);
    let (flow, allow) = full_allow(&mut w, NOW_MS);
    assert!(flow.revocation_unchecked());
    assert_eq!(allow.headers.len(), 4);
    revoke_jti(&mut w, "j-1", NOW_MS - 10_000);
    let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
    assert_eq!(
        denied(Flow::start(&mut w.engine, f, NOW_MS).1),
        Reason::Revoked
    );
}

#[test]
fn without_revocation_configured_nothing_waits() {
    let mut w = world();
    assert!(w.engine.revocations().is_none());
    full_allow(&mut w, NOW_MS);
}
