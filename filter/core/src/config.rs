//! The filter's plugin configuration: the JSON Envoy hands to `on_configure`, parsed strictly
//! (unknown fields refused) and validated once, so the per-request path never re-checks it.
//!
//! A full example (every field; the ones marked "default" may be left out):
//!
//! ```json
//! {
//!   "issuer": "https://127.0.0.1:9443",
//!   "audience": "spiffe://certbind.test/ns/demo/sa/orders",
//!   "trust_domain": "certbind.test",
//!   "realm": "certbind",
//!   "jwks": {
//!     "cluster": "authz_server",
//!     "authority": "127.0.0.1:9443",
//!     "path": "/.well-known/jwks.json",
//!     "refresh_interval_s": 300,
//!     "min_refetch_interval_s": 30,
//!     "max_stale_s": 3600,
//!     "first_fetch_wait_ms": 5000,
//!     "timeout_ms": 2000
//!   },
//!   "pdp": {
//!     "cluster": "pdp",
//!     "authority": "127.0.0.1:9191",
//!     "path": "/v1/decision",
//!     "timeout_ms": 200
//!   },
//!   "decision_cache_size": 1024,
//!   "token_cache_size": 1024,
//!   "clock_skew_s": 30,
//!   "max_token_lifetime_s": 600,
//!   "mode": "enforce",
//!   "forward_token": false,
//!   "binding": "mtls"
//! }
//! ```
//!
//! `audience` may be left out: the service's own SPIFFE ID is then the URI SAN of the
//! listener's certificate (Envoy's `connection.uri_san_local_certificate`), so one mesh-wide
//! configuration (an Istio `WasmPlugin`) serves every service; a listener without a SPIFFE
//! certificate of `trust_domain` then admits no token (`wrong_audience`).
//!
//! `binding` is `mtls` (RFC 8705: the token's `cnf."x5t#S256"` must be the connection's client
//! certificate) or `dpop` (RFC 9449: `Authorization: DPoP <token>` plus one `DPoP` proof
//! whose key is the token's `cnf.jkt`, for listeners behind a TLS-terminating hop). A `dpop`
//! listener needs a `dpop` object (only `public_origin` is required):
//!
//! ```text
//! "dpop": {
//!   "public_origin": "https://127.0.0.1:8445",
//!   "max_age_s": 60,
//!   "clock_skew_s": 5,
//!   "replay_cache_size": 16384,
//!   "nonce": false
//! }
//! ```

use crate::binding::SpiffeId;
use crate::dpop::{ProofWindow, normalize_htu};
use crate::jose;
use crate::jwks::JwksPolicy;
use serde::Deserialize;
use std::fmt;

/// The whole plugin configuration. Build it with [`FilterConfig::from_json`], which validates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// The token's required `iss` (the authz-server's issuer URL), compared exactly.
    pub issuer: String,
    /// This service's SPIFFE ID: the token's `aud` must contain it. Absent: the listener's
    /// own certificate says it, per connection (see the module doc).
    #[serde(default)]
    pub audience: Option<String>,
    /// The trust domain every peer certificate's SPIFFE ID must belong to.
    pub trust_domain: String,
    /// The `realm` of `WWW-Authenticate: Bearer realm="..."` (default `certbind`).
    #[serde(default = "default_realm")]
    pub realm: String,
    pub jwks: JwksConfig,
    pub pdp: PdpConfig,
    /// How many PDP allows are cached per VM (default 1024; 0 disables the cache).
    #[serde(default = "default_cache_size")]
    pub decision_cache_size: usize,
    /// How many verified tokens are cached per VM (default 1024; 0 disables the cache).
    #[serde(default = "default_cache_size")]
    pub token_cache_size: usize,
    /// Tolerance for `exp`/`nbf` against this host's clock, seconds (default 30).
    #[serde(default = "default_clock_skew_s")]
    pub clock_skew_s: u64,
    /// The longest access-token lifetime accepted, seconds (default 600, twice the longest the
    /// authz-server issues): a token whose `exp - iat`, or whose `exp` from now (beyond the
    /// clock skew), exceeds it is refused as `expired`, so a leaked signing key or a
    /// misconfigured issuer cannot mint tokens that outlive revocation and key rotation.
    #[serde(default = "default_max_token_lifetime_s")]
    pub max_token_lifetime_s: u64,
    /// `enforce` (default) or `shadow` (every check runs and is counted, nothing is denied).
    #[serde(default)]
    pub mode: Mode,
    /// Whether the `Authorization` header reaches the upstream (default false).
    #[serde(default)]
    pub forward_token: bool,
    /// What the token must be bound to on this listener (default `mtls`).
    #[serde(default)]
    pub binding: Binding,
    /// DPoP proof settings; required when `binding` is `dpop`, refused otherwise.
    #[serde(default)]
    pub dpop: Option<DpopConfig>,
    /// Following the authz-server's revocation feed (issue 8); absent: no revocation check
    /// (the Envoy template always sets it). See [`RevocationConfig`].
    #[serde(default)]
    pub revocation: Option<RevocationConfig>,
    /// The shared counter of usage-bound tokens (issue 22); absent: such tokens are refused
    /// with 503 `usage_unavailable`. See [`crate::usage::UsageConfig`].
    #[serde(default)]
    pub usage: Option<crate::usage::UsageConfig>,
}

