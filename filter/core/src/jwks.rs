//! The JWKS: parsing a bounded key set into ready verifying keys (EC P-256 signing keys only,
//! each tabulated for fast ES256 on first use),
//! and the pure refresh state machine — when to fetch, single-flight lease, unknown-`kid`
//! rate limit, failure backoff and the staleness bound — shared by all worker VMs as a record.

use crate::es256::PreparedKey;
use crate::json::{from_slice_strict, from_value};
pub use crate::jwk::ec_p256_key;
use p256::ecdsa::VerifyingKey;
use serde::Deserialize;
use serde_json::Value;
use std::fmt;

/// Largest JWKS body accepted.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;
/// Most entries a JWKS may list (of any type); more is refused as garbage.
pub const MAX_KEYS: usize = 16;
/// Longest `kid` accepted.
pub const MAX_KID_LEN: usize = 256;

/// Why a JWKS body was refused. A refused body never replaces a good set.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwksError {
    /// Larger than [`MAX_JWKS_BYTES`] or empty.
    Size(usize),
    /// Not a JSON object with a `keys` array (or duplicate JSON keys).
    NotJwks(String),
    /// More than [`MAX_KEYS`] entries.
    TooManyKeys(usize),
    /// Two usable keys share a `kid`: which one signs would be ambiguous.
    DuplicateKid,
    /// An entry carries private key material (`d`): the endpoint is misconfigured.
    PrivateKey,
    /// Not one EC P-256 signing key in the set.
    NoUsableKey,
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Size(n) => write!(f, "JWKS body of {n} bytes (need 1..={MAX_JWKS_BYTES})"),
            Self::NotJwks(e) => write!(f, "JWKS is not a JSON key set: {e}"),
            Self::TooManyKeys(n) => write!(f, "JWKS lists {n} keys (at most {MAX_KEYS})"),
            Self::DuplicateKid => f.write_str("JWKS lists one kid twice"),
            Self::PrivateKey => f.write_str("JWKS carries private key material"),
            Self::NoUsableKey => f.write_str("JWKS has no EC P-256 signing key"),
        }
    }
}

impl std::error::Error for JwksError {}

/// The verifying keys of one JWKS, by `kid`, parsed once.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySet {
    keys: Vec<(String, PreparedKey)>,
}

#[derive(Deserialize)]
struct JwksDoc {
    keys: Vec<Value>,
}

/// The JWK members we read; others are ignored (RFC 7517 §4).
#[derive(Deserialize)]
struct Jwk {
    kty: Option<String>,
    crv: Option<String>,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    key_ops: Option<Vec<String>>,
    x: Option<String>,
    y: Option<String>,
    d: Option<Value>,
}

