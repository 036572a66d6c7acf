//! The one access-token codec, both sides of it (as jwt-simple keeps build and verify
//! together): the issuer's claims and encoding, and verification in a fixed order — bounded
//! split → header (ES256 only, `crit` refused, `typ` at+jwt, `kid` required) → signature →
//! claims. Verified values ([`VerifiedToken`], [`IssuedToken`]) exist only when every step
//! passed; only this module builds them, and its verifier trait is sealed.
//!
//! - `jws`: the compact JWS layer (split, untrusted header, ES256 signature).
//! - `access`: the resource server's read of any trusted issuer's token (the filter).
//! - `issued`: the token certbind's authz-server issues, and its own read-back of it.

mod access;
mod issued;
mod jws;

pub use access::{Expectations, VerifiedToken, split_scopes, validate_claims, verify_access_token};
pub use issued::{
    CertificateConfirmation, Claims, Confirmation, DpopKeyConfirmation, IssuedToken, encode,
    verify_issued,
};
pub(crate) use jws::sealed;
pub use jws::{Es256Verifier, UntrustedJws, VerifiedJws, decode_metadata, es256_verify};

use crate::reason::Reason;

/// Longest token accepted (the whole compact JWS).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest base64url header accepted: a legitimate header is ~60 bytes.
pub const MAX_HEADER_B64: usize = 1024;
/// Most `aud` entries read.
pub const MAX_AUDIENCES: usize = 16;
/// Longest `client_id`, `jti` or `scope` accepted (they become upstream headers).
pub const MAX_CLAIM_LEN: usize = 1024;
/// Most scopes read.
pub const MAX_SCOPES: usize = 64;

/// The token from an `Authorization` value: `Bearer <token>` (scheme case-insensitive).
/// Another scheme, or none, counts as no bearer token at all (RFC 6750 §3.1).
pub fn bearer(authorization: &str) -> Result<&str, Reason> {
    presented(authorization, false).and_then(|(_, token)| token_text(token))
}

/// The scheme an access token was presented with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScheme {
    /// `Bearer` (RFC 6750).
    Bearer,
    /// `DPoP` (RFC 9449 §7.1).
    Dpop,
}

/// The scheme and token of an `Authorization` value: `Bearer <token>` or `DPoP <token>`
/// (schemes case-insensitive). Another scheme, or none, counts as no token at all.
pub fn authorization_token(authorization: &str) -> Result<(AuthScheme, &str), Reason> {
    let (scheme, token) = presented(authorization, true)?;
    Ok((scheme, token_text(token)?))
}

/// The scheme and the token after it, as [`authorization_token`] reads them (`DPoP` only when
/// `dpop`, else it counts as no token), but the token's text not yet held to [`token_text`]:
/// for a probe of the token cache, which holds only tokens that passed it, so a hit can only
/// be a token that would pass again. A miss goes through [`token_text`] before anything reads
/// the token.
pub fn presented(authorization: &str, dpop: bool) -> Result<(AuthScheme, &str), Reason> {
    match scheme_and_rest(authorization) {
        Some((AuthScheme::Dpop, _)) if !dpop => Err(Reason::MissingToken),
        Some((scheme, rest)) => Ok((scheme, rest.trim_start_matches([' ', '\t']))),
        None => Err(Reason::MissingToken),
    }
}

/// A token's text after its scheme's blanks: not empty and without a blank.
pub fn token_text(token: &str) -> Result<&str, Reason> {
    if token.is_empty() || has_blank(token.as_bytes()) {
        return Err(Reason::MalformedToken);
    }
    Ok(token)
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A known scheme and what follows it. Byte scans: this runs on every request, and the
/// token is hundreds of bytes.
fn scheme_and_rest(authorization: &str) -> Option<(AuthScheme, &str)> {
    let value = authorization.trim_matches([' ', '\t']);
    let end = value.bytes().position(is_blank).unwrap_or(value.len());
    let (scheme, rest) = value.split_at(end);
    if scheme.eq_ignore_ascii_case("bearer") {
        Some((AuthScheme::Bearer, rest))
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Some((AuthScheme::Dpop, rest))
    } else {
        None
    }
}

/// Whether any byte is a space or a tab, eight bytes at a time: every request's token is
/// scanned, and in Wasm (no SIMD) a byte loop cost more instructions than any other step of
/// a warm request.
fn has_blank(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `x ^ broadcast` is zero where `x`'s byte equals the broadcast one. The test
    // below may mark the wrong byte after a borrow, but whether any byte is zero it answers
    // exactly.
    fn has_zero_byte(w: u64) -> bool {
        ((w.wrapping_sub(ONES) & !w) & HIGHS) != 0
    }
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        if has_zero_byte(x ^ (ONES * u64::from(b' ')))
            || has_zero_byte(x ^ (ONES * u64::from(b'\t')))
        {
            return true;
        }
    }
    chunks.remainder().iter().copied().any(is_blank)
}

#[cfg(test)]
mod issued_tests;
#[cfg(test)]
pub(crate) mod tests;
