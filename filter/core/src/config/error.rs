//! Why a configuration was refused, and the bounds it is checked against.

use std::fmt;

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
