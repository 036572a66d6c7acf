//! Verifying a DPoP proof (RFC 9449 §4.3): size → header and shape → signature with the
//! proof's own `jwk` (in the module, through a remembered key's table, or by the host) →
//! claims → `jkt`. A [`VerifiedProof`] exists only when every check passed.

use super::claims::check_claims;
use super::error::DpopError;
use super::expect::ProofCheck;
use super::header::{check_header, header_part, read_proof};
use super::keys::ProofKeys;
use crate::cache::same_bytes;
use crate::host_es256::{ForeignFunctions, HostKey};
use crate::token::Es256Verifier;
use std::rc::Rc;

/// Longest proof accepted (the whole compact JWS). An ES256 proof with its `jwk` is ~500 bytes.
pub const MAX_PROOF_BYTES: usize = 2 * 1024;

/// A proof whose every check passed. Only this module builds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    jti: String,
    iat: u64,
    jkt: String,
    replay_until_s: u64,
}

impl VerifiedProof {
    pub fn jti(&self) -> &str {
        &self.jti
    }
    pub fn iat(&self) -> u64 {
        self.iat
    }
    /// RFC 7638 thumbprint of the proof key: what a token endpoint puts in `cnf.jkt`.
    pub fn jkt(&self) -> &str {
        &self.jkt
    }
    /// The first second at which this proof's `iat` falls out of the window: its `jti` must be
    /// remembered until then (exclusive), and may be forgotten from then on.
    pub fn replay_until_s(&self) -> u64 {
        self.replay_until_s
    }
}

/// Checks a DPoP proof in RFC 9449 §4.3 order: shape and size → header (`crit`, `alg`
/// ES256, `typ`, a public EC P-256 `jwk`) → signature with that `jwk` → claims (`jti`, `htm`,
/// `htu`, `nonce`, `iat`, `ath`) → `jkt`. Replay is the caller's: see [`super::ReplayCache`].
pub fn verify_proof(proof: &str, expect: &ProofCheck<'_>) -> Result<VerifiedProof, DpopError> {
    check_proof(proof, expect, None, None)
}

/// [`verify_proof`], remembering passed headers in `keys` (the proof headers this VM saw
/// recently), so a client that signs every request with one key has its header checked, and
/// pays for a variable-base scalar multiplication, only until its header is remembered.
/// Same answers.
pub fn verify_proof_with(
    proof: &str,
    expect: &ProofCheck<'_>,
    keys: Option<&mut ProofKeys>,
) -> Result<VerifiedProof, DpopError> {
    check_proof(proof, expect, keys, None)
}

/// [`verify_proof_with`], the signature checked by the host's `verify_signature`. Same answers.
pub fn verify_proof_by_host(
    proof: &str,
    expect: &ProofCheck<'_>,
    keys: Option<&mut ProofKeys>,
    host: &dyn ForeignFunctions,
) -> Result<VerifiedProof, DpopError> {
    check_proof(proof, expect, keys, Some(host))
}

/// The checks in order; the signature by `host` when given, else in the module.
fn check_proof(
    proof: &str,
    expect: &ProofCheck<'_>,
    mut keys: Option<&mut ProofKeys>,
    host: Option<&dyn ForeignFunctions>,
) -> Result<VerifiedProof, DpopError> {
    if proof.is_empty() || proof.len() > MAX_PROOF_BYTES {
        return Err(DpopError::Malformed);
    }
    let header_b64 = header_part(proof);
    let known = keys.as_deref_mut().and_then(|k| k.get(header_b64));
    let header = match &known {
        Some(header) => Rc::clone(header),
        None => Rc::new(check_header(header_b64)?),
    };
    let jws = read_proof(proof)?;
    let (message, signature) = (jws.signing_input.as_bytes(), jws.signature.as_slice());
    let key = header.key.verifying_key();
    match (host, &known) {
        (Some(host), _) => HostKey::new(host, header.key.spki()).verify_es256(message, signature),
        // A remembered key verifies through its table; a new one the plain way, this once.
        (None, Some(_)) => header.key.verify_es256(message, signature),
        (None, None) => key.verify_es256(message, signature),
    }
    .map_err(|_| DpopError::BadSignature)?;
    let claims = check_claims(&jws.payload, expect)?;
    if expect
        .jkt
        .is_some_and(|want| !same_bytes(want.as_bytes(), header.jkt.as_bytes()))
    {
        return Err(DpopError::JktMismatch);
    }
    let jkt = header.jkt.clone();
    if let (Some(keys), None) = (keys, known) {
        keys.remember(header_b64, header);
    }
    Ok(VerifiedProof {
        jti: claims.jti,
        iat: claims.iat,
        jkt,
        replay_until_s: claims.replay_until_s,
    })
}
