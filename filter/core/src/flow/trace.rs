//! The decision trace: what one request's checks observed that the log line and the counters
//! report (subject, cache hits, the failed DPoP check, what revoked the token, fail-open, the
//! usage answer), and the rendering of that one log line. Never the token.

use crate::revocation::Kind;
use crate::usage::UseAnswer;
use std::rc::Rc;

/// What a flow observed, filled in as its checks run.
#[derive(Debug, Clone, Default)]
pub struct DecisionTrace {
    pub(super) subject: Option<Rc<str>>,
    pub(super) token_cache_hit: bool,
    pub(super) decision_cache_hit: bool,
    pub(super) dpop_detail: Option<&'static str>,
    pub(super) revoked: Option<Kind>,
    pub(super) revocation_unchecked: bool,
    pub(super) usage: Option<UseAnswer>,
}

impl DecisionTrace {
    /// The verified `sub`, once the token verified.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    pub fn token_cache_hit(&self) -> bool {
        self.token_cache_hit
    }

    pub fn decision_cache_hit(&self) -> bool {
        self.decision_cache_hit
    }

    /// Which DPoP check refused the request (e.g. `ath_mismatch`, `replayed`).
    pub fn dpop_detail(&self) -> Option<&'static str> {
        self.dpop_detail
    }

    /// What revoked the token (`cert`, `subject`, `jti`).
    pub fn revoked(&self) -> Option<Kind> {
        self.revoked
    }

    /// Admitted under `revocation.fail_open` while the feed was stale.
    pub fn revocation_unchecked(&self) -> bool {
        self.revocation_unchecked
    }

    /// What the usage counter answered (a usage-bound token only).
    pub fn usage(&self) -> Option<UseAnswer> {
        self.usage
    }

    /// The one log line of a decision: `outcome` is `allow`, `deny` or `shadow`, `reason` the
    /// reason code (`ok` when allowed), `mode` the configured mode. Caller-supplied values go
    /// through [`log_safe`].
    pub fn log_line(
        &self,
        ctx: u32,
        request_id: &str,
        outcome: &str,
        reason: &str,
        mode: &str,
    ) -> String {
        let hit = |yes: bool| if yes { "hit" } else { "miss" };
        let mut line = format!(
            "certbind decision ctx={ctx} request_id={} outcome={outcome} reason={reason} subject={} mode={mode} token_cache={} decision_cache={}",
            log_safe(request_id),
            self.subject
                .as_deref()
                .map_or_else(|| "-".to_owned(), log_safe),
            hit(self.token_cache_hit),
            hit(self.decision_cache_hit),
        );
        if let Some(detail) = self.dpop_detail {
            line.push_str(&format!(" dpop={detail}"));
        }
        if let Some(kind) = self.revoked {
            line.push_str(&format!(" revoked={kind}"));
        }
        if let Some(usage) = self.usage {
            line.push_str(&format!(" usage={}", usage.as_str()));
        }
        line
    }
}

/// Header values and request ids in log lines: printable ASCII, bounded.
pub fn log_safe(s: &str) -> String {
    s.chars()
        .take(128)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}
