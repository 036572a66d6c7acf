//! The access-token verifier's tests (the filter's read), RFC 7515 vectors first; their
//! helpers (`sign`, `claims`, ...) serve the other modules' tests too.

use super::*;
use crate::jwks::ec_p256_key;
use crate::jwks::tests::{RFC7515_X, RFC7515_Y};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, VerifyingKey};
use serde_json::Value;

/// RFC 7515 Appendix A.3.1: the ES256 JWS, transcribed.
const RFC7515_A3_JWS: &str = concat!(
    "eyJhbGciOiJFUzI1NiJ9",
    ".",
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFt",
    "cGxlLmNvbS9pc19yb290Ijp0cnVlfQ",
    ".",
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSA",
    "pmWQxfKTUJqPP3-Kg6NU1Q"
);
/// RFC 7515 Appendix A.3.1: the private scalar `d`.
pub(crate) const RFC7515_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";

pub(crate) const ISSUER: &str = "https://127.0.0.1:9443";
pub(crate) const AUDIENCE: &str = "spiffe://certbind.test/ns/demo/sa/orders";
pub(crate) const SUBJECT: &str = "spiffe://certbind.test/ns/demo/sa/consumer";
pub(crate) const NOW: u64 = 1_800_000_000;

pub(crate) fn signing_key() -> SigningKey {
    SigningKey::from_slice(&URL_SAFE_NO_PAD.decode(RFC7515_D).unwrap()).unwrap()
}

pub(crate) fn rfc_key() -> VerifyingKey {
    ec_p256_key(RFC7515_X, RFC7515_Y).unwrap()
}

pub(crate) fn expect() -> Expectations {
    Expectations {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        clock_skew_s: 30,
        max_lifetime_s: 600,
    }
}

pub(crate) fn claims() -> Value {
    serde_json::json!({
        "iss": ISSUER, "sub": SUBJECT, "client_id": "consumer", "aud": AUDIENCE,
        "scope": "orders:read orders:write", "iat": NOW - 10, "nbf": NOW - 10,
        "exp": NOW + 290, "jti": "j-1",
        "cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg0"}
    })
}

pub(crate) fn header() -> Value {
    serde_json::json!({"alg":"ES256","typ":"at+jwt","kid":"k1"})
}

