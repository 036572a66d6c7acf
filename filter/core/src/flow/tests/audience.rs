//! Flow tests for a configuration without `audience`: the listener's own certificate names the
//! service, so one configuration serves every service and a token for one is refused by another.

use super::*;

const ORDERS: &str = "spiffe://certbind.test/ns/demo/sa/orders";
const BILLING: &str = "spiffe://certbind.test/ns/demo/sa/billing";

fn mesh_world() -> World {
    world_with(|v| {
        v.as_object_mut().unwrap().remove("audience");
    })
}

fn on_listener(w: &World, local: Option<&str>) -> RequestFacts {
    RequestFacts {
        local_uri_san: local.map(Rc::from),
        ..facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)))
    }
}

#[test]
fn admits_a_token_for_the_service_the_listener_certificate_names() {
    let mut w = mesh_world();
    let f = on_listener(&w, Some(ORDERS));
    let (mut flow, step) = Flow::start(&mut w.engine, f, NOW_MS);
    let Step::AskPdp { body, .. } = step else {
        panic!("{step:?}")
    };
    let asked: DecisionRequest = serde_json::from_str(&body).unwrap();
    assert_eq!(asked.audience, ORDERS);
    let step = flow.pdp_answered(&mut w.engine, Some(200), PDP_ALLOW, NOW_MS);
    assert_eq!(allowed(step.unwrap()).shadowed, None);
}

#[test]
fn refuses_a_token_for_another_service_on_a_listener_of_billing() {
    let mut w = mesh_world();
    let f = on_listener(&w, Some(BILLING));
    assert_eq!(
        denied(Flow::start(&mut w.engine, f, NOW_MS).1),
        Reason::WrongAudience
    );
}

#[test]
fn refuses_every_token_on_a_listener_without_a_spiffe_id_of_the_trust_domain() {
    let mut w = mesh_world();
    for local in [
        None,
        Some("spiffe://other.test/ns/demo/sa/orders"),
        Some("https://orders"),
    ] {
        let f = on_listener(&w, local);
        assert_eq!(
            denied(Flow::start(&mut w.engine, f, NOW_MS).1),
            Reason::WrongAudience,
            "{local:?}"
        );
        // A token that is malformed is refused as such first, audience or none.
        let blank = Some(format!("Bearer {} x", token_bound_to(&w.consumer.0)));
        let f = RequestFacts {
            authorization: blank,
            ..on_listener(&w, local)
        };
        assert_eq!(
            denied(Flow::start(&mut w.engine, f, NOW_MS).1),
            Reason::MalformedToken,
            "{local:?}"
        );
    }
}

#[test]
fn a_token_cached_on_one_service_listener_is_not_admitted_on_another() {
    let mut w = mesh_world();
    let f = on_listener(&w, Some(ORDERS));
    let (mut flow, _) = Flow::start(&mut w.engine, f, NOW_MS);
    flow.pdp_answered(&mut w.engine, Some(200), PDP_ALLOW, NOW_MS)
        .unwrap();
    // Same VM, same token, now on billing's listener: the cache must not answer for it.
    let f = on_listener(&w, Some(BILLING));
    assert_eq!(
        denied(Flow::start(&mut w.engine, f, NOW_MS).1),
        Reason::WrongAudience
    );
    // And orders still admits it (verified afresh; the decision comes from the cache).
    let f = on_listener(&w, Some(ORDERS));
    let (flow, step) = Flow::start(&mut w.engine, f, NOW_MS);
    assert!(flow.decision_cache_hit());
    allowed(step);
}

#[test]
fn a_configured_audience_ignores_the_listener_certificate() {
    let mut w = world();
    let f = on_listener(&w, Some(BILLING));
    let (_, step) = Flow::start(&mut w.engine, f, NOW_MS);
    assert!(matches!(step, Step::AskPdp { .. }), "{step:?}");
}
