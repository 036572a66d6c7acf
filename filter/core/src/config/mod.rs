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
//!
//! Files: this one (the whole configuration, its top-level checks), `upstream` (`jwks`,
//! `pdp`), `dpop`, `revocation`, `error` (why a configuration is refused, the bounds).

mod dpop;
mod error;
mod revocation;
mod upstream;

pub use dpop::DpopConfig;
pub use error::{
    ConfigError, MAX_CACHE_SIZE, MAX_CLOCK_SKEW_S, MAX_CONFIG_BYTES, MAX_DPOP_AGE_S,
    MAX_DPOP_SKEW_S, MAX_TOKEN_LIFETIME_S,
};
pub use revocation::RevocationConfig;
pub use upstream::{JwksConfig, PdpConfig};

use crate::binding::SpiffeId;
use crate::jose;
use serde::Deserialize;

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

impl FilterConfig {
    /// Parses and validates the plugin configuration.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.is_empty() || bytes.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::Size(bytes.len()));
        }
        // Strict: a key given twice (serde_json keeps the last) or a section written as an
        // array is an operator's mistake to report, not to guess at.
        let config: Self =
            crate::json::from_slice_strict(bytes).map_err(|e| ConfigError::Json(e.0))?;
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

#[cfg(test)]
pub(crate) mod tests;
