//! The per-VM caches, observed from outside: a cached allow saves the PDP call until its
//! `ttl_s` or the token's `exp`, and a cached token is still bound to its certificate.

use super::scenario::*;
use serde_json::json;
use std::time::Duration;

#[test]
fn a_repeated_request_is_answered_from_the_decision_cache_without_asking_again() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer);
    let first = sidecar.request(&pki.consumer, &token.build()).admitted();
    let second = sidecar.request(&pki.consumer, &token.build()).admitted();
    assert_eq!(sidecar.pdp_calls(), 1);
    assert_eq!(sidecar.tallied("certbind.decision_cache.hit"), 1);
    assert_identity(&first, &token);
    assert_identity(&second, &token);
}

#[test]
fn another_path_is_not_answered_from_the_decision_cache() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    sidecar.request(&pki.consumer, &token).admitted();
    sidecar
        .request(&pki.consumer, &token)
        .path("/orders/2")
        .admitted();
    assert_eq!(sidecar.pdp_calls(), 2);
}

#[test]
fn a_denial_is_never_cached() {
    let mut sidecar = Sidecar::builder()
        .pdp(|_| decision(false, "no_rule", 600))
        .start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    sidecar
        .request(&pki.consumer, &token)
        .answers(403, "policy_denied");
    sidecar.set_pdp(|_| decision(true, "matched", 60));
    sidecar.request(&pki.consumer, &token).admitted();
    assert_eq!(sidecar.pdp_calls(), 2);
}

#[test]
fn a_cached_allow_expires_after_its_ttl() {
    let mut sidecar = Sidecar::builder()
        .pdp(|_| decision(true, "matched", 5))
        .start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    sidecar.request(&pki.consumer, &token).admitted();
    sidecar.advance(Duration::from_millis(4_500));
    sidecar.request(&pki.consumer, &token).admitted();
    assert_eq!(sidecar.pdp_calls(), 1, "still within ttl_s");
    sidecar.advance(Duration::from_millis(1_000));
    sidecar.request(&pki.consumer, &token).admitted();
    assert_eq!(sidecar.pdp_calls(), 2, "ttl_s passed");
}

#[test]
fn a_cached_allow_never_outlives_the_token_exp() {
    let mut sidecar = Sidecar::builder()
        .pdp(|_| decision(true, "matched", 3600))
        .start();
    let pki = sidecar.pki.clone();
    let now = sidecar.now_s();
    let token = sidecar
        .token(&pki.consumer)
        .claim("exp", json!(now + 10))
        .build();
    sidecar.request(&pki.consumer, &token).admitted();
    sidecar.advance_s(5);
    sidecar.request(&pki.consumer, &token).admitted();
    assert_eq!(sidecar.pdp_calls(), 1);
    // Past `exp` but within the 30 s clock skew the token is still accepted; its allow is not.
    sidecar.advance_s(10);
    sidecar.request(&pki.consumer, &token).admitted();
    assert_eq!(sidecar.pdp_calls(), 2);
    // Past the skew the token itself is refused.
    sidecar.advance_s(30);
    sidecar
        .request(&pki.consumer, &token)
        .answers(401, "expired");
}

#[test]
fn a_decision_cache_of_size_zero_asks_every_time() {
    let mut sidecar = Sidecar::builder()
        .config(|c| c["decision_cache_size"] = json!(0))
        .start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    for _ in 0..3 {
        sidecar.request(&pki.consumer, &token).admitted();
    }
    assert_eq!(sidecar.pdp_calls(), 3);
}

#[test]
fn a_cached_token_is_reused_on_its_certificate_and_refused_on_another() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    sidecar.request(&pki.consumer, &token).admitted();
    sidecar.request(&pki.consumer, &token).admitted();
    assert_eq!(sidecar.tallied("certbind.token_cache.hit"), 1);
    sidecar
        .request(&pki.inventory, &token)
        .answers(401, "binding_mismatch");
    assert_eq!(
        sidecar.tallied("certbind.token_cache.hit"),
        2,
        "the refusal came from the cached token, still checked against the certificate"
    );
    sidecar
        .request(&pki.consumer_reissued, &token)
        .answers(401, "binding_mismatch");
}

#[test]
fn a_cached_token_expires_with_its_exp() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let now = sidecar.now_s();
    let token = sidecar
        .token(&pki.consumer)
        .claim("exp", json!(now + 5))
        .build();
    sidecar.request(&pki.consumer, &token).admitted();
    sidecar.advance_s(36);
    sidecar
        .request(&pki.consumer, &token)
        .answers(401, "expired");
}

#[test]
fn counts_the_tick_has_not_handed_over_reach_envoy_when_the_plugin_goes_away() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    sidecar.advance_s(1);
    let allowed = sidecar.counter("certbind.allowed");
    for _ in 0..2 {
        sidecar.request(&pki.consumer, &token).admitted();
    }
    assert_eq!(
        sidecar.counter("certbind.allowed"),
        allowed,
        "not yet: no tick"
    );
    sidecar.remove_plugin();
    sidecar.assert_healthy();
    assert_eq!(sidecar.counter("certbind.allowed"), allowed + 2);
}

#[test]
fn the_allow_path_counters_reach_envoy_on_the_tick_and_a_refusal_at_once() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    // The first tick after start hands over whatever start-up counted.
    sidecar.advance_s(1);
    let allowed = sidecar.counter("certbind.allowed");
    for _ in 0..3 {
        sidecar.request(&pki.consumer, &token).admitted();
    }
    assert_eq!(
        sidecar.counter("certbind.allowed"),
        allowed,
        "summed in the VM until the tick"
    );
    sidecar
        .request(&pki.inventory, &token)
        .answers(401, "binding_mismatch");
    assert_eq!(sidecar.counter("certbind.denied.binding_mismatch"), 1);
    assert_eq!(sidecar.tallied("certbind.allowed"), allowed + 3);
    assert_eq!(sidecar.counter("certbind.token_cache.hit"), 3);
    assert_eq!(sidecar.counter("certbind.decision_cache.hit"), 2);
    assert_eq!(
        sidecar.tallied("certbind.allowed"),
        allowed + 3,
        "counted once"
    );
}
