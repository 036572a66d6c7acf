//! Proof-of-possession primitives: the RFC 8705 certificate thumbprint, the workload's SPIFFE
//! ID and the binding checks (the RFC 7638 JWK thumbprint lives in `jwk`, re-exported here).
//! The authz-server (issuing) and the filter (verifying) both call these; nothing here is
//! computed anywhere else.

use crate::cache::same_bytes;
use crate::cert::{self, CertFacts};
use crate::dpop::VerifiedProof;
use crate::jose;
pub use crate::jwk::{ec_p256_jwk_thumbprint, jwk_thumbprint};
use crate::reason::Reason;
use crate::token::VerifiedToken;
use crate::validity::CertValidity;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::fmt;
use std::rc::Rc;

/// Why a binding input was refused. Callers map these to stable reason codes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindingError {
    /// Not 64 hex digits (Envoy's `connection.sha256_peer_certificate_digest`).
    BadHexDigest,
    /// Not base64url without padding of exactly 32 bytes (a `cnf` `x5t#S256` or `jkt`).
    BadThumbprint,
    /// The certificate is not parseable DER or PEM.
    BadCertificate,
    /// The certificate carries no URI SAN, or more than one.
    UriSanCount(usize),
    /// The URI SAN is not a valid SPIFFE ID.
    BadSpiffeId(&'static str),
}

impl fmt::Display for BindingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadHexDigest => f.write_str("certificate digest is not 64 hex digits"),
            Self::BadThumbprint => f.write_str("thumbprint is not base64url of 32 bytes"),
            Self::BadCertificate => f.write_str("certificate is not valid DER/PEM"),
            Self::UriSanCount(n) => write!(f, "certificate has {n} URI SANs, exactly one needed"),
            Self::BadSpiffeId(why) => write!(f, "invalid SPIFFE ID: {why}"),
        }
    }
}

impl std::error::Error for BindingError {}

/// SHA-256 of a client certificate's DER: RFC 8705 §3.1 `x5t#S256`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertThumbprint([u8; 32]);

