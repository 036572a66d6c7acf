//! Unit tests of the revocation set, the feed parser and the staleness rule.

use super::*;

const CONSUMER: &str = "spiffe://certbind.test/ns/demo/sa/consumer";
const INVENTORY: &str = "spiffe://certbind.test/ns/demo/sa/inventory";

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn thumb(n: u8) -> CertThumbprint {
    CertThumbprint::from_der(&[n])
}

fn entry(seq: u64, kind: Kind, value: &str, nbi: Option<u64>, exp: Option<u64>) -> Revocation {
    Revocation {
        seq,
        kind,
        value: value.to_owned(),
        not_before_iat: nbi,
        expires_at: exp,
    }
}

fn body(seq: u64, snapshot: bool, entries: &[Revocation]) -> Vec<u8> {
    serde_json::to_vec(&FeedAnswer {
        seq,
        snapshot,
        revocations: entries.to_vec(),
    })
    .unwrap()
}

fn req<'a>(
    jti: &'a str,
    sub: &'a SpiffeId,
    iat: u64,
    cert: Option<&'a CertThumbprint>,
) -> Presented<'a> {
    Presented {
        jti,
        subject: sub,
        iat,
        cert,
        issued_over: None,
    }
}

#[test]
fn revokes_a_jti_and_admits_other_tokens() {
    let mut set = RevocationSet::new();
    set.apply_body(
        &body(1, true, &[entry(1, Kind::Jti, "abc", None, Some(2000))]),
        1000,
    )
    .unwrap();
    let sub = id(CONSUMER);
    assert_eq!(
        set.is_revoked(&req("abc", &sub, 900, None), 1000),
        Some(Kind::Jti)
    );
    assert_eq!(set.is_revoked(&req("abd", &sub, 900, None), 1000), None);
    assert_eq!(set.since(), Some(1));
}

#[test]
fn revokes_a_subject_only_for_tokens_issued_up_to_the_revocation() {
    let mut set = RevocationSet::new();
    let e = entry(3, Kind::Subject, INVENTORY, Some(1000), None);
    set.apply_body(&body(3, true, &[e]), 1000).unwrap();
    let inv = id(INVENTORY);
    let con = id(CONSUMER);
    assert_eq!(
        set.is_revoked(&req("j", &inv, 999, None), 1001),
        Some(Kind::Subject)
    );
    assert_eq!(
        set.is_revoked(&req("j", &inv, 1000, None), 1001),
        Some(Kind::Subject)
    );
    assert_eq!(set.is_revoked(&req("j", &inv, 1001, None), 1001), None);
    assert_eq!(set.is_revoked(&req("j", &con, 999, None), 1001), None);
    // No expiry: still revoked much later.
    assert_eq!(
        set.is_revoked(&req("j", &inv, 999, None), 9_999_999),
        Some(Kind::Subject)
    );
}

#[test]
fn revokes_a_certificate_and_admits_other_certificates_and_no_certificate() {
    let mut set = RevocationSet::new();
    let t = thumb(1);
    set.apply_body(
        &body(1, true, &[entry(1, Kind::Cert, &t.to_cnf(), None, None)]),
        10,
    )
    .unwrap();
    let sub = id(CONSUMER);
    let other = thumb(2);
    assert_eq!(
        set.is_revoked(&req("j", &sub, 5, Some(&t)), 10),
        Some(Kind::Cert)
    );
    assert_eq!(set.is_revoked(&req("j", &sub, 5, Some(&other)), 10), None);
    assert_eq!(set.is_revoked(&req("j", &sub, 5, None), 10), None);
}

#[test]
fn a_revoked_certificate_reaches_the_dpop_tokens_it_obtained() {
    let mut set = RevocationSet::new();
    let t = thumb(1);
    set.apply_body(
        &body(1, true, &[entry(1, Kind::Cert, &t.to_cnf(), None, None)]),
        10,
    )
    .unwrap();
    let sub = id(CONSUMER);
    let other = thumb(2);
    // On the DPoP edge there is no connection certificate, only the token's claim.
    let mut dpop = req("j", &sub, 5, None);
    dpop.issued_over = Some(&t);
    assert_eq!(set.is_revoked(&dpop, 10), Some(Kind::Cert));
    dpop.issued_over = Some(&other);
    assert_eq!(set.is_revoked(&dpop, 10), None);
}

