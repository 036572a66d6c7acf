//! JWKS tests: parsing bounded key sets, the refresh state machine, the shared record.

use super::*;

/// The public key of RFC 7515 Appendix A.3.
pub(crate) const RFC7515_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
pub(crate) const RFC7515_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

pub(crate) fn jwk(kid: &str, x: &str, y: &str) -> Value {
    serde_json::json!({"kty":"EC","crv":"P-256","kid":kid,"use":"sig","alg":"ES256","x":x,"y":y})
}

pub(crate) fn jwks_body(keys: &[Value]) -> Vec<u8> {
    serde_json::json!({ "keys": keys }).to_string().into_bytes()
}

fn policy() -> JwksPolicy {
    JwksPolicy {
        refresh_ms: 300_000,
        min_refetch_ms: 30_000,
        max_stale_ms: 3_600_000,
        fetch_timeout_ms: 2_000,
    }
}

#[test]
fn admits_an_ec_p256_signing_key() {
    let set = KeySet::parse(&jwks_body(&[jwk("k1", RFC7515_X, RFC7515_Y)])).unwrap();
    assert_eq!(set.len(), 1);
    assert!(set.get("k1").is_some());
    assert!(set.get("k2").is_none());
}

#[test]
fn skips_keys_that_are_not_ec_p256_signing_keys() {
    let mut rsa = jwk("rsa", RFC7515_X, RFC7515_Y);
    rsa["kty"] = "RSA".into();
    let mut p384 = jwk("p384", RFC7515_X, RFC7515_Y);
    p384["crv"] = "P-384".into();
    let mut enc = jwk("enc", RFC7515_X, RFC7515_Y);
    enc["use"] = "enc".into();
    let mut es384 = jwk("es384", RFC7515_X, RFC7515_Y);
    es384["alg"] = "ES384".into();
    let mut sign_only = jwk("ops", RFC7515_X, RFC7515_Y);
    sign_only["key_ops"] = serde_json::json!(["sign"]);
    let mut no_kid = jwk("", RFC7515_X, RFC7515_Y);
    no_kid.as_object_mut().unwrap().remove("kid");
    let off_curve = jwk("off", RFC7515_X, RFC7515_X);
    let short = jwk("short", "AAAA", RFC7515_Y);
    let good = jwk("good", RFC7515_X, RFC7515_Y);
    let set = KeySet::parse(&jwks_body(&[
        rsa, p384, enc, es384, sign_only, no_kid, off_curve, short, good,
    ]))
    .unwrap();
    assert_eq!(set.kids().collect::<Vec<_>>(), ["good"]);
}

