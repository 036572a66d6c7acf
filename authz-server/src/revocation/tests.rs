//! The revocation service's tests: planning rows, lifting bans, feed answers.

use super::*;

const INV: &str = "spiffe://certbind.test/ns/demo/sa/inventory";

fn req(kind: Kind, value: &str) -> Request {
    Request {
        kind,
        value: value.into(),
        reason: None,
        expires_at: None,
        lift: false,
    }
}

#[test]
fn plans_each_kind_with_its_expiry_rule() {
    let j = plan(&req(Kind::Jti, "abc"), 1000, None).unwrap();
    assert_eq!(j.expires_at, Some(1000 + MAX_TOKEN_TTL + CLOCK_SKEW_MARGIN));
    assert_eq!(j.reason, "unspecified");
    let s = plan(&req(Kind::Subject, INV), 1000, None).unwrap();
    assert_eq!(
        (s.not_before_iat, s.expires_at, s.banned),
        (Some(1000), None, true)
    );
    let hex = "AB".repeat(32);
    let c = plan(&req(Kind::Cert, &hex), 1000, None).unwrap();
    assert_eq!(c.value, CertThumbprint::from_hex(&hex).unwrap().to_cnf());
    assert_eq!(c.expires_at, None);
    let mut until = req(Kind::Cert, &c.value);
    until.expires_at = Some(5000);
    assert_eq!(plan(&until, 1000, None).unwrap().expires_at, Some(5000));
}

#[test]
fn refuses_invalid_requests() {
    let mut bad_reason = req(Kind::Jti, "abc");
    bad_reason.reason = Some("line\nbreak".into());
    let mut past = req(Kind::Cert, &"ab".repeat(32));
    past.expires_at = Some(999);
    let mut jti_until = req(Kind::Jti, "abc");
    jti_until.expires_at = Some(5000);
    let mut lift_jti = req(Kind::Jti, "abc");
    lift_jti.lift = true;
    let mut lift_unbanned = req(Kind::Subject, INV);
    lift_unbanned.lift = true;
    for r in [
        req(Kind::Jti, ""),
        req(Kind::Jti, "a b"),
        req(Kind::Subject, "https://x/y"),
        req(Kind::Cert, "abcd"),
        bad_reason,
        past,
        jti_until,
        lift_jti,
        lift_unbanned,
    ] {
        assert!(plan(&r, 1000, None).is_err(), "{r:?}");
    }
}

#[test]
fn lifting_a_ban_keeps_old_tokens_revoked_until_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let revs = Revocations::open(dir.path(), 1000).unwrap();
    let inv = SpiffeId::parse(INV).unwrap();
    let cert = CertThumbprint::from_der(b"c");
    revs.apply_request(&req(Kind::Subject, INV), 1000)
        .unwrap()
        .unwrap();
    assert_eq!(
        revs.refuses_issuance(&inv, &cert, 1001),
        Some(Kind::Subject)
    );
    let mut lift = req(Kind::Subject, INV);
    lift.lift = true;
    let row = revs.apply_request(&lift, 1100).unwrap().unwrap();
    assert_eq!(row.seq, 2);
    assert_eq!(revs.refuses_issuance(&inv, &cert, 1101), None);
    let old = Presented {
        jti: "j",
        subject: &inv,
        iat: 999,
        cert: None,
        issued_over: None,
    };
    assert_eq!(revs.is_revoked(&old, 1101), Some(Kind::Subject));
    assert_eq!(
        revs.is_revoked(&old, 1000 + MAX_TOKEN_TTL + CLOCK_SKEW_MARGIN),
        None
    );
    // Lifting twice is refused.
    assert!(revs.apply_request(&lift, 1200).unwrap().is_err());
}

#[test]
fn answers_snapshots_deltas_and_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let revs = Revocations::open(dir.path(), 1000).unwrap();
    let empty = revs.answer(None, 1000).unwrap();
    assert!(empty.snapshot && empty.revocations.is_empty() && empty.seq == 0);
    // An empty store has nothing for a sidecar already at 0: it waits.
    assert!(revs.answer(Some(0), 1000).is_none());
    revs.apply_request(&req(Kind::Jti, "a"), 1000)
        .unwrap()
        .unwrap();
    revs.apply_request(&req(Kind::Jti, "b"), 1000)
        .unwrap()
        .unwrap();
    let delta = revs.answer(Some(1), 1000).unwrap();
    assert!(!delta.snapshot);
    assert_eq!(delta.seq, 2);
    assert_eq!(delta.revocations.len(), 1);
    assert_eq!(delta.revocations[0].value, "b");
    assert!(revs.answer(Some(2), 1000).is_none());
    assert!(revs.answer(Some(0), 1000).unwrap().snapshot);
    let ahead = revs.answer(Some(7), 1000).unwrap();
    assert!(ahead.snapshot && ahead.revocations.len() == 2);
    // After compaction, a subscriber behind the compaction point gets a snapshot.
    revs.apply_request(&req(Kind::Subject, INV), 2000)
        .unwrap()
        .unwrap();
    assert_eq!(revs.compact(2000).unwrap(), 2);
    let behind = revs.answer(Some(1), 2000).unwrap();
    assert!(behind.snapshot);
    assert_eq!(behind.revocations.len(), 1);
    assert_eq!(behind.revocations[0].kind, Kind::Subject);
    assert!(!revs.answer(Some(2), 2000).unwrap().snapshot);
}

#[test]
fn the_shared_body_is_the_answer_and_follows_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let revs = Revocations::open(dir.path(), 1000).unwrap();
    let body = |since| revs.answer_body(since, 1000).map(|b| b.json.to_vec());
    let json = |since| {
        revs.answer(since, 1000)
            .map(|a| serde_json::to_vec(&a).unwrap())
    };
    assert_eq!(body(None), json(None));
    revs.apply_request(&req(Kind::Jti, "a"), 1000)
        .unwrap()
        .unwrap();
    assert_eq!(body(Some(0)), json(Some(0)));
    assert_eq!(body(Some(0)), json(Some(0)));
    revs.apply_request(&req(Kind::Jti, "b"), 1000)
        .unwrap()
        .unwrap();
    let after = body(Some(0)).unwrap();
    assert_eq!(Some(after.clone()), json(Some(0)));
    assert_eq!(
        certbind_core::revocation::parse_feed(&after)
            .unwrap()
            .revocations
            .len(),
        2
    );
    assert_eq!(body(Some(2)), None);
}
