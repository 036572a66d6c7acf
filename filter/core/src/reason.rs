//! The flat enum of reasons the filter denies a request for (CONTRACT §4), with the stable
//! strings that replies, stats and logs share, and the HTTP answer each one maps to.

use std::fmt;

/// Why a request was refused. The order of the variants is the order of the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Reason {
    /// No `Authorization: Bearer` header.
    MissingToken,
    /// Not a compact JWS of bounded size with base64url parts and JSON header and claims.
    MalformedToken,
    /// `alg` is not ES256.
    UnsupportedAlg,
    /// `typ` is not `at+jwt`.
    WrongType,
    /// `kid` is not in the JWKS, even after a (rate-limited) refetch.
    UnknownKid,
    /// The signature does not verify with the `kid`'s key.
    BadSignature,
    /// `exp` has passed (beyond the clock skew).
    Expired,
    /// `nbf` is in the future (beyond the clock skew).
    NotYetValid,
    /// `iss` is not the configured issuer.
    WrongIssuer,
    /// `aud` does not name this service.
    WrongAudience,
    /// The token has no `cnf."x5t#S256"`.
    BindingMissing,
    /// `cnf."x5t#S256"` is not the thumbprint of this connection's client certificate.
    BindingMismatch,
    /// `sub` is not the SPIFFE ID of this connection's client certificate.
    SubjectMismatch,
    /// A DPoP proof is missing or invalid (edge listener).
    DpopInvalid,
    /// A DPoP proof was replayed (edge listener).
    DpopReplay,
    /// The token, subject or certificate is revoked.
    Revoked,
    /// The PDP denied the request.
    PolicyDenied,
    /// The PDP denied the request because a scope was missing (`reason` stays `policy_denied`).
    InsufficientScope,
    /// No usable JWKS (none fetched yet in time, or the last good one is too stale).
    JwksUnavailable,
    /// The PDP timed out, failed or answered garbage.
    PdpUnavailable,
    /// The revocation feed has not answered within `revocation.max_staleness_s` (or never):
    /// the filter cannot tell a revoked token from a good one, so it refuses (unless
    /// `revocation.fail_open`).
    RevocationUnavailable,
    /// The connection's client certificate is outside its validity window at request time
    /// (a resumed TLS session outlives the handshake's check), or its window is unknown.
    CertificateExpired,
    /// The shared DPoP replay cache has no room for this proof (its slot, or the share of
    /// the proof's key, is full of live proofs): it cannot be remembered, so it is refused,
    /// but it was never seen, so this is not `dpop_replay`.
    ReplayCacheFull,
    /// A usage-bound token whose uses are all spent (or that the counter never issued).
    UsageExhausted,
    /// The usage counter timed out, failed or answered garbage: the use cannot be counted.
    UsageUnavailable,
    /// The filter could not examine the request at all: it has no configuration, or its own
    /// state was busy (a re-entrant callback). Refused, never passed; the refused configuration
    /// or the busy state is logged.
    InternalError,
}

impl Reason {
    /// Every reason, for defining one counter each up front.
    pub const ALL: [Reason; 26] = [
        Self::MissingToken,
        Self::MalformedToken,
        Self::UnsupportedAlg,
        Self::WrongType,
        Self::UnknownKid,
        Self::BadSignature,
        Self::Expired,
        Self::NotYetValid,
        Self::WrongIssuer,
        Self::WrongAudience,
        Self::BindingMissing,
        Self::BindingMismatch,
        Self::SubjectMismatch,
        Self::DpopInvalid,
        Self::DpopReplay,
        Self::Revoked,
        Self::PolicyDenied,
        Self::InsufficientScope,
        Self::JwksUnavailable,
        Self::PdpUnavailable,
        Self::RevocationUnavailable,
        Self::CertificateExpired,
        Self::ReplayCacheFull,
        Self::UsageExhausted,
        Self::UsageUnavailable,
        Self::InternalError,
    ];

