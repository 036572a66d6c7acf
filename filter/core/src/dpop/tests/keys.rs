//! Remembered proof keys: later proofs verify through the key's table, forgeries still fail.

use super::*;
use serde_json::json;

#[test]
fn admits_a_known_keys_later_proofs_through_its_table() {
    let mut keys = ProofKeys::new(4);
    for jti in ["a", "b", "c"] {
        let mut c = claims();
        c["jti"] = jti.into();
        let p = verify_proof_with(&sign(&header(), &c), &expect(), Some(&mut keys)).unwrap();
        assert_eq!(p.jti(), jti);
        assert_eq!(p.jkt(), jkt_of(&key()));
    }
    assert_eq!(keys.len(), 1);
}

#[test]
fn refuses_a_forged_proof_for_a_known_key() {
    let mut keys = ProofKeys::new(4);
    let good = sign(&header(), &claims());
    assert!(verify_proof_with(&good, &expect(), Some(&mut keys)).is_ok());
    assert!(verify_proof_with(&good, &expect(), Some(&mut keys)).is_ok());
    // The known key's header, signed by another key: its table must not pass it.
    let forged = sign_raw_with(&other_key(), &header().to_string(), &claims().to_string());
    for _ in 0..2 {
        assert_eq!(
            verify_proof_with(&forged, &expect(), Some(&mut keys)),
            Err(DpopError::BadSignature)
        );
    }
    let mut tampered = good.into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        verify_proof_with(&tampered, &expect(), Some(&mut keys)),
        Err(DpopError::BadSignature)
    );
}

#[test]
fn proof_keys_stay_within_their_capacity() {
    let mut keys = ProofKeys::new(2);
    for seed in 1..=5u8 {
        let k = SigningKey::from_slice(&[seed; 32]).unwrap();
        let h = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(&k)});
        let p = sign_raw_with(&k, &h.to_string(), &claims().to_string());
        assert!(verify_proof_with(&p, &expect(), Some(&mut keys)).is_ok());
        assert!(keys.len() <= 2);
    }
}

#[test]
fn the_host_path_remembers_a_passed_header_and_still_refuses_forgeries() {
    let host = crate::host_es256_reference::ReferenceHost::default();
    let mut keys = ProofKeys::new(4);
    let want_jkt = jkt_of(&key());
    let check = ProofCheck {
        jkt: Some(&want_jkt),
        ..expect()
    };
    for jti in ["a", "b"] {
        let mut c = claims();
        c["jti"] = jti.into();
        let p = verify_proof_by_host(&sign(&header(), &c), &check, Some(&mut keys), &host);
        assert_eq!(p.map(|p| p.jkt().to_owned()), Ok(want_jkt.clone()));
    }
    assert_eq!((keys.len(), host.calls.get()), (1, 2));
    // The remembered header, signed by another key: the host still checks every signature.
    let forged = sign_raw_with(&other_key(), &header().to_string(), &claims().to_string());
    assert_eq!(
        verify_proof_by_host(&forged, &check, Some(&mut keys), &host),
        Err(DpopError::BadSignature)
    );
    // A remembered header does not lift the checks after the signature.
    let mut stale = claims();
    stale["iat"] = (NOW - 3_600).into();
    assert_eq!(
        verify_proof_by_host(&sign(&header(), &stale), &check, Some(&mut keys), &host),
        Err(DpopError::TooOld)
    );
    let other_jkt = jkt_of(&other_key());
    let bound_elsewhere = ProofCheck {
        jkt: Some(&other_jkt),
        ..expect()
    };
    assert_eq!(
        verify_proof_by_host(
            &sign(&header(), &claims()),
            &bound_elsewhere,
            Some(&mut keys),
            &host
        ),
        Err(DpopError::JktMismatch)
    );
}

#[test]
fn only_a_header_whose_proof_passed_is_remembered() {
    let mut keys = ProofKeys::new(4);
    let forged = sign_raw_with(&other_key(), &header().to_string(), &claims().to_string());
    assert_eq!(
        verify_proof_with(&forged, &expect(), Some(&mut keys)),
        Err(DpopError::BadSignature)
    );
    let mut wrong_method = claims();
    wrong_method["htm"] = "POST".into();
    assert!(
        verify_proof_with(&sign(&header(), &wrong_method), &expect(), Some(&mut keys)).is_err()
    );
    let bad_header = with_header("typ", "jwt".into());
    assert_eq!(
        verify_proof_with(&bad_header, &expect(), Some(&mut keys)),
        Err(DpopError::WrongType)
    );
    assert!(keys.is_empty());
}
