//! Evaluates one decision request against a compiled policy: pure, no I/O, no clock (the
//! caller passes `now`).
//!
//! Order: the resource must be a normalised path and the subject a SPIFFE ID; then every
//! candidate rule whose subject, audience, method and path match is considered. A deny rule
//! whose conditions hold decides at once (deny wins). An allow rule admits when its conditions
//! hold and the request carries all its scopes; the first such rule (file order) decides.
//! Nothing admitting means deny (default deny).
//!
//! Reasons (`Decision::reason`):
//! - `allowed`: an allow rule admitted (its `ttl_s` is the answer's `ttl_s`).
//! - `denied_by_rule`: a deny rule matched.
//! - `missing_scope`: some allow rule matched and all its conditions held, but the request
//!   lacks one of its scopes (the filter answers `insufficient_scope`).
//! - `source_ip_not_allowed`, `outside_time_window`, `token_too_old`, `tls_version_too_low`:
//!   an allow rule matched but this condition did not hold (absent facts never satisfy one;
//!   `token_too_old` also covers a missing `iat` or one more than 60 s in the future).
//! - `no_matching_rule`: no rule matched (default deny, `policy_id` = `default-deny`).
//! - `unnormalized_path`: dot segments, `//`, `\`, a percent-encoded `/` `\` `%`, control or
//!   unreserved character (`%2f`, `%5C`, `%2e`, `%61`...), a malformed escape, `?`/`#`, spaces
//!   and controls, a `;` path parameter (plain or `%3B`: servlet upstreams strip it), no
//!   leading `/` (`policy_id` = `path-guard`).
//! - `invalid_subject`: the subject is not a SPIFFE ID (`policy_id` = `subject-guard`).
//!
//! When several allow rules nearly matched, `missing_scope` is preferred (obtaining the scope
//! would admit), otherwise the first failed condition of the first such rule is reported.

use certbind_core::decision::{Decision, DecisionRequest, REASON_MISSING_SCOPE};

use crate::compile::CompiledPolicy;
use crate::condition::{ConditionFailure, Facts};
use crate::pattern::is_normalized_path;
use crate::policy::{Effect, MethodSpec, Rule};

/// `policy_id` when no rule matched.
pub const DEFAULT_DENY_ID: &str = "default-deny";
/// `policy_id` when the path was refused before any rule.
pub const PATH_GUARD_ID: &str = "path-guard";
/// `policy_id` when the subject was refused before any rule.
pub const SUBJECT_GUARD_ID: &str = "subject-guard";

/// The machine-readable reason of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Allowed,
    DeniedByRule,
    MissingScope,
    SourceIpNotAllowed,
    OutsideTimeWindow,
    TokenTooOld,
    TlsVersionTooLow,
    NoMatchingRule,
    UnnormalizedPath,
    InvalidSubject,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Reason::Allowed,
        Reason::DeniedByRule,
        Reason::MissingScope,
        Reason::SourceIpNotAllowed,
        Reason::OutsideTimeWindow,
        Reason::TokenTooOld,
        Reason::TlsVersionTooLow,
        Reason::NoMatchingRule,
        Reason::UnnormalizedPath,
        Reason::InvalidSubject,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::DeniedByRule => "denied_by_rule",
            Reason::MissingScope => REASON_MISSING_SCOPE,
            Reason::SourceIpNotAllowed => "source_ip_not_allowed",
            Reason::OutsideTimeWindow => "outside_time_window",
            Reason::TokenTooOld => "token_too_old",
            Reason::TlsVersionTooLow => "tls_version_too_low",
            Reason::NoMatchingRule => "no_matching_rule",
            Reason::UnnormalizedPath => "unnormalized_path",
            Reason::InvalidSubject => "invalid_subject",
        }
    }

    /// Position in `ALL` (for counters).
    pub fn index(self) -> usize {
        self as usize
    }

    fn of_condition(failure: ConditionFailure) -> Self {
        match failure {
            ConditionFailure::SourceIp => Reason::SourceIpNotAllowed,
            ConditionFailure::TimeWindow => Reason::OutsideTimeWindow,
            ConditionFailure::TokenAge => Reason::TokenTooOld,
            ConditionFailure::TlsVersion => Reason::TlsVersionTooLow,
        }
    }
}