/// How the filter follows the authz-server's revocation feed (`GET /v1/revocations?since=N`,
/// a long-poll) and what it does when the feed goes quiet. Every field has a default, so
/// `"revocation": {}` follows the feed on the JWKS cluster:
///
/// ```text
/// "revocation": {
///   "cluster": "<jwks.cluster>",
///   "authority": "<jwks.authority>",
///   "path": "/v1/revocations",
///   "timeout_ms": 35000,
///   "max_staleness_s": 30,
///   "first_sync_wait_ms": 5000,
///   "fail_open": false
/// }
/// ```
///
/// `timeout_ms` bounds one long-poll and must stay above the feed's wait (25 s by default);
/// `max_staleness_s` must exceed that wait too, since a healthy idle feed answers only once
/// per wait. After `max_staleness_s` without a good answer every request is refused with 503
/// `revocation_unavailable` — or, with `fail_open`, admitted, logged and counted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationConfig {
    /// The Envoy cluster of the authz-server (default: `jwks.cluster`).
    #[serde(default)]
    pub cluster: Option<String>,
    /// The `:authority` of the poll (default: `jwks.authority`).
    #[serde(default)]
    pub authority: Option<String>,
    /// The feed's path (default `/v1/revocations`); `?since=<seq>` is appended.
    #[serde(default = "default_revocation_path")]
    pub path: String,
    /// Timeout of one long-poll, milliseconds (default 35000).
    #[serde(default = "default_revocation_timeout_ms")]
    pub timeout_ms: u64,
    /// How long the filter trusts its set without a good feed answer, seconds (default 30).
    #[serde(default = "default_revocation_max_staleness_s")]
    pub max_staleness_s: u64,
    /// A request arriving before the first snapshot waits this long, then 503 (default 5000).
    #[serde(default = "default_first_fetch_wait_ms")]
    pub first_sync_wait_ms: u64,
    /// Admit (log and count) instead of refusing when the feed is stale (default false).
    #[serde(default)]
    pub fail_open: bool,
}

fn default_revocation_path() -> String {
    "/v1/revocations".to_owned()
}
fn default_revocation_timeout_ms() -> u64 {
    35_000
}
fn default_revocation_max_staleness_s() -> u64 {
    30
}

impl FilterConfig {
    /// The usage counter's cluster and authority (defaulting to the JWKS ones).
    pub fn usage_target(&self) -> Option<(&str, &str)> {
        let u = self.usage.as_ref()?;
        Some((
            u.cluster.as_deref().unwrap_or(&self.jwks.cluster),
            u.authority.as_deref().unwrap_or(&self.jwks.authority),
        ))
    }

    /// The revocation feed's cluster and authority (defaulting to the JWKS ones).
    pub fn revocation_target(&self) -> Option<(&str, &str)> {
        let r = self.revocation.as_ref()?;
        Some((
            r.cluster.as_deref().unwrap_or(&self.jwks.cluster),
            r.authority.as_deref().unwrap_or(&self.jwks.authority),
        ))
    }
}