/// Signs raw header and payload JSON texts with the RFC 7515 key.
pub(crate) fn sign_raw(header: &str, payload: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig: Signature = signing_key().sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

pub(crate) fn sign(header: &Value, claims: &Value) -> String {
    sign_raw(&header.to_string(), &claims.to_string())
}

fn check(token: &str) -> Result<VerifiedToken, Reason> {
    check_at(token, NOW)
}

fn check_at(token: &str, now: u64) -> Result<VerifiedToken, Reason> {
    let jws = decode_metadata(token)?;
    verify_access_token(jws, &rfc_key(), &expect(), now)
}

fn with_claim(name: &str, value: Value) -> String {
    let mut c = claims();
    c[name] = value;
    sign(&header(), &c)
}

fn without_claim(name: &str) -> String {
    let mut c = claims();
    c.as_object_mut().unwrap().remove(name);
    sign(&header(), &c)
}

fn with_header(name: &str, value: Value) -> String {
    let mut h = header();
    h[name] = value;
    sign(&h, &claims())
}

#[test]
fn rfc7515_a3_signature_verifies_with_its_key() {
    let jws = decode_metadata(RFC7515_A3_JWS).unwrap();
    let verified = jws.verify_signature(&rfc_key()).unwrap();
    assert!(verified.payload().starts_with(b"{\"iss\":\"joe\""));
}

#[test]
fn rfc7515_a3_fails_the_access_token_profile_for_lack_of_typ() {
    let jws = decode_metadata(RFC7515_A3_JWS).unwrap();
    assert_eq!(jws.access_token_kid(), Err(Reason::WrongType));
}

#[test]
fn rfc7515_a3_refused_when_one_bit_of_payload_changes() {
    let tampered = RFC7515_A3_JWS.replacen("eyJpc3MiOiJqb2Ui", "eyJpc3MiOiJqb2Ug", 1);
    let jws = decode_metadata(&tampered).unwrap();
    assert_eq!(
        jws.verify_signature(&rfc_key()).unwrap_err(),
        Reason::BadSignature
    );
}

#[test]
fn admits_a_well_formed_access_token() {
    let t = check(&sign(&header(), &claims())).unwrap();
    assert_eq!(t.subject(), SUBJECT);
    assert_eq!(t.client_id(), "consumer");
    assert_eq!(t.scopes(), ["orders:read", "orders:write"]);
    assert_eq!(t.jti(), "j-1");
    assert_eq!(t.kid(), "k1");
    assert_eq!(t.exp(), NOW + 290);
    assert_eq!(t.iat(), NOW - 10);
    assert!(t.cnf_x5t_s256().is_some());
    let cnf = t.cnf_x5t_s256().and_then(crate::jose::sha256_b64url);
    assert_eq!(t.cnf_x5t_digest().copied(), cnf);
    assert!(cnf.is_some());
}

#[test]
fn keeps_the_issuing_certificate_thumbprint_and_refuses_one_that_cannot_be() {
    let mut c = claims();
    let t = URL_SAFE_NO_PAD.encode([7u8; 32]);
    c["client_x5t#S256"] = t.clone().into();
    let v = check(&sign(&header(), &c)).unwrap();
    assert_eq!(v.client_x5t_s256(), Some(t.as_str()));
    assert_eq!(v.client_x5t_digest(), Some(&[7u8; 32]));
    for bad in [
        Value::from(URL_SAFE_NO_PAD.encode([7u8; 31])),
        Value::from("not base64!"),
        Value::from(7),
    ] {
        c["client_x5t#S256"] = bad.clone();
        assert_eq!(
            check(&sign(&header(), &c)).unwrap_err(),
            Reason::MalformedToken,
            "{bad}"
        );
    }
}

#[test]
fn bearer_extracts_the_token() {
    assert_eq!(bearer("Bearer abc.def.ghi"), Ok("abc.def.ghi"));
    assert_eq!(bearer("bearer  abc"), Ok("abc"));
    assert_eq!(bearer(" BEARER abc "), Ok("abc"));
    assert_eq!(bearer("Bearer\t \tabc\t"), Ok("abc"));
}

#[test]
fn bearer_refuses_other_schemes_and_empty_tokens() {
    assert_eq!(bearer(""), Err(Reason::MissingToken));
    assert_eq!(bearer("Basic dXNlcjpwdw=="), Err(Reason::MissingToken));
    assert_eq!(bearer("DPoP abc"), Err(Reason::MissingToken));
    assert_eq!(bearer("Bearerabc"), Err(Reason::MissingToken));
    assert_eq!(bearer("Bearer"), Err(Reason::MalformedToken));
    assert_eq!(bearer("Bearer a b"), Err(Reason::MalformedToken));
    assert_eq!(bearer("Bearer a\tb"), Err(Reason::MalformedToken));
    assert_eq!(bearer("DPoP"), Err(Reason::MissingToken));
}

#[test]
fn authorization_token_reads_the_bearer_and_dpop_schemes() {
    assert_eq!(
        authorization_token("DPoP abc.def.ghi"),
        Ok((AuthScheme::Dpop, "abc.def.ghi"))
    );
    assert_eq!(
        authorization_token("dpop  abc"),
        Ok((AuthScheme::Dpop, "abc"))
    );
    assert_eq!(
        authorization_token("Bearer abc"),
        Ok((AuthScheme::Bearer, "abc"))
    );
    assert_eq!(authorization_token("Basic x"), Err(Reason::MissingToken));
    assert_eq!(authorization_token("DPoP"), Err(Reason::MalformedToken));
    assert_eq!(authorization_token("DPoP a b"), Err(Reason::MalformedToken));
}

#[test]
fn refuses_tokens_that_are_not_three_base64url_parts() {
    let good = sign(&header(), &claims());
    let (h, rest) = good.split_once('.').unwrap();
    for bad in [
        String::new(),
        "a.b".into(),
        format!("{good}.x"),
        format!("{h}.{rest}="),
        format!("{h}+.{rest}"),
        format!("{h}.!{rest}"),
        good.replacen('.', "..", 1),
    ] {
        assert_eq!(
            decode_metadata(&bad).unwrap_err(),
            Reason::MalformedToken,
            "{bad}"
        );
    }
}

#[test]
fn refuses_tokens_longer_than_the_bound() {
    let mut c = claims();
    c["pad"] = "x".repeat(MAX_TOKEN_BYTES).into();
    assert_eq!(
        check(&sign(&header(), &c)).unwrap_err(),
        Reason::MalformedToken
    );
}

#[test]
fn admits_a_token_just_under_the_bound() {
    let mut c = claims();
    let base = sign(&header(), &c).len();
    // Each 3 bytes of JSON are 4 of base64url.
    c["pad"] = "x".repeat((MAX_TOKEN_BYTES - base - 20) * 3 / 4).into();
    let token = sign(&header(), &c);
    assert!(token.len() <= MAX_TOKEN_BYTES, "{}", token.len());
    assert!(check(&token).is_ok());
}

#[test]
fn refuses_an_oversized_header() {
    let token = with_header("pad", "x".repeat(MAX_HEADER_B64).into());
    assert_eq!(check(&token).unwrap_err(), Reason::MalformedToken);
}

#[test]
fn refuses_a_header_that_is_not_a_json_object() {
    for header in ["[]", "null", "\"ES256\"", "{", "{\"alg\":\"ES256\"} x"] {
        let token = sign_raw(header, &claims().to_string());
        assert_eq!(
            check(&token).unwrap_err(),
            Reason::MalformedToken,
            "{header}"
        );
    }
}

#[test]
fn refuses_every_algorithm_but_es256() {
    for alg in [
        "none", "HS256", "RS256", "ES384", "ES512", "PS256", "EdDSA", "es256", "ES256K", "",
    ] {
        assert_eq!(
            check(&with_header("alg", alg.into())).unwrap_err(),
            Reason::UnsupportedAlg,
            "{alg}"
        );
    }
}

#[test]
fn refuses_a_missing_or_non_string_alg() {
    let mut h = header();
    h.as_object_mut().unwrap().remove("alg");
    assert_eq!(
        check(&sign(&h, &claims())).unwrap_err(),
        Reason::MalformedToken
    );
    assert_eq!(
        check(&with_header("alg", serde_json::json!(["ES256"]))).unwrap_err(),
        Reason::MalformedToken
    );
}

#[test]
fn refuses_any_crit_header() {
    assert_eq!(
        check(&with_header("crit", serde_json::json!(["exp"]))).unwrap_err(),
        Reason::MalformedToken
    );
    assert_eq!(
        check(&with_header("crit", serde_json::json!([]))).unwrap_err(),
        Reason::MalformedToken
    );
}

#[test]
fn refuses_duplicate_header_members() {
    let token = sign_raw(
        r#"{"alg":"ES256","typ":"at+jwt","kid":"k1","alg":"none"}"#,
        &claims().to_string(),
    );
    assert_eq!(check(&token).unwrap_err(), Reason::MalformedToken);
}

#[test]
fn refuses_wrong_or_missing_typ() {
    for typ in [
        "JWT",
        "jwt",
        "at+jwt2",
        "application/jwt",
        "text/at+jwt",
        "",
    ] {
        assert_eq!(
            check(&with_header("typ", typ.into())).unwrap_err(),
            Reason::WrongType,
            "{typ}"
        );
    }
    let mut h = header();
    h.as_object_mut().unwrap().remove("typ");
    assert_eq!(check(&sign(&h, &claims())).unwrap_err(), Reason::WrongType);
}

#[test]
fn admits_every_spelling_of_the_at_jwt_type() {
    for typ in [
        "at+jwt",
        "AT+JWT",
        "application/at+jwt",
        "Application/At+Jwt",
    ] {
        assert!(check(&with_header("typ", typ.into())).is_ok(), "{typ}");
    }
}

#[test]
fn refuses_a_missing_or_empty_kid() {
    let mut h = header();
    h.as_object_mut().unwrap().remove("kid");
    assert_eq!(
        check(&sign(&h, &claims())).unwrap_err(),
        Reason::MalformedToken
    );
    assert_eq!(
        check(&with_header("kid", "".into())).unwrap_err(),
        Reason::MalformedToken
    );
    assert_eq!(
        check(&with_header("kid", 7.into())).unwrap_err(),
        Reason::MalformedToken
    );
}

#[test]
fn refuses_a_signature_by_another_key() {
    let other = SigningKey::from_slice(&[7u8; 32]).unwrap();
    let token = sign(&header(), &claims());
    let input = token.rsplit_once('.').unwrap().0;
    let sig: Signature = other.sign(input.as_bytes());
    let forged = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
    assert_eq!(check(&forged).unwrap_err(), Reason::BadSignature);
}

#[test]
fn refuses_a_signature_of_the_wrong_length_or_zero() {
    let token = sign(&header(), &claims());
    let input = token.rsplit_once('.').unwrap().0;
    for sig in [vec![1u8; 63], vec![1u8; 65], vec![0u8; 64], Vec::new()] {
        let bad = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig));
        assert_eq!(check(&bad).unwrap_err(), Reason::BadSignature);
    }
}

