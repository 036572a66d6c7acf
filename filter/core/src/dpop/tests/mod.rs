//! DPoP tests, one file per concept; this file holds the fixtures they share: a signing key,
//! a valid header and claims, and builders that change one member and sign again.

mod claims;
mod header;
mod htu;
mod keys;
mod proof;
mod replay;
mod rfc9449;

use super::*;
use crate::jwk::ec_p256_jwk_thumbprint;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{Value, json};

/// RFC 9449 §4.1: the example proof (shown decoded there; the same proof, encoded, is
/// the `DPoP` header of the token request in §5), transcribed.
const RFC9449_PROOF: &str = concat!(
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6Ik",
    "VDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCR",
    "nMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JE",
    "QSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIj",
    "oiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwia",
    "WF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg",
    "4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg"
);

/// RFC 9449 §4.1: the proof's public key, its claims.
const RFC9449_X: &str = "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs";

const RFC9449_Y: &str = "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA";

const RFC9449_JTI: &str = "-BwC3ESc6acc2lTc";

const RFC9449_HTU: &str = "https://server.example.com/token";

const RFC9449_IAT: u64 = 1_562_262_616;

/// RFC 9449 §6.1: `cnf.jkt` of that key.
const RFC9449_JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";

const NOW: u64 = 1_800_000_000;

const HTU: &str = "https://orders.example:8445/orders/42";

const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";

const WINDOW: ProofWindow = ProofWindow {
    max_age_s: 60,
    clock_skew_s: 5,
};

fn key() -> SigningKey {
    SigningKey::from_slice(&[0x11; 32]).unwrap()
}

fn other_key() -> SigningKey {
    SigningKey::from_slice(&[0x22; 32]).unwrap()
}

fn public_jwk(key: &SigningKey) -> Value {
    let point = key.verifying_key().to_sec1_point(false);
    json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    })
}

fn jkt_of(key: &SigningKey) -> String {
    let jwk = public_jwk(key);
    ec_p256_jwk_thumbprint(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap())
}

fn header() -> Value {
    json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(&key())})
}

fn claims() -> Value {
    json!({
        "jti": "e1j3V_bKic8-LAEB", "htm": "GET", "htu": HTU, "iat": NOW - 2,
        "ath": access_token_hash(TOKEN),
    })
}

fn sign_raw_with(key: &SigningKey, header: &str, claims: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let sig: Signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

fn sign(header: &Value, claims: &Value) -> String {
    sign_raw_with(&key(), &header.to_string(), &claims.to_string())
}

/// `ath` of [`TOKEN`].
static TOKEN_ATH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| access_token_hash(TOKEN));

fn expect() -> ProofCheck<'static> {
    ProofCheck {
        method: "GET",
        htu: HTU,
        now_s: NOW,
        window: WINDOW,
        ath: Some(TOKEN_ATH.as_str()),
        jkt: None,
        nonces: &[],
    }
}

fn check(proof: &str) -> Result<VerifiedProof, DpopError> {
    verify_proof(proof, &expect())
}

fn with_header(name: &str, value: Value) -> String {
    let mut h = header();
    h[name] = value;
    sign(&h, &claims())
}

fn without_header(name: &str) -> String {
    let mut h = header();
    h.as_object_mut().unwrap().remove(name);
    sign(&h, &claims())
}

fn with_jwk(name: &str, value: Value) -> String {
    let mut h = header();
    h["jwk"][name] = value;
    sign(&h, &claims())
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

fn rfc_expect(now: u64) -> ProofCheck<'static> {
    ProofCheck {
        method: "POST",
        htu: RFC9449_HTU,
        now_s: now,
        window: WINDOW,
        ath: None,
        jkt: None,
        nonces: &[],
    }
}
