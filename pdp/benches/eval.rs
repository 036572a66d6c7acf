//! Criterion bench: one decision against a 1,000-rule policy (goal: ≤ 5 µs median).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench setup

use std::fmt::Write as _;
use std::hint::black_box;

use certbind_core::decision::{DecisionContext, DecisionRequest};
use certbind_pdp::{CompiledPolicy, decide, policy};
use criterion::{Criterion, criterion_group, criterion_main};

const TD: &str = "spiffe://certbind.test/ns/demo/sa";
const NOW: u64 = 1_795_435_200; // a Monday, 12:00 UTC

/// 100 services × 10 rules: exact and glob paths, several methods, scopes, conditions, denies,
/// plus subject and audience patterns that land in many index buckets.
fn thousand_rules() -> String {
    let mut y = String::from("rules:\n");
    for svc in 0..100 {
        for r in 0..10 {
            let n = svc * 10 + r;
            let (effect, scopes, conditions) = match r {
                0 => ("deny", String::new(), String::new()),
                3 => ("allow", format!("    scopes: [svc{svc}:read]\n"), "    conditions:\n      source_cidrs: [10.0.0.0/8, 127.0.0.0/8]\n      max_token_age_s: 300\n      min_tls_version: TLSv1.3\n".to_owned()),
                5 => ("allow", format!("    scopes: [svc{svc}:write, svc{svc}:read]\n"), "    conditions:\n      time_windows: [{days: [mon, tue, wed, thu, fri], start: \"06:00\", end: \"22:00\"}]\n".to_owned()),
                _ => ("allow", format!("    scopes: [svc{svc}:read]\n"), String::new()),
            };
            let methods = match r % 3 {
                0 => "[GET]",
                1 => "[GET, HEAD]",
                _ => "[POST, PUT]",
            };
            let subject = if r == 9 {
                format!("{TD}/*")
            } else {
                format!("{TD}/client{}", (svc + r) % 50)
            };
            let _ = write!(
                y,
                "  - id: rule-{n}\n    effect: {effect}\n    subjects: [{subject}]\n    audiences: [{TD}/svc{svc}]\n    methods: {methods}\n    paths: [/svc{svc}/r{r}, /svc{svc}/r{r}/*, /svc{svc}/r{r}/deep/**]\n{scopes}{conditions}"
            );
        }
    }
    y
}

fn request(
    subject: &str,
    method: &str,
    path: &str,
    audience: &str,
    scopes: &[&str],
) -> DecisionRequest {
    DecisionRequest {
        subject: format!("{TD}/{subject}"),
        client_id: subject.to_owned(),
        action: method.to_owned(),
        resource: path.to_owned(),
        audience: format!("{TD}/{audience}"),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        context: DecisionContext {
            source_ip: Some("127.0.0.1:40000".into()),
            iat: Some(NOW - 10),
            jti: Some("0123456789abcdef".into()),
            tls_version: Some("TLSv1.3".into()),
        },
    }
}

fn bench(c: &mut Criterion) {
    let text = thousand_rules();
    let p = policy::parse(&text, "bench.yaml").unwrap();
    assert_eq!(p.rules.len(), 1000);
    let compiled = CompiledPolicy::compile(p, text.as_bytes());
    // svc42 rule 3: client45, GET, conditions hold.
    let allow = request(
        "client45",
        "GET",
        "/svc42/r3/item-17",
        "svc42",
        &["svc42:read", "other:scope"],
    );
    let missing = request(
        "client45",
        "GET",
        "/svc42/r3/item-17",
        "svc42",
        &["other:scope"],
    );
    let default_deny = request(
        "client7",
        "DELETE",
        "/svc42/r3/item-17",
        "svc42",
        &["svc42:read"],
    );
    let deep = request(
        "nobody",
        "POST",
        "/svc42/r9/deep/a/b/c",
        "svc42",
        &["svc42:read"],
    );
    for (name, req, allowed) in [
        ("allow", &allow, true),
        ("missing_scope", &missing, false),
        ("default_deny", &default_deny, false),
        ("pattern_subject_deep_path", &deep, false),
    ] {
        assert_eq!(decide(&compiled, req, NOW).allow, allowed, "{name}");
        c.bench_function(&format!("decide_1000_rules/{name}"), |b| {
            b.iter(|| decide(black_box(&compiled), black_box(req), black_box(NOW)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