#[test]
fn refuses_claims_changed_after_signing() {
    let token = sign(&header(), &claims());
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims();
    c["sub"] = "spiffe://certbind.test/ns/demo/sa/attacker".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(c.to_string()),
        parts[2]
    );
    assert_eq!(check(&forged).unwrap_err(), Reason::BadSignature);
}

#[test]
fn refuses_expired_tokens_beyond_the_skew() {
    let token = with_claim("exp", (NOW - 30).into());
    assert_eq!(check(&token).unwrap_err(), Reason::Expired);
    assert!(check(&with_claim("exp", (NOW - 29).into())).is_ok());
}

#[test]
fn refuses_a_token_living_longer_than_the_maximum() {
    // exp - iat = 601 > 600.
    let mut c = claims();
    c["iat"] = (NOW - 10).into();
    c["exp"] = (NOW + 591).into();
    assert_eq!(check(&sign(&header(), &c)).unwrap_err(), Reason::Expired);
    // A future `iat` does not stretch it: exp is 631 s from now (> 600 + 30 skew).
    c["iat"] = (NOW + 100).into();
    c["exp"] = (NOW + 631).into();
    assert_eq!(check(&sign(&header(), &c)).unwrap_err(), Reason::Expired);
    assert_eq!(
        check(&with_claim("exp", serde_json::json!(u64::MAX))).unwrap_err(),
        Reason::Expired
    );
}