impl RevocationConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, why| Err(ConfigError::Invalid { field, why });
        for (field, value) in [
            ("revocation.cluster", &self.cluster),
            ("revocation.authority", &self.authority),
        ] {
            if value
                .as_deref()
                .is_some_and(|v| v.is_empty() || !jose::is_printable_ascii(v))
            {
                return bad(field, "must be non-empty printable ASCII");
            }
        }
        if !self.path.starts_with('/')
            || self.path.contains('?')
            || !jose::is_printable_ascii(&self.path)
        {
            return bad(
                "revocation.path",
                "must be an absolute path of printable ASCII without a query",
            );
        }
        if self.timeout_ms == 0 || self.timeout_ms > 300_000 {
            return bad("revocation.timeout_ms", "must be in 1..=300000");
        }
        if self.max_staleness_s == 0 || self.max_staleness_s > 3600 {
            return bad("revocation.max_staleness_s", "must be in 1..=3600");
        }
        if self.first_sync_wait_ms == 0 || self.first_sync_wait_ms > 60_000 {
            return bad("revocation.first_sync_wait_ms", "must be in 1..=60000");
        }
        Ok(())
    }
}

/// Checks `usage` (kept here, beside the other sections' checks, so `usage` needs nothing
/// from this module).
fn validate_usage(u: &crate::usage::UsageConfig) -> Result<(), ConfigError> {
    let bad = |field, why| Err(ConfigError::Invalid { field, why });
    for (field, value) in [
        ("usage.cluster", &u.cluster),
        ("usage.authority", &u.authority),
    ] {
        if value
            .as_deref()
            .is_some_and(|v| v.is_empty() || !jose::is_printable_ascii(v))
        {
            return bad(field, "must be non-empty printable ASCII");
        }
    }
    if !u.path.starts_with('/') || u.path.contains('?') || !jose::is_printable_ascii(&u.path) {
        return bad(
            "usage.path",
            "must be an absolute path of printable ASCII without a query",
        );
    }
    if u.timeout_ms == 0 || u.timeout_ms > 60_000 {
        return bad("usage.timeout_ms", "must be in 1..=60000");
    }
    Ok(())
}

/// What a token must be bound to (CONTRACT §3): the client certificate of the connection, or
/// a key the caller proves it holds with a DPoP proof in every request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Binding {
    #[default]
    Mtls,
    Dpop,
}

/// How DPoP proofs are checked on a `binding: dpop` listener (RFC 9449 §4.3, §11.1).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpopConfig {
    /// `https://host[:port]` as the callers reach this listener (in front of any
    /// TLS-terminating hop): the proof's `htu` must be this origin plus the request path.
    pub public_origin: String,
    /// How old a proof's `iat` may be, seconds (default 60).
    #[serde(default = "default_dpop_max_age_s")]
    pub max_age_s: u64,
    /// Clock difference tolerated on `iat` in both directions, seconds (default 5).
    #[serde(default = "default_dpop_clock_skew_s")]
    pub clock_skew_s: u64,
    /// How many proof `jti`s are remembered across all worker VMs (default 16384). Size it
    /// for requests per second × (max age + 2 × skew); when full, new proofs are refused.
    #[serde(default = "default_replay_cache_size")]
    pub replay_cache_size: usize,
    /// Server-provided nonces (RFC 9449 §9). Not implemented yet: only `false` is accepted.
    #[serde(default)]
    pub nonce: bool,
}

/// Where and how often the JWKS is fetched, and how long a good one may be served.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// The Envoy cluster of the authz-server.
    pub cluster: String,
    /// The `:authority` of the fetch.
    pub authority: String,
    /// The path of the fetch (default `/.well-known/jwks.json`).
    #[serde(default = "default_jwks_path")]
    pub path: String,
    /// A good JWKS is refetched this often, seconds (default 300).
    #[serde(default = "default_refresh_interval_s")]
    pub refresh_interval_s: u64,
    /// An unknown `kid` triggers at most one refetch per this many seconds (default 30).
    #[serde(default = "default_min_refetch_interval_s")]
    pub min_refetch_interval_s: u64,
    /// The last good JWKS is served at most this long after it was fetched (default 3600).
    #[serde(default = "default_max_stale_s")]
    pub max_stale_s: u64,
    /// A request arriving before the first JWKS waits this long, then gets 503 (default 5000).
    #[serde(default = "default_first_fetch_wait_ms")]
    pub first_fetch_wait_ms: u64,
    /// Timeout of one JWKS fetch, milliseconds (default 2000).
    #[serde(default = "default_jwks_timeout_ms")]
    pub timeout_ms: u64,
}