impl CertThumbprint {
    /// Hashes the DER encoding of the certificate.
    pub fn from_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// From Envoy's hex SHA-256 of the peer certificate (either case).
    pub fn from_hex(hex: &str) -> Result<Self, BindingError> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return Err(BindingError::BadHexDigest);
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let (hi, lo) = match pair {
                [hi, lo] => (hex_val(*hi), hex_val(*lo)),
                _ => (None, None),
            };
            *byte = match (hi, lo) {
                (Some(hi), Some(lo)) => (hi << 4) | lo,
                _ => return Err(BindingError::BadHexDigest),
            };
        }
        Ok(Self(out))
    }

    /// From the token's `cnf."x5t#S256"` value.
    pub fn from_cnf(value: &str) -> Result<Self, BindingError> {
        jose::sha256_b64url(value)
            .map(Self)
            .ok_or(BindingError::BadThumbprint)
    }

    /// From a digest already decoded (a verified token's, see [`VerifiedToken`]).
    pub fn from_digest(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    /// The `cnf."x5t#S256"` form: base64url without padding.
    pub fn to_cnf(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for CertThumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertThumbprint({})", self.to_cnf())
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A workload identity, `spiffe://<trust-domain>/<path>`, validated per the SPIFFE ID spec:
/// lowercase trust domain, non-empty path segments without `.`/`..`, no query or fragment.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    id: String,
    domain_end: usize,
}

const SPIFFE_SCHEME: &str = "spiffe://";
const SPIFFE_MAX_LEN: usize = 2048;

impl SpiffeId {
    pub fn parse(s: &str) -> Result<Self, BindingError> {
        let bad = |why| Err(BindingError::BadSpiffeId(why));
        if s.len() > SPIFFE_MAX_LEN {
            return bad("longer than 2048 bytes");
        }
        let Some(rest) = s.strip_prefix(SPIFFE_SCHEME) else {
            return bad("scheme must be spiffe://");
        };
        let (domain, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if domain.is_empty() {
            return bad("empty trust domain");
        }
        if !domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        {
            return bad("trust domain has a character outside [a-z0-9.-_]");
        }
        if path.is_empty() {
            return bad("a workload ID needs a path");
        }
        for segment in path.split('/').skip(1) {
            if segment.is_empty() {
                return bad("empty path segment");
            }
            if segment == "." || segment == ".." {
                return bad("dot path segment");
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                return bad("path has a character outside [A-Za-z0-9.-_]");
            }
        }
        Ok(Self {
            id: s.to_owned(),
            domain_end: SPIFFE_SCHEME.len() + domain.len(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    pub fn trust_domain(&self) -> &str {
        self.id
            .get(SPIFFE_SCHEME.len()..self.domain_end)
            .unwrap_or_default()
    }

    /// The path, starting with `/`.
    pub fn path(&self) -> &str {
        self.id.get(self.domain_end..).unwrap_or_default()
    }

    /// The SPIFFE ID of the one URI SAN of a DER certificate.
    pub fn from_cert_der(der: &[u8]) -> Result<Self, BindingError> {
        Self::from_cert(&cert::read(der).ok_or(BindingError::BadCertificate)?)
    }

    /// The SPIFFE ID of the one URI SAN of a PEM certificate.
    pub fn from_cert_pem(pem: &str) -> Result<Self, BindingError> {
        Self::from_cert_der(&cert::pem_to_der(pem).ok_or(BindingError::BadCertificate)?)
    }

    fn from_cert(cert: &CertFacts) -> Result<Self, BindingError> {
        match cert.uri_sans.as_slice() {
            [one] => Self::parse(one),
            other => Err(BindingError::UriSanCount(other.len())),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.id)
    }
}

/// The DER of a PEM certificate (for the thumbprint when only PEM is at hand); refused unless
/// it is one certificate.
pub fn cert_pem_to_der(pem: &str) -> Result<Vec<u8>, BindingError> {
    cert::pem_to_der(pem)
        .filter(|der| cert::read(der).is_some())
        .ok_or(BindingError::BadCertificate)
}

/// What the TLS connection proves about the caller: its certificate's thumbprint and its
/// SPIFFE ID. Facts that disagree with each other leave the field empty (fail closed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    thumbprint: Option<CertThumbprint>,
    spiffe_id: Option<SpiffeId>,
    /// Known only from the certificate itself (the PEM), never from Envoy's digest or SAN.
    validity: Option<CertValidity>,
}

impl PeerIdentity {
    /// From Envoy's connection properties: `connection.mtls`,
    /// `connection.sha256_peer_certificate_digest` (hex), `connection.peer_certificate` (PEM)
    /// and `connection.uri_san_peer_certificate` (only used when the PEM is not available:
    /// Envoy reports the first URI SAN only, the PEM shows all of them).
    pub fn from_envoy(
        mtls: bool,
        digest_hex: Option<&str>,
        cert_pem: Option<&str>,
        uri_san: Option<&str>,
    ) -> Self {
        if !mtls {
            return Self::default();
        }
        let digest = digest_hex.and_then(|h| CertThumbprint::from_hex(h).ok());
        match cert_pem.filter(|p| !p.is_empty()) {
            Some(pem) => {
                let Some(der) = cert::pem_to_der(pem) else {
                    return Self::default();
                };
                let thumbprint = CertThumbprint::from_der(&der);
                if digest.is_some_and(|d| d != thumbprint) {
                    return Self::default();
                }
                Self::of_cert(&der, thumbprint)
            }
            None => Self {
                thumbprint: digest,
                spiffe_id: digest.and(uri_san).and_then(|u| SpiffeId::parse(u).ok()),
                validity: None,
            },
        }
    }

    /// Directly from a DER certificate (tests and tools).
    pub fn from_cert_der(der: &[u8]) -> Self {
        Self::of_cert(der, CertThumbprint::from_der(der))
    }

    /// No identity at all, not even the thumbprint, when the DER is not one certificate.
    fn of_cert(der: &[u8], thumbprint: CertThumbprint) -> Self {
        let Some(cert) = cert::read(der) else {
            return Self::default();
        };
        Self {
            thumbprint: Some(thumbprint),
            spiffe_id: SpiffeId::from_cert(&cert).ok(),
            validity: Some(cert.validity),
        }
    }

    pub fn thumbprint(&self) -> Option<&CertThumbprint> {
        self.thumbprint.as_ref()
    }

    pub fn spiffe_id(&self) -> Option<&SpiffeId> {
        self.spiffe_id.as_ref()
    }

    /// The certificate's validity window, when its PEM was read.
    pub fn validity(&self) -> Option<&CertValidity> {
        self.validity.as_ref()
    }
}

/// A verified token proven to belong to this connection: its `cnf."x5t#S256"` is the
/// thumbprint of the client certificate and its `sub` is that certificate's SPIFFE ID.
/// Only [`bind`] builds one; the decision step only accepts a `BoundToken`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundToken {
    token: Rc<VerifiedToken>,
    subject: SpiffeId,
}

impl BoundToken {
    pub fn token(&self) -> &VerifiedToken {
        &self.token
    }

    /// The caller's SPIFFE ID (equal to the token's `sub`).
    pub fn subject(&self) -> &SpiffeId {
        &self.subject
    }
}

/// RFC 8705 §3: the token must carry `cnf."x5t#S256"` equal to this connection's client
/// certificate thumbprint, and its `sub` must be that certificate's SPIFFE ID in our
/// trust domain. The checks run in CONTRACT §4's order.
pub fn bind(
    token: Rc<VerifiedToken>,
    peer: &PeerIdentity,
    trust_domain: &str,
) -> Result<BoundToken, Reason> {
    if token.cnf_x5t_s256().is_none() {
        return Err(Reason::BindingMissing);
    }
    // Decoded once, when the token was verified; `None` when it is no base64url SHA-256.
    let Some(bound_to) = token.cnf_x5t_digest() else {
        return Err(Reason::BindingMismatch);
    };
    if !peer
        .thumbprint
        .is_some_and(|t| same_bytes(t.as_bytes(), bound_to))
    {
        return Err(Reason::BindingMismatch);
    }
    let Some(id) = peer.spiffe_id.as_ref() else {
        return Err(Reason::SubjectMismatch);
    };
    let subject = token.subject().as_bytes();
    if id.trust_domain() != trust_domain || !same_bytes(id.as_str().as_bytes(), subject) {
        return Err(Reason::SubjectMismatch);
    }
    let subject = id.clone();
    Ok(BoundToken { token, subject })
}

/// The `cnf.jkt` a token must carry on a DPoP listener (RFC 9449 §6): `binding_missing`
/// without any `cnf` binding, `binding_mismatch` for a token bound to a client certificate
/// instead (it belongs on an mTLS listener).
pub fn dpop_jkt(token: &VerifiedToken) -> Result<&str, Reason> {
    match (token.cnf_jkt(), token.cnf_x5t_s256()) {
        (Some(jkt), _) => Ok(jkt),
        (None, Some(_)) => Err(Reason::BindingMismatch),
        (None, None) => Err(Reason::BindingMissing),
    }
}

/// RFC 9449 §7.1: the token's `cnf.jkt` must be the thumbprint of the key that signed this
/// request's verified proof, and its `sub` must be a SPIFFE ID of our trust domain (no
/// certificate vouches for it here: the authz-server did when it issued the token).
/// `subject` is the token's `sub` as [`SpiffeId::parse`] read it (`None`: it is none), which
/// the flow keeps with the cached token so that a proof does not parse it again; one that is
/// not this token's `sub` binds nothing.
pub fn bind_dpop(
    token: Rc<VerifiedToken>,
    proof: &VerifiedProof,
    subject: Option<&SpiffeId>,
    trust_domain: &str,
) -> Result<BoundToken, Reason> {
    if dpop_jkt(&token)? != proof.jkt() {
        return Err(Reason::DpopInvalid);
    }
    let subject = subject
        .filter(|id| {
            id.trust_domain() == trust_domain
                && same_bytes(id.as_str().as_bytes(), token.subject().as_bytes())
        })
        .ok_or(Reason::SubjectMismatch)?
        .clone();
    Ok(BoundToken { token, subject })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod bind_tests;