#[test]
fn admits_a_token_living_exactly_the_maximum() {
    let mut c = claims();
    c["iat"] = (NOW - 10).into();
    c["exp"] = (NOW + 590).into();
    assert!(check(&sign(&header(), &c)).is_ok());
    c["iat"] = (NOW + 30).into();
    c["exp"] = (NOW + 630).into();
    assert!(check(&sign(&header(), &c)).is_ok());
}

#[test]
fn refuses_tokens_not_yet_valid_beyond_the_skew() {
    assert_eq!(
        check(&with_claim("nbf", (NOW + 31).into())).unwrap_err(),
        Reason::NotYetValid
    );
    assert!(check(&with_claim("nbf", (NOW + 30).into())).is_ok());
    assert!(check(&without_claim("nbf")).is_ok());
}

#[test]
fn admits_fractional_numeric_dates() {
    assert!(
        check(&with_claim(
            "exp",
            serde_json::json!((NOW + 100) as f64 + 0.5)
        ))
        .is_ok()
    );
}

#[test]
fn refuses_non_numeric_or_negative_dates() {
    for v in [
        serde_json::json!("1900000000"),
        serde_json::json!(-1),
        serde_json::json!(null),
    ] {
        assert_eq!(
            check(&with_claim("exp", v.clone())).unwrap_err(),
            Reason::MalformedToken,
            "{v}"
        );
    }
}

