//! The decision cache across a client's tokens: an allow is shared by another token of the
//! same question, never past that token's own `exp`.

use super::*;

/// The consumer's bound token with its own `jti` and `exp`.
fn another_token(w: &World, jti: &str, exp: u64) -> Option<String> {
    let mut c = claims();
    c["cnf"] = serde_json::json!({"x5t#S256": CertThumbprint::from_der(&w.consumer.0).to_cnf()});
    c["jti"] = jti.into();
    c["exp"] = exp.into();
    bearer_of(&sign(&header(), &c))
}

#[test]
fn another_token_of_the_same_question_shares_the_allow_but_never_past_its_own_exp() {
    let mut w = world();
    full_allow(&mut w, NOW_MS);
    let f = facts(&w.consumer, another_token(&w, "j-2", NOW + 290));
    let (flow, step) = Flow::start(&mut w.engine, f, NOW_MS + 1_000);
    assert!(flow.decision_cache_hit() && !flow.token_cache_hit());
    allowed(step);
    // A token that expires first: shared before its `exp`, asked again after it (still
    // accepted within the clock skew; the allow, valid for 60 s, is not).
    let f = facts(&w.consumer, another_token(&w, "j-3", NOW + 30));
    let (flow, step) = Flow::start(&mut w.engine, f.clone(), NOW_MS + 20_000);
    assert!(flow.decision_cache_hit());
    allowed(step);
    let (flow, step) = Flow::start(&mut w.engine, f, NOW_MS + 40_000);
    assert!(!flow.decision_cache_hit());
    assert!(matches!(step, Step::AskPdp { .. }), "{step:?}");
}
