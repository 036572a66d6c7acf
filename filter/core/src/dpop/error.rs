//! Why a DPoP proof was refused: one stable string per cause for logs, mapped to the CONTRACT
//! §4 reason and to the RFC 9449 error code of the reply.

use crate::reason::Reason;
use std::fmt;

/// Why a proof was refused. Stable strings for logs; the answer is [`DpopError::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DpopError {
    /// Empty, larger than [`super::MAX_PROOF_BYTES`], not three base64url parts, or a header or
    /// claims set that is not one JSON object without duplicate keys.
    Malformed,
    /// The header's `typ` is not `dpop+jwt`.
    WrongType,
    /// The header's `alg` is not ES256.
    UnsupportedAlg,
    /// The header has a `crit` member: no extension is understood here.
    Crit,
    /// The header has no `jwk` object, or its `x`/`y` are not a point of P-256.
    BadKey,
    /// The `jwk` is not an EC P-256 key for ES256 signatures.
    UnsupportedKey,
    /// The `jwk` carries private key material.
    PrivateKey,
    /// The signature does not verify with the header's `jwk`.
    BadSignature,
    /// `jti` missing, empty, longer than [`super::MAX_JTI_LEN`] or not printable ASCII.
    BadJti,
    /// `htm`, `htu` or `iat` missing or of the wrong JSON type.
    MissingClaim,
    /// `htm` is not the request's method.
    WrongMethod,
    /// `htu` is not the request's URI (after RFC 9449 §4.3 normalisation).
    WrongUri,
    /// A server nonce is required and the proof's `nonce` is missing or not a current one.
    NonceMismatch,
    /// `iat` is older than the window allows.
    TooOld,
    /// `iat` is further in the future than the clock skew allows.
    IssuedInFuture,
    /// An access token was presented and the proof has no `ath`.
    MissingAth,
    /// `ath` is not the hash of the presented access token.
    AthMismatch,
    /// The thumbprint of the proof key is not the expected `jkt` (the token's `cnf.jkt`).
    JktMismatch,
    /// The proof's `jti` was seen before within its window.
    Replayed,
    /// The replay cache is full of live entries: a new proof cannot be remembered, so it is
    /// refused rather than risk forgetting a replay.
    ReplayCacheFull,
    /// The proof key (`jkt`) already holds its share of the shared replay cache: refused so
    /// one client cannot crowd the others out.
    ClientShareFull,
}

impl DpopError {
    /// The stable string for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::WrongType => "wrong_type",
            Self::UnsupportedAlg => "unsupported_alg",
            Self::Crit => "crit",
            Self::BadKey => "bad_key",
            Self::UnsupportedKey => "unsupported_key",
            Self::PrivateKey => "private_key",
            Self::BadSignature => "bad_signature",
            Self::BadJti => "bad_jti",
            Self::MissingClaim => "missing_claim",
            Self::WrongMethod => "wrong_method",
            Self::WrongUri => "wrong_uri",
            Self::NonceMismatch => "nonce_mismatch",
            Self::TooOld => "too_old",
            Self::IssuedInFuture => "issued_in_future",
            Self::MissingAth => "missing_ath",
            Self::AthMismatch => "ath_mismatch",
            Self::JktMismatch => "jkt_mismatch",
            Self::Replayed => "replayed",
            Self::ReplayCacheFull => "replay_cache_full",
            Self::ClientShareFull => "client_share_full",
        }
    }

    /// The CONTRACT §4 reason: `dpop_replay` only for a proof seen before; a proof that
    /// cannot be remembered (cache or its key's share full) is `replay_cache_full` (503: it
    /// was never seen, try again later); anything else `dpop_invalid`.
    pub fn reason(self) -> Reason {
        match self {
            Self::Replayed => Reason::DpopReplay,
            Self::ReplayCacheFull | Self::ClientShareFull => Reason::ReplayCacheFull,
            _ => Reason::DpopInvalid,
        }
    }

    /// The RFC 9449 error code: `use_dpop_nonce` (§8, §9) when the client should retry with
    /// the server's nonce, else `invalid_dpop_proof`.
    pub fn oauth_error(self) -> &'static str {
        match self {
            Self::NonceMismatch => "use_dpop_nonce",
            _ => "invalid_dpop_proof",
        }
    }
}

impl fmt::Display for DpopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for DpopError {}
