//! DPoP proof checking (RFC 9449 §4.2–4.3): one pure function from a proof JWT and what the
//! request says to a [`VerifiedProof`], plus a bounded [`ReplayCache`] of seen `jti`s.
//! Reuses the token verifier's JWS decoder and its one ES256 check, and `binding`'s RFC 7638
//! thumbprint; the caller supplies time and keeps the replay state.

use crate::binding::ec_p256_jwk_thumbprint;
use crate::cache::ExpiringCache;
use crate::es256::PreparedKey;
use crate::host_es256::{ForeignFunctions, HostKey};
use crate::jose;
use crate::json::from_slice_strict;
use crate::jwks::ec_p256_key;
use crate::reason::Reason;
use crate::token::decode_metadata;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::VerifyingKey;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::rc::Rc;

/// Longest proof accepted (the whole compact JWS). An ES256 proof with its `jwk` is ~500 bytes.
pub const MAX_PROOF_BYTES: usize = 2 * 1024;
/// Longest `jti` accepted: it becomes a replay-cache key.
pub const MAX_JTI_LEN: usize = 256;
/// Longest `htu` (claim or expected) looked at.
pub const MAX_HTU_LEN: usize = 2 * 1024;

/// JWK members that carry private key material (RFC 7518 §6.2.2, §6.3.2, §6.4.1). A proof
/// whose `jwk` has any of them is refused (RFC 9449 §4.3 check 7).
const PRIVATE_JWK_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a proof was refused. Stable strings for logs; the answer is [`DpopError::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DpopError {
    /// Empty, larger than [`MAX_PROOF_BYTES`], not three base64url parts, or a header or
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
    /// `jti` missing, empty, longer than [`MAX_JTI_LEN`] or not printable ASCII.
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

/// How far `iat` may be from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProofWindow {
    /// How old a proof may be.
    pub max_age_s: u64,
    /// Clock difference tolerated in both directions.
    pub clock_skew_s: u64,
}

/// What the request says a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct ProofCheck<'a> {
    /// The request's HTTP method, compared exactly (methods are case-sensitive).
    pub method: &'a str,
    /// The request's URI as this server sees it publicly (origin + path); any query or
    /// fragment is ignored; normalised like the claim (see [`normalize_htu`]).
    pub htu: &'a str,
    pub now_s: u64,
    pub window: ProofWindow,
    /// The access token presented with the proof (resource requests): `ath` must hash it.
    /// `None` at the token endpoint, where `ath` is not checked.
    pub access_token: Option<&'a str>,
    /// The thumbprint the proof key must have (the token's `cnf.jkt`). `None` at the token
    /// endpoint, where the proof key is the one being bound.
    pub jkt: Option<&'a str>,
    /// Server nonces currently accepted (RFC 9449 §9); empty when nonces are off.
    pub nonces: &'a [&'a str],
}

/// A proof whose every check passed. Only [`verify_proof`] builds one.
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

/// `ath` (RFC 9449 §4.2): base64url(SHA-256(ASCII of the access token)).
pub fn access_token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

#[derive(Deserialize)]
struct RawHeader {
    typ: Option<Value>,
    alg: Option<Value>,
    jwk: Option<Value>,
    crit: Option<Value>,
}

#[derive(Deserialize)]
struct RawClaims {
    jti: Option<Value>,
    htm: Option<Value>,
    htu: Option<Value>,
    iat: Option<Value>,
    ath: Option<Value>,
    nonce: Option<Value>,
}

/// Checks a DPoP proof in RFC 9449 §4.3 order: shape and size → header (`crit`, `alg`
/// ES256, `typ`, a public EC P-256 `jwk`) → signature with that `jwk` → claims (`jti`, `htm`,
/// `htu`, `nonce`, `iat`, `ath`) → `jkt`. Replay is the caller's: see [`ReplayCache`].
pub fn verify_proof(proof: &str, expect: &ProofCheck<'_>) -> Result<VerifiedProof, DpopError> {
    verify_proof_with(proof, expect, None)
}

/// [`verify_proof`], verifying the signature through `keys` (the proof keys this VM saw
/// recently), so a client that signs every request with one key pays for a variable-base
/// scalar multiplication only until its key's table is built. Same answers.
pub fn verify_proof_with(
    proof: &str,
    expect: &ProofCheck<'_>,
    keys: Option<&mut ProofKeys>,
) -> Result<VerifiedProof, DpopError> {
    check_proof(proof, expect, Verify::InModule(keys))
}

/// [`verify_proof`], the signature checked by the host's `verify_signature`. Same answers.
pub fn verify_proof_by_host(
    proof: &str,
    expect: &ProofCheck<'_>,
    host: &dyn ForeignFunctions,
) -> Result<VerifiedProof, DpopError> {
    check_proof(proof, expect, Verify::Host(host))
}

/// Where a proof's signature is checked.
enum Verify<'a> {
    InModule(Option<&'a mut ProofKeys>),
    Host(&'a dyn ForeignFunctions),
}

fn check_proof(
    proof: &str,
    expect: &ProofCheck<'_>,
    verify: Verify<'_>,
) -> Result<VerifiedProof, DpopError> {
    if proof.is_empty() || proof.len() > MAX_PROOF_BYTES {
        return Err(DpopError::Malformed);
    }
    let (key, x, y) = read_header(proof)?;
    // Shape, ES256 and `crit` again through the one JWS decoder the access tokens use; it
    // also yields the signing input, payload and signature.
    let jws = decode_metadata(proof).map_err(|reason| match reason {
        Reason::UnsupportedAlg => DpopError::UnsupportedAlg,
        _ => DpopError::Malformed,
    })?;
    let verified = match verify {
        Verify::Host(host) => jws.verify_signature(&HostKey::new(host, &key)),
        Verify::InModule(keys) => match keys.and_then(|keys| keys.prepared(&x, &y, key)) {
            Some(prepared) => jws.verify_signature(prepared.as_ref()),
            None => jws.verify_signature(&key),
        },
    }
    .map_err(|_| DpopError::BadSignature)?;
    let claims: RawClaims =
        from_slice_strict(verified.payload()).map_err(|_| DpopError::Malformed)?;

    let jti = match claims.jti {
        Some(Value::String(jti))
            if !jti.is_empty() && jti.len() <= MAX_JTI_LEN && jose::is_printable_ascii(&jti) =>
        {
            jti
        }
        _ => return Err(DpopError::BadJti),
    };
    let (Some(Value::String(htm)), Some(Value::String(htu)), Some(Value::Number(iat))) =
        (claims.htm, claims.htu, claims.iat)
    else {
        return Err(DpopError::MissingClaim);
    };
    if htm != expect.method {
        return Err(DpopError::WrongMethod);
    }
    match (normalize_htu(&htu), normalize_htu(expect.htu)) {
        (Some(got), Some(want)) if got == want => {}
        _ => return Err(DpopError::WrongUri),
    }
    if !expect.nonces.is_empty() {
        match claims.nonce {
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
    if let Some(token) = expect.access_token {
        match claims.ath {
            Some(Value::String(ath)) if ath == access_token_hash(token) => {}
            Some(_) => return Err(DpopError::AthMismatch),
            None => return Err(DpopError::MissingAth),
        }
    }
    let jkt = ec_p256_jwk_thumbprint(&x, &y);
    if expect.jkt.is_some_and(|want| want != jkt) {
        return Err(DpopError::JktMismatch);
    }
    Ok(VerifiedProof {
        jti,
        iat,
        jkt,
        replay_until_s: last_second.saturating_add(1),
    })
}

/// The DPoP proof keys one VM saw recently, each with its lazily built multiples table
/// ([`PreparedKey`], ~25 KiB once built). A key is remembered on its first proof, verified
/// the plain way then (a one-off key never pays for a table), and verified through its table
/// from its second proof on. Keyed by the key's canonical `x` and `y`, so an entry can only
/// ever verify for the very key it was built from. Oldest forgotten first.
#[derive(Debug)]
pub struct ProofKeys {
    keys: ExpiringCache<Rc<str>, Rc<PreparedKey>>,
}

/// How many proof keys [`ProofKeys`] remembers by default (at most ~0.8 MiB of tables).
pub const PROOF_KEY_CACHE_SIZE: usize = 32;

impl ProofKeys {
    pub fn new(capacity: usize) -> Self {
        Self {
            keys: ExpiringCache::new(capacity),
        }
    }

    /// The prepared key for (`x`, `y`) if it was seen before; otherwise remembers `key`
    /// (parsed from those very coordinates) and returns `None`: verify plainly this once.
    fn prepared(&mut self, x: &str, y: &str, key: VerifyingKey) -> Option<Rc<PreparedKey>> {
        let id = format!("{x}.{y}");
        if let Some(known) = self.keys.get(id.as_str(), 0) {
            return Some(Rc::clone(known));
        }
        self.keys
            .insert(Rc::from(id), Rc::new(PreparedKey::new(key)), u64::MAX, 0);
        None
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Reads the untrusted proof header: `crit` refused, `alg` ES256, `typ` dpop+jwt, and a
/// public EC P-256 `jwk`. Returns the key and its `x`, `y` as sent (canonical base64url:
/// `ec_p256_key` refuses any other spelling, so the thumbprint is unique per key).
fn read_header(proof: &str) -> Result<(VerifyingKey, String, String), DpopError> {
    let header_b64 = proof.split('.').next().unwrap_or_default();
    let header_json = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| DpopError::Malformed)?;
    let header: RawHeader = from_slice_strict(&header_json).map_err(|_| DpopError::Malformed)?;
    if header.crit.is_some() {
        return Err(DpopError::Crit);
    }
    match header.alg {
        Some(Value::String(alg)) if alg == "ES256" => {}
        _ => return Err(DpopError::UnsupportedAlg),
    }
    let typ_ok =
        matches!(&header.typ, Some(Value::String(typ)) if jose::is_jwt_type(typ, "dpop+jwt"));
    if !typ_ok {
        return Err(DpopError::WrongType);
    }
    let Some(Value::Object(jwk)) = header.jwk else {
        return Err(DpopError::BadKey);
    };
    if PRIVATE_JWK_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(DpopError::PrivateKey);
    }
    public_p256_key(&jwk)
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

/// The `htu` for a request: the configured public origin (`https://host[:port]`) followed by
/// the request's `:path` (which may carry a query). `None` when either is unusable.
pub fn request_htu(origin: &str, path_and_query: &str) -> Option<String> {
    if !path_and_query.starts_with('/') {
        return None;
    }
    normalize_htu(&format!("{}{path_and_query}", origin.trim_end_matches('/')))
}

/// An http(s) URI as RFC 9449 §4.3 compares it: query and fragment dropped; RFC 3986 §6.2.2
/// syntax-based normalisation (scheme and host lowercase, percent-encodings uppercase,
/// unreserved characters decoded, dot segments removed) and §6.2.3 scheme-based
/// normalisation (default port and an empty port removed, empty path is `/`). `None` for
/// anything else: other schemes, userinfo, characters a URI cannot hold, bad escapes.
pub fn normalize_htu(uri: &str) -> Option<String> {
    if uri.len() > MAX_HTU_LEN {
        return None;
    }
    let uri = uri.split('#').next().unwrap_or_default();
    let uri = uri.split('?').next().unwrap_or_default();
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = split_authority(authority)?;
    let mut out = format!("{scheme}://{host}");
    if let Some(port) = port.filter(|p| *p != default_port) {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(&remove_dot_segments(&normalize_percent(path)?));
    Some(out)
}

/// Host (lowercase) and port of an authority; refuses userinfo and odd characters.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, after) = authority.split_at(end + 1);
        let literal_ok = host.get(1..host.len() - 1).is_some_and(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        });
        if !literal_ok {
            return None;
        }
        match after {
            "" => (host, ""),
            _ => (host, after.strip_prefix(':')?),
        }
    } else {
        let (host, port) = authority.rsplit_once(':').unwrap_or((authority, ""));
        let reg_name_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        if !reg_name_ok {
            return None;
        }
        (host, port)
    };
    let port = match port {
        "" => None,
        p if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        _ => return None,
    };
    Some((host.to_ascii_lowercase(), port))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encodings of unreserved characters decoded, the others uppercased; any character a