#[test]
fn reports_the_broadest_cause_first() {
    let mut set = RevocationSet::new();
    let t = thumb(1);
    let entries = [
        entry(1, Kind::Jti, "j", None, None),
        entry(2, Kind::Subject, CONSUMER, Some(100), None),
        entry(3, Kind::Cert, &t.to_cnf(), None, None),
    ];
    set.apply_body(&body(3, true, &entries), 10).unwrap();
    let sub = id(CONSUMER);
    assert_eq!(
        set.is_revoked(&req("j", &sub, 5, Some(&t)), 10),
        Some(Kind::Cert)
    );
    assert_eq!(
        set.is_revoked(&req("j", &sub, 5, None), 10),
        Some(Kind::Subject)
    );
    assert_eq!(
        set.is_revoked(&req("j", &sub, 500, None), 10),
        Some(Kind::Jti)
    );
}

#[test]
fn an_entry_stops_revoking_at_its_expiry_and_is_pruned() {
    let mut set = RevocationSet::new();
    set.apply_body(
        &body(1, true, &[entry(1, Kind::Jti, "abc", None, Some(2000))]),
        1000,
    )
    .unwrap();
    let sub = id(CONSUMER);
    assert_eq!(
        set.is_revoked(&req("abc", &sub, 900, None), 1999),
        Some(Kind::Jti)
    );
    assert_eq!(set.is_revoked(&req("abc", &sub, 900, None), 2000), None);
    set.prune(2000);
    assert!(set.is_empty());
    // An already expired entry is not even kept.
    set.apply_body(
        &body(2, false, &[entry(2, Kind::Jti, "x", None, Some(5))]),
        1000,
    )
    .unwrap();
    assert!(set.is_empty());
    assert_eq!(set.since(), Some(2));
}

#[test]
fn a_snapshot_replaces_the_set_and_a_delta_merges() {
    let mut set = RevocationSet::new();
    let sub = id(CONSUMER);
    set.apply_body(
        &body(
            2,
            true,
            &[
                entry(1, Kind::Jti, "a", None, None),
                entry(2, Kind::Jti, "b", None, None),
            ],
        ),
        0,
    )
    .unwrap();
    set.apply_body(&body(3, false, &[entry(3, Kind::Jti, "c", None, None)]), 0)
        .unwrap();
    assert_eq!(set.len(), 3);
    set.apply_body(&body(9, true, &[entry(9, Kind::Jti, "z", None, None)]), 0)
        .unwrap();
    assert_eq!(set.len(), 1);
    assert_eq!(set.is_revoked(&req("a", &sub, 0, None), 0), None);
    assert_eq!(set.is_revoked(&req("z", &sub, 0, None), 0), Some(Kind::Jti));
    assert_eq!(set.since(), Some(9));
    // An empty delta moves nothing but is accepted.
    set.apply_body(&body(9, false, &[]), 0).unwrap();
    assert_eq!(set.since(), Some(9));
    // An empty snapshot clears.
    set.apply_body(&body(10, true, &[]), 0).unwrap();
    assert!(set.is_empty());
}

#[test]
fn a_later_entry_for_the_same_key_replaces_the_earlier_one() {
    let mut set = RevocationSet::new();
    let inv = id(INVENTORY);
    set.apply_body(
        &body(
            1,
            true,
            &[entry(1, Kind::Subject, INVENTORY, Some(100), None)],
        ),
        150,
    )
    .unwrap();
    // The ban is lifted at 200: old tokens stay revoked until 200 + TTL, then it is gone.
    set.apply_body(
        &body(
            2,
            false,
            &[entry(2, Kind::Subject, INVENTORY, Some(100), Some(560))],
        ),
        200,
    )
    .unwrap();
    assert_eq!(set.len(), 1);
    assert_eq!(
        set.is_revoked(&req("j", &inv, 90, None), 300),
        Some(Kind::Subject)
    );
    assert_eq!(set.is_revoked(&req("j", &inv, 90, None), 560), None);
}

#[test]
fn refuses_deltas_that_go_backwards_or_repeat_old_sequence_numbers() {
    let mut set = RevocationSet::new();
    set.apply_body(&body(5, true, &[entry(5, Kind::Jti, "a", None, None)]), 0)
        .unwrap();
    let before = set.clone();
    assert_eq!(
        set.apply_body(&body(4, false, &[]), 0),
        Err(FeedError::WentBackwards)
    );
    assert_eq!(
        set.apply_body(&body(6, false, &[entry(5, Kind::Jti, "b", None, None)]), 0),
        Err(FeedError::Sequence)
    );
    assert_eq!(set, before);
    // A snapshot from a reset server (lower seq) is accepted: it is the whole truth.
    set.apply_body(&body(1, true, &[]), 0).unwrap();
    assert_eq!(set.since(), Some(1));
}

