//! The `revocation` section: following the authz-server's revocation feed.

use super::error::ConfigError;
use crate::jose;
use serde::Deserialize;

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
    #[serde(default = "super::upstream::default_first_fetch_wait_ms")]
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

impl RevocationConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