#[test]
fn refuses_a_wrong_issuer() {
    for iss in ["https://evil.example", "https://127.0.0.1:9443/", ""] {
        assert_eq!(
            check(&with_claim("iss", iss.into())).unwrap_err(),
            Reason::WrongIssuer
        );
    }
}

#[test]
fn refuses_a_wrong_audience() {
    let billing = "spiffe://certbind.test/ns/demo/sa/billing";
    assert_eq!(
        check(&with_claim("aud", billing.into())).unwrap_err(),
        Reason::WrongAudience
    );
    assert_eq!(
        check(&with_claim("aud", serde_json::json!([billing]))).unwrap_err(),
        Reason::WrongAudience
    );
    assert_eq!(
        check(&with_claim("aud", serde_json::json!([]))).unwrap_err(),
        Reason::WrongAudience
    );
}

#[test]
fn admits_an_audience_array_naming_this_service() {
    let aud = serde_json::json!(["spiffe://certbind.test/ns/demo/sa/billing", AUDIENCE]);
    assert!(check(&with_claim("aud", aud)).is_ok());
}

#[test]
fn refuses_missing_required_claims() {
    for name in ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"] {
        assert_eq!(
            check(&without_claim(name)).unwrap_err(),
            Reason::MalformedToken,
            "{name}"
        );
    }
}

#[test]
fn refuses_claims_that_cannot_be_header_values() {
    for (name, value) in [
        ("client_id", "a\r\nx-certbind-subject: admin"),
        ("jti", "j\u{0}"),
        ("scope", "orders:read\torders:write"),
        ("client_id", "é"),
    ] {
        assert_eq!(
            check(&with_claim(name, value.into())).unwrap_err(),
            Reason::MalformedToken,
            "{name}"
        );
    }
    let long = "x".repeat(MAX_CLAIM_LEN + 1);
    assert_eq!(
        check(&with_claim("jti", long.into())).unwrap_err(),
        Reason::MalformedToken
    );
}

#[test]
fn refuses_duplicate_claims() {
    let payload = claims().to_string().replacen(
        "\"iss\"",
        "\"sub\":\"spiffe://certbind.test/ns/demo/sa/admin\",\"iss\"",
        1,
    );
    let token = sign_raw(&header().to_string(), &payload);
    assert_eq!(check(&token).unwrap_err(), Reason::MalformedToken);
}

#[test]
fn checks_run_in_contract_order() {
    // Expired and from the wrong issuer: expiry is reported first.
    let mut c = claims();
    c["exp"] = (NOW - 100).into();
    c["iss"] = "https://evil.example".into();
    assert_eq!(check(&sign(&header(), &c)).unwrap_err(), Reason::Expired);
    // Wrong type and bad signature: the header is reported first.
    let mut h = header();
    h["typ"] = "JWT".into();
    let token = sign(&h, &claims());
    let bad_sig = format!("{}.{}", token.rsplit_once('.').unwrap().0, "A".repeat(86));
    assert_eq!(check(&bad_sig).unwrap_err(), Reason::WrongType);
}

#[test]
fn cached_token_time_is_rechecked() {
    let t = check(&sign(&header(), &claims())).unwrap();
    assert!(t.check_time(NOW + 290 + 29, 30).is_ok());
    assert_eq!(t.check_time(NOW + 290 + 30, 30), Err(Reason::Expired));
}