/// path may not hold raw (RFC 3986 `pchar` and `/`) refuses the whole URI.
fn normalize_percent(path: &str) -> Option<String> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let hex_val = |b: u8| (b as char).to_digit(16).and_then(|v| u8::try_from(v).ok());
    let mut out = String::with_capacity(path.len());
    let mut bytes = path.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hi = bytes.next().and_then(hex_val)?;
                let lo = bytes.next().and_then(hex_val)?;
                let v = (hi << 4) | lo;
                if is_unreserved(v) {
                    out.push(char::from(v));
                } else {
                    out.push('%');
                    out.push(char::from(*HEX.get(usize::from(hi))?));
                    out.push(char::from(*HEX.get(usize::from(lo))?));
                }
            }
            b if is_unreserved(b) || b"!$&'()*+,;=:@/".contains(&b) => out.push(char::from(b)),
            _ => return None,
        }
    }
    Some(out)
}

/// RFC 3986 §5.2.4 for an absolute path (or the empty one, which becomes `/`).
fn remove_dot_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "." => {}
            ".." => {
                kept.pop();
            }
            s => {
                kept.push(s);
                continue;
            }
        }
        // A trailing `.` or `..` leaves the path ending in `/`.
        if last {
            kept.push("");
        }
    }
    if kept.is_empty() {
        return "/".to_owned();
    }
    format!("/{}", kept.join("/"))
}