/// Where the policy decision point is and how long the filter waits for it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PdpConfig {
    /// The Envoy cluster of the PDP (mTLS with the sidecar's identity).
    pub cluster: String,
    /// The `:authority` of the call.
    pub authority: String,
    /// The path of the call (default `/v1/decision`).
    #[serde(default = "default_pdp_path")]
    pub path: String,
    /// Timeout of one decision call, milliseconds (default 200).
    #[serde(default = "default_pdp_timeout_ms")]
    pub timeout_ms: u64,
}

/// Whether failed checks deny (`enforce`) or are only counted and logged (`shadow`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Shadow => "shadow",
        }
    }
}

fn default_dpop_max_age_s() -> u64 {
    60
}
fn default_dpop_clock_skew_s() -> u64 {
    5
}
fn default_replay_cache_size() -> usize {
    16_384
}
fn default_realm() -> String {
    "certbind".to_owned()
}
fn default_cache_size() -> usize {
    1024
}
fn default_clock_skew_s() -> u64 {
    30
}
fn default_max_token_lifetime_s() -> u64 {
    600
}
fn default_jwks_path() -> String {
    "/.well-known/jwks.json".to_owned()
}
fn default_refresh_interval_s() -> u64 {
    300
}
fn default_min_refetch_interval_s() -> u64 {
    30
}
fn default_max_stale_s() -> u64 {
    3600
}
fn default_first_fetch_wait_ms() -> u64 {
    5000
}
fn default_jwks_timeout_ms() -> u64 {
    2000
}
fn default_pdp_path() -> String {
    "/v1/decision".to_owned()
}
fn default_pdp_timeout_ms() -> u64 {
    200
}

/// The largest configuration accepted, so a hostile or broken config cannot cost much.
pub const MAX_CONFIG_BYTES: usize = 16 * 1024;
/// Upper bound of each cache size: the caches live in every worker VM's memory.
pub const MAX_CACHE_SIZE: usize = 100_000;
/// Upper bound of `max_token_lifetime_s` (a day).
pub const MAX_TOKEN_LIFETIME_S: u64 = 86_400;
/// Upper bound of the clock skew: more would make `exp` meaningless.
pub const MAX_CLOCK_SKEW_S: u64 = 300;
/// Upper bound of a DPoP proof's age: a proof is a one-request credential.
pub const MAX_DPOP_AGE_S: u64 = 300;
/// Upper bound of the DPoP `iat` skew.
pub const MAX_DPOP_SKEW_S: u64 = 60;