#[test]
fn the_word_scan_finds_a_blank_exactly_where_the_byte_scan_does() {
    let simple = |b: &[u8]| b.iter().any(|&c| c == b' ' || c == b'\t');
    // Every byte value at every position of every length up to 20, in fields of 'a', of bytes
    // one off a blank (where a borrow could fool a word test) and of 0x00, 0xa0 and 0xff.
    for filler in [b'a', 0x1f, 0x21, 0x08, 0x0a, 0xa0, 0x00, 0xff] {
        for len in 0..=20 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut v = vec![filler; len];
                    v[at] = byte;
                    assert_eq!(has_blank(&v), simple(&v), "{v:?}");
                }
            }
        }
    }
    let token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln".repeat(20);
    assert!(!has_blank(token.as_bytes()));
    assert_eq!(bearer(&format!("Bearer {token}")), Ok(token.as_str()));
    // A blank inside the token (not at its ends, which are trimmed) makes it malformed.
    for at in [1, 7, 8, 9, 400, token.len() - 2] {
        for blank in [" ", "\t"] {
            let mut t = token.clone();
            t.replace_range(at..=at, blank);
            let value = format!("Bearer {t}");
            assert_eq!(bearer(&value), Err(Reason::MalformedToken), "{at}");
        }
    }
}

/// The outcome of `check` for the claims with `changes` made (the header's too).
fn refusal(header_changes: &Value, changes: &Value) -> Option<Reason> {
    let (mut h, mut c) = (header(), claims());
    for (name, value) in header_changes.as_object().unwrap() {
        h[name] = value.clone();
    }
    for (name, value) in changes.as_object().unwrap() {
        c[name] = value.clone();
    }
    check(&sign(&h, &c)).err()
}

/// Each member read as serde's derive read it into an `Option<T>` field (pinned before the
/// one-pass read): `null` counts as absent, a value of another type makes the token
/// malformed, and type errors come before every other check.
#[test]
fn null_and_wrongly_typed_claims_keep_their_reasons() {
    use serde_json::json;
    let expired = NOW - 100;
    for (want, cases) in [
        (
            None,
            json!([
                {"nbf": null}, {"scope": null}, {"cnf": null}, {"cnf": {}},
                {"cnf": {"jkt": null, "x5t#S256": null, "other": 5}},
                {"client_x5t#S256": null}, {"max_uses": null},
                {"other": null, "more": {"a": [1, {"b": null}]}}
            ]),
        ),
        (
            Some(Reason::MalformedToken),
            json!([
                {"iss": null}, {"sub": null}, {"jti": null}, {"client_id": null},
                {"iss": 5}, {"sub": 5}, {"jti": true}, {"client_id": []}, {"scope": {}},
                {"aud": null}, {"aud": 5}, {"aud": {"a": AUDIENCE}}, {"aud": [AUDIENCE, null]},
                {"aud": [AUDIENCE, 5]}, {"aud": [[AUDIENCE]]},
                {"exp": null}, {"iat": "1"}, {"iat": true}, {"nbf": "1"}, {"nbf": -1},
                {"scope": 5}, {"cnf": "x"}, {"cnf": 5}, {"cnf": ["a"]}, {"cnf": {"jkt": 5}},
                {"cnf": {"x5t#S256": ["a"]}}, {"client_x5t#S256": 5},
                {"max_uses": "3"}, {"max_uses": 0}, {"max_uses": 1.5}, {"max_uses": -1},
                {"max_uses": 4_294_967_296u64},
                // Expired too: every type error is found first.
                {"exp": expired, "scope": 5}, {"exp": expired, "aud": [1]},
                {"exp": expired, "cnf": {"jkt": 1}}, {"exp": expired, "max_uses": "1"},
                {"exp": expired, "client_x5t#S256": 1}
            ]),
        ),
        // The checks on values, after expiry.
        (
            Some(Reason::Expired),
            json!([
                {"exp": expired, "max_uses": 0}, {"exp": expired, "client_x5t#S256": "x"},
                {"exp": expired, "jti": "j\u{0}"}
            ]),
        ),
        (Some(Reason::WrongIssuer), json!([{"iss": "x", "aud": []}])),
        (
            Some(Reason::WrongAudience),
            json!([{"aud": [], "max_uses": 0}]),
        ),
    ] {
        for changes in cases.as_array().unwrap() {
            assert_eq!(refusal(&json!({}), changes), want, "{changes}");
        }
    }
    let mut c = claims();
    for name in ["nbf", "scope", "cnf", "client_x5t#S256", "max_uses"] {
        c[name] = Value::Null;
    }
    let t = check(&sign(&header(), &c)).unwrap();
    let read = (t.scope(), t.cnf_x5t_s256(), t.max_uses());
    assert_eq!(read, ("", None, None));
    c["max_uses"] = 3.into();
    c["cnf"] = json!({"jkt": "k", "x5t#S256": null});
    let t = check(&sign(&header(), &c)).unwrap();
    let read = (t.cnf_jkt(), t.cnf_x5t_s256(), t.max_uses());
    assert_eq!(read, (Some("k"), None, Some(3)));
}

