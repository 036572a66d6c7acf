//! The decision trace and its one log line (the format the plugin logs, field for field).

use super::*;

#[test]
fn renders_the_log_line_of_an_allow_then_of_a_cached_allow() {
    let mut w = world();
    let (flow, _) = full_allow(&mut w, NOW_MS);
    assert_eq!(
        flow.trace().log_line(7, "req-1", "allow", "ok", "enforce"),
        format!(
            "certbind decision ctx=7 request_id=req-1 outcome=allow reason=ok subject={CONSUMER} mode=enforce token_cache=miss decision_cache=miss"
        )
    );
    let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
    let (flow, step) = Flow::start(&mut w.engine, f, NOW_MS);
    allowed(step);
    assert!(flow.token_cache_hit() && flow.decision_cache_hit());
    assert!(
        flow.trace()
            .log_line(8, "req-1", "allow", "ok", "enforce")
            .ends_with("token_cache=hit decision_cache=hit")
    );
}

#[test]
fn renders_a_denial_without_a_subject_and_bounds_caller_values() {
    let mut w = world();
    let (flow, _) = Flow::start(&mut w.engine, facts(&w.consumer, None), NOW_MS);
    let id = format!("a b\n{}", "x".repeat(200));
    let line = flow
        .trace()
        .log_line(1, &id, "deny", "missing_token", "shadow");
    let safe = format!("a?b?{}", "x".repeat(124));
    assert_eq!(
        line,
        format!(
            "certbind decision ctx=1 request_id={safe} outcome=deny reason=missing_token subject=- mode=shadow token_cache=miss decision_cache=miss"
        )
    );
}

#[test]
fn log_fields_are_bounded_printable_ascii() {
    use crate::flow::log_safe;
    assert_eq!(log_safe("req-1"), "req-1");
    assert_eq!(log_safe("a b\nc\u{e9}"), "a?b?c?");
    assert_eq!(log_safe(&"x".repeat(500)).len(), 128);
}