/// The outcome of one evaluation, borrowing the deciding rule's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome<'p> {
    pub allow: bool,
    pub policy_id: &'p str,
    pub reason: Reason,
    pub ttl_s: u64,
}

impl Outcome<'_> {
    fn deny(policy_id: &str, reason: Reason) -> Outcome<'_> {
        Outcome {
            allow: false,
            policy_id,
            reason,
            ttl_s: 0,
        }
    }

    /// The wire answer.
    pub fn to_decision(&self, policy_version: &str) -> Decision {
        Decision {
            allow: self.allow,
            policy_id: self.policy_id.to_owned(),
            reason: self.reason.as_str().to_owned(),
            ttl_s: self.ttl_s,
            policy_version: policy_version.to_owned(),
        }
    }
}

/// Whether the rule's subject, audience, method and path all match.
fn matches_target(rule: &Rule, req: &DecisionRequest) -> bool {
    rule.methods.iter().any(|m| match m {
        MethodSpec::Any => true,
        MethodSpec::Exact(m) => **m == *req.action,
    }) && rule.audiences.iter().any(|a| a.matches(&req.audience))
        && rule.subjects.iter().any(|s| s.matches(&req.subject))
        && rule.paths.iter().any(|p| p.matches_path(&req.resource))
}

fn has_all_scopes(rule: &Rule, req: &DecisionRequest) -> bool {
    rule.scopes
        .iter()
        .all(|need| req.scopes.iter().any(|have| *have == *need.0))
}

/// Decides one request. `now_unix` is the current time in seconds since the Unix epoch.
pub fn decide<'p>(policy: &'p CompiledPolicy, req: &DecisionRequest, now_unix: u64) -> Outcome<'p> {
    if !is_normalized_path(&req.resource) {
        return Outcome::deny(PATH_GUARD_ID, Reason::UnnormalizedPath);
    }
    if certbind_core::binding::SpiffeId::parse(&req.subject).is_err() {
        return Outcome::deny(SUBJECT_GUARD_ID, Reason::InvalidSubject);
    }
    let facts = Facts {
        source_ip: req.context.source_ip.as_deref(),
        iat: req.context.iat,
        tls_version: req.context.tls_version.as_deref(),
        now_unix,
    };
    let mut allowed: Option<&Rule> = None;
    let mut near_miss: Option<(&Rule, Reason)> = None;
    for &idx in policy.candidates(&req.audience, &req.action) {
        let Some(rule) = usize::try_from(idx).ok().and_then(|i| policy.rules.get(i)) else {
            continue;
        };
        if !matches_target(rule, req) {
            continue;
        }
        match rule.effect {
            Effect::Deny => {
                if rule.conditions.check(&facts, true).is_ok() {
                    return Outcome::deny(&rule.id.0, Reason::DeniedByRule);
                }
            }
            Effect::Allow => {
                if allowed.is_some() {
                    continue; // only a deny can change the answer now
                }
                let reason = match rule.conditions.check(&facts, false) {
                    Err(failure) => Reason::of_condition(failure),
                    Ok(()) if !has_all_scopes(rule, req) => Reason::MissingScope,
                    Ok(()) => {
                        allowed = Some(rule);
                        continue;
                    }
                };
                let better = match near_miss {
                    None => true,
                    Some((_, prev)) => {
                        reason == Reason::MissingScope && prev != Reason::MissingScope
                    }
                };
                if better {
                    near_miss = Some((rule, reason));
                }
            }
        }
    }
    match (allowed, near_miss) {
        (Some(rule), _) => Outcome {
            allow: true,
            policy_id: &rule.id.0,
            reason: Reason::Allowed,
            ttl_s: rule.ttl_s,
        },
        (None, Some((rule, reason))) => Outcome::deny(&rule.id.0, reason),
        (None, None) => Outcome::deny(DEFAULT_DENY_ID, Reason::NoMatchingRule),
    }
}
