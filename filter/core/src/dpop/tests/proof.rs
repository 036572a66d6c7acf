//! The verifier as a whole: admitted proofs, signatures, `jkt`, check order, reasons.

use super::*;
use crate::reason::Reason;

#[test]
fn admits_a_well_formed_proof_and_reports_jti_iat_and_jkt() {
    let p = check(&sign(&header(), &claims())).unwrap();
    assert_eq!(p.jti(), "e1j3V_bKic8-LAEB");
    assert_eq!(p.iat(), NOW - 2);
    assert_eq!(p.jkt(), jkt_of(&key()));
}

#[test]
fn refuses_a_proof_signed_by_a_key_other_than_its_jwk() {
    let proof = sign_raw_with(&other_key(), &header().to_string(), &claims().to_string());
    assert_eq!(check(&proof), Err(DpopError::BadSignature));
}

#[test]
fn refuses_claims_changed_after_signing() {
    let proof = sign(&header(), &claims());
    let parts: Vec<&str> = proof.split('.').collect();
    let mut c = claims();
    c["htm"] = "POST".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(c.to_string()),
        parts[2]
    );
    assert_eq!(check(&forged), Err(DpopError::BadSignature));
}

#[test]
fn refuses_a_signature_of_the_wrong_length_or_zero() {
    let proof = sign(&header(), &claims());
    let input = proof.rsplit_once('.').unwrap().0;
    for sig in [vec![1u8; 63], vec![0u8; 64], Vec::new()] {
        let bad = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig));
        assert_eq!(check(&bad), Err(DpopError::BadSignature));
    }
}

#[test]
fn refuses_a_proof_key_other_than_the_token_jkt_and_admits_the_bound_one() {
    let bound = jkt_of(&key());
    let other = jkt_of(&other_key());
    let proof = sign(&header(), &claims());
    let mut e = expect();
    e.jkt = Some(&bound);
    assert!(verify_proof(&proof, &e).is_ok());
    e.jkt = Some(&other);
    assert_eq!(verify_proof(&proof, &e), Err(DpopError::JktMismatch));
}

#[test]
fn checks_run_in_rfc9449_order() {
    // Wrong type and bad signature: the header is reported first.
    let mut h = header();
    h["typ"] = "JWT".into();
    let proof = sign_raw_with(&other_key(), &h.to_string(), &claims().to_string());
    assert_eq!(check(&proof), Err(DpopError::WrongType));
    // Bad signature and wrong method: the signature is reported first.
    let mut c = claims();
    c["htm"] = "POST".into();
    let proof = sign_raw_with(&other_key(), &header().to_string(), &c.to_string());
    assert_eq!(check(&proof), Err(DpopError::BadSignature));
    // Private key material is refused before any signature work.
    let mut h = header();
    h["jwk"]["d"] = "AQAB".into();
    let proof = sign_raw_with(&other_key(), &h.to_string(), &claims().to_string());
    assert_eq!(check(&proof), Err(DpopError::PrivateKey));
}

#[test]
fn errors_map_to_the_contract_reasons() {
    assert_eq!(DpopError::Replayed.reason(), Reason::DpopReplay);
    assert_eq!(DpopError::Replayed.reason(), Reason::DpopReplay);
    assert_eq!(DpopError::ReplayCacheFull.reason(), Reason::ReplayCacheFull);
    assert_eq!(DpopError::ClientShareFull.reason(), Reason::ReplayCacheFull);
    assert_eq!(DpopError::BadSignature.reason(), Reason::DpopInvalid);
    assert_eq!(DpopError::TooOld.reason(), Reason::DpopInvalid);
    assert_eq!(DpopError::AthMismatch.oauth_error(), "invalid_dpop_proof");
}
