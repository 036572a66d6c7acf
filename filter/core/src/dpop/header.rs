//! The compact proof JWS, read once: the untrusted header (`crit`, `alg`, `typ` and a public EC
//! P-256 `jwk`) is decoded and checked here, then the rest of the shape, yielding what the
//! signature check needs. Header causes come first (RFC 9449 §4.3 order).

use super::error::DpopError;
use crate::es256::PreparedKey;
use crate::jose;
use crate::json::{present, strict_members};
use crate::jwk::{ec_p256_jwk_thumbprint, ec_p256_key};
use crate::token::MAX_HEADER_B64;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::VerifyingKey;
use serde_json::{Map, Value};

/// JWK members that carry private key material (RFC 7518 §6.2.2, §6.3.2, §6.4.1). A proof
/// whose `jwk` has any of them is refused (RFC 9449 §4.3 check 7).
const PRIVATE_JWK_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// A proof header that passed every check: its key (with the lazily built table of the
/// in-module path) and the key's RFC 7638 thumbprint. The same header text always gives the
/// same answer, so a passed one can be remembered by its text ([`super::ProofKeys`]).
#[derive(Debug)]
pub(super) struct CheckedHeader {
    pub key: PreparedKey,
    pub jkt: String,
}

/// The rest of a proof whose shape is a compact JWS; its signature is unchecked.
pub(super) struct UntrustedProof<'a> {
    /// `header.payload`, what the signature covers.
    pub signing_input: &'a str,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// The header part of a proof (its text before the first `.`).
pub(super) fn header_part(proof: &str) -> &str {
    proof.split('.').next().unwrap_or_default()
}

/// Checks the header part (`header_b64`, see [`header_part`]) of a proof.
pub(super) fn check_header(header_b64: &str) -> Result<CheckedHeader, DpopError> {
    let (key, x, y) = read_header(header_b64)?;
    Ok(CheckedHeader {
        key: PreparedKey::new(key),
        jkt: ec_p256_jwk_thumbprint(&x, &y),
    })
}

/// The shape of a proof of at most [`super::MAX_PROOF_BYTES`] (the caller bounds it) whose
/// header passed: exactly three base64url parts.
pub(super) fn read_proof(proof: &str) -> Result<UntrustedProof<'_>, DpopError> {
    let mut parts = proof.splitn(4, '.');
    let header_b64 = parts.next().unwrap_or_default();
    let (Some(payload_b64), Some(signature_b64), None) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(DpopError::Malformed);
    };
    if header_b64.len() > MAX_HEADER_B64 {
        return Err(DpopError::Malformed);
    }
    let b64 = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| DpopError::Malformed)
    };
    let signing_input_len = header_b64.len() + 1 + payload_b64.len();
    Ok(UntrustedProof {
        signing_input: proof.get(..signing_input_len).unwrap_or_default(),
        payload: b64(payload_b64)?,
        signature: b64(signature_b64)?,
    })
}

/// The header checks: `crit` refused, `alg` ES256, `typ` dpop+jwt, a public EC P-256 `jwk`.
fn read_header(header_b64: &str) -> Result<(VerifyingKey, String, String), DpopError> {
    let header_json = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| DpopError::Malformed)?;
    // `kid` is unused, but as for access tokens it must be a string when present.
    let [typ, alg, jwk, crit, kid] =
        strict_members(&header_json, ["typ", "alg", "jwk", "crit", "kid"])
            .map_err(|_| DpopError::Malformed)?;
    // Any `crit` member, `null` included: no extension is understood here.
    if crit.is_some() {
        return Err(DpopError::Crit);
    }
    match alg {
        Some(Value::String(alg)) if alg == "ES256" => {}
        _ => return Err(DpopError::UnsupportedAlg),
    }
    let typ_ok = matches!(&typ, Some(Value::String(typ)) if jose::is_jwt_type(typ, "dpop+jwt"));
    if !typ_ok {
        return Err(DpopError::WrongType);
    }
    let Some(Value::Object(jwk)) = jwk else {
        return Err(DpopError::BadKey);
    };
    if PRIVATE_JWK_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(DpopError::PrivateKey);
    }
    let key = public_p256_key(&jwk)?;
    if present(kid).is_some_and(|kid| !kid.is_string()) {
        return Err(DpopError::Malformed);
    }
    Ok(key)
}

fn public_p256_key(jwk: &Map<String, Value>) -> Result<(VerifyingKey, String, String), DpopError> {
    let member = |name: &str| match jwk.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(DpopError::BadKey),
    };
    if member("kty")? != Some("EC") || member("crv")? != Some("P-256") {
        return Err(DpopError::UnsupportedKey);
    }
    // Optional members that, when present, must agree with an ES256 signing key.
    if member("alg")?.is_some_and(|a| a != "ES256") || member("use")?.is_some_and(|u| u != "sig") {
        return Err(DpopError::UnsupportedKey);
    }
    let (Some(x), Some(y)) = (member("x")?, member("y")?) else {
        return Err(DpopError::BadKey);
    };
    let key = ec_p256_key(x, y).ok_or(DpopError::BadKey)?;
    Ok((key, x.to_owned(), y.to_owned()))
}