/// The `jti`s of accepted proofs, each kept until its proof leaves the window. Bounded: when
/// full of live entries a new proof is refused ([`DpopError::ReplayCacheFull`]), never a live
/// entry evicted — eviction would let a flood of proofs make room for a replay.
#[derive(Debug, Clone)]
pub struct ReplayCache {
    capacity: usize,
    until: HashMap<String, u64>,
    by_expiry: BTreeSet<(u64, String)>,
}

impl ReplayCache {
    /// A cache of at most `capacity` live `jti`s. Size it for the proofs one window can bring
    /// (requests per second × (max age + 2 × skew)); 0 refuses every proof.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            until: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.until.len()
    }

    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }

    /// Admits `proof` once: records its `jti` until [`VerifiedProof::replay_until_s`], or
    /// refuses it as [`DpopError::Replayed`] if the `jti` is live, as
    /// [`DpopError::TooOld`] if its window has already closed, or as
    /// [`DpopError::ReplayCacheFull`].
    pub fn check_and_record(&mut self, proof: &VerifiedProof, now_s: u64) -> Result<(), DpopError> {
        self.purge(now_s);
        if self.until.contains_key(proof.jti()) {
            return Err(DpopError::Replayed);
        }
        if proof.replay_until_s() <= now_s {
            return Err(DpopError::TooOld);
        }
        if self.until.len() >= self.capacity {
            return Err(DpopError::ReplayCacheFull);
        }
        self.until.insert(proof.jti.clone(), proof.replay_until_s);
        self.by_expiry
            .insert((proof.replay_until_s, proof.jti.clone()));
        Ok(())
    }

    /// Forgets every `jti` whose window has closed at `now_s`.
    fn purge(&mut self, now_s: u64) {
        while let Some((until, jti)) = self.by_expiry.first().cloned() {
            if until > now_s {
                break;
            }
            self.by_expiry.pop_first();
            self.until.remove(&jti);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{Signature, SigningKey};
    use serde_json::json;

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

    fn expect() -> ProofCheck<'static> {
        ProofCheck {
            method: "GET",
            htu: HTU,
            now_s: NOW,
            window: WINDOW,
            access_token: Some(TOKEN),
            jkt: None,
            nonces: &[],
        }
    }

    fn check(proof: &str) -> Result<VerifiedProof, DpopError> {
        verify_proof(proof, &expect())
    }

    #[test]
    fn admits_a_known_keys_later_proofs_through_its_table() {
        let mut keys = ProofKeys::new(4);
        for jti in ["a", "b", "c"] {
            let mut c = claims();
            c["jti"] = jti.into();
            let p = verify_proof_with(&sign(&header(), &c), &expect(), Some(&mut keys)).unwrap();
            assert_eq!(p.jti(), jti);
            assert_eq!(p.jkt(), jkt_of(&key()));
        }
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn refuses_a_forged_proof_for_a_known_key() {
        let mut keys = ProofKeys::new(4);
        let good = sign(&header(), &claims());
        assert!(verify_proof_with(&good, &expect(), Some(&mut keys)).is_ok());
        assert!(verify_proof_with(&good, &expect(), Some(&mut keys)).is_ok());
        // The known key's header, signed by another key: its table must not pass it.
        let forged = sign_raw_with(&other_key(), &header().to_string(), &claims().to_string());
        for _ in 0..2 {
            assert_eq!(
                verify_proof_with(&forged, &expect(), Some(&mut keys)),
                Err(DpopError::BadSignature)
            );
        }
        let mut tampered = good.into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            verify_proof_with(&tampered, &expect(), Some(&mut keys)),
            Err(DpopError::BadSignature)
        );
    }

    #[test]
    fn proof_keys_stay_within_their_capacity() {
        let mut keys = ProofKeys::new(2);
        for seed in 1..=5u8 {
            let k = SigningKey::from_slice(&[seed; 32]).unwrap();
            let h = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(&k)});
            let p = sign_raw_with(&k, &h.to_string(), &claims().to_string());
            assert!(verify_proof_with(&p, &expect(), Some(&mut keys)).is_ok());
            assert!(keys.len() <= 2);
        }
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
            access_token: None,
            jkt: None,
            nonces: &[],
        }
    }

    // --- RFC 9449 examples ------------------------------------------------------------

    #[test]
    fn rfc9449_4_1_proof_verifies_with_its_key_and_yields_the_6_1_jkt() {
        let p = verify_proof(RFC9449_PROOF, &rfc_expect(RFC9449_IAT + 1)).unwrap();
        assert_eq!(p.jti(), RFC9449_JTI);
        assert_eq!(p.iat(), RFC9449_IAT);
        assert_eq!(p.jkt(), RFC9449_JKT);
        assert_eq!(p.jkt(), ec_p256_jwk_thumbprint(RFC9449_X, RFC9449_Y));
        assert_eq!(p.replay_until_s(), RFC9449_IAT + 60 + 5 + 1);
    }

    #[test]
    fn rfc9449_4_1_signature_verifies_with_the_transcribed_key() {
        let jws = decode_metadata(RFC9449_PROOF).unwrap();
        let key = ec_p256_key(RFC9449_X, RFC9449_Y).unwrap();
        let payload = jws.verify_signature(&key).unwrap();
        let claims: Value = serde_json::from_slice(payload.payload()).unwrap();
        assert_eq!(
            claims,
            json!({"jti": RFC9449_JTI, "htm": "POST", "htu": RFC9449_HTU, "iat": RFC9449_IAT})
        );
    }

    #[test]
    fn rfc9449_4_1_proof_is_refused_for_another_method_or_uri() {
        let mut e = rfc_expect(RFC9449_IAT);
        e.method = "GET";
        assert_eq!(verify_proof(RFC9449_PROOF, &e), Err(DpopError::WrongMethod));
        let mut e = rfc_expect(RFC9449_IAT);
        e.htu = "https://server.example.com/authorize";
        assert_eq!(verify_proof(RFC9449_PROOF, &e), Err(DpopError::WrongUri));
        let mut e = rfc_expect(RFC9449_IAT);
        e.htu = "https://server.example.com:8443/token";
        assert_eq!(verify_proof(RFC9449_PROOF, &e), Err(DpopError::WrongUri));
    }

    #[test]
    fn rfc9449_4_1_proof_is_refused_once_its_iat_is_out_of_the_window() {
        assert_eq!(
            verify_proof(RFC9449_PROOF, &rfc_expect(NOW)),
            Err(DpopError::TooOld)
        );
    }

    #[test]
    fn rfc9449_6_1_jkt_is_admitted_as_the_expected_binding_and_another_is_refused() {
        let mut e = rfc_expect(RFC9449_IAT);
        e.jkt = Some(RFC9449_JKT);
        assert!(verify_proof(RFC9449_PROOF, &e).is_ok());
        let other = jkt_of(&key());
        e.jkt = Some(&other);
        assert_eq!(verify_proof(RFC9449_PROOF, &e), Err(DpopError::JktMismatch));
    }

    #[test]
    fn rfc9449_4_1_proof_one_bit_changed_is_refused() {
        let tampered = RFC9449_PROOF.replacen("eyJqdGkiOiItQndD", "eyJqdGkiOiItQndE", 1);
        assert_eq!(
            verify_proof(&tampered, &rfc_expect(RFC9449_IAT)),
            Err(DpopError::BadSignature)
        );
    }

    /// RFC 9449 §7.1: the example access token and its `ath`.
    #[test]
    fn rfc9449_7_1_ath_of_the_example_token() {
        assert_eq!(
            access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
    }

    // --- admitted proofs ----------------------------------------------------------------

    #[test]
    fn admits_a_well_formed_proof_and_reports_jti_iat_and_jkt() {
        let p = check(&sign(&header(), &claims())).unwrap();
        assert_eq!(p.jti(), "e1j3V_bKic8-LAEB");
        assert_eq!(p.iat(), NOW - 2);
        assert_eq!(p.jkt(), jkt_of(&key()));
    }

    // --- shape and size -----------------------------------------------------------------

    #[test]
    fn refuses_a_proof_longer_than_the_bound() {
        let proof = with_claim("pad", "x".repeat(MAX_PROOF_BYTES).into());
        assert_eq!(check(&proof), Err(DpopError::Malformed));
        assert_eq!(check(""), Err(DpopError::Malformed));
    }

    #[test]
    fn admits_a_proof_just_under_the_bound() {
        let base = sign(&header(), &claims()).len();
        // Each 3 bytes of JSON are 4 of base64url.
        let proof = with_claim(
            "pad",
            "x".repeat((MAX_PROOF_BYTES - base - 20) * 3 / 4).into(),
        );
        assert!(proof.len() <= MAX_PROOF_BYTES, "{}", proof.len());
        assert!(check(&proof).is_ok());
    }

    #[test]
    fn refuses_proofs_that_are_not_three_base64url_parts() {
        let good = sign(&header(), &claims());
        let (h, rest) = good.split_once('.').unwrap();
        for bad in [
            "a.b".to_owned(),
            format!("{good}.x"),
            format!("{h}.{rest}="),
            format!("{h}+.{rest}"),
            format!("{h}.!{rest}"),
            h.to_owned(),
        ] {
            assert_eq!(check(&bad), Err(DpopError::Malformed), "{bad}");
        }
    }

    #[test]
    fn refuses_a_header_or_claims_that_are_not_one_json_object() {
        for header in ["[]", "null", "{", r#"{"typ":"dpop+jwt"} x"#] {
            let proof = sign_raw_with(&key(), header, &claims().to_string());
            assert_eq!(check(&proof), Err(DpopError::Malformed), "{header}");
        }
        for payload in ["[]", "7", "{"] {
            let proof = sign_raw_with(&key(), &header().to_string(), payload);
            assert_eq!(check(&proof), Err(DpopError::Malformed), "{payload}");
        }
    }

    #[test]
    fn refuses_duplicate_members_in_header_or_claims() {
        let h = header().to_string().replacen('{', r#"{"alg":"none","#, 1);
        let proof = sign_raw_with(&key(), &h, &claims().to_string());
        assert_eq!(check(&proof), Err(DpopError::Malformed));
        let c = claims().to_string().replacen('{', r#"{"htm":"POST","#, 1);
        let proof = sign_raw_with(&key(), &header().to_string(), &c);
        assert_eq!(check(&proof), Err(DpopError::Malformed));
    }

    // --- header -------------------------------------------------------------------------

    #[test]
    fn refuses_a_wrong_or_missing_typ() {
        for typ in [
            json!("JWT"),
            json!("at+jwt"),
            json!("dpop+jwt2"),
            json!(""),
            json!(1),
        ] {
            assert_eq!(
                check(&with_header("typ", typ.clone())),
                Err(DpopError::WrongType),
                "{typ}"
            );
        }
        assert_eq!(check(&without_header("typ")), Err(DpopError::WrongType));
    }

    #[test]
    fn admits_every_spelling_of_the_dpop_jwt_type() {
        for typ in ["dpop+jwt", "DPoP+JWT", "application/dpop+jwt"] {
            assert!(check(&with_header("typ", typ.into())).is_ok(), "{typ}");
        }
    }

    #[test]
    fn refuses_every_algorithm_but_es256() {
        for alg in ["none", "HS256", "RS256", "ES384", "EdDSA", "es256", ""] {
            assert_eq!(
                check(&with_header("alg", alg.into())),
                Err(DpopError::UnsupportedAlg),
                "{alg}"
            );
        }
        assert_eq!(
            check(&without_header("alg")),
            Err(DpopError::UnsupportedAlg)
        );
    }

    #[test]
    fn refuses_any_crit_header() {
        for crit in [json!(["htu"]), json!([])] {
            assert_eq!(check(&with_header("crit", crit)), Err(DpopError::Crit));
        }
    }

    #[test]
    fn refuses_a_missing_or_non_object_jwk() {
        assert_eq!(check(&without_header("jwk")), Err(DpopError::BadKey));
        assert_eq!(
            check(&with_header("jwk", json!("not a key"))),
            Err(DpopError::BadKey)
        );
    }

    #[test]
    fn refuses_keys_other_than_ec_p256_for_es256() {
        for (name, value) in [
            ("kty", json!("RSA")),
            ("kty", json!("OKP")),
            ("crv", json!("P-384")),
            ("crv", json!("secp256k1")),
            ("alg", json!("ES384")),
            ("use", json!("enc")),
        ] {
            assert_eq!(
                check(&with_jwk(name, value)),
                Err(DpopError::UnsupportedKey),
                "{name}"
            );
        }
    }

    #[test]
    fn admits_a_jwk_with_optional_members_that_agree() {
        let mut h = header();
        h["jwk"]["alg"] = "ES256".into();
        h["jwk"]["use"] = "sig".into();
        h["jwk"]["kid"] = "k-1".into();
        assert!(check(&sign(&h, &claims())).is_ok());
    }

    #[test]
    fn refuses_coordinates_that_are_not_a_curve_point() {
        let x = public_jwk(&key())["x"].clone();
        let y = public_jwk(&other_key())["y"].clone();
        let mut h = header();
        h["jwk"]["y"] = y;
        assert_eq!(check(&sign(&h, &claims())), Err(DpopError::BadKey));
        assert_eq!(check(&with_jwk("x", json!("AAAA"))), Err(DpopError::BadKey));
        assert_eq!(check(&with_jwk("x", json!(7))), Err(DpopError::BadKey));
        // Padded spelling of the right coordinate: refused, so `jkt` has one spelling.
        let padded = format!("{}=", x.as_str().unwrap());
        assert_eq!(check(&with_jwk("x", padded.into())), Err(DpopError::BadKey));
        let mut h = header();
        h["jwk"].as_object_mut().unwrap().remove("y");
        assert_eq!(check(&sign(&h, &claims())), Err(DpopError::BadKey));
    }

    #[test]
    fn refuses_a_jwk_with_private_key_material() {
        // The real private scalar: the signature verifies, the proof is still refused.
        let d = URL_SAFE_NO_PAD.encode(key().to_bytes());
        assert_eq!(check(&with_jwk("d", d.into())), Err(DpopError::PrivateKey));
        for member in ["p", "q", "dp", "dq", "qi", "oth", "k"] {
            assert_eq!(
                check(&with_jwk(member, json!("AQAB"))),
                Err(DpopError::PrivateKey),
                "{member}"
            );
        }
    }

    // --- signature ----------------------------------------------------------------------

    #[test]
    fn refuses_a_proof_signed_by_a_key_other_than_its_jwk() {
        let proof = sign_raw_with(&other_key(), &header().to_string(), &claims().to_string());
        assert_eq!(check(&proof), Err(DpopError::BadSignature));
    }

    #[test]
    fn refuses_claims_changed_after_signing() {
        let proof = sign(&header(), &claims());
        let parts: Vec<&str> = proof.split('.').collect();
        let mut c = claims();
        c["htm"] = "POST".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(c.to_string()),
            parts[2]
        );
        assert_eq!(check(&forged), Err(DpopError::BadSignature));
    }

    #[test]
    fn refuses_a_signature_of_the_wrong_length_or_zero() {
        let proof = sign(&header(), &claims());
        let input = proof.rsplit_once('.').unwrap().0;
        for sig in [vec![1u8; 63], vec![0u8; 64], Vec::new()] {
            let bad = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig));
            assert_eq!(check(&bad), Err(DpopError::BadSignature));
        }
    }

    // --- claims -------------------------------------------------------------------------

    #[test]
    fn refuses_a_missing_empty_long_or_unprintable_jti() {
        assert_eq!(check(&without_claim("jti")), Err(DpopError::BadJti));
        for jti in [
            json!(""),
            json!("x".repeat(MAX_JTI_LEN + 1)),
            json!("a\nb"),
            json!("é"),
            json!(42),
        ] {
            assert_eq!(check(&with_claim("jti", jti)), Err(DpopError::BadJti));
        }
    }

    #[test]
    fn admits_a_jti_of_the_longest_length() {
        let jti = "j".repeat(MAX_JTI_LEN);
        assert_eq!(
            check(&with_claim("jti", jti.clone().into())).unwrap().jti(),
            jti
        );
    }

    #[test]
    fn refuses_missing_or_ill_typed_htm_htu_iat() {
        for name in ["htm", "htu", "iat"] {
            assert_eq!(
                check(&without_claim(name)),
                Err(DpopError::MissingClaim),
                "{name}"
            );
            assert_eq!(
                check(&with_claim(name, json!([1]))),
                Err(DpopError::MissingClaim),
                "{name}"
            );
        }
        for iat in [json!(-1), json!("1800000000")] {
            assert_eq!(check(&with_claim("iat", iat)), Err(DpopError::MissingClaim));
        }
    }

    #[test]
    fn refuses_a_proof_for_another_method() {
        for htm in ["POST", "get", "HEAD", ""] {
            assert_eq!(
                check(&with_claim("htm", htm.into())),
                Err(DpopError::WrongMethod),
                "{htm}"
            );
        }
    }

    #[test]
    fn refuses_a_proof_for_another_uri() {
        for htu in [
            "https://orders.example:8445/orders/43",
            "https://orders.example:8445/orders/42/",
            "https://orders.example/orders/42",
            "http://orders.example:8445/orders/42",
            "https://evil.example:8445/orders/42",
            "https://user@orders.example:8445/orders/42",
            "https://orders.example:8445/orders/%34%32x",
            "/orders/42",
            "",
        ] {
            assert_eq!(
                check(&with_claim("htu", htu.into())),
                Err(DpopError::WrongUri),
                "{htu}"
            );
        }
    }

    #[test]
    fn admits_an_htu_equal_after_normalisation() {
        for htu in [
            "https://orders.example:8445/orders/42?page=2",
            "https://orders.example:8445/orders/42#top",
            "HTTPS://Orders.Example:8445/orders/42",
            "https://orders.example:8445/orders/./x/../42",
            "https://orders.example:8445/%6Frders/%34%32",
        ] {
            assert!(check(&with_claim("htu", htu.into())).is_ok(), "{htu}");
        }
    }

    #[test]
    fn refuses_a_proof_when_the_expected_uri_is_unusable() {
        let mut e = expect();
        e.htu = "not a uri";
        assert_eq!(
            verify_proof(&sign(&header(), &claims()), &e),
            Err(DpopError::WrongUri)
        );
    }

    #[test]
    fn normalises_uris_per_rfc3986() {
        let cases = [
            ("https://A.Example:443/x?q#f", "https://a.example/x"),
            ("HTTP://a.example:80", "http://a.example/"),
            ("http://a.example:", "http://a.example/"),
            ("https://a.example:0443/", "https://a.example/"),
            (
                "https://a.example:8443/a/b/../../c/./d/..",
                "https://a.example:8443/c/",
            ),
            (
                "https://a.example/%7e%2f%2F%41",
                "https://a.example/~%2F%2FA",
            ),
            ("https://[::1]:8445/x", "https://[::1]:8445/x"),
            (
                "https://127.0.0.1:9443/token",
                "https://127.0.0.1:9443/token",
            ),
            ("https://a.example/a//b", "https://a.example/a//b"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_htu(raw).as_deref(), Some(want), "{raw}");
        }
    }

    #[test]
    fn refuses_uris_that_cannot_be_normalised() {
        for raw in [
            "ftp://a.example/",
            "https:/a.example/",
            "https://",
            "https://u:p@a.example/",
            "https://a example/",
            "https://a.example/a b",
            "https://a.example/é",
            "https://a.example/%zz",
            "https://a.example/%4",
            "https://a.example:99999/",
            "https://a.example:x/",
            "https://[::1/",
            "https://[]/",
        ] {
            assert_eq!(normalize_htu(raw), None, "{raw}");
        }
        assert_eq!(
            normalize_htu(&format!("https://a/{}", "x".repeat(MAX_HTU_LEN))),
            None
        );
    }

    #[test]
    fn request_htu_joins_origin_and_path_without_the_query() {
        assert_eq!(
            request_htu("https://Orders.Example:8445/", "/orders/42?x=1").as_deref(),
            Some("https://orders.example:8445/orders/42")
        );
        assert_eq!(request_htu("https://a.example", "*"), None);
        assert_eq!(request_htu("https://a.example", "http://b.example/"), None);
    }

    #[test]
    fn refuses_a_stale_iat_and_admits_one_at_the_edge_of_the_window() {
        let oldest = NOW - WINDOW.max_age_s - WINDOW.clock_skew_s;
        assert!(check(&with_claim("iat", oldest.into())).is_ok());
        assert_eq!(
            check(&with_claim("iat", (oldest - 1).into())),
            Err(DpopError::TooOld)
        );
    }

    #[test]
    fn refuses_an_iat_beyond_the_skew_and_admits_one_within_it() {
        let latest = NOW + WINDOW.clock_skew_s;
        assert!(check(&with_claim("iat", latest.into())).is_ok());
        assert!(check(&with_claim("iat", json!((NOW as f64) + 0.5))).is_ok());
        assert_eq!(
            check(&with_claim("iat", (latest + 1).into())),
            Err(DpopError::IssuedInFuture)
        );
    }

    #[test]
    fn refuses_a_proof_without_ath_when_a_token_is_presented() {
        assert_eq!(check(&without_claim("ath")), Err(DpopError::MissingAth));
    }

    #[test]
    fn refuses_the_ath_of_another_token() {
        for ath in [
            json!(access_token_hash("another.token.here")),
            json!(""),
            json!(TOKEN),
            json!(7),
        ] {
            assert_eq!(check(&with_claim("ath", ath)), Err(DpopError::AthMismatch));
        }
    }

    #[test]
    fn admits_a_proof_without_ath_when_no_token_is_presented() {
        let mut e = expect();
        e.access_token = None;
        assert!(verify_proof(&without_claim("ath"), &e).is_ok());
    }

    #[test]
    fn refuses_a_proof_key_other_than_the_token_jkt_and_admits_the_bound_one() {
        let bound = jkt_of(&key());
        let other = jkt_of(&other_key());
        let proof = sign(&header(), &claims());
        let mut e = expect();
        e.jkt = Some(&bound);
        assert!(verify_proof(&proof, &e).is_ok());
        e.jkt = Some(&other);
        assert_eq!(verify_proof(&proof, &e), Err(DpopError::JktMismatch));
    }

    #[test]
    fn refuses_a_missing_or_stale_nonce_when_nonces_are_required() {
        let nonces = ["n-current", "n-previous"];
        let mut e = expect();
        e.nonces = &nonces;
        assert_eq!(
            verify_proof(&sign(&header(), &claims()), &e),
            Err(DpopError::NonceMismatch)
        );
        assert_eq!(
            verify_proof(&with_claim("nonce", "n-old".into()), &e),
            Err(DpopError::NonceMismatch)
        );
        assert_eq!(DpopError::NonceMismatch.oauth_error(), "use_dpop_nonce");
    }

    #[test]
    fn admits_a_current_nonce_and_ignores_nonces_when_not_required() {
        let nonces = ["n-current", "n-previous"];
        let mut e = expect();
        e.nonces = &nonces;
        for n in nonces {
            assert!(verify_proof(&with_claim("nonce", n.into()), &e).is_ok());
        }
        assert!(check(&with_claim("nonce", "anything".into())).is_ok());
    }

    #[test]
    fn checks_run_in_rfc9449_order() {
        // Wrong type and bad signature: the header is reported first.
        let mut h = header();
        h["typ"] = "JWT".into();
        let proof = sign_raw_with(&other_key(), &h.to_string(), &claims().to_string());
        assert_eq!(check(&proof), Err(DpopError::WrongType));
        // Bad signature and wrong method: the signature is reported first.
        let mut c = claims();
        c["htm"] = "POST".into();
        let proof = sign_raw_with(&other_key(), &header().to_string(), &c.to_string());
        assert_eq!(check(&proof), Err(DpopError::BadSignature));
        // Private key material is refused before any signature work.
        let mut h = header();
        h["jwk"]["d"] = "AQAB".into();
        let proof = sign_raw_with(&other_key(), &h.to_string(), &claims().to_string());
        assert_eq!(check(&proof), Err(DpopError::PrivateKey));
    }

    #[test]
    fn errors_map_to_the_contract_reasons() {
        assert_eq!(DpopError::Replayed.reason(), Reason::DpopReplay);
        assert_eq!(DpopError::Replayed.reason(), Reason::DpopReplay);
        assert_eq!(DpopError::ReplayCacheFull.reason(), Reason::ReplayCacheFull);
        assert_eq!(DpopError::ClientShareFull.reason(), Reason::ReplayCacheFull);
        assert_eq!(DpopError::BadSignature.reason(), Reason::DpopInvalid);
        assert_eq!(DpopError::TooOld.reason(), Reason::DpopInvalid);
        assert_eq!(DpopError::AthMismatch.oauth_error(), "invalid_dpop_proof");
    }

    // --- replay cache -------------------------------------------------------------------

    fn proof_with_jti(jti: &str, iat: u64) -> VerifiedProof {
        let mut c = claims();
        c["jti"] = jti.into();
        c["iat"] = iat.into();
        let mut e = expect();
        e.now_s = iat;
        verify_proof(&sign(&header(), &c), &e).unwrap()
    }

    #[test]
    fn replay_cache_refuses_a_jti_seen_within_its_window() {
        let mut cache = ReplayCache::new(8);
        let p = proof_with_jti("a", NOW);
        assert_eq!(cache.check_and_record(&p, NOW), Ok(()));
        assert_eq!(
            cache.check_and_record(&p, NOW + 30),
            Err(DpopError::Replayed)
        );
        // Another proof with the same jti (another key or claims) is a replay too.
        let q = proof_with_jti("a", NOW + 1);
        assert_eq!(
            cache.check_and_record(&q, NOW + 1),
            Err(DpopError::Replayed)
        );
    }

    #[test]
    fn replay_cache_admits_distinct_jtis() {
        let mut cache = ReplayCache::new(8);
        for jti in ["a", "b", "c"] {
            assert_eq!(
                cache.check_and_record(&proof_with_jti(jti, NOW), NOW),
                Ok(())
            );
        }
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn replay_cache_forgets_a_jti_only_once_its_proof_is_out_of_the_window() {
        let mut cache = ReplayCache::new(8);
        let p = proof_with_jti("a", NOW);
        cache.check_and_record(&p, NOW).unwrap();
        let last = p.replay_until_s() - 1;
        // The proof is still acceptable at `last`, so it is still remembered.
        assert!(
            verify_proof(
                &sign(&header(), &{
                    let mut c = claims();
                    c["jti"] = "a".into();
                    c["iat"] = NOW.into();
                    c
                }),
                &ProofCheck {
                    now_s: last,
                    ..expect()
                }
            )
            .is_ok()
        );
        assert_eq!(cache.check_and_record(&p, last), Err(DpopError::Replayed));
        assert_eq!(cache.len(), 1);
        // From `replay_until_s` the entry is purged, and the proof itself is too old.
        assert_eq!(
            cache.check_and_record(&p, p.replay_until_s()),
            Err(DpopError::TooOld)
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn replay_cache_refuses_new_proofs_when_full_of_live_entries() {
        let mut cache = ReplayCache::new(2);
        cache
            .check_and_record(&proof_with_jti("a", NOW), NOW)
            .unwrap();
        cache
            .check_and_record(&proof_with_jti("b", NOW), NOW)
            .unwrap();
        let c = proof_with_jti("c", NOW);
        assert_eq!(
            cache.check_and_record(&c, NOW),
            Err(DpopError::ReplayCacheFull)
        );
        // Nothing live was evicted to make room.
        let a = proof_with_jti("a", NOW);
        assert_eq!(cache.check_and_record(&a, NOW), Err(DpopError::Replayed));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn replay_cache_makes_room_as_entries_expire() {
        let mut cache = ReplayCache::new(2);
        let a = proof_with_jti("a", NOW);
        cache.check_and_record(&a, NOW).unwrap();
        cache
            .check_and_record(&proof_with_jti("b", NOW + 10), NOW + 10)
            .unwrap();
        let later = a.replay_until_s();
        let c = proof_with_jti("c", later);
        assert_eq!(cache.check_and_record(&c, later), Ok(()));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn replay_cache_of_capacity_zero_refuses_every_proof() {
        let mut cache = ReplayCache::new(0);
        assert_eq!(
            cache.check_and_record(&proof_with_jti("a", NOW), NOW),
            Err(DpopError::ReplayCacheFull)
        );
    }
}
