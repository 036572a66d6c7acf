//! The compact JWS layer every JWT here goes through (access tokens, DPoP proofs): a bounded
//! split, the untrusted header (ES256 only, no `crit`), then the ES256 signature. The verifier
//! trait is sealed: only this crate's keys can say a signature holds.

use super::{MAX_HEADER_B64, MAX_TOKEN_BYTES};
use crate::es256::PreparedKey;
use crate::jose;
use crate::json::{optional_string, strict_members};
use crate::reason::Reason;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde_json::Value;

/// A compact JWS whose header passed the algorithm checks but whose signature has not been
/// checked: nothing in it may be trusted yet except that it is well-formed.
#[derive(Debug)]
pub struct UntrustedJws<'a> {
    signing_input: &'a str,
    typ: Option<String>,
    kid: Option<String>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

/// Splits and decodes a compact JWS, reading only what selects the verification: the
/// untrusted header. Refuses anything but ES256, and any `crit`.
pub fn decode_metadata(token: &str) -> Result<UntrustedJws<'_>, Reason> {
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(Reason::MalformedToken);
    }
    let mut parts = token.splitn(4, '.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reason::MalformedToken);
    };
    if header_b64.len() > MAX_HEADER_B64 {
        return Err(Reason::MalformedToken);
    }
    let b64 = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| Reason::MalformedToken)
    };
    let header_json = b64(header_b64)?;
    let payload = b64(payload_b64)?;
    let signature = b64(signature_b64)?;
    // The JOSE header members we read. Others (`jku`, `x5u`, `jwk`, ...) are never used.
    let [alg, typ, kid, crit] = strict_members(&header_json, ["alg", "typ", "kid", "crit"])
        .map_err(|_| Reason::MalformedToken)?;
    // The token never chooses the algorithm: only ES256 is verified here.
    match alg {
        Some(Value::String(alg)) if alg == "ES256" => {}
        Some(Value::String(_)) => return Err(Reason::UnsupportedAlg),
        _ => return Err(Reason::MalformedToken),
    }
    // RFC 7515 §4.1.11: we understand no extension, so any `crit` member makes the token
    // unusable, `null` included (a `crit` that is not a list is malformed anyway).
    if crit.is_some() {
        return Err(Reason::MalformedToken);
    }
    let as_string = |v| optional_string(v).map_err(|_| Reason::MalformedToken);
    let signing_input_len = header_b64.len() + 1 + payload_b64.len();
    Ok(UntrustedJws {
        signing_input: token.get(..signing_input_len).unwrap_or_default(),
        typ: as_string(typ)?,
        kid: as_string(kid)?,
        payload,
        signature,
    })
}

impl<'a> UntrustedJws<'a> {
    /// The RFC 9068 profile: `typ` must be `at+jwt` (optionally `application/`, any case),
    /// and a `kid` must say which JWKS key signs. Returns that `kid`.
    pub fn access_token_kid(&self) -> Result<&str, Reason> {
        let typ_ok = self
            .typ
            .as_deref()
            .is_some_and(|typ| jose::is_jwt_type(typ, "at+jwt"));
        if !typ_ok {
            return Err(Reason::WrongType);
        }
        match self.kid.as_deref() {
            Some(kid) if !kid.is_empty() => Ok(kid),
            _ => Err(Reason::MalformedToken),
        }
    }

    /// Checks the ES256 signature (raw `r‖s`, RFC 7518 §3.4) over `header.payload`.
    pub fn verify_signature<K: Es256Verifier + ?Sized>(
        self,
        key: &K,
    ) -> Result<VerifiedJws, Reason> {
        key.verify_es256(self.signing_input.as_bytes(), &self.signature)?;
        Ok(VerifiedJws {
            payload: self.payload,
        })
    }
}

/// ES256: ECDSA P-256 with SHA-256 over `message`, signature as raw `r‖s` (IEEE P1363,
/// 64 bytes). The one place a signature is checked.
pub fn es256_verify(key: &VerifyingKey, message: &[u8], signature: &[u8]) -> Result<(), Reason> {
    let signature = Signature::from_slice(signature).map_err(|_| Reason::BadSignature)?;
    key.verify(message, &signature)
        .map_err(|_| Reason::BadSignature)
}

/// A public key that checks ES256 signatures: a plain key, a JWKS key with its table, or a key
/// the host checks with. Sealed (as rustls seals its verifiers): a crate outside this one
/// cannot implement it, so no outside type can vouch for a signature it never checked.
pub trait Es256Verifier: sealed::Sealed {
    fn verify_es256(&self, message: &[u8], signature: &[u8]) -> Result<(), Reason>;
}

/// The seal: a public trait in a module no other crate can name.
pub(crate) mod sealed {
    pub trait Sealed {}
}

impl sealed::Sealed for VerifyingKey {}
impl sealed::Sealed for PreparedKey {}

impl Es256Verifier for VerifyingKey {
    fn verify_es256(&self, message: &[u8], signature: &[u8]) -> Result<(), Reason> {
        es256_verify(self, message, signature)
    }
}

impl Es256Verifier for PreparedKey {
    fn verify_es256(&self, message: &[u8], signature: &[u8]) -> Result<(), Reason> {
        if self.verify(message, signature) {
            Ok(())
        } else {
            Err(Reason::BadSignature)
        }
    }
}

/// A JWS whose ES256 signature verified: its payload is authentic, not yet validated.
#[derive(Debug)]
pub struct VerifiedJws {
    payload: Vec<u8>,
}

impl VerifiedJws {
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}
