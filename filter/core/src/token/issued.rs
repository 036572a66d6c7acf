//! The access token certbind's authz-server issues (CONTRACT §3): exactly these claims, signed
//! ES256 as a compact JWS under the header `{"alg":"ES256","typ":"at+jwt","kid":…}`; and the
//! issuer's own read-back of it (`/introspect`, `/revoke`). Core holds no private key and does
//! no I/O: the signature comes from the caller, the keys by `kid` from the caller's lookup.

use super::access::check_time;
use super::jws::{Es256Verifier, decode_metadata};
use crate::json::from_slice_strict;
use crate::reason::Reason;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use std::ops::Deref;

/// The JOSE header we issue, members in the order the contract prints them.
#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

/// `cnf` (RFC 7800): exactly one binding, the client certificate or a DPoP key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Confirmation {
    /// RFC 8705 §3.1: `{"x5t#S256": ...}`.
    Certificate(CertificateConfirmation),
    /// RFC 9449 §6.1: `{"jkt": ...}`.
    DpopKey(DpopKeyConfirmation),
}

/// The RFC 8705 certificate thumbprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfirmation {
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// The RFC 7638 thumbprint of the DPoP proof key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpopKeyConfirmation {
    pub jkt: String,
}

/// Exactly the claims of CONTRACT §3, in the order they are issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub client_id: String,
    pub aud: String,
    pub scope: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
    pub cnf: Confirmation,
    /// The thumbprint (`x5t#S256` form) of the client certificate the token was issued over,
    /// whatever the binding: a certificate revocation reaches DPoP-bound tokens through it.
    #[serde(rename = "client_x5t#S256")]
    pub client_x5t_s256: String,
    /// A usage-bound token: how many uses it was issued with (issue 22); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
}

impl Claims {
    /// The same claims bound to a DPoP key (`cnf.jkt`) instead of the client certificate.
    pub fn bound_to_dpop_key(self, jkt: &str) -> Self {
        Self {
            cnf: Confirmation::DpopKey(DpopKeyConfirmation {
                jkt: jkt.to_owned(),
            }),
            ..self
        }
    }

    /// The OAuth `token_type` (RFC 6749 §7.1, RFC 9449 §5): `DPoP` for a DPoP-bound token,
    /// `Bearer` for a certificate-bound one (RFC 8705 keeps the Bearer scheme).
    pub fn token_type(&self) -> &'static str {
        match self.cnf {
            Confirmation::Certificate(_) => "Bearer",
            Confirmation::DpopKey(_) => "DPoP",
        }
    }
}

/// `claims` as a compact JWS `header.payload.signature` under key `kid`; `sign` returns the
/// ES256 signature of its input as raw `r‖s` (RFC 7518 §3.4), made by the caller's key.
pub fn encode(
    claims: &Claims,
    kid: &str,
    sign: impl FnOnce(&[u8]) -> [u8; 64],
) -> Result<String, serde_json::Error> {
    let header = Header {
        alg: "ES256",
        typ: "at+jwt",
        kid,
    };
    let mut jws = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?);
    jws.push('.');
    jws.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?));
    let signature = sign(jws.as_bytes());
    jws.push('.');
    jws.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(jws)
}

/// A token this issuer signed, read back: only [`verify_issued`] builds one. Reads as its
/// [`Claims`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    kid: String,
    claims: Claims,
}

impl IssuedToken {
    /// The `kid` of the key whose signature held.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    pub fn into_claims(self) -> Claims {
        self.claims
    }
}

impl Deref for IssuedToken {
    type Target = Claims;

    fn deref(&self) -> &Claims {
        &self.claims
    }
}

/// The issuer's check of a token it issued (RFC 7662 introspection, RFC 7009 revocation): the
/// same header and signature steps as the filter's, the key found by `kid` through `key_for`;
/// then the payload must be exactly the issued [`Claims`] (nothing missing, nothing extra, one
/// binding), from `issuer`, with `nbf ≤ now < exp` and no skew (the issuer's own clock).
/// There is no single audience to expect: the caller decides who may learn what.
pub fn verify_issued<'k, K>(
    token: &str,
    key_for: impl FnOnce(&str) -> Option<&'k K>,
    issuer: &str,
    now_s: u64,
) -> Result<IssuedToken, Reason>
where
    K: Es256Verifier + ?Sized + 'k,
{
    let jws = decode_metadata(token)?;
    let kid = jws.access_token_kid()?.to_owned();
    let key = key_for(&kid).ok_or(Reason::UnknownKid)?;
    let verified = jws.verify_signature(key)?;
    let claims: Claims =
        from_slice_strict(verified.payload()).map_err(|_| Reason::MalformedToken)?;
    if claims.iss != issuer {
        return Err(Reason::WrongIssuer);
    }
    check_time(claims.exp, Some(claims.nbf), now_s, 0)?;
    Ok(IssuedToken { kid, claims })
}
