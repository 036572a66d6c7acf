//! The examples of RFC 9449 (§4.1 proof, §6.1 `jkt`, §7.1 `ath`), transcribed.

use super::*;
use crate::jwk::ec_p256_key;
use crate::token::decode_metadata;
use serde_json::json;

#[test]
fn rfc9449_4_1_proof_verifies_with_its_key_and_yields_the_6_1_jkt() {
    let p = verify_proof(RFC9449_PROOF, &rfc_expect(RFC9449_IAT + 1)).unwrap();
    assert_eq!(p.jti(), RFC9449_JTI);
    assert_eq!(p.iat(), RFC9449_IAT);
    assert_eq!(p.jkt(), RFC9449_JKT);
    assert_eq!(p.jkt(), ec_p256_jwk_thumbprint(RFC9449_X, RFC9449_Y));
    assert_eq!(p.replay_until_s(), RFC9449_IAT + 60 + 5 + 1);
}

#[test]
fn rfc9449_4_1_signature_verifies_with_the_transcribed_key() {
    let jws = decode_metadata(RFC9449_PROOF).unwrap();
    let key = ec_p256_key(RFC9449_X, RFC9449_Y).unwrap();
    let payload = jws.verify_signature(&key).unwrap();
    let claims: Value = serde_json::from_slice(payload.payload()).unwrap();
    assert_eq!(
        claims,
        json!({"jti": RFC9449_JTI, "htm": "POST", "htu": RFC9449_HTU, "iat": RFC9449_IAT})
    );
}

#[test]
fn rfc9449_4_1_proof_is_refused_for_another_method_or_uri() {
    let mut e = rfc_expect(RFC9449_IAT);
    e.method = "GET";
    assert_eq!(verify_proof(RFC9449_PROOF, &e), Err(DpopError::WrongMethod));
    let mut e = rfc_expect(RFC9449_IAT);
    e.htu = "https://server.example.com/authorize";
    assert_eq!(verify_proof(RFC9449_PROOF, &e), Err(DpopError::WrongUri));
    let mut e = rfc_expect(RFC9449_IAT);
    e.htu = "https://server.example.com:8443/token";
    assert_eq!(verify_proof(RFC9449_PROOF, &e), Err(DpopError::WrongUri));
}

#[test]
fn rfc9449_4_1_proof_is_refused_once_its_iat_is_out_of_the_window() {
    assert_eq!(
        verify_proof(RFC9449_PROOF, &rfc_expect(NOW)),
        Err(DpopError::TooOld)
    );
}

#[test]
fn rfc9449_6_1_jkt_is_admitted_as_the_expected_binding_and_another_is_refused() {
    let mut e = rfc_expect(RFC9449_IAT);
    e.jkt = Some(RFC9449_JKT);
    assert!(verify_proof(RFC9449_PROOF, &e).is_ok());
    let other = jkt_of(&key());
    e.jkt = Some(&other);
    assert_eq!(verify_proof(RFC9449_PROOF, &e), Err(DpopError::JktMismatch));
}

#[test]
fn rfc9449_4_1_proof_one_bit_changed_is_refused() {
    let tampered = RFC9449_PROOF.replacen("eyJqdGkiOiItQndD", "eyJqdGkiOiItQndE", 1);
    assert_eq!(
        verify_proof(&tampered, &rfc_expect(RFC9449_IAT)),
        Err(DpopError::BadSignature)
    );
}

/// RFC 9449 §7.1: the example access token and its `ath`.
#[test]
fn rfc9449_7_1_ath_of_the_example_token() {
    assert_eq!(
        access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    );
}
