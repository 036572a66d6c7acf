//! What each request of the mix is (its kind, from [`PATTERN`]) and how its answer counts: the
//! kind's own answer, a shed point's fail-closed answer allowed for it (Envoy refusing the
//! connection among them), or a wrong one.

use crate::traffic::{self, Current, Kind};
use std::sync::Arc;

/// Out of every 20 requests (indexes into [`traffic::kinds`]): 12 `valid_fresh` (an order of
/// their own, so a PDP decision each), 2 `valid` (the cached decision), one of each hostile kind.
const PATTERN: [usize; 20] = [7, 7, 0, 7, 1, 7, 7, 2, 7, 3, 7, 0, 7, 4, 7, 7, 5, 7, 6, 7];

/// The kind of the `n`-th request of the run: the current kinds and the index of its own.
pub(super) fn kind_of(current: &Current, n: u64) -> Option<(Arc<Vec<Kind>>, usize)> {
    let kinds = current.read().ok().map(|k| Arc::clone(&k))?;
    let index = *PATTERN.get((n % PATTERN.len() as u64) as usize)?;
    (index < kinds.len()).then_some((kinds, index))
}

/// How one answer counts.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Answer {
    /// 200 for a kind that must be allowed.
    Accepted,
    /// The refusal the kind must get (its status and reason).
    Refused,
    /// A fail-closed answer of a shed point, allowed for this kind (never a 200).
    Shed(&'static str),
    /// Anything else: a hostile request let through, or an answer not allowed for its kind.
    Wrong(String),
    /// No answer: connection failure or timeout.
    Error(String),
}

/// A new connection closed by Envoy before the TLS handshake completed: the listener's
/// connection limit (`downstream_cx_overflow`), or the global one. Not an HTTP answer, and allowed
/// for every kind: nothing was admitted.
pub(super) const CONNECTION_REFUSED: &str = "connection refused (listener limit)";

pub(super) fn is_refusal(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    e.starts_with("tls handshake")
        && (e.contains("reset")
            || e.contains("eof")
            || e.contains("closed")
            || e.contains("broken pipe"))
}

/// What a checkout gives for a request that finds no idle connection while the pool backs off
/// after a refused connection (`pool::BACKOFF`), and how that request counts.
pub(super) const BACKED_OFF: &str = "backed off after a refused connection";
pub(super) const CONNECTION_BACKED_OFF: &str =
    "connection refused (listener limit; generator backing off)";

/// Envoy's overload manager refusing a request (`stop_accepting_requests`).
const ENVOY_OVERLOADED: &str = "envoy overloaded";

/// Which answers `kind` may get besides its own: the shed points' fail-closed answers, each only
/// where the request can meet that shed point.
pub(super) fn classify(kind: &Kind, status: u16, body: &str) -> Answer {
    let reason = traffic::reason(body);
    if status == kind.status && reason.as_deref() == kind.reason() {
        return if status == 200 {
            Answer::Accepted
        } else {
            Answer::Refused
        };
    }
    // A token refused before any key is needed never waits for the JWKS.
    let needs_keys = !matches!(kind.reason(), Some("missing_token" | "malformed_token"));
    match (status, reason.as_deref()) {
        (503, Some("pdp_unavailable")) if kind.asks_the_pdp() => {
            Answer::Shed("503 pdp_unavailable")
        }
        (503, Some("jwks_unavailable")) if needs_keys => Answer::Shed("503 jwks_unavailable"),
        (503, None) if body.starts_with(ENVOY_OVERLOADED) => Answer::Shed("503 envoy overloaded"),
        // Envoy's own 503 when the upstream cluster's breaker is open: only after certbind admitted.
        (503, None) if kind.status == 200 && body.contains("overflow") => {
            Answer::Shed("503 upstream overflow")
        }
        _ => Answer::Wrong(format!(
            "{}: {status} {}",
            kind.name,
            body.chars().take(120).collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &'static str, status: u16, counter: &'static str) -> Kind {
        Kind {
            name,
            path: "/orders/1",
            distinct: false,
            authorization: Some("Bearer x".into()),
            status,
            counter,
        }
    }

    #[test]
    fn the_pattern_is_twelve_fresh_two_cached_and_one_of_each_hostile_kind() {
        let count = |k| PATTERN.iter().filter(|&&i| i == k).count();
        assert_eq!(count(traffic::VALID_FRESH), 12);
        assert_eq!(count(traffic::VALID), 2);
        for k in traffic::POLICY_DENIED..=traffic::MALFORMED_TOKEN {
            assert_eq!(count(k), 1, "{k}");
        }
    }

    #[test]
    fn a_hostile_request_let_through_is_a_wrong_answer() {
        let expired = kind("expired", 401, "certbind.denied.expired");
        assert!(matches!(classify(&expired, 200, "{}"), Answer::Wrong(_)));
        assert_eq!(
            classify(&expired, 401, r#"{"reason":"expired"}"#),
            Answer::Refused
        );
        assert!(matches!(
            classify(&expired, 401, r#"{"reason":"bad_signature"}"#),
            Answer::Wrong(_)
        ));
    }

    #[test]
    fn only_requests_that_reach_the_pdp_may_be_shed_there() {
        let valid = kind("valid", 200, "certbind.allowed");
        let denied = kind("policy_denied", 403, "certbind.denied.policy_denied");
        let malformed = kind("malformed_token", 401, "certbind.denied.malformed_token");
        let pdp = r#"{"error":"temporarily_unavailable","reason":"pdp_unavailable"}"#;
        assert_eq!(classify(&valid, 200, "{}"), Answer::Accepted);
        assert_eq!(
            classify(&valid, 503, pdp),
            Answer::Shed("503 pdp_unavailable")
        );
        assert_eq!(
            classify(&denied, 503, pdp),
            Answer::Shed("503 pdp_unavailable")
        );
        assert!(matches!(classify(&malformed, 503, pdp), Answer::Wrong(_)));
        assert_eq!(
            classify(&malformed, 503, "envoy overloaded"),
            Answer::Shed("503 envoy overloaded")
        );
        // An upstream overflow means the request was admitted: wrong for a hostile kind.
        let overflow =
            "upstream connect error or disconnect/reset before headers. reset reason: overflow";
        assert_eq!(
            classify(&valid, 503, overflow),
            Answer::Shed("503 upstream overflow")
        );
        assert!(matches!(classify(&denied, 503, overflow), Answer::Wrong(_)));
        assert!(matches!(
            classify(&valid, 429, "slow down"),
            Answer::Wrong(_)
        ));
    }
}