#[test]
fn refuses_garbage_and_keeps_the_set() {
    let mut set = RevocationSet::new();
    set.apply_body(&body(1, true, &[entry(1, Kind::Jti, "a", None, None)]), 0)
        .unwrap();
    let before = set.clone();
    let big = vec![b' '; MAX_FEED_BYTES + 1];
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        big,
        b"not json".to_vec(),
        b"[]".to_vec(),
        br#"{"seq":2,"snapshot":false}"#.to_vec(),
        br#"{"seq":2,"snapshot":false,"revocations":[],"extra":1}"#.to_vec(),
        br#"{"seq":2,"seq":3,"snapshot":false,"revocations":[]}"#.to_vec(),
        br#"{"seq":-1,"snapshot":false,"revocations":[]}"#.to_vec(),
        br#"{"seq":2,"snapshot":"no","revocations":[]}"#.to_vec(),
        br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"key","value":"a","expires_at":null}]}"#.to_vec(),
        br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"jti","value":"a"}]}"#.to_vec(),
        br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"jti","value":"","expires_at":null}]}"#.to_vec(),
        br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"jti","value":"a b","expires_at":null}]}"#.to_vec(),
        br#"{"seq":2,"snapshot":false,"revocations":[{"seq":3,"kind":"jti","value":"a","expires_at":null}]}"#.to_vec(),
        br#"{"seq":2,"snapshot":false,"revocations":[{"seq":0,"kind":"jti","value":"a","expires_at":null}]}"#.to_vec(),
        br#"{"seq":3,"snapshot":false,"revocations":[{"seq":3,"kind":"jti","value":"a","expires_at":null},{"seq":2,"kind":"jti","value":"b","expires_at":null}]}"#.to_vec(),
        br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"jti","value":"a","not_before_iat":5,"expires_at":null}]}"#.to_vec(),
        br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"subject","value":"spiffe://certbind.test/ns/demo/sa/x","expires_at":null}]}"#.to_vec(),
        br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"subject","value":"https://x/y","not_before_iat":5,"expires_at":null}]}"#.to_vec(),
        br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"cert","value":"abcd","expires_at":null}]}"#.to_vec(),
        br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"jti","value":"a","expires_at":null,"reason":"x"}]}"#.to_vec(),
        br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"jti","value":"a","value":"b","expires_at":null}]}"#.to_vec(),
        br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":{"jti":null},"value":"a","expires_at":null}]}"#.to_vec(),
        br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"jti","value":"a","expires_at":null,"expires_at":null}]}"#.to_vec(),
        br#"{"seq":2,"snapshot":false,"revocations":[],"revocations":[]}"#.to_vec(),
        br#"{"seq":2,"snapshot":false,"revocations":[]} {}"#.to_vec(),
        // An entry as an array of its fields in order, which serde's derive alone takes.
        br#"{"seq":2,"snapshot":false,"revocations":[[2,"jti","b",null,null]]}"#.to_vec(),
    ];
    for bad in cases {
        assert!(
            set.apply_body(&bad, 0).is_err(),
            "accepted {}",
            String::from_utf8_lossy(&bad)
        );
        assert_eq!(set, before);
    }
    let too_many: Vec<Revocation> = (1..=MAX_REVOCATIONS as u64 + 1)
        .map(|i| entry(i, Kind::Jti, &format!("j{i}"), None, None))
        .collect();
    let n = too_many.len() as u64;
    assert_eq!(
        parse_feed(&body(n, true, &too_many)),
        Err(FeedError::TooMany(MAX_REVOCATIONS + 1))
    );
}

#[test]
fn parses_the_documented_shape() {
    let t = thumb(7).to_cnf();
    let text = format!(
        r#"{{"seq":42,"snapshot":false,"revocations":[
          {{"seq":40,"kind":"cert","value":"{t}","expires_at":null}},
          {{"seq":41,"kind":"jti","value":"AAECAwQFBgcICQoLDA0ODw","expires_at":1700000360}},
          {{"seq":42,"kind":"subject","value":"{INVENTORY}","not_before_iat":1700000000,"expires_at":null}}]}}"#
    );
    let a = parse_feed(text.as_bytes()).unwrap();
    assert_eq!(a.seq, 42);
    assert!(!a.snapshot);
    assert_eq!(a.revocations[1].kind, Kind::Jti);
    assert_eq!(a.revocations[1].expires_at, Some(1_700_000_360));
    assert_eq!(a.revocations[2].not_before_iat, Some(1_700_000_000));
    // Serializing gives the same shape back.
    let again = parse_feed(&serde_json::to_vec(&a).unwrap()).unwrap();
    assert_eq!(again, a);
}