/// Duplicate keys are refused in every member, asked for or not, at every depth.
#[test]
fn duplicate_keys_anywhere_in_the_claims_are_malformed() {
    let text = claims().to_string();
    for (from, to) in [
        (r#""cnf":{"#, r#""cnf":{"jkt":"a","jkt":"a","#),
        (r#""cnf":{"#, r#""cnf":{"z":1,"z":1,"#),
        (r#""cnf":{"#, r#""other":{"z":{"y":1,"y":2}},"cnf":{"#),
        (r#""cnf":{"#, r#""other":1,"other":1,"cnf":{"#),
        (r#""cnf":{"#, r#""max_uses":1,"max_uses":1,"cnf":{"#),
        (r#""iss":"#, r#""i\u0073s":"x","iss":"#),
        (
            &format!(r#""aud":"{AUDIENCE}""#),
            &format!(r#""aud":["{AUDIENCE}",{{"a":1,"a":1}}]"#),
        ),
    ] {
        assert!(text.contains(from), "{from}");
        let token = sign_raw(&header().to_string(), &text.replacen(from, to, 1));
        assert_eq!(check(&token).err(), Some(Reason::MalformedToken), "{to}");
    }
}

/// Header members as serde's derive read them into `Option<Value>`: `null` is absent, except
/// `crit`, refused whatever its value; the algorithm is judged before any other member.
#[test]
fn null_and_wrongly_typed_header_members_keep_their_reasons() {
    use serde_json::json;
    for (want, cases) in [
        (None, json!([{"jwk": null, "x": {"y": [{"z": 1}]}}])),
        (
            Some(Reason::MalformedToken),
            json!([
                {"alg": null}, {"typ": 5}, {"typ": ["at+jwt"]}, {"kid": null}, {"kid": {}},
                {"crit": null},
                {"crit": ["exp"], "typ": 5}
            ]),
        ),
        (
            Some(Reason::UnsupportedAlg),
            json!([{"alg": "HS256", "typ": 5, "crit": ["exp"]}]),
        ),
        (Some(Reason::WrongType), json!([{"typ": null}])),
    ] {
        for changes in cases.as_array().unwrap() {
            assert_eq!(refusal(changes, &json!({})), want, "{changes}");
        }
    }
    let dup = r#"{"alg":"ES256","typ":"at+jwt","kid":"k1","x":{"y":1,"y":1}}"#;
    let token = sign_raw(dup, &claims().to_string());
    assert_eq!(check(&token).err(), Some(Reason::MalformedToken));
}

/// A header, claims set or `cnf` must be a JSON object (RFC 7515 §4, RFC 7519 §4, RFC 7800
/// §3.1). Before the one-pass read, serde's derive also took an array of exactly as many
/// elements as the struct had fields, in field order.
#[test]
fn a_header_claims_or_cnf_written_as_an_array_is_malformed() {
    let array_header = r#"["ES256","at+jwt","k1",null]"#;
    let token = sign_raw(array_header, &claims().to_string());
    assert_eq!(check(&token).err(), Some(Reason::MalformedToken));
    let c = claims();
    let array: Vec<Value> = super::access::CLAIMS
        .iter()
        .map(|name| c.get(*name).cloned().unwrap_or(Value::Null))
        .collect();
    let token = sign(&header(), &Value::Array(array));
    assert_eq!(check(&token).err(), Some(Reason::MalformedToken));
    let cnf = serde_json::json!({"cnf": ["x5t", "jkt"]});
    assert_eq!(
        refusal(&serde_json::json!({}), &cnf),
        Some(Reason::MalformedToken)
    );
}
