//! What a request expects of its DPoP proof: method, URI, time window, token and key.

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
    /// fragment is ignored; normalised like the claim (see [`super::normalize_htu`]).
    pub htu: &'a str,
    pub now_s: u64,
    pub window: ProofWindow,
    /// What the proof's `ath` must be at a resource request: [`super::access_token_hash`]
    /// of the access token presented with it (the caller may have it from an earlier proof).
    /// `None` at the token endpoint, where `ath` is not checked.
    pub ath: Option<&'a str>,
    /// The thumbprint the proof key must have (the token's `cnf.jkt`). `None` at the token
    /// endpoint, where the proof key is the one being bound.
    pub jkt: Option<&'a str>,
    /// Server nonces currently accepted (RFC 9449 §9); empty when nonces are off.
    pub nonces: &'a [&'a str],
}
