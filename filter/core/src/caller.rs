//! Caller allow-lists with patterns: which SPIFFE IDs may call a service's guarded routes
//! (the PDP's callers, the revocation feed's followers, the admin API's operators). In a mesh
//! every sidecar calls with its own workload identity, so an exact list cannot name them all;
//! `spiffe://<td>/ns/*/sa/*` can, without ever matching another trust domain.

use crate::binding::SpiffeId;
use std::fmt;

/// One entry: a SPIFFE ID whose path segments may be `*` (exactly one non-empty segment).
/// The trust domain is always literal, and the number of segments is fixed, so a pattern never
/// matches across trust domains nor a longer or shorter path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerPattern {
    trust_domain: String,
    /// `None` is `*`.
    segments: Vec<Option<String>>,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pub pattern: String,
    pub why: &'static str,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "caller pattern {:?}: {}", self.pattern, self.why)
    }
}

impl std::error::Error for PatternError {}

impl CallerPattern {
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let bad = |why| {
            Err(PatternError {
                pattern: pattern.to_owned(),
                why,
            })
        };
        let rest = pattern.strip_prefix("spiffe://").unwrap_or_default();
        let domain = rest.split('/').next().unwrap_or_default();
        if domain.contains('*') {
            return bad("the trust domain must be literal (no `*`)");
        }
        let path = rest.get(domain.len()..).unwrap_or_default();
        if path.split('/').skip(1).any(|s| s.contains('*') && s != "*") {
            return bad("`*` must be a whole path segment");
        }
        // With every `*` standing for one ordinary segment it must be a valid SPIFFE ID.
        let sample = pattern
            .split('/')
            .map(|s| if s == "*" { "x" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let id = match SpiffeId::parse(&sample) {
            Ok(id) => id,
            Err(_) => return bad("not a SPIFFE ID (spiffe://<trust-domain>/<path>)"),
        };
        Ok(Self {
            trust_domain: id.trust_domain().to_owned(),
            segments: path
                .split('/')
                .skip(1)
                .map(|s| (s != "*").then(|| s.to_owned()))
                .collect(),
        })
    }

    pub fn matches(&self, id: &SpiffeId) -> bool {
        if id.trust_domain() != self.trust_domain {
            return false;
        }
        let path = id
            .as_str()
            .get("spiffe://".len() + self.trust_domain.len()..)
            .unwrap_or_default();
        let mut segments = path.split('/').skip(1);
        let mut patterns = self.segments.iter();
        loop {
            match (patterns.next(), segments.next()) {
                (None, None) => return true,
                (Some(None), Some(_)) => {}
                (Some(Some(literal)), Some(segment)) if literal == segment => {}
                _ => return false,
            }
        }
    }
}

/// The allow-list of one guarded route set: exact IDs and patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerList {
    patterns: Vec<CallerPattern>,
}

impl CallerList {
    /// Every entry must parse: one bad entry refuses the whole list (fail closed at startup).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, PatternError> {
        let patterns = entries
            .iter()
            .map(|e| CallerPattern::parse(e.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    pub fn allows(&self, id: &SpiffeId) -> bool {
        self.patterns.iter().any(|p| p.matches(id))
    }

    /// [`CallerList::allows`] for a caller given as text (not a SPIFFE ID: not allowed).
    pub fn allows_str(&self, id: &str) -> bool {
        SpiffeId::parse(id).is_ok_and(|id| self.allows(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    fn list(entries: &[&str]) -> CallerList {
        CallerList::parse(entries).unwrap()
    }

    #[test]
    fn admits_every_service_account_of_the_trust_domain_with_a_pattern() {
        let l = list(&["spiffe://certbind.test/ns/*/sa/*"]);
        assert!(l.allows(&id("spiffe://certbind.test/ns/demo/sa/envoy")));
        assert!(l.allows(&id("spiffe://certbind.test/ns/shop/sa/orders")));
        assert!(l.allows_str("spiffe://certbind.test/ns/a/sa/b"));
    }

    #[test]
    fn a_pattern_never_matches_another_trust_domain_or_path_shape() {
        let l = list(&["spiffe://certbind.test/ns/*/sa/*"]);
        for other in [
            "spiffe://evil.test/ns/demo/sa/envoy",
            "spiffe://certbind.test.evil/ns/demo/sa/envoy",
            "spiffe://certbind.test/ns/demo/sa/envoy/extra",
            "spiffe://certbind.test/ns/demo/sa",
            "spiffe://certbind.test/ns/demo/user/envoy",
            "spiffe://certbind.test/x/demo/sa/envoy",
        ] {
            assert!(!l.allows(&id(other)), "{other}");
        }
        assert!(!l.allows_str("not a spiffe id"));
    }

    #[test]
    fn exact_entries_match_only_themselves() {
        let l = list(&["spiffe://certbind.test/ns/demo/sa/envoy"]);
        assert!(l.allows(&id("spiffe://certbind.test/ns/demo/sa/envoy")));
        assert!(!l.allows(&id("spiffe://certbind.test/ns/demo/sa/envoyx")));
        assert!(!l.allows(&id("spiffe://certbind.test/ns/demo/sa/consumer")));
        assert!(!CallerList::default().allows(&id("spiffe://certbind.test/ns/demo/sa/envoy")));
    }

    #[test]
    fn a_namespace_can_be_fixed_while_the_service_account_varies() {
        let l = list(&["spiffe://certbind.test/ns/shop/sa/*"]);
        assert!(l.allows(&id("spiffe://certbind.test/ns/shop/sa/orders")));
        assert!(!l.allows(&id("spiffe://certbind.test/ns/demo/sa/orders")));
    }

    #[test]
    fn refuses_patterns_that_could_match_too_much() {
        for bad in [
            "spiffe://*/ns/demo/sa/envoy",
            "spiffe://*.test/ns/demo/sa/envoy",
            "spiffe://certbind.test/ns/de*/sa/envoy",
            "spiffe://certbind.test/ns/**/sa/envoy",
            "spiffe://certbind.test",
            "spiffe://certbind.test/",
            "https://certbind.test/ns/demo/sa/envoy",
            "*",
            "",
        ] {
            assert!(CallerPattern::parse(bad).is_err(), "{bad}");
        }
        // One segment of any name is a legitimate shape (spiffe://<td>/<workload>).
        assert!(CallerPattern::parse("spiffe://certbind.test/*").is_ok());
        let err =
            CallerList::parse(&["spiffe://certbind.test/ns/*/sa/*", "spiffe://*/x"]).unwrap_err();
        assert!(
            err.to_string().contains("trust domain must be literal"),
            "{err}"
        );
    }
}
