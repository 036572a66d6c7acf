//! Shape, size and header checks: what is refused before any signature work.

use super::*;
use serde_json::json;

#[test]
fn refuses_a_proof_longer_than_the_bound() {
    let proof = with_claim("pad", "x".repeat(MAX_PROOF_BYTES).into());
    assert_eq!(check(&proof), Err(DpopError::Malformed));
    assert_eq!(check(""), Err(DpopError::Malformed));
}

#[test]
fn admits_a_proof_just_under_the_bound() {
    let base = sign(&header(), &claims()).len();
    // Each 3 bytes of JSON are 4 of base64url.
    let proof = with_claim(
        "pad",
        "x".repeat((MAX_PROOF_BYTES - base - 20) * 3 / 4).into(),
    );
    assert!(proof.len() <= MAX_PROOF_BYTES, "{}", proof.len());
    assert!(check(&proof).is_ok());
}

#[test]
fn refuses_proofs_that_are_not_three_base64url_parts() {
    let good = sign(&header(), &claims());
    let (h, rest) = good.split_once('.').unwrap();
    for bad in [
        "a.b".to_owned(),
        format!("{good}.x"),
        format!("{h}.{rest}="),
        format!("{h}+.{rest}"),
        format!("{h}.!{rest}"),
        h.to_owned(),
    ] {
        assert_eq!(check(&bad), Err(DpopError::Malformed), "{bad}");
    }
}

#[test]
fn refuses_a_header_or_claims_that_are_not_one_json_object() {
    // The five members as an array, in the order a derived struct once read them from one.
    let array = format!(r#"["dpop+jwt","ES256",{},null,null]"#, header()["jwk"]);
    for header in ["[]", "null", "{", r#"{"typ":"dpop+jwt"} x"#, &array] {
        let proof = sign_raw_with(&key(), header, &claims().to_string());
        assert_eq!(check(&proof), Err(DpopError::Malformed), "{header}");
    }
    for payload in ["[]", "7", "{"] {
        let proof = sign_raw_with(&key(), &header().to_string(), payload);
        assert_eq!(check(&proof), Err(DpopError::Malformed), "{payload}");
    }
}

#[test]
fn refuses_duplicate_members_in_header_or_claims() {
    let h = header().to_string().replacen('{', r#"{"alg":"none","#, 1);
    let proof = sign_raw_with(&key(), &h, &claims().to_string());
    assert_eq!(check(&proof), Err(DpopError::Malformed));
    let c = claims().to_string().replacen('{', r#"{"htm":"POST","#, 1);
    let proof = sign_raw_with(&key(), &header().to_string(), &c);
    assert_eq!(check(&proof), Err(DpopError::Malformed));
}

#[test]
fn refuses_a_wrong_or_missing_typ() {
    for typ in [
        json!("JWT"),
        json!("at+jwt"),
        json!("dpop+jwt2"),
        json!(""),
        json!(1),
    ] {
        assert_eq!(
            check(&with_header("typ", typ.clone())),
            Err(DpopError::WrongType),
            "{typ}"
        );
    }
    assert_eq!(check(&without_header("typ")), Err(DpopError::WrongType));
}

#[test]
fn admits_every_spelling_of_the_dpop_jwt_type() {
    for typ in ["dpop+jwt", "DPoP+JWT", "application/dpop+jwt"] {
        assert!(check(&with_header("typ", typ.into())).is_ok(), "{typ}");
    }
}

#[test]
fn refuses_every_algorithm_but_es256() {
    for alg in ["none", "HS256", "RS256", "ES384", "EdDSA", "es256", ""] {
        assert_eq!(
            check(&with_header("alg", alg.into())),
            Err(DpopError::UnsupportedAlg),
            "{alg}"
        );
    }
    assert_eq!(
        check(&without_header("alg")),
        Err(DpopError::UnsupportedAlg)
    );
}

#[test]
fn refuses_any_crit_header() {
    for crit in [json!(["htu"]), json!([]), json!(null)] {
        assert_eq!(check(&with_header("crit", crit)), Err(DpopError::Crit));
    }
}

#[test]
fn refuses_a_missing_or_non_object_jwk() {
    assert_eq!(check(&without_header("jwk")), Err(DpopError::BadKey));
    assert_eq!(
        check(&with_header("jwk", json!("not a key"))),
        Err(DpopError::BadKey)
    );
}

#[test]
fn refuses_keys_other_than_ec_p256_for_es256() {
    for (name, value) in [
        ("kty", json!("RSA")),
        ("kty", json!("OKP")),
        ("crv", json!("P-384")),
        ("crv", json!("secp256k1")),
        ("alg", json!("ES384")),
        ("use", json!("enc")),
    ] {
        assert_eq!(
            check(&with_jwk(name, value)),
            Err(DpopError::UnsupportedKey),
            "{name}"
        );
    }
}

#[test]
fn admits_a_jwk_with_optional_members_that_agree() {
    let mut h = header();
    h["jwk"]["alg"] = "ES256".into();
    h["jwk"]["use"] = "sig".into();
    h["jwk"]["kid"] = "k-1".into();
    assert!(check(&sign(&h, &claims())).is_ok());
}

#[test]
fn refuses_coordinates_that_are_not_a_curve_point() {
    let x = public_jwk(&key())["x"].clone();
    let y = public_jwk(&other_key())["y"].clone();
    let mut h = header();
    h["jwk"]["y"] = y;
    assert_eq!(check(&sign(&h, &claims())), Err(DpopError::BadKey));
    assert_eq!(check(&with_jwk("x", json!("AAAA"))), Err(DpopError::BadKey));
    assert_eq!(check(&with_jwk("x", json!(7))), Err(DpopError::BadKey));
    // Padded spelling of the right coordinate: refused, so `jkt` has one spelling.
    let padded = format!("{}=", x.as_str().unwrap());
    assert_eq!(check(&with_jwk("x", padded.into())), Err(DpopError::BadKey));
    let mut h = header();
    h["jwk"].as_object_mut().unwrap().remove("y");
    assert_eq!(check(&sign(&h, &claims())), Err(DpopError::BadKey));
}

#[test]
fn refuses_a_jwk_with_private_key_material() {
    // The real private scalar: the signature verifies, the proof is still refused.
    let d = URL_SAFE_NO_PAD.encode(key().to_bytes());
    assert_eq!(check(&with_jwk("d", d.into())), Err(DpopError::PrivateKey));
    for member in ["p", "q", "dp", "dq", "qi", "oth", "k"] {
        assert_eq!(
            check(&with_jwk(member, json!("AQAB"))),
            Err(DpopError::PrivateKey),
            "{member}"
        );
    }
}

#[test]
fn refuses_a_kid_that_is_not_a_string_as_access_tokens_do() {
    // `null` reads as absent, as it does for an access token's header.
    for kid in [json!("k-1"), json!(null)] {
        assert!(check(&with_header("kid", kid.clone())).is_ok(), "{kid}");
    }
    for kid in [json!(7), json!(["k-1"]), json!({})] {
        assert_eq!(
            check(&with_header("kid", kid.clone())),
            Err(DpopError::Malformed),
            "{kid}"
        );
    }
}
