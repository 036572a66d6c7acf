//! Table-driven evaluation: every rule kind, each condition admitting and refusing,
//! deny over allow, default deny, glob edges, method case, trailing slashes, the demo policy.
//! The harness and the small cases are here; the rule-kind table is in `rules.rs`, the demo
//! policy's table in `demo.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

#[path = "../common/mod.rs"]
mod common;
mod demo;
mod rules;

use certbind_core::decision::DecisionRequest;
use certbind_pdp::policy;
use certbind_pdp::{CompiledPolicy, Reason, decide};
use common::req;
use rules::TABLE_POLICY;

/// Monday 2026-11-23 12:00:00 UTC.
pub(crate) const MON_NOON: u64 = 1_795_435_200;
/// Saturday 2026-11-28 12:00:00 UTC.
pub(crate) const SAT_NOON: u64 = MON_NOON + 5 * 86_400;

pub(crate) struct Case {
    name: &'static str,
    req: DecisionRequest,
    now: u64,
    allow: bool,
    policy_id: &'static str,
    reason: Reason,
}

pub(crate) fn case(
    name: &'static str,
    req: DecisionRequest,
    allow: bool,
    policy_id: &'static str,
    reason: Reason,
) -> Case {
    Case {
        name,
        req,
        now: MON_NOON,
        allow,
        policy_id,
        reason,
    }
}

pub(crate) fn with(
    mut r: DecisionRequest,
    f: impl FnOnce(&mut DecisionRequest),
) -> DecisionRequest {
    f(&mut r);
    r
}

pub(crate) fn compiled(text: &str) -> CompiledPolicy {
    let p = policy::parse(text, "table.yaml").unwrap();
    CompiledPolicy::compile(p, text.as_bytes())
}

pub(crate) fn run(policy: &CompiledPolicy, cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in &cases {
        let out = decide(policy, &c.req, c.now);
        if (out.allow, out.policy_id, out.reason) != (c.allow, c.policy_id, c.reason) {
            failures.push(format!(
                "{}: got allow={} policy_id={} reason={}, want allow={} policy_id={} reason={}",
                c.name,
                out.allow,
                out.policy_id,
                out.reason.as_str(),
                c.allow,
                c.policy_id,
                c.reason.as_str()
            ));
        }
        if !out.allow {
            assert_eq!(out.ttl_s, 0, "{}: a deny carries no ttl", c.name);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn allow_carries_its_rules_ttl_and_the_default() {
    let p = compiled(TABLE_POLICY);
    let out = decide(
        &p,
        &req("consumer", "GET", "/orders", "orders", &["orders:read"]),
        MON_NOON,
    );
    assert_eq!((out.allow, out.ttl_s), (true, 45));
    let out = decide(
        &p,
        &req("inventory", "GET", "/health", "billing", &[]),
        MON_NOON,
    );
    assert_eq!((out.allow, out.ttl_s), (true, 30));
    let d = out.to_decision(&p.version);
    assert_eq!(d.policy_version.len(), 16);
    assert_eq!(d.reason, "allowed");
}

#[test]
fn empty_policy_denies_everything() {
    let p = compiled("rules: []\n");
    let out = decide(
        &p,
        &req("consumer", "GET", "/orders", "orders", &["orders:read"]),
        MON_NOON,
    );
    assert_eq!(
        (out.allow, out.policy_id, out.reason),
        (false, "default-deny", Reason::NoMatchingRule)
    );
}

#[test]
fn missing_scope_is_preferred_over_a_failed_condition() {
    let text = r#"
rules:
  - id: a-needs-network
    effect: allow
    subjects: [spiffe://certbind.test/ns/demo/sa/consumer]
    audiences: [spiffe://certbind.test/ns/demo/sa/orders]
    methods: [GET]
    paths: [/x]
    conditions: {source_cidrs: [10.0.0.0/8]}
  - id: b-needs-scope
    effect: allow
    subjects: [spiffe://certbind.test/ns/demo/sa/consumer]
    audiences: [spiffe://certbind.test/ns/demo/sa/orders]
    methods: [GET]
    paths: [/x]
    scopes: [x:read]
"#;
    let p = compiled(text);
    let out = decide(&p, &req("consumer", "GET", "/x", "orders", &[]), MON_NOON);
    assert_eq!(
        (out.policy_id, out.reason),
        ("b-needs-scope", Reason::MissingScope)
    );
    // Lacking both a scope and a condition is not `missing_scope`: the scope would not help.
    let text = text.replace(
        "    scopes: [x:read]\n",
        "    scopes: [x:read]\n    conditions: {min_tls_version: TLSv1.3}\n",
    );
    let p = compiled(&text);
    let out = decide(&p, &req("consumer", "GET", "/x", "orders", &[]), MON_NOON);
    assert_eq!(
        (out.policy_id, out.reason),
        ("a-needs-network", Reason::SourceIpNotAllowed)
    );
}