impl KeySet {
    /// Parses a JWKS body. Entries that are not EC P-256 signing keys are skipped; a body
    /// that is oversized, malformed, ambiguous or without one usable key is refused.
    pub fn parse(body: &[u8]) -> Result<Self, JwksError> {
        if body.is_empty() || body.len() > MAX_JWKS_BYTES {
            return Err(JwksError::Size(body.len()));
        }
        let doc: JwksDoc = from_slice_strict(body).map_err(|e| JwksError::NotJwks(e.0))?;
        if doc.keys.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys(doc.keys.len()));
        }
        let mut keys: Vec<(String, PreparedKey)> = Vec::new();
        for entry in doc.keys {
            let Ok(jwk) = from_value::<Jwk>(entry) else {
                continue;
            };
            if jwk.d.is_some() {
                return Err(JwksError::PrivateKey);
            }
            let Some((kid, key)) = usable_key(jwk) else {
                continue;
            };
            if keys.iter().any(|(k, _)| *k == kid) {
                return Err(JwksError::DuplicateKid);
            }
            keys.push((kid, PreparedKey::new(key)));
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(Self { keys })
    }

    /// The key for `kid`, if the set has it.
    pub fn get(&self, kid: &str) -> Option<&PreparedKey> {
        self.keys.iter().find(|(k, _)| k == kid).map(|(_, key)| key)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid`s, in the order of the JWKS.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(k, _)| k.as_str())
    }
}

/// `Some` for an EC P-256 key meant for ES256 signatures, with a valid point.
fn usable_key(jwk: Jwk) -> Option<(String, VerifyingKey)> {
    if jwk.kty.as_deref() != Some("EC") || jwk.crv.as_deref() != Some("P-256") {
        return None;
    }
    if jwk.use_.as_deref().is_some_and(|u| u != "sig")
        || jwk.alg.as_deref().is_some_and(|a| a != "ES256")
        || jwk
            .key_ops
            .as_ref()
            .is_some_and(|ops| !ops.iter().any(|o| o == "verify"))
    {
        return None;
    }
    let kid = jwk
        .kid
        .filter(|k| !k.is_empty() && k.len() <= MAX_KID_LEN)?;
    let key = ec_p256_key(jwk.x.as_deref()?, jwk.y.as_deref()?)?;
    Some((kid, key))
}

/// The timing policy of the JWKS, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksPolicy {
    pub refresh_ms: u64,
    pub min_refetch_ms: u64,
    pub max_stale_ms: u64,
    pub fetch_timeout_ms: u64,
}

impl JwksPolicy {
    /// After `failures` failed fetches in a row, wait this long before the next scheduled one:
    /// 1 s, doubling, capped at the unknown-`kid` interval (a broken endpoint is not hammered).
    fn backoff_ms(&self, failures: u32) -> u64 {
        crate::backoff::Backoff::new(1000, self.min_refetch_ms.max(1000)).delay_ms(failures)
    }

    /// How long a fetch may hold the single-flight lease (its timeout plus a margin).
    fn lease_ms(&self) -> u64 {
        self.fetch_timeout_ms.saturating_add(1000)
    }
}

/// The installed key set of one VM, with when it was fetched.
#[derive(Debug, Clone)]
pub struct JwksCache {
    policy: JwksPolicy,
    current: Option<(KeySet, u64)>,
}

/// What the cache knows about a `kid`, now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lookup<'a> {
    /// The key, from a set within the staleness bound.
    Found(&'a PreparedKey),
    /// The set is fresh enough but lacks this `kid`.
    UnknownKid,
    /// No set was ever installed.
    NoKeys,
    /// The last good set is older than `max_stale`.
    Stale,
}

impl JwksCache {
    pub fn new(policy: JwksPolicy) -> Self {
        Self {
            policy,
            current: None,
        }
    }

    pub fn policy(&self) -> &JwksPolicy {
        &self.policy
    }

    /// When the installed set was fetched.
    pub fn fetched_at_ms(&self) -> Option<u64> {
        self.current.as_ref().map(|(_, at)| *at)
    }

    pub fn keys(&self) -> Option<&KeySet> {
        self.current.as_ref().map(|(keys, _)| keys)
    }

    /// True when there is no set or it is due for its scheduled refresh.
    pub fn needs_refresh(&self, now_ms: u64) -> bool {
        match self.current {
            None => true,
            Some((_, at)) => now_ms >= at.saturating_add(self.policy.refresh_ms),
        }
    }

    /// Parses `body` and, only if it is a good set, replaces the current one. `fetched_at_ms`
    /// is when it was fetched (by this VM or another); an older set never replaces a newer.
    pub fn install(&mut self, body: &[u8], fetched_at_ms: u64) -> Result<(), JwksError> {
        let keys = KeySet::parse(body)?;
        if self
            .current
            .as_ref()
            .is_some_and(|(_, at)| *at > fetched_at_ms)
        {
            return Ok(());
        }
        self.current = Some((keys, fetched_at_ms));
        Ok(())
    }

    /// The key for `kid`, unless there is no set or it is too stale to trust.
    pub fn lookup(&self, kid: &str, now_ms: u64) -> Lookup<'_> {
        match &self.current {
            None => Lookup::NoKeys,
            Some((_, at)) if now_ms > at.saturating_add(self.policy.max_stale_ms) => Lookup::Stale,
            Some((keys, _)) => keys.get(kid).map_or(Lookup::UnknownKid, Lookup::Found),
        }
    }
}

/// Why a fetch is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchKind {
    /// No set yet, or the refresh interval passed.
    Scheduled,
    /// A token named a `kid` the set lacks.
    UnknownKid,
}

/// The answer to "may I fetch now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchStart {
    /// Yes: the record now holds the lease; store it, then dispatch.
    Begun,
    /// Another fetch holds the lease: wait for its result.
    InFlight,
    /// Not now (nothing due, failure backoff, or the unknown-`kid` rate limit).
    NotNow,
}

/// The fetch state shared by every worker VM (proxy-wasm shared data, updated with CAS):
/// who fetches (lease), when an unknown `kid` last caused a refetch, and the failure streak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchRecord {
    lease_until_ms: u64,
    last_refetch_ms: Option<u64>,
    last_attempt_ms: Option<u64>,
    failures: u32,
}

impl FetchRecord {
    /// Reads the shared form; anything unreadable is the empty record (lease free).
    pub fn decode(bytes: &[u8]) -> Self {
        let text = std::str::from_utf8(bytes).unwrap_or_default();
        let mut fields = text.split(' ');
        let mut next = || fields.next().and_then(|f| f.parse::<u64>().ok());
        match (next(), next(), next(), next()) {
            (Some(lease), Some(refetch), Some(attempt), Some(failures)) => Self {
                lease_until_ms: lease,
                last_refetch_ms: (refetch > 0).then_some(refetch),
                last_attempt_ms: (attempt > 0).then_some(attempt),
                failures: u32::try_from(failures).unwrap_or(u32::MAX),
            },
            _ => Self::default(),
        }
    }

    /// The shared form: `<lease_until_ms> <last_refetch_ms> <last_attempt_ms> <failures>`.
    pub fn encode(&self) -> String {
        format!(
            "{} {} {} {}",
            self.lease_until_ms,
            self.last_refetch_ms.unwrap_or(0),
            self.last_attempt_ms.unwrap_or(0),
            self.failures
        )
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether a fetch may start now, taking the lease if so. `due` is the cache's
    /// `needs_refresh(now)` for a scheduled fetch.
    pub fn begin(
        &mut self,
        kind: FetchKind,
        due: bool,
        policy: &JwksPolicy,
        now_ms: u64,
    ) -> FetchStart {
        if now_ms < self.lease_until_ms {
            return FetchStart::InFlight;
        }
        let allowed = match kind {
            FetchKind::Scheduled => {
                due && self.last_attempt_ms.is_none_or(|at| {
                    self.failures == 0
                        || now_ms >= at.saturating_add(policy.backoff_ms(self.failures))
                })
            }
            FetchKind::UnknownKid => self
                .last_refetch_ms
                .is_none_or(|at| now_ms >= at.saturating_add(policy.min_refetch_ms)),
        };
        if !allowed {
            return FetchStart::NotNow;
        }
        self.lease_until_ms = now_ms.saturating_add(policy.lease_ms());
        self.last_attempt_ms = Some(now_ms);
        if kind == FetchKind::UnknownKid {
            self.last_refetch_ms = Some(now_ms);
        }
        FetchStart::Begun
    }

    /// The fetch ended (`ok`: a good set was installed); releases the lease.
    pub fn finish(&mut self, ok: bool, now_ms: u64) {
        self.lease_until_ms = 0;
        self.last_attempt_ms = Some(now_ms);
        self.failures = if ok {
            0
        } else {
            self.failures.saturating_add(1)
        };
    }

    /// The fetcher went away before its answer: free the lease without counting a failure.
    pub fn abandon(&mut self) {
        self.lease_until_ms = 0;
    }
}

/// The shared-data form of a good set: `<fetched_at_ms>\n<body>`.
pub fn encode_shared_set(fetched_at_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{fetched_at_ms}\n").into_bytes();
    out.extend_from_slice(body);
    out
}

/// Splits the shared-data form back into (fetched_at_ms, body).
pub fn decode_shared_set(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let newline = bytes.iter().position(|b| *b == b'\n')?;
    let (head, rest) = bytes.split_at(newline);
    let at = std::str::from_utf8(head).ok()?.parse().ok()?;
    Some((at, rest.get(1..)?))
}

#[cfg(test)]
pub(crate) mod tests;
