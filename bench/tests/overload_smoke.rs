//! `make overload` in a few seconds, so it cannot rot: the whole run (closed-loop maximum,
//! baseline, open loop at twice the maximum, recovery) completes against the real system and
//! no answer is wrong for its kind. No speed, shed or latency bound is asserted here.

#[test]
fn a_short_overload_run_completes_with_no_wrong_answer() {
    let out = tempfile::tempdir().unwrap();
    let report = certbind_bench::overload::run(
        &certbind_bench::overload::Plan::smoke(),
        &out.path().join("results"),
        &out.path().join("figures"),
        &mut |line| eprintln!("{line}"),
    )
    .unwrap_or_else(|e| panic!("the overload smoke run failed:\n{e}"));
    assert!(
        report["max_rps"].as_f64().unwrap() > 0.0,
        "{}",
        report["measure"]
    );
    for phase in ["baseline", "overload", "recovery"] {
        assert!(
            report[phase]["sent"].as_u64().unwrap() > 0,
            "{phase}: {}",
            report[phase]
        );
    }
    assert_eq!(report["wrong_answers"], 0, "{}", report["wrong_examples"]);
    assert_eq!(
        report["all_answered"], true,
        "requests still unanswered at the end"
    );
    let png = std::fs::read(out.path().join("figures/overload.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
}