/// Why a configuration was refused. `Display` is the one log line Envoy shows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// No configuration, or larger than [`MAX_CONFIG_BYTES`].
    Size(usize),
    /// Not JSON of the expected shape (unknown field, wrong type, missing field).
    Json(String),
    /// A field has a value outside what the filter can work with.
    Invalid {
        field: &'static str,
        why: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Size(n) => write!(
                f,
                "certbind config refused: {n} bytes (need 1..={MAX_CONFIG_BYTES} bytes of JSON)"
            ),
            Self::Json(e) => write!(f, "certbind config refused: {e}"),
            Self::Invalid { field, why } => write!(f, "certbind config refused: `{field}` {why}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl FilterConfig {
    /// Parses and validates the plugin configuration.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.is_empty() || bytes.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::Size(bytes.len()));
        }
        let config: Self =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The configured audience as a SPIFFE ID (validated by `from_json`); `None` when the
    /// listener's certificate gives it.
    pub fn audience_id(&self) -> Option<SpiffeId> {
        self.audience
            .as_deref()
            .and_then(|a| SpiffeId::parse(a).ok())
    }

    /// The audience a request on a listener whose certificate's URI SAN is `local_uri_san`
    /// must carry: the configured one, else that SAN when it is a SPIFFE ID of
    /// `trust_domain`. `None`: this listener has no usable identity, so no token can name it.
    pub fn audience_for(&self, local_uri_san: Option<&str>) -> Option<String> {
        if let Some(configured) = &self.audience {
            return Some(configured.clone());
        }
        let id = SpiffeId::parse(local_uri_san?).ok()?;
        (id.trust_domain() == self.trust_domain).then(|| id.as_str().to_owned())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, why| Err(ConfigError::Invalid { field, why });
        if self.issuer.is_empty() {
            return bad("issuer", "must not be empty");
        }
        if SpiffeId::parse(&format!("spiffe://{}/x", self.trust_domain)).is_err() {
            return bad("trust_domain", "must be a lowercase SPIFFE trust domain");
        }
        if let Some(configured) = &self.audience {
            let Ok(audience) = SpiffeId::parse(configured) else {
                return bad("audience", "must be a SPIFFE ID (spiffe://<domain>/<path>)");
            };
            if audience.trust_domain() != self.trust_domain {
                return bad("audience", "must belong to `trust_domain`");
            }
        }
        if !jose::is_printable_ascii(&self.realm)
            || self.realm.contains('"')
            || self.realm.contains('\\')
        {
            return bad("realm", "must be printable ASCII without quotes");
        }
        for (field, value) in [
            ("jwks.cluster", &self.jwks.cluster),
            ("jwks.authority", &self.jwks.authority),
            ("pdp.cluster", &self.pdp.cluster),
            ("pdp.authority", &self.pdp.authority),
        ] {
            if value.is_empty() || !jose::is_printable_ascii(value) {
                return bad(field, "must be non-empty printable ASCII");
            }
        }
        for (field, value) in [("jwks.path", &self.jwks.path), ("pdp.path", &self.pdp.path)] {
            if !value.starts_with('/') || !jose::is_printable_ascii(value) {
                return bad(field, "must be an absolute path of printable ASCII");
            }
        }
        let j = &self.jwks;
        if j.refresh_interval_s == 0 || j.refresh_interval_s > 86_400 {
            return bad("jwks.refresh_interval_s", "must be in 1..=86400");
        }
        if j.min_refetch_interval_s == 0 || j.min_refetch_interval_s > 3600 {
            return bad("jwks.min_refetch_interval_s", "must be in 1..=3600");
        }
        if j.max_stale_s < j.refresh_interval_s || j.max_stale_s > 7 * 86_400 {
            return bad(
                "jwks.max_stale_s",
                "must be in jwks.refresh_interval_s..=604800",
            );
        }
        if j.first_fetch_wait_ms == 0 || j.first_fetch_wait_ms > 60_000 {
            return bad("jwks.first_fetch_wait_ms", "must be in 1..=60000");
        }
        if j.timeout_ms == 0 || j.timeout_ms > 60_000 {
            return bad("jwks.timeout_ms", "must be in 1..=60000");
        }
        if self.pdp.timeout_ms == 0 || self.pdp.timeout_ms > 60_000 {
            return bad("pdp.timeout_ms", "must be in 1..=60000");
        }
        if self.decision_cache_size > MAX_CACHE_SIZE {
            return bad("decision_cache_size", "must be at most 100000");
        }
        if self.token_cache_size > MAX_CACHE_SIZE {
            return bad("token_cache_size", "must be at most 100000");
        }
        if self.clock_skew_s > MAX_CLOCK_SKEW_S {
            return bad("clock_skew_s", "must be at most 300");
        }
        if self.max_token_lifetime_s == 0 || self.max_token_lifetime_s > MAX_TOKEN_LIFETIME_S {
            return bad("max_token_lifetime_s", "must be in 1..=86400");
        }
        if let Some(r) = &self.revocation {
            r.validate()?;
        }
        if let Some(u) = &self.usage {
            validate_usage(u)?;
        }
        match (self.binding, &self.dpop) {
            (Binding::Mtls, None) => Ok(()),
            (Binding::Mtls, Some(_)) => bad("dpop", "is only for `binding: dpop`"),
            (Binding::Dpop, None) => bad("dpop", "is required with `binding: dpop`"),
            (Binding::Dpop, Some(d)) => d.validate(),
        }
    }
}

impl DpopConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, why| Err(ConfigError::Invalid { field, why });
        let origin_ok = jose::is_printable_ascii(&self.public_origin)
            && !self.public_origin.ends_with('/')
            && normalize_htu(&format!("{}/", self.public_origin))
                .is_some_and(|u| u.starts_with("https://") && u.matches('/').count() == 3);
        if !origin_ok {
            return bad(
                "dpop.public_origin",
                "must be an https origin (https://host[:port], no path)",
            );
        }
        if self.max_age_s == 0 || self.max_age_s > MAX_DPOP_AGE_S {
            return bad("dpop.max_age_s", "must be in 1..=300");
        }
        if self.clock_skew_s > MAX_DPOP_SKEW_S {
            return bad("dpop.clock_skew_s", "must be at most 60");
        }
        if self.replay_cache_size == 0 || self.replay_cache_size > MAX_CACHE_SIZE {
            return bad("dpop.replay_cache_size", "must be in 1..=100000");
        }
        if self.nonce {
            return bad("dpop.nonce", "is not supported yet (only false)");
        }
        Ok(())
    }

    /// The proof window of [`crate::dpop::verify_proof`].
    pub fn window(&self) -> ProofWindow {
        ProofWindow {
            max_age_s: self.max_age_s,
            clock_skew_s: self.clock_skew_s,
        }
    }
}