    /// The stable `reason` string of the body, the stat name and the log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::MalformedToken => "malformed_token",
            Self::UnsupportedAlg => "unsupported_alg",
            Self::WrongType => "wrong_type",
            Self::UnknownKid => "unknown_kid",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::BindingMissing => "binding_missing",
            Self::BindingMismatch => "binding_mismatch",
            Self::SubjectMismatch => "subject_mismatch",
            Self::DpopInvalid => "dpop_invalid",
            Self::DpopReplay => "dpop_replay",
            Self::Revoked => "revoked",
            // CONTRACT §4: a missing scope is still `policy_denied`; only `error` differs.
            Self::PolicyDenied | Self::InsufficientScope => "policy_denied",
            Self::JwksUnavailable => "jwks_unavailable",
            Self::PdpUnavailable => "pdp_unavailable",
            Self::RevocationUnavailable => "revocation_unavailable",
            Self::CertificateExpired => "certificate_expired",
            Self::ReplayCacheFull => "replay_cache_full",
            Self::UsageExhausted => "usage_exhausted",
            Self::UsageUnavailable => "usage_unavailable",
            Self::InternalError => "internal_error",
        }
    }

    /// The stat this reason is counted under: `certbind.denied.<reason>` (CONTRACT §4), so a
    /// missing scope counts as `policy_denied` like every other policy denial.
    pub fn stat_name(self) -> &'static str {
        match self {
            Self::InsufficientScope => "certbind.denied.policy_denied",
            other => STAT_NAMES
                .iter()
                .find(|(r, _)| *r == other)
                .map_or("certbind.denied.other", |(_, name)| name),
        }
    }

    /// The HTTP status of the answer.
    pub fn status(self) -> u32 {
        match self {
            Self::PolicyDenied | Self::InsufficientScope => 403,
            Self::JwksUnavailable
            | Self::PdpUnavailable
            | Self::RevocationUnavailable
            | Self::ReplayCacheFull
            | Self::UsageUnavailable
            | Self::InternalError => 503,
            _ => 401,
        }
    }

    /// The RFC 6750 / RFC 9449 `error` code; `None` for a missing token (RFC 6750 §3.1).
    pub fn error(self) -> Option<&'static str> {
        match self {
            Self::MissingToken => None,
            Self::DpopInvalid | Self::DpopReplay => Some("invalid_dpop_proof"),
            Self::InsufficientScope => Some("insufficient_scope"),
            Self::PolicyDenied => Some("access_denied"),
            Self::JwksUnavailable
            | Self::PdpUnavailable
            | Self::RevocationUnavailable
            | Self::ReplayCacheFull
            | Self::UsageUnavailable
            | Self::InternalError => Some("temporarily_unavailable"),
            _ => Some("invalid_token"),
        }
    }

    /// The `WWW-Authenticate` value. The realm must be header-safe without quotes
    /// (`FilterConfig` guarantees it). The DPoP reasons answer with the `DPoP` scheme and
    /// `algs="ES256"` (RFC 9449 §7.1), every other with `Bearer`.
    pub fn www_authenticate(self, realm: &str) -> String {
        let dpop = matches!(self, Self::DpopInvalid | Self::DpopReplay);
        self.www_authenticate_on(realm, dpop)
    }

    /// The `WWW-Authenticate` value on a listener that accepts only DPoP-bound tokens
    /// (`dpop_listener`): every answer there challenges with the `DPoP` scheme and
    /// `algs="ES256"` (RFC 9449 §7.1), so a client learns which scheme to use.
    pub fn www_authenticate_on(self, realm: &str, dpop_listener: bool) -> String {
        let dpop = dpop_listener || matches!(self, Self::DpopInvalid | Self::DpopReplay);
        let scheme = if dpop { "DPoP" } else { "Bearer" };
        let mut value = match self.error() {
            None => format!("{scheme} realm=\"{realm}\""),
            Some(error) => format!(
                "{scheme} realm=\"{realm}\", error=\"{error}\", error_description=\"{}\"",
                self.as_str()
            ),
        };
        if dpop {
            value.push_str(", algs=\"ES256\"");
        }
        value
    }

    /// Seconds for `Retry-After` on a 503, `None` otherwise.
    pub fn retry_after_s(self) -> Option<u32> {
        (self.status() == 503).then_some(RETRY_AFTER_S)
    }

    /// The JSON body `{"error","reason","request_id"}`. `request_id` comes from the caller's
    /// side of Envoy, so it is escaped.
    pub fn body(self, request_id: &str) -> String {
        let body = serde_json::json!({
            "error": self.error().unwrap_or("missing_token"),
            "reason": self.as_str(),
            "request_id": request_id,
        });
        body.to_string()
    }
}