/// A key written as an array of its members in field order: serde's derive alone read it as
/// a usable key, which `jwt_authn` and every other JWKS reader skip.
#[test]
fn skips_a_key_written_as_an_array() {
    let array =
        format!(r#"["EC","P-256","arr","sig","ES256",null,"{RFC7515_X}","{RFC7515_Y}",null]"#);
    assert!(
        serde_json::from_str::<Jwk>(&array).is_ok(),
        "what the derive alone takes"
    );
    let only = format!(r#"{{"keys":[{array}]}}"#);
    assert_eq!(KeySet::parse(only.as_bytes()), Err(JwksError::NoUsableKey));
    let good = jwk("good", RFC7515_X, RFC7515_Y);
    let both = format!(r#"{{"keys":[{array},{good}]}}"#);
    let set = KeySet::parse(both.as_bytes()).unwrap();
    assert_eq!(set.kids().collect::<Vec<_>>(), ["good"]);
}

#[test]
fn admits_keys_without_optional_members() {
    let body = format!(
        r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k","x":"{RFC7515_X}","y":"{RFC7515_Y}"}}]}}"#
    );
    assert!(KeySet::parse(body.as_bytes()).unwrap().get("k").is_some());
}

#[test]
fn refuses_garbage_oversized_and_ambiguous_sets() {
    let good = jwk("k1", RFC7515_X, RFC7515_Y);
    assert_eq!(KeySet::parse(b""), Err(JwksError::Size(0)));
    assert!(matches!(
        KeySet::parse(&vec![b' '; MAX_JWKS_BYTES + 1]),
        Err(JwksError::Size(_))
    ));
    assert!(matches!(
        KeySet::parse(b"<html>"),
        Err(JwksError::NotJwks(_))
    ));
    assert!(matches!(
        KeySet::parse(br#"{"keys":{}}"#),
        Err(JwksError::NotJwks(_))
    ));
    assert!(matches!(
        KeySet::parse(br#"{"keys":[],"keys":[]}"#),
        Err(JwksError::NotJwks(_))
    ));
    assert_eq!(
        KeySet::parse(&jwks_body(&vec![good.clone(); MAX_KEYS + 1])),
        Err(JwksError::TooManyKeys(MAX_KEYS + 1))
    );
    assert_eq!(
        KeySet::parse(&jwks_body(&[good.clone(), good.clone()])),
        Err(JwksError::DuplicateKid)
    );
    let mut private = good.clone();
    private["d"] = "secret".into();
    assert_eq!(
        KeySet::parse(&jwks_body(&[private])),
        Err(JwksError::PrivateKey)
    );
    assert_eq!(KeySet::parse(&jwks_body(&[])), Err(JwksError::NoUsableKey));
}

#[test]
fn admits_the_largest_allowed_key_count() {
    let keys: Vec<Value> = (0..MAX_KEYS)
        .map(|i| jwk(&format!("k{i}"), RFC7515_X, RFC7515_Y))
        .collect();
    assert_eq!(KeySet::parse(&jwks_body(&keys)).unwrap().len(), MAX_KEYS);
}

#[test]
fn a_garbage_fetch_never_replaces_a_good_set() {
    let mut cache = JwksCache::new(policy());
    cache
        .install(&jwks_body(&[jwk("k1", RFC7515_X, RFC7515_Y)]), 1_000)
        .unwrap();
    assert!(cache.install(b"garbage", 2_000).is_err());
    assert!(matches!(cache.lookup("k1", 2_000), Lookup::Found(_)));
    assert_eq!(cache.fetched_at_ms(), Some(1_000));
}

#[test]
fn an_older_set_never_replaces_a_newer_one() {
    let mut cache = JwksCache::new(policy());
    cache
        .install(&jwks_body(&[jwk("new", RFC7515_X, RFC7515_Y)]), 5_000)
        .unwrap();
    cache
        .install(&jwks_body(&[jwk("old", RFC7515_X, RFC7515_Y)]), 4_000)
        .unwrap();
    assert!(matches!(cache.lookup("new", 5_000), Lookup::Found(_)));
}

#[test]
fn serves_the_last_good_set_until_the_staleness_bound_then_refuses() {
    let mut cache = JwksCache::new(policy());
    assert_eq!(cache.lookup("k1", 0), Lookup::NoKeys);
    cache
        .install(&jwks_body(&[jwk("k1", RFC7515_X, RFC7515_Y)]), 1_000)
        .unwrap();
    assert!(matches!(
        cache.lookup("k1", 1_000 + 3_600_000),
        Lookup::Found(_)
    ));
    assert_eq!(cache.lookup("k1", 1_001 + 3_600_000), Lookup::Stale);
    assert_eq!(cache.lookup("zz", 1_000), Lookup::UnknownKid);
}

#[test]
fn needs_refresh_without_a_set_and_after_the_interval() {
    let mut cache = JwksCache::new(policy());
    assert!(cache.needs_refresh(0));
    cache
        .install(&jwks_body(&[jwk("k1", RFC7515_X, RFC7515_Y)]), 1_000)
        .unwrap();
    assert!(!cache.needs_refresh(300_999));
    assert!(cache.needs_refresh(301_000));
}

#[test]
fn one_fetch_at_a_time_across_vms() {
    let p = policy();
    let mut rec = FetchRecord::default();
    assert_eq!(
        rec.begin(FetchKind::Scheduled, true, &p, 0),
        FetchStart::Begun
    );
    // Another VM reads the shared record and finds the lease taken.
    let mut other = FetchRecord::decode(rec.encode().as_bytes());
    assert_eq!(
        other.begin(FetchKind::Scheduled, true, &p, 10),
        FetchStart::InFlight
    );
    assert_eq!(
        other.begin(FetchKind::UnknownKid, true, &p, 10),
        FetchStart::InFlight
    );
    rec.finish(true, 100);
    assert_eq!(
        rec.begin(FetchKind::Scheduled, false, &p, 200),
        FetchStart::NotNow
    );
}

#[test]
fn a_lost_fetcher_frees_the_lease_after_its_timeout() {
    let p = policy();
    let mut rec = FetchRecord::default();
    assert_eq!(
        rec.begin(FetchKind::Scheduled, true, &p, 0),
        FetchStart::Begun
    );
    assert_eq!(
        rec.begin(FetchKind::Scheduled, true, &p, 2_999),
        FetchStart::InFlight
    );
    assert_eq!(
        rec.begin(FetchKind::Scheduled, true, &p, 3_000),
        FetchStart::Begun
    );
    rec.abandon();
    assert_eq!(
        rec.begin(FetchKind::Scheduled, true, &p, 3_001),
        FetchStart::Begun
    );
}

#[test]
fn unknown_kid_refetch_is_rate_limited() {
    let p = policy();
    let mut rec = FetchRecord::default();
    assert_eq!(
        rec.begin(FetchKind::UnknownKid, false, &p, 1_000),
        FetchStart::Begun
    );
    rec.finish(true, 1_100);
    assert_eq!(
        rec.begin(FetchKind::UnknownKid, false, &p, 30_999),
        FetchStart::NotNow
    );
    assert_eq!(
        rec.begin(FetchKind::UnknownKid, false, &p, 31_000),
        FetchStart::Begun
    );
}

#[test]
fn failed_fetches_back_off_then_retry() {
    let p = policy();
    let mut rec = FetchRecord::default();
    assert_eq!(
        rec.begin(FetchKind::Scheduled, true, &p, 0),
        FetchStart::Begun
    );
    rec.finish(false, 10);
    assert_eq!(rec.failures(), 1);
    assert_eq!(
        rec.begin(FetchKind::Scheduled, true, &p, 1_009),
        FetchStart::NotNow
    );
    assert_eq!(
        rec.begin(FetchKind::Scheduled, true, &p, 1_010),
        FetchStart::Begun
    );
    rec.finish(false, 1_020);
    assert_eq!(
        rec.begin(FetchKind::Scheduled, true, &p, 2_020),
        FetchStart::NotNow
    );
    assert_eq!(
        rec.begin(FetchKind::Scheduled, true, &p, 3_020),
        FetchStart::Begun
    );
    for _ in 0..40 {
        rec.finish(false, 0);
    }
    assert_eq!(p.backoff_ms(rec.failures()), 30_000);
}

#[test]
fn fetch_record_round_trips_and_garbage_reads_as_empty() {
    let p = policy();
    let mut rec = FetchRecord::default();
    rec.begin(FetchKind::UnknownKid, false, &p, 7);
    assert_eq!(FetchRecord::decode(rec.encode().as_bytes()), rec);
    assert_eq!(FetchRecord::decode(b"x y"), FetchRecord::default());
    assert_eq!(FetchRecord::decode(b"\xff"), FetchRecord::default());
}

#[test]
fn shared_set_round_trips() {
    let enc = encode_shared_set(42, b"{\"keys\":[]}\n");
    assert_eq!(decode_shared_set(&enc), Some((42, &b"{\"keys\":[]}\n"[..])));
    assert_eq!(decode_shared_set(b"nonsense"), None);
    assert_eq!(decode_shared_set(b"x\n{}"), None);
}
