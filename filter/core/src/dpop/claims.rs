//! The proof's claims, read only after its signature verified: `jti`, `htm`, `htu`, `nonce`,
//! `iat` within the window, and `ath` (RFC 9449 §4.3 checks 9–12, in that order).

use super::error::DpopError;
use super::expect::{ProofCheck, ProofWindow};
use super::htu::{is_normal_htu, normalize_htu};
use crate::jose;
use crate::json::strict_members;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Longest `jti` accepted: it becomes a replay-cache key.
pub const MAX_JTI_LEN: usize = 256;

/// `ath` (RFC 9449 §4.2): base64url(SHA-256(ASCII of the access token)).
pub fn access_token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// The claims that passed, and the first second the proof is out of its window.
pub(super) struct ProofClaims {
    pub jti: String,
    pub iat: u64,
    pub replay_until_s: u64,
}

/// Checks the verified `payload` against what the request expects (all but `jkt`).
pub(super) fn check_claims(
    payload: &[u8],
    expect: &ProofCheck<'_>,
) -> Result<ProofClaims, DpopError> {
    let [jti, htm, htu, iat, ath, nonce] =
        strict_members(payload, ["jti", "htm", "htu", "iat", "ath", "nonce"])
            .map_err(|_| DpopError::Malformed)?;
    let jti = match jti {
        Some(Value::String(jti))
            if !jti.is_empty() && jti.len() <= MAX_JTI_LEN && jose::is_printable_ascii(&jti) =>
        {
            jti
        }
        _ => return Err(DpopError::BadJti),
    };
    let (Some(Value::String(htm)), Some(Value::String(htu)), Some(Value::Number(iat))) =
        (htm, htu, iat)
    else {
        return Err(DpopError::MissingClaim);
    };
    if htm != expect.method {
        return Err(DpopError::WrongMethod);
    }
    // The same text normalises the same way: one normalisation says whether it is a URI at
    // all, and none when the text is its own normal form (the usual case: the client wrote
    // the request's URI, and `request_htu` gave the expected one in normal form).
    let same_uri = if htu == expect.htu {
        is_normal_htu(&htu) || normalize_htu(&htu).is_some()
    } else {
        matches!((normalize_htu(&htu), normalize_htu(expect.htu)), (Some(got), Some(want)) if got == want)
    };
    if !same_uri {
        return Err(DpopError::WrongUri);
    }
    if !expect.nonces.is_empty() {
        match nonce {
            Some(Value::String(n)) if expect.nonces.contains(&n.as_str()) => {}
            _ => return Err(DpopError::NonceMismatch),
        }
    }
    let iat = jose::numeric_date(&iat).ok_or(DpopError::MissingClaim)?;
    let ProofWindow {
        max_age_s,
        clock_skew_s,
    } = expect.window;
    // Accepted while now ≤ iat + max_age + skew; that instant + 1 ends the replay window.
    let last_second = iat.saturating_add(max_age_s).saturating_add(clock_skew_s);
    if expect.now_s > last_second {
        return Err(DpopError::TooOld);
    }
    if iat > expect.now_s.saturating_add(clock_skew_s) {
        return Err(DpopError::IssuedInFuture);
    }
    if let Some(want) = expect.ath {
        match ath {
            Some(Value::String(ath)) if ath == want => {}
            Some(_) => return Err(DpopError::AthMismatch),
            None => return Err(DpopError::MissingAth),
        }
    }
    Ok(ProofClaims {
        jti,
        iat,
        replay_until_s: last_second.saturating_add(1),
    })
}
