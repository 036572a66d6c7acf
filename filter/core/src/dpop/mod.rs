//! DPoP proof checking (RFC 9449 §4.2–4.3): one pure function from a proof JWT and what the
//! request says to a [`VerifiedProof`], plus a bounded [`ReplayCache`] of seen `jti`s. The
//! signature is checked by the token verifier's one ES256 check; the key's thumbprint is
//! `jwk`'s RFC 7638 one; the caller supplies time and keeps the replay state.
//!
//! Files, in the order a proof meets them: `header` (the JWS read once: header, `jwk`, shape),
//! `proof` (the verifier), `claims` (checks on the verified payload), `htu` (URI
//! normalisation), `keys` (remembered proof headers and their keys), `replay` (the `jti`
//! cache), `expect` (what a request expects), `error` (why a proof was refused).

mod claims;
mod error;
mod expect;
mod header;
mod htu;
mod keys;
mod proof;
mod replay;

pub use claims::{MAX_JTI_LEN, access_token_hash};
pub use error::DpopError;
pub use expect::{ProofCheck, ProofWindow};
pub use htu::{MAX_HTU_LEN, is_normal_htu, normalize_htu, request_htu};
pub use keys::{PROOF_KEY_CACHE_SIZE, ProofKeys};
pub use proof::{
    MAX_PROOF_BYTES, VerifiedProof, verify_proof, verify_proof_by_host, verify_proof_with,
};
pub use replay::ReplayCache;

#[cfg(test)]
mod tests;