impl JwksConfig {
    /// The JWKS timing policy, in milliseconds.
    pub fn policy(&self) -> JwksPolicy {
        JwksPolicy {
            refresh_ms: self.refresh_interval_s.saturating_mul(1000),
            min_refetch_ms: self.min_refetch_interval_s.saturating_mul(1000),
            max_stale_ms: self.max_stale_s.saturating_mul(1000),
            fetch_timeout_ms: self.timeout_ms,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const MINIMAL: &str = r#"{
        "issuer": "https://127.0.0.1:9443",
        "audience": "spiffe://certbind.test/ns/demo/sa/orders",
        "trust_domain": "certbind.test",
        "jwks": {"cluster": "authz_server", "authority": "127.0.0.1:9443"},
        "pdp": {"cluster": "pdp", "authority": "127.0.0.1:9191"}
    }"#;

    /// The example of the module documentation, kept identical by this test.
    fn doc_example() -> String {
        let doc = include_str!("config.rs");
        let start = doc.find("```json\n").unwrap() + 8;
        let end = doc.get(start..).unwrap().find("```").unwrap() + start;
        doc.get(start..end)
            .unwrap()
            .lines()
            .map(|l| l.trim_start_matches("//!"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn with(field: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
        let mut slot = &mut v;
        for part in field.split('.') {
            slot = slot
                .as_object_mut()
                .unwrap()
                .entry(part)
                .or_insert_with(|| serde_json::Value::Null);
        }
        *slot = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    #[test]
    fn admits_the_documented_full_example() {
        let c = FilterConfig::from_json(doc_example().as_bytes()).unwrap();
        assert_eq!(c.jwks.refresh_interval_s, 300);
        assert_eq!(c.pdp.timeout_ms, 200);
        assert_eq!(c.mode, Mode::Enforce);
    }

    #[test]
    fn fills_defaults_for_a_minimal_config() {
        let c = FilterConfig::from_json(MINIMAL.as_bytes()).unwrap();
        assert_eq!(c.realm, "certbind");
        assert_eq!(c.jwks.path, "/.well-known/jwks.json");
        assert_eq!(c.jwks.refresh_interval_s, 300);
        assert_eq!(c.jwks.min_refetch_interval_s, 30);
        assert_eq!(c.jwks.max_stale_s, 3600);
        assert_eq!(c.jwks.first_fetch_wait_ms, 5000);
        assert_eq!(c.pdp.path, "/v1/decision");
        assert_eq!(c.pdp.timeout_ms, 200);
        assert_eq!(c.decision_cache_size, 1024);
        assert_eq!(c.token_cache_size, 1024);
        assert_eq!(c.clock_skew_s, 30);
        assert_eq!(c.max_token_lifetime_s, 600);
        assert_eq!(c.mode, Mode::Enforce);
        assert!(!c.forward_token);
        assert_eq!(
            c.audience_id().unwrap().as_str(),
            "spiffe://certbind.test/ns/demo/sa/orders"
        );
    }

    #[test]
    fn admits_short_test_intervals() {
        let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
        v["jwks"]["refresh_interval_s"] = 1.into();
        v["jwks"]["max_stale_s"] = 3.into();
        let c = FilterConfig::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(c.jwks.min_refetch_interval_s, 30);
    }

    #[test]
    fn refuses_a_max_token_lifetime_of_zero_or_above_a_day() {
        for value in ["0", "86401"] {
            let err = FilterConfig::from_json(with("max_token_lifetime_s", value).as_bytes())
                .unwrap_err();
            assert!(err.to_string().contains("max_token_lifetime_s"), "{err}");
        }
        let c = FilterConfig::from_json(with("max_token_lifetime_s", "3600").as_bytes()).unwrap();
        assert_eq!(c.max_token_lifetime_s, 3600);
    }

    #[test]
    fn admits_shadow_mode() {
        let c = FilterConfig::from_json(with("mode", "\"shadow\"").as_bytes()).unwrap();
        assert_eq!(c.mode, Mode::Shadow);
    }

    #[test]
    fn refuses_unknown_fields_at_every_level() {
        for (field, value) in [("extra", "1"), ("jwks.extra", "1"), ("pdp.extra", "1")] {
            let err = FilterConfig::from_json(with(field, value).as_bytes()).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Json(e) if e.contains("unknown field")),
                "{field}: {err}"
            );
        }
    }

    #[test]
    fn refuses_missing_required_fields() {
        let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
        v.as_object_mut().unwrap().remove("issuer");
        let err = FilterConfig::from_json(v.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("missing field `issuer`"), "{err}");
    }

    #[test]
    fn refuses_empty_oversized_and_non_json_configs() {
        assert_eq!(FilterConfig::from_json(b""), Err(ConfigError::Size(0)));
        let big = vec![b' '; MAX_CONFIG_BYTES + 1];
        assert!(matches!(
            FilterConfig::from_json(&big),
            Err(ConfigError::Size(_))
        ));
        assert!(matches!(
            FilterConfig::from_json(b"not json"),
            Err(ConfigError::Json(_))
        ));
        assert!(matches!(
            FilterConfig::from_json(with("mode", "\"audit\"").as_bytes()),
            Err(ConfigError::Json(_))
        ));
    }

    #[test]
    fn refuses_values_the_filter_cannot_work_with() {
        for (field, value) in [
            ("issuer", "\"\""),
            ("audience", "\"orders\""),
            ("audience", "\"spiffe://other.test/ns/demo/sa/orders\""),
            ("trust_domain", "\"Certbind.test\""),
            ("realm", "\"a\\\"b\""),
            ("jwks.cluster", "\"\""),
            ("pdp.authority", "\"a\\nb\""),
            ("jwks.path", "\"jwks.json\""),
            ("pdp.path", "\"\""),
            ("jwks.refresh_interval_s", "0"),
            ("jwks.min_refetch_interval_s", "0"),
            ("jwks.min_refetch_interval_s", "3601"),
            ("jwks.max_stale_s", "299"),
            ("jwks.first_fetch_wait_ms", "0"),
            ("jwks.timeout_ms", "0"),
            ("pdp.timeout_ms", "0"),
            ("pdp.timeout_ms", "60001"),
            ("decision_cache_size", "100001"),
            ("token_cache_size", "100001"),
            ("clock_skew_s", "301"),
        ] {
            let err = FilterConfig::from_json(with(field, value).as_bytes()).unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { .. }),
                "{field}={value}: {err}"
            );
        }
    }

    fn dpop_listener(dpop: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
        v["binding"] = "dpop".into();
        v["dpop"] = serde_json::from_str(dpop).unwrap();
        v.to_string()
    }

    #[test]
    fn binding_defaults_to_mtls_without_dpop_settings() {
        let c = FilterConfig::from_json(MINIMAL.as_bytes()).unwrap();
        assert_eq!(c.binding, Binding::Mtls);
        assert_eq!(c.dpop, None);
    }

    #[test]
    fn admits_a_dpop_listener_and_fills_its_defaults() {
        let c = FilterConfig::from_json(
            dpop_listener(r#"{"public_origin": "https://127.0.0.1:8445"}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(c.binding, Binding::Dpop);
        let d = c.dpop.unwrap();
        assert_eq!(d.public_origin, "https://127.0.0.1:8445");
        assert_eq!((d.max_age_s, d.clock_skew_s), (60, 5));
        assert_eq!(d.replay_cache_size, 16_384);
        assert!(!d.nonce);
    }

    #[test]
    fn refuses_dpop_settings_that_do_not_fit_the_binding() {
        let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
        v["binding"] = "dpop".into();
        let err = FilterConfig::from_json(v.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("`dpop` is required"), "{err}");
        let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
        v["dpop"] = serde_json::json!({"public_origin": "https://a.example"});
        let err = FilterConfig::from_json(v.to_string().as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("only for `binding: dpop`"),
            "{err}"
        );
        assert!(matches!(
            FilterConfig::from_json(with("binding", "\"bearer\"").as_bytes()),
            Err(ConfigError::Json(_))
        ));
    }

    #[test]
    fn refuses_unusable_dpop_values() {
        for dpop in [
            r#"{}"#,
            r#"{"public_origin": "http://127.0.0.1:8445"}"#,
            r#"{"public_origin": "https://127.0.0.1:8445/"}"#,
            r#"{"public_origin": "https://127.0.0.1:8445/orders"}"#,
            r#"{"public_origin": "https://u@127.0.0.1"}"#,
            r#"{"public_origin": "127.0.0.1:8445"}"#,
            r#"{"public_origin": "https://a.example", "max_age_s": 0}"#,
            r#"{"public_origin": "https://a.example", "max_age_s": 301}"#,
            r#"{"public_origin": "https://a.example", "clock_skew_s": 61}"#,
            r#"{"public_origin": "https://a.example", "replay_cache_size": 0}"#,
            r#"{"public_origin": "https://a.example", "replay_cache_size": 100001}"#,
            r#"{"public_origin": "https://a.example", "nonce": true}"#,
            r#"{"public_origin": "https://a.example", "extra": 1}"#,
        ] {
            assert!(
                FilterConfig::from_json(dpop_listener(dpop).as_bytes()).is_err(),
                "{dpop}"
            );
        }
    }

    #[test]
    fn revocation_is_off_when_absent_and_defaults_to_the_jwks_cluster() {
        let c = FilterConfig::from_json(MINIMAL.as_bytes()).unwrap();
        assert_eq!(c.revocation, None);
        assert_eq!(c.revocation_target(), None);
        let c = FilterConfig::from_json(with("revocation", "{}").as_bytes()).unwrap();
        let r = c.revocation.clone().unwrap();
        assert_eq!(r.path, "/v1/revocations");
        assert_eq!((r.timeout_ms, r.max_staleness_s), (35_000, 30));
        assert_eq!(r.first_sync_wait_ms, 5000);
        assert!(!r.fail_open);
        assert_eq!(
            c.revocation_target(),
            Some(("authz_server", "127.0.0.1:9443"))
        );
        let c = FilterConfig::from_json(
            with(
                "revocation",
                r#"{"cluster": "feed", "authority": "a:1", "max_staleness_s": 2, "fail_open": true}"#,
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(c.revocation_target(), Some(("feed", "a:1")));
        assert!(c.revocation.unwrap().fail_open);
    }

    #[test]
    fn refuses_unusable_revocation_settings() {
        for value in [
            r#"{"cluster": ""}"#,
            r#"{"authority": "a\nb"}"#,
            r#"{"path": "v1/revocations"}"#,
            r#"{"path": "/v1/revocations?since=1"}"#,
            r#"{"timeout_ms": 0}"#,
            r#"{"max_staleness_s": 0}"#,
            r#"{"max_staleness_s": 3601}"#,
            r#"{"first_sync_wait_ms": 0}"#,
            r#"{"extra": 1}"#,
        ] {
            assert!(
                FilterConfig::from_json(with("revocation", value).as_bytes()).is_err(),
                "{value}"
            );
        }
    }

    #[test]
    fn refusal_is_one_clear_line() {
        let err = FilterConfig::from_json(with("pdp.timeout_ms", "0").as_bytes()).unwrap_err();
        let line = err.to_string();
        assert_eq!(
            line,
            "certbind config refused: `pdp.timeout_ms` must be in 1..=60000"
        );
        assert!(!line.contains('\n'));
    }

    fn without_audience() -> FilterConfig {
        let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
        v.as_object_mut().unwrap().remove("audience");
        FilterConfig::from_json(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn takes_the_audience_from_the_listener_certificate_when_none_is_configured() {
        let c = without_audience();
        assert_eq!(c.audience, None);
        assert_eq!(c.audience_id(), None);
        let billing = "spiffe://certbind.test/ns/demo/sa/billing";
        assert_eq!(c.audience_for(Some(billing)).as_deref(), Some(billing));
    }

    #[test]
    fn a_listener_without_a_spiffe_certificate_of_the_trust_domain_has_no_audience() {
        let c = without_audience();
        for local in [
            None,
            Some(""),
            Some("https://orders.example"),
            Some("spiffe://other.test/ns/demo/sa/orders"),
            Some("spiffe://certbind.test"),
        ] {
            assert_eq!(c.audience_for(local), None, "{local:?}");
        }
    }

    #[test]
    fn a_configured_audience_wins_over_the_listener_certificate() {
        let c = FilterConfig::from_json(MINIMAL.as_bytes()).unwrap();
        let local = Some("spiffe://certbind.test/ns/demo/sa/billing");
        assert_eq!(
            c.audience_for(local).as_deref(),
            Some("spiffe://certbind.test/ns/demo/sa/orders")
        );
    }
}