#[test]
fn is_stale_until_the_first_answer_and_after_the_bound() {
    let mut s = Staleness::new();
    assert!(s.is_stale(0, 30));
    assert!(s.is_stale(1000, 30));
    s.last_ok(1000);
    assert_eq!(s.last_ok_at(), Some(1000));
    assert!(!s.is_stale(1000, 30));
    assert!(!s.is_stale(1030, 30));
    assert!(s.is_stale(1031, 30));
    s.last_ok(1025);
    assert!(!s.is_stale(1055, 30));
    // A clock stepping back never makes the record older.
    s.last_ok(900);
    assert_eq!(s.last_ok_at(), Some(1025));
}

#[test]
fn refuses_a_delta_before_any_snapshot_and_asks_for_one_first() {
    let mut set = RevocationSet::new();
    assert_eq!(set.since(), None);
    assert_eq!(set.poll_path(), "/v1/revocations");
    assert_eq!(
        set.apply_body(&body(1, false, &[entry(1, Kind::Jti, "a", None, None)]), 0),
        Err(FeedError::NoSnapshot)
    );
    assert_eq!(set, RevocationSet::new());
    // An empty snapshot at seq 0 is a real sync: the next poll long-polls from 0.
    set.apply_body(&body(0, true, &[]), 0).unwrap();
    assert_eq!(set.since(), Some(0));
    assert_eq!(set.poll_path(), "/v1/revocations?since=0");
}

#[test]
fn a_set_round_trips_through_its_snapshot_for_other_worker_vms() {
    let mut set = RevocationSet::new();
    assert_eq!(set.snapshot_json(), None);
    let t = thumb(3).to_cnf();
    let entries = [
        entry(4, Kind::Cert, &t, None, None),
        entry(5, Kind::Subject, INVENTORY, Some(100), None),
        entry(7, Kind::Jti, "j", None, Some(900)),
    ];
    set.apply_body(&body(7, true, &entries), 10).unwrap();
    let bytes = set.snapshot_json().unwrap();
    let mut worker = RevocationSet::new();
    worker.apply_body(&bytes, 10).unwrap();
    assert_eq!(worker, set);
    assert_eq!(parse_feed(&bytes).unwrap().revocations, entries);
}

#[test]
fn kinds_have_stable_wire_names() {
    for k in [Kind::Jti, Kind::Subject, Kind::Cert] {
        assert_eq!(Kind::parse(k.as_str()), Some(k));
    }
    assert_eq!(Kind::parse("JTI"), None);
}

#[test]
fn only_errors_the_same_since_would_repeat_force_a_resync() {
    for e in [
        FeedError::WentBackwards,
        FeedError::Sequence,
        FeedError::NoSnapshot,
    ] {
        assert!(e.forces_resync(), "{e}");
    }
    for e in [
        FeedError::Size(0),
        FeedError::Shape("x".into()),
        FeedError::TooMany(1),
        FeedError::BadEntry(Kind::Jti),
    ] {
        assert!(!e.forces_resync(), "{e}");
    }
}

/// The feed is read in one streaming pass (`wire`), not through the generic strict reader
/// (`json::from_slice_strict`) it replaced: over 20,000 mutated answers (516 still accepted),
/// whatever the stream accepts the generic reader reads as the same document, so the stream
/// is never laxer (duplicate members, syntax, an entry that is not an object).
#[test]
fn the_streaming_reader_accepts_only_what_the_strict_reader_reads_the_same() {
    let t = thumb(9).to_cnf();
    let valid = format!(
        r#"{{"seq":9,"snapshot":true,"revocations":[{{"seq":4,"kind":"cert","value":"{t}","expires_at":null}},{{"seq":7,"kind":"jti","value":"j\u0041","not_before_iat":null,"expires_at":90}},{{"seq":9,"kind":"subject","value":"{INVENTORY}","not_before_iat":5,"expires_at":null}}]}}"#
    );
    let pieces: [&[u8]; 12] = [
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b"\"seq\":1,",
        b"\"kind\":\"jti\",",
        b"null",
        b"\"value\":\"x\",",
        b"1.5",
        b"\"expires_at\":null,",
    ];
    let mut next = crate::test_rng::draws(0x2545_f491_4f6c_dd1d);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..20_000 {
        let mut bytes = valid.clone().into_bytes();
        for _ in 0..1 + next(3) {
            let at = next(bytes.len() + 1);
            match next(3) {
                0 if at < bytes.len() => {
                    bytes.remove(at);
                }
                1 => {
                    let piece = pieces[next(pieces.len())];
                    bytes.splice(at..at, piece.iter().copied());
                }
                _ if at < bytes.len() => bytes[at] = b"{}[],:\"0a "[next(10)],
                _ => {}
            }
        }
        let Ok(answer) = parse_feed(&bytes) else {
            refused += 1;
            continue;
        };
        accepted += 1;
        let mut generic: serde_json::Value = crate::json::from_slice_strict(&bytes)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
        for entry in generic["revocations"].as_array_mut().unwrap() {
            let entry = entry.as_object_mut().unwrap();
            if entry.get("not_before_iat") == Some(&serde_json::Value::Null) {
                entry.remove("not_before_iat");
            }
        }
        assert_eq!(serde_json::to_value(&answer).unwrap(), generic);
    }
    assert!(
        accepted > 100 && refused > 10_000,
        "{accepted} accepted, {refused} refused"
    );
}

