//! Usage-bound tokens as the real filter handles them (issue 22): one call to the usage
//! counter after every other check, never for an ordinary token, never skipped by the caches,
//! shared by every worker VM; and every answer of that call (consumed, exhausted, unknown,
//! garbage, timeout, 5xx, a failed connection, a call Envoy cannot start).

use super::scenario::*;
use super::tokens::TokenBuilder;
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

fn counted() -> Builder {
    Sidecar::builder().config(|c| c["usage"] = json!({}))
}

/// A counter like the authz-server's: `max_uses` per `jti` read from `issued`.
fn counter(issued: Rc<RefCell<HashMap<String, u32>>>) -> impl FnMut(&Dispatched) -> Answer {
    move |d| {
        let jti = d.body_json()["jti"].as_str().unwrap_or_default().to_owned();
        let mut left = issued.borrow_mut();
        match left.get_mut(&jti) {
            Some(0) => Answer::json(200, r#"{"outcome":"exhausted"}"#),
            Some(n) => {
                *n -= 1;
                Answer::json(
                    200,
                    json!({"outcome": "consumed", "remaining": *n}).to_string(),
                )
            }
            None => Answer::json(200, r#"{"outcome":"unknown"}"#),
        }
    }
}

fn usage_bound(sidecar: &mut Sidecar, max_uses: u32) -> TokenBuilder {
    let pki = sidecar.pki.clone();
    sidecar
        .token(&pki.consumer)
        .claim("max_uses", Value::from(max_uses))
}

#[test]
fn spends_one_use_at_the_counter_after_the_pdp_allowed_and_then_admits() {
    let mut sidecar = counted().start();
    let issued = Rc::new(RefCell::new(HashMap::new()));
    sidecar.set_usage(counter(issued.clone()));
    let token = usage_bound(&mut sidecar, 2);
    let jti = token.claims["jti"].as_str().unwrap().to_owned();
    issued.borrow_mut().insert(jti.clone(), 2);
    let pki = sidecar.pki.clone();
    let headers = sidecar.request(&pki.consumer, &token.build()).admitted();
    assert_identity(&headers, &token);
    let calls = sidecar.calls_for(Endpoint::Usage);
    assert_eq!(calls.len(), 1);
    let call = calls[0];
    assert_eq!(
        call.call.cluster, JWKS_CLUSTER,
        "the authz-server's cluster"
    );
    assert_eq!(call.header(":method").as_deref(), Some("POST"));
    assert_eq!(call.header(":authority").as_deref(), Some("127.0.0.1:9443"));
    assert_eq!(
        call.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(call.body_json(), json!({ "jti": jti }));
    assert!(call.call.timeout_ms > 0 && call.call.timeout_ms <= 1000);
    // The counter is asked after the PDP answered, never before.
    let order: Vec<Endpoint> = sidecar
        .dispatched
        .iter()
        .map(|d| d.endpoint)
        .filter(|e| matches!(e, Endpoint::Pdp | Endpoint::Usage))
        .collect();
    assert_eq!(order, [Endpoint::Pdp, Endpoint::Usage]);
    assert_eq!(issued.borrow()[&jti], 1);
}

#[test]
fn an_ordinary_token_never_calls_the_counter() {
    let mut sidecar = counted().start();
    sidecar.set_usage(|_| panic!("an ordinary token must not be counted"));
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    for _ in 0..3 {
        sidecar.request(&pki.consumer, &token).admitted();
    }
    assert_eq!(sidecar.calls_for(Endpoint::Usage).len(), 0);
}

#[test]
fn exactly_max_uses_pass_across_worker_vms_with_cached_token_and_decision() {
    let mut sidecar = counted().vms(2).start();
    let issued = Rc::new(RefCell::new(HashMap::new()));
    sidecar.set_usage(counter(issued.clone()));
    let token = usage_bound(&mut sidecar, 3);
    issued
        .borrow_mut()
        .insert(token.claims["jti"].as_str().unwrap().to_owned(), 3);
    let pki = sidecar.pki.clone();
    let jws = token.build();
    let mut admitted = 0;
    for i in 0..6 {
        let mut ex = sidecar.request(&pki.consumer, &jws).on_vm(i % 2).send();
        match sidecar.outcome(&ex) {
            Outcome::Forwarded(_) => {
                admitted += 1;
                sidecar.finish(&mut ex);
            }
            _ => {
                sidecar.verdict(&mut ex).answers(401, "usage_exhausted");
            }
        }
    }
    assert_eq!(admitted, 3);
    // Every request was counted although VMs 0 and 1 cached the token and the allow.
    assert_eq!(sidecar.calls_for(Endpoint::Usage).len(), 6);
    assert!(sidecar.pdp_calls() <= 2, "the allow was cached per VM");
    assert_eq!(sidecar.counter("certbind.denied.usage_exhausted"), 3);
}

#[test]
fn an_exhausted_or_unknown_token_is_refused_as_usage_exhausted() {
    for body in [r#"{"outcome":"exhausted"}"#, r#"{"outcome":"unknown"}"#] {
        let mut sidecar = counted().start();
        sidecar.set_usage(move |_| Answer::json(200, body));
        let token = usage_bound(&mut sidecar, 1).build();
        let pki = sidecar.pki.clone();
        let reply = sidecar
            .request(&pki.consumer, &token)
            .answers(401, "usage_exhausted");
        let challenge = reply
            .headers
            .get_str("www-authenticate")
            .unwrap_or_default();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }
}

#[test]
fn garbage_5xx_or_a_failed_connection_is_usage_unavailable() {
    let answers: Vec<Answer> = vec![
        Answer::json(500, r#"{"outcome":"consumed","remaining":1}"#),
        Answer::json(503, ""),
        Answer::json(403, r#"{"error":"access_denied"}"#),
        Answer::raw(200, b""),
        Answer::raw(200, b"consumed"),
        Answer::raw(200, b"\xff\xfe{"),
        Answer::json(200, r#"{"outcome":"consumed"}"#),
        Answer::json(200, r#"{"outcome":"consumed","remaining":1,"more":true}"#),
        Answer::json(
            200,
            json!({"outcome": "consumed", "remaining": 1, "pad": "x".repeat(4000)}).to_string(),
        ),
        Answer::fail(),
    ];
    for answer in answers {
        let mut sidecar = counted().start();
        let a = answer.clone();
        sidecar.set_usage(move |_| a.clone());
        let token = usage_bound(&mut sidecar, 5).build();
        let pki = sidecar.pki.clone();
        sidecar
            .request(&pki.consumer, &token)
            .answers(503, "usage_unavailable");
    }
}

#[test]
fn a_counter_that_does_not_answer_in_time_is_usage_unavailable() {
    let mut sidecar = counted().start();
    sidecar.set_usage(|_| Answer::Silent);
    let token = usage_bound(&mut sidecar, 5).build();
    let pki = sidecar.pki.clone();
    let mut ex = sidecar.request(&pki.consumer, &token).send();
    sidecar.verdict(&mut ex).stays_paused();
    sidecar.advance(Duration::from_millis(999));
    sidecar.verdict(&mut ex).stays_paused();
    sidecar.advance(Duration::from_millis(2));
    sidecar.verdict(&mut ex).answers(503, "usage_unavailable");
    // A late answer after the timeout changes nothing.
    let mut sidecar = counted().start();
    sidecar.set_usage(|_| Answer::json(200, r#"{"outcome":"consumed","remaining":0}"#).after(1500));
    let token = usage_bound(&mut sidecar, 5).build();
    let mut ex = sidecar.request(&pki.consumer, &token).send();
    sidecar.advance(Duration::from_secs(2));
    sidecar.verdict(&mut ex).answers(503, "usage_unavailable");
}

#[test]
fn a_call_envoy_cannot_start_or_no_counter_configured_is_usage_unavailable() {
    let mut sidecar = Sidecar::builder()
        .config(|c| c["usage"] = json!({"cluster": "no_such_cluster"}))
        .start();
    let token = usage_bound(&mut sidecar, 5).build();
    let pki = sidecar.pki.clone();
    sidecar
        .request(&pki.consumer, &token)
        .answers(503, "usage_unavailable");
    let mut sidecar = Sidecar::new();
    let token = usage_bound(&mut sidecar, 5).build();
    sidecar
        .request(&pki.consumer, &token)
        .answers(503, "usage_unavailable");
    assert_eq!(sidecar.calls_for(Endpoint::Usage).len(), 0);
}

#[test]
fn a_request_the_pdp_denies_spends_no_use() {
    let mut sidecar = counted().pdp(|_| decision(false, "no_rule", 0)).start();
    sidecar.set_usage(|_| panic!("a denied request must not be counted"));
    let token = usage_bound(&mut sidecar, 5).build();
    let pki = sidecar.pki.clone();
    sidecar
        .request(&pki.consumer, &token)
        .answers(403, "policy_denied");
    // Nor does a token presented on another workload's connection.
    let stolen = sidecar.request(&pki.inventory, &token).send();
    let mut stolen = stolen;
    sidecar
        .verdict(&mut stolen)
        .answers(401, "binding_mismatch");
    assert_eq!(sidecar.calls_for(Endpoint::Usage).len(), 0);
}
