//! `make soak` in a few seconds, so it cannot rot: every answer of the mixed traffic is the one
//! its kind must get and the filter's counters match what was sent. No speed or memory bound
//! is asserted here (the soak itself asserts RSS growth ≤ 5 % over its 10 minutes).

#[test]
fn a_short_soak_gets_every_expected_answer_and_consistent_counters() {
    let out = tempfile::tempdir().unwrap();
    let report = certbind_bench::soak::run(
        3.0,
        0.2,
        &out.path().join("results"),
        &out.path().join("figures"),
        &mut |line| eprintln!("{line}"),
    )
    .unwrap_or_else(|e| panic!("the soak smoke run failed:\n{e}"));
    assert!(report["requests"].as_u64().unwrap() > 50, "{report}");
    assert_eq!(
        report["unexpected_answers"], 0,
        "{}",
        report["unexpected_examples"]
    );
    assert_eq!(
        report["counters_consistent"], true,
        "{}",
        report["counters"]
    );
    for kind in [
        "valid",
        "policy_denied",
        "expired",
        "bad_signature",
        "missing_token",
        "binding_mismatch",
        "malformed_token",
    ] {
        assert!(
            report["counters"][kind]["sent"].as_u64().unwrap() > 0,
            "{kind} never sent"
        );
    }
    let png = std::fs::read(out.path().join("figures/soak.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
}