/// A delta is checked whole and merged in place: into a full set it may replace an entry
/// (no new key) but not add one, and a refused delta leaves the set as it was.
#[test]
fn a_delta_into_a_full_set_may_replace_but_not_add() {
    let full: Vec<Revocation> = (1..=MAX_REVOCATIONS as u64)
        .map(|i| entry(i, Kind::Jti, &format!("j{i}"), None, None))
        .collect();
    let n = MAX_REVOCATIONS as u64;
    let mut set = RevocationSet::new();
    set.apply_body(&body(n, true, &full), 0).unwrap();
    let before = set.clone();
    let adds = [
        entry(n + 1, Kind::Jti, "j1", None, Some(99)),
        entry(n + 2, Kind::Jti, "new", None, None),
    ];
    assert_eq!(
        set.apply_body(&body(n + 2, false, &adds), 0),
        Err(FeedError::TooMany(MAX_REVOCATIONS + 1))
    );
    assert_eq!(set, before);
    let replaces = [entry(n + 1, Kind::Jti, "j1", None, Some(99))];
    set.apply_body(&body(n + 1, false, &replaces), 0).unwrap();
    assert_eq!((set.len(), set.since()), (MAX_REVOCATIONS, Some(n + 1)));
    let sub = id(INVENTORY);
    assert_eq!(
        set.is_revoked(&req("j1", &sub, 0, None), 10),
        Some(Kind::Jti)
    );
    assert_eq!(
        set.is_revoked(&req("j1", &sub, 0, None), 100),
        None,
        "the replacement's expiry holds"
    );
}

#[test]
fn expired_entries_are_swept_now_and_then_and_never_crowd_out_news() {
    let n = MAX_REVOCATIONS as u64;
    // A full set whose first entry expires at 1,010.
    let full: Vec<Revocation> = (1..=n)
        .map(|i| {
            entry(
                i,
                Kind::Jti,
                &format!("j{i}"),
                None,
                (i == 1).then_some(1_010),
            )
        })
        .collect();
    let mut set = RevocationSet::new();
    set.apply_body(&body(n, true, &full), 1_000).unwrap();
    let sub = id(INVENTORY);
    let news = |seq: u64, jti: &str| body(seq, false, &[entry(seq, Kind::Jti, jti, None, None)]);
    // Expired but not yet swept: it revokes nothing, and a new key still finds room.
    assert_eq!(set.is_revoked(&req("j1", &sub, 0, None), 1_020), None);
    set.apply_body(&news(n + 1, "new"), 1_020).unwrap();
    assert_eq!(set.len(), MAX_REVOCATIONS);
    assert_eq!(
        set.is_revoked(&req("new", &sub, 0, None), 1_020),
        Some(Kind::Jti)
    );
    // A set with an entry that expired since, swept by the first delta a minute on.
    let mut set = RevocationSet::new();
    let two = [
        entry(1, Kind::Jti, "soon", None, Some(1_010)),
        entry(2, Kind::Jti, "kept", None, None),
    ];
    set.apply_body(&body(2, true, &two), 1_000).unwrap();
    set.apply_body(&news(3, "a"), 1_020).unwrap();
    assert_eq!(set.len(), 3, "not swept before the minute is up");
    set.apply_body(&news(4, "b"), 1_060).unwrap();
    assert_eq!(set.len(), 3, "swept: kept, a, b");
    assert_eq!(
        set.is_revoked(&req("kept", &sub, 0, None), 1_060),
        Some(Kind::Jti)
    );
}
