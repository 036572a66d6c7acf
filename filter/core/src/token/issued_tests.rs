//! The issuer's side of the codec: what `encode` writes, and that `verify_issued` gives back
//! exactly what was issued and nothing else.

use super::tests::{rfc_key, signing_key};
use super::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};

const ISS: &str = "https://127.0.0.1:9443";
const KID: &str = "k1";
const THUMBPRINT: &str = "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg0";

fn claims() -> Claims {
    Claims {
        iss: ISS.into(),
        sub: "spiffe://certbind.test/ns/demo/sa/consumer".into(),
        client_id: "consumer".into(),
        aud: "spiffe://certbind.test/ns/demo/sa/orders".into(),
        scope: "orders:read".into(),
        iat: 1000,
        nbf: 1000,
        exp: 1300,
        jti: "j-1".into(),
        cnf: Confirmation::Certificate(CertificateConfirmation {
            x5t_s256: THUMBPRINT.into(),
        }),
        client_x5t_s256: THUMBPRINT.into(),
        max_uses: None,
    }
}

fn sign_with(key: &SigningKey) -> impl FnOnce(&[u8]) -> [u8; 64] + '_ {
    |message| {
        let signature: Signature = key.sign(message);
        signature.to_bytes().into()
    }
}

fn issue(claims: &Claims) -> String {
    encode(claims, KID, sign_with(&signing_key())).unwrap()
}

fn read(token: &str, now: u64) -> Result<IssuedToken, Reason> {
    let key = rfc_key();
    verify_issued(token, |kid| (kid == KID).then_some(&key), ISS, now)
}

/// Signs a raw payload text under the issued header.
fn sign_payload(payload: &str) -> String {
    let mut jws =
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"ES256","typ":"at+jwt","kid":"{KID}"}}"#));
    jws.push('.');
    jws.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let signature = sign_with(&signing_key())(jws.as_bytes());
    format!("{jws}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[test]
fn encodes_exactly_the_contract_header_and_claim_order() {
    let token = issue(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header = URL_SAFE_NO_PAD.decode(parts[0]).unwrap();
    assert_eq!(header, br#"{"alg":"ES256","typ":"at+jwt","kid":"k1"}"#);
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert!(
        payload.starts_with(r#"{"iss":"https://127.0.0.1:9443","sub":"#),
        "{payload}"
    );
    assert!(payload.ends_with(&format!(r#""client_x5t#S256":"{THUMBPRINT}"}}"#)));
    assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);
}

#[test]
fn an_issued_token_reads_back_as_its_claims() {
    let mut c = claims();
    c.max_uses = Some(3);
    let read_back = read(&issue(&c), 1000).unwrap();
    assert_eq!(read_back.kid(), KID);
    assert_eq!(*read_back, c);
    assert_eq!(read_back.into_claims(), c);
    let dpop = claims().bound_to_dpop_key("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I");
    assert_eq!(dpop.token_type(), "DPoP");
    assert_eq!(claims().token_type(), "Bearer");
    assert_eq!(read(&issue(&dpop), 1000).unwrap().claims(), &dpop);
}

#[test]
fn the_filter_reads_an_issued_token_as_the_issuer_wrote_it() {
    let mut c = claims();
    c.max_uses = Some(2);
    let token = issue(&c);
    let jws = decode_metadata(&token).unwrap();
    let expect = Expectations {
        issuer: ISS.into(),
        audience: c.aud.clone(),
        clock_skew_s: 30,
        max_lifetime_s: 300,
    };
    let t = verify_access_token(jws, &rfc_key(), &expect, 1000).unwrap();
    assert_eq!(
        (t.kid(), t.subject(), t.client_id(), t.scope(), t.jti()),
        (KID, c.sub.as_str(), "consumer", "orders:read", "j-1")
    );
    assert_eq!((t.iat(), t.exp(), t.max_uses()), (1000, 1300, Some(2)));
    assert_eq!(t.cnf_x5t_s256(), Some(THUMBPRINT));
    assert_eq!(t.client_x5t_s256(), Some(THUMBPRINT));
}

#[test]
fn the_issuer_reads_its_own_clock_without_skew() {
    let token = issue(&claims());
    assert!(read(&token, 1000).is_ok());
    assert!(read(&token, 1299).is_ok());
    assert_eq!(read(&token, 1300).unwrap_err(), Reason::Expired);
    assert_eq!(read(&token, 999).unwrap_err(), Reason::NotYetValid);
}

#[test]
fn refuses_another_issuer_or_an_unknown_kid() {
    let token = issue(&claims());
    let key = rfc_key();
    let other = verify_issued(&token, |_| Some(&key), "https://other", 1000);
    assert_eq!(other.unwrap_err(), Reason::WrongIssuer);
    let unknown = verify_issued::<VerifyingKey>(&token, |_| None, ISS, 1000);
    assert_eq!(unknown.unwrap_err(), Reason::UnknownKid);
}

#[test]
fn refuses_a_signed_payload_that_is_not_exactly_the_issued_claims() {
    let body = serde_json::to_value(claims()).unwrap();
    let mut cases = Vec::new();
    for cnf in [
        serde_json::json!({}),
        serde_json::json!({"x5t#S256": "a", "jkt": "b"}),
        serde_json::json!({"jkt": "b", "extra": 1}),
        serde_json::json!({"jkt": 7}),
    ] {
        let mut b = body.clone();
        b["cnf"] = cnf;
        cases.push(b.to_string());
    }
    let mut extra = body.clone();
    extra["admin"] = true.into();
    cases.push(extra.to_string());
    for name in ["nbf", "scope", "client_x5t#S256"] {
        let mut missing = body.clone();
        missing.as_object_mut().unwrap().remove(name);
        cases.push(missing.to_string());
    }
    let mut fraction = body.clone();
    fraction["exp"] = serde_json::json!(1300.5);
    cases.push(fraction.to_string());
    let mut array = body.clone();
    array["aud"] = serde_json::json!([claims().aud]);
    cases.push(array.to_string());
    cases.push(body.to_string().replacen("{", r#"{"jti":"j-0","#, 1));
    for payload in cases {
        assert_eq!(
            read(&sign_payload(&payload), 1000).unwrap_err(),
            Reason::MalformedToken,
            "{payload}"
        );
    }
    assert!(read(&sign_payload(&body.to_string()), 1000).is_ok());
}

#[test]
fn refuses_tampered_foreign_or_malformed_tokens() {
    let token = issue(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let mut wider = claims();
    wider.scope = "orders:read orders:write".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wider).unwrap()),
        parts[2]
    );
    let foreign = encode(
        &claims(),
        KID,
        sign_with(&SigningKey::from_slice(&[7u8; 32]).unwrap()),
    )
    .unwrap();
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt","kid":"k1"}"#),
        parts[1]
    );
    let crit = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":"at+jwt","kid":"k1","crit":["x"]}"#),
        parts[1],
        parts[2]
    );
    for bad in [
        forged,
        foreign,
        alg_none,
        crit,
        String::new(),
        "a.b".into(),
        "a.b.c.d".into(),
        format!("{token}."),
        format!("{token}x"),
        "a".repeat(MAX_TOKEN_BYTES + 1),
    ] {
        assert!(read(&bad, 1000).is_err(), "accepted {bad}");
    }
}
