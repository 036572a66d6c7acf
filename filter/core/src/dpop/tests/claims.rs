//! Claim checks: `jti`, `htm`, `htu`, `iat` window, `ath`, `nonce`.

use super::*;
use serde_json::json;

#[test]
fn refuses_a_missing_empty_long_or_unprintable_jti() {
    assert_eq!(check(&without_claim("jti")), Err(DpopError::BadJti));
    for jti in [
        json!(""),
        json!("x".repeat(MAX_JTI_LEN + 1)),
        json!("a\nb"),
        json!("é"),
        json!(42),
    ] {
        assert_eq!(check(&with_claim("jti", jti)), Err(DpopError::BadJti));
    }
}

#[test]
fn admits_a_jti_of_the_longest_length() {
    let jti = "j".repeat(MAX_JTI_LEN);
    assert_eq!(
        check(&with_claim("jti", jti.clone().into())).unwrap().jti(),
        jti
    );
}

#[test]
fn refuses_missing_or_ill_typed_htm_htu_iat() {
    for name in ["htm", "htu", "iat"] {
        assert_eq!(
            check(&without_claim(name)),
            Err(DpopError::MissingClaim),
            "{name}"
        );
        assert_eq!(
            check(&with_claim(name, json!([1]))),
            Err(DpopError::MissingClaim),
            "{name}"
        );
    }
    for iat in [json!(-1), json!("1800000000")] {
        assert_eq!(check(&with_claim("iat", iat)), Err(DpopError::MissingClaim));
    }
}

#[test]
fn refuses_a_proof_for_another_method() {
    for htm in ["POST", "get", "HEAD", ""] {
        assert_eq!(
            check(&with_claim("htm", htm.into())),
            Err(DpopError::WrongMethod),
            "{htm}"
        );
    }
}

#[test]
fn refuses_a_proof_for_another_uri() {
    for htu in [
        "https://orders.example:8445/orders/43",
        "https://orders.example:8445/orders/42/",
        "https://orders.example/orders/42",
        "http://orders.example:8445/orders/42",
        "https://evil.example:8445/orders/42",
        "https://user@orders.example:8445/orders/42",
        "https://orders.example:8445/orders/%34%32x",
        "/orders/42",
        "",
    ] {
        assert_eq!(
            check(&with_claim("htu", htu.into())),
            Err(DpopError::WrongUri),
            "{htu}"
        );
    }
}

#[test]
fn admits_an_htu_equal_after_normalisation() {
    for htu in [
        "https://orders.example:8445/orders/42?page=2",
        "https://orders.example:8445/orders/42#top",
        "HTTPS://Orders.Example:8445/orders/42",
        "https://orders.example:8445/orders/./x/../42",
        "https://orders.example:8445/%6Frders/%34%32",
    ] {
        assert!(check(&with_claim("htu", htu.into())).is_ok(), "{htu}");
    }
}

#[test]
fn refuses_a_proof_when_the_expected_uri_is_unusable() {
    let mut e = expect();
    e.htu = "not a uri";
    assert_eq!(
        verify_proof(&sign(&header(), &claims()), &e),
        Err(DpopError::WrongUri)
    );
    // Equal text is not enough: it must be a URI.
    let mut c = claims();
    c["htu"] = "not a uri".into();
    assert_eq!(
        verify_proof(&sign(&header(), &c), &e),
        Err(DpopError::WrongUri)
    );
}

#[test]
fn refuses_a_stale_iat_and_admits_one_at_the_edge_of_the_window() {
    let oldest = NOW - WINDOW.max_age_s - WINDOW.clock_skew_s;
    assert!(check(&with_claim("iat", oldest.into())).is_ok());
    assert_eq!(
        check(&with_claim("iat", (oldest - 1).into())),
        Err(DpopError::TooOld)
    );
}

#[test]
fn refuses_an_iat_beyond_the_skew_and_admits_one_within_it() {
    let latest = NOW + WINDOW.clock_skew_s;
    assert!(check(&with_claim("iat", latest.into())).is_ok());
    assert!(check(&with_claim("iat", json!((NOW as f64) + 0.5))).is_ok());
    assert_eq!(
        check(&with_claim("iat", (latest + 1).into())),
        Err(DpopError::IssuedInFuture)
    );
}

#[test]
fn refuses_a_proof_without_ath_when_a_token_is_presented() {
    assert_eq!(check(&without_claim("ath")), Err(DpopError::MissingAth));
}

#[test]
fn refuses_the_ath_of_another_token() {
    for ath in [
        json!(access_token_hash("another.token.here")),
        json!(""),
        json!(TOKEN),
        json!(7),
    ] {
        assert_eq!(check(&with_claim("ath", ath)), Err(DpopError::AthMismatch));
    }
}

#[test]
fn admits_a_proof_without_ath_when_no_token_is_presented() {
    let mut e = expect();
    e.ath = None;
    assert!(verify_proof(&without_claim("ath"), &e).is_ok());
}

#[test]
fn refuses_a_missing_or_stale_nonce_when_nonces_are_required() {
    let nonces = ["n-current", "n-previous"];
    let mut e = expect();
    e.nonces = &nonces;
    assert_eq!(
        verify_proof(&sign(&header(), &claims()), &e),
        Err(DpopError::NonceMismatch)
    );
    assert_eq!(
        verify_proof(&with_claim("nonce", "n-old".into()), &e),
        Err(DpopError::NonceMismatch)
    );
    assert_eq!(DpopError::NonceMismatch.oauth_error(), "use_dpop_nonce");
}

#[test]
fn admits_a_current_nonce_and_ignores_nonces_when_not_required() {
    let nonces = ["n-current", "n-previous"];
    let mut e = expect();
    e.nonces = &nonces;
    for n in nonces {
        assert!(verify_proof(&with_claim("nonce", n.into()), &e).is_ok());
    }
    assert!(check(&with_claim("nonce", "anything".into())).is_ok());
}