/// How long a client should wait after a 503 before retrying.
pub const RETRY_AFTER_S: u32 = 5;

const STAT_NAMES: [(Reason, &str); 25] = [
    (Reason::MissingToken, "certbind.denied.missing_token"),
    (Reason::MalformedToken, "certbind.denied.malformed_token"),
    (Reason::UnsupportedAlg, "certbind.denied.unsupported_alg"),
    (Reason::WrongType, "certbind.denied.wrong_type"),
    (Reason::UnknownKid, "certbind.denied.unknown_kid"),
    (Reason::BadSignature, "certbind.denied.bad_signature"),
    (Reason::Expired, "certbind.denied.expired"),
    (Reason::NotYetValid, "certbind.denied.not_yet_valid"),
    (Reason::WrongIssuer, "certbind.denied.wrong_issuer"),
    (Reason::WrongAudience, "certbind.denied.wrong_audience"),
    (Reason::BindingMissing, "certbind.denied.binding_missing"),
    (Reason::BindingMismatch, "certbind.denied.binding_mismatch"),
    (Reason::SubjectMismatch, "certbind.denied.subject_mismatch"),
    (Reason::DpopInvalid, "certbind.denied.dpop_invalid"),
    (Reason::DpopReplay, "certbind.denied.dpop_replay"),
    (Reason::Revoked, "certbind.denied.revoked"),
    (Reason::PolicyDenied, "certbind.denied.policy_denied"),
    (Reason::JwksUnavailable, "certbind.denied.jwks_unavailable"),
    (Reason::PdpUnavailable, "certbind.denied.pdp_unavailable"),
    (
        Reason::RevocationUnavailable,
        "certbind.denied.revocation_unavailable",
    ),
    (
        Reason::CertificateExpired,
        "certbind.denied.certificate_expired",
    ),
    (Reason::ReplayCacheFull, "certbind.denied.replay_cache_full"),
    (Reason::UsageExhausted, "certbind.denied.usage_exhausted"),
    (
        Reason::UsageUnavailable,
        "certbind.denied.usage_unavailable",
    ),
    (Reason::InternalError, "certbind.denied.internal_error"),
];

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_the_contract_status_and_error() {
        let table = [
            (Reason::MissingToken, 401, None),
            (Reason::MalformedToken, 401, Some("invalid_token")),
            (Reason::UnsupportedAlg, 401, Some("invalid_token")),
            (Reason::WrongType, 401, Some("invalid_token")),
            (Reason::UnknownKid, 401, Some("invalid_token")),
            (Reason::BadSignature, 401, Some("invalid_token")),
            (Reason::Expired, 401, Some("invalid_token")),
            (Reason::NotYetValid, 401, Some("invalid_token")),
            (Reason::WrongIssuer, 401, Some("invalid_token")),
            (Reason::WrongAudience, 401, Some("invalid_token")),
            (Reason::BindingMissing, 401, Some("invalid_token")),
            (Reason::BindingMismatch, 401, Some("invalid_token")),
            (Reason::SubjectMismatch, 401, Some("invalid_token")),
            (Reason::DpopInvalid, 401, Some("invalid_dpop_proof")),
            (Reason::DpopReplay, 401, Some("invalid_dpop_proof")),
            (Reason::Revoked, 401, Some("invalid_token")),
            (Reason::PolicyDenied, 403, Some("access_denied")),
            (Reason::InsufficientScope, 403, Some("insufficient_scope")),
            (
                Reason::JwksUnavailable,
                503,
                Some("temporarily_unavailable"),
            ),
            (Reason::PdpUnavailable, 503, Some("temporarily_unavailable")),
            (
                Reason::RevocationUnavailable,
                503,
                Some("temporarily_unavailable"),
            ),
            (Reason::CertificateExpired, 401, Some("invalid_token")),
            (
                Reason::ReplayCacheFull,
                503,
                Some("temporarily_unavailable"),
            ),
            (Reason::UsageExhausted, 401, Some("invalid_token")),
            (
                Reason::UsageUnavailable,
                503,
                Some("temporarily_unavailable"),
            ),
            (Reason::InternalError, 503, Some("temporarily_unavailable")),
        ];
        assert_eq!(table.len(), Reason::ALL.len());
        for ((reason, status, error), listed) in table.iter().zip(Reason::ALL) {
            assert_eq!(*reason, listed);
            assert_eq!(reason.status(), *status, "{reason}");
            assert_eq!(reason.error(), *error, "{reason}");
        }
    }

    #[test]
    fn reason_strings_and_stat_names_follow_the_contract() {
        let mut stats: Vec<&str> = Reason::ALL.iter().map(|r| r.stat_name()).collect();
        for r in Reason::ALL {
            assert_eq!(r.stat_name(), format!("certbind.denied.{}", r.as_str()));
        }
        stats.sort_unstable();
        stats.dedup();
        // Only a missing scope shares its stat (and its reason) with `policy_denied`.
        assert_eq!(stats.len(), Reason::ALL.len() - 1);
        assert_eq!(Reason::InsufficientScope.as_str(), "policy_denied");
    }

    #[test]
    fn missing_token_challenge_carries_only_the_realm() {
        assert_eq!(
            Reason::MissingToken.www_authenticate("certbind"),
            "Bearer realm=\"certbind\""
        );
    }

    #[test]
    fn invalid_token_challenge_names_error_and_reason() {
        assert_eq!(
            Reason::BindingMismatch.www_authenticate("certbind"),
            "Bearer realm=\"certbind\", error=\"invalid_token\", error_description=\"binding_mismatch\""
        );
        assert!(
            Reason::DpopReplay
                .www_authenticate("r")
                .starts_with("DPoP realm=\"r\", error=\"invalid_dpop_proof\"")
        );
    }

    #[test]
    fn dpop_challenges_name_the_algorithm() {
        assert_eq!(
            Reason::DpopInvalid.www_authenticate("certbind"),
            "DPoP realm=\"certbind\", error=\"invalid_dpop_proof\", error_description=\"dpop_invalid\", algs=\"ES256\""
        );
        assert_eq!(
            Reason::MissingToken.www_authenticate_on("certbind", true),
            "DPoP realm=\"certbind\", algs=\"ES256\""
        );
        assert_eq!(
            Reason::Expired.www_authenticate_on("certbind", true),
            "DPoP realm=\"certbind\", error=\"invalid_token\", error_description=\"expired\", algs=\"ES256\""
        );
        assert_eq!(
            Reason::Expired.www_authenticate_on("certbind", false),
            Reason::Expired.www_authenticate("certbind")
        );
    }

    #[test]
    fn only_unavailability_carries_retry_after() {
        for r in Reason::ALL {
            assert_eq!(r.retry_after_s().is_some(), r.status() == 503, "{r}");
        }
    }

    #[test]
    fn body_is_json_with_escaped_request_id() {
        let body = Reason::InsufficientScope.body("id\"1");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "insufficient_scope");
        assert_eq!(v["reason"], "policy_denied");
        assert_eq!(v["request_id"], "id\"1");
    }
}
