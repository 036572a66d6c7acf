//! Configuration and the plugin's life: bad configurations refused at `on_configure`,
//! shadow mode, counters, and streams that end while the filter still waits for something.

use super::host::MapFault;
use super::scenario::*;
use serde_json::json;
use std::time::Duration;

fn refused(builder: Builder) -> Vec<String> {
    match builder.try_start() {
        Ok(_) => panic!("the configuration was accepted"),
        Err((why, logs)) => {
            assert_eq!(why, "on_configure returned false", "{logs:?}");
            logs
        }
    }
}

#[test]
fn refuses_configurations_that_are_not_json_or_empty() {
    for raw in [&b""[..], b"not json", b"{", b"[]", b"\xff\xfe"] {
        let logs = refused(Sidecar::builder().raw_config(raw));
        assert!(
            logs.iter().any(|l| l.contains("certbind config refused")),
            "{raw:?}: {logs:?}"
        );
    }
}

#[test]
fn refuses_configurations_with_unknown_or_missing_fields() {
    let edits: [fn(&mut serde_json::Value); 5] = [
        |c| c["extra"] = json!(1),
        |c| c["jwks"]["extra"] = json!(1),
        |c| c["pdp"]["extra"] = json!(1),
        |c| {
            c.as_object_mut().unwrap().remove("issuer");
        },
        |c| {
            c.as_object_mut().unwrap().remove("pdp");
        },
    ];
    for edit in edits {
        refused(Sidecar::builder().config(edit));
    }
}

#[test]
fn refuses_configurations_with_values_the_filter_cannot_work_with() {
    let edits: [fn(&mut serde_json::Value); 10] = [
        |c| c["audience"] = json!("orders"),
        |c| c["audience"] = json!("spiffe://other.test/ns/demo/sa/orders"),
        |c| c["mode"] = json!("audit"),
        |c| c["clock_skew_s"] = json!(301),
        |c| c["jwks"]["refresh_interval_s"] = json!(0),
        |c| c["jwks"]["min_refetch_interval_s"] = json!(0),
        |c| c["jwks"]["max_stale_s"] = json!(10),
        |c| c["pdp"]["timeout_ms"] = json!(0),
        |c| c["pdp"]["path"] = json!("v1/decision"),
        |c| c["realm"] = json!("a\"b"),
    ];
    for edit in edits {
        refused(Sidecar::builder().config(edit));
    }
}

#[test]
fn accepts_a_full_configuration_with_every_field() {
    let sidecar = Sidecar::builder()
        .config(|c| {
            c["realm"] = json!("certbind");
            c["jwks"]["path"] = json!("/.well-known/jwks.json");
            c["jwks"]["refresh_interval_s"] = json!(120);
            c["jwks"]["min_refetch_interval_s"] = json!(10);
            c["jwks"]["max_stale_s"] = json!(600);
            c["jwks"]["first_fetch_wait_ms"] = json!(2000);
            c["jwks"]["timeout_ms"] = json!(1000);
            c["pdp"]["path"] = json!("/v1/decision");
            c["pdp"]["timeout_ms"] = json!(150);
            c["decision_cache_size"] = json!(10);
            c["token_cache_size"] = json!(10);
            c["clock_skew_s"] = json!(10);
            c["mode"] = json!("enforce");
            c["forward_token"] = json!(false);
        })
        .start();
    sidecar.assert_healthy();
}

#[test]
fn defines_every_contract_counter_at_start() {
    let sidecar = Sidecar::new();
    let stats = sidecar.stats();
    for (reason, _, _) in super::contract::REASONS {
        let name = format!("certbind.denied.{reason}");
        assert!(stats.contains_key(&name), "{name} missing from {stats:?}");
    }
    assert!(stats.contains_key("certbind.allowed"));
}

#[test]
fn shadow_mode_passes_a_request_it_would_deny_and_counts_why() {
    let mut sidecar = Sidecar::builder()
        .config(|c| c["mode"] = json!("shadow"))
        .start();
    let pki = sidecar.pki.clone();
    let stolen = sidecar.token(&pki.consumer).build();
    let mut ex = sidecar.request(&pki.inventory, &stolen).send();
    let headers = sidecar
        .verdict(&mut ex)
        .passes_in_shadow_despite("binding_mismatch");
    assert!(
        headers.all("x-certbind-subject").is_empty(),
        "an unverified identity was forwarded: {headers:?}"
    );
    let mut ex = sidecar.request_without_token(&pki.consumer).send();
    sidecar
        .verdict(&mut ex)
        .passes_in_shadow_despite("missing_token");
    assert_eq!(sidecar.tallied("certbind.allowed"), 0);
}

#[test]
fn shadow_mode_still_strips_caller_identity_headers() {
    let mut sidecar = Sidecar::builder()
        .config(|c| c["mode"] = json!("shadow"))
        .start();
    let pki = sidecar.pki.clone();
    let mut ex = sidecar
        .request(&pki.consumer, "junk")
        .header("x-certbind-subject", pki.consumer.spiffe_id())
        .send();
    let headers = sidecar
        .verdict(&mut ex)
        .passes_in_shadow_despite("malformed_token");
    assert!(headers.all("x-certbind-subject").is_empty(), "{headers:?}");
}

#[test]
fn shadow_mode_admits_a_good_request_with_its_identity() {
    let mut sidecar = Sidecar::builder()
        .config(|c| c["mode"] = json!("shadow"))
        .start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer);
    let headers = sidecar.request(&pki.consumer, &token.build()).admitted();
    assert_identity(&headers, &token);
    assert_eq!(sidecar.counter("certbind.shadow.passed"), 0);
}

#[test]
fn shadow_mode_passes_when_the_pdp_is_down() {
    let mut sidecar = Sidecar::builder()
        .config(|c| c["mode"] = json!("shadow"))
        .pdp(|_| Answer::fail())
        .start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    let mut ex = sidecar.request(&pki.consumer, &token).send();
    sidecar
        .verdict(&mut ex)
        .passes_in_shadow_despite("pdp_unavailable");
}

#[test]
fn a_request_destroyed_while_its_pdp_call_is_pending_leaves_the_vm_healthy() {
    let mut sidecar = Sidecar::builder().pdp(|_| Answer::Silent).start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    let mut gone = sidecar.request(&pki.consumer, &token).send();
    sidecar.verdict(&mut gone).stays_paused();
    sidecar.finish(&mut gone);
    // The call still times out (Envoy owns it on the root context) and is delivered.
    sidecar.advance(Duration::from_millis(500));
    sidecar.assert_healthy();
    assert_eq!(sidecar.counter("certbind.denied.pdp_unavailable"), 0);
    sidecar.set_pdp(|_| decision(true, "matched", 60));
    sidecar.request(&pki.consumer, &token).admitted();
}

#[test]
fn a_request_destroyed_while_it_waits_for_the_first_jwks_does_not_stall_the_others() {
    let mut sidecar = Sidecar::builder().cold().jwks(|_| Answer::Silent).start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    // The first request's context dispatched the fetch; the client then goes away.
    let mut first = sidecar.request(&pki.consumer, &token).send();
    let mut second = sidecar.request(&pki.consumer, &token).send();
    sidecar.finish(&mut first);
    let body = super::tokens::jwks(&[&sidecar.key]);
    sidecar.set_jwks(move |_| Answer::json(200, body.clone()));
    sidecar.advance(Duration::from_millis(2_500));
    sidecar.verdict(&mut second).admitted();
}

#[test]
fn a_header_value_that_is_not_utf8_does_not_crash_the_vm() {
    // Envoy passes obs-text (bytes 0x80-0xff) in header values through to filters.
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    let mut ex = sidecar
        .request(&pki.consumer, &token)
        .header("user-agent", b"caf\xe9")
        .send();
    sidecar.assert_healthy();
    sidecar.verdict(&mut ex).admitted();
}

#[test]
fn an_authorization_value_that_is_not_utf8_is_refused_not_a_crash() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let mut ex = sidecar
        .request_without_token(&pki.consumer)
        .header("authorization", b"Bearer \xff\xfe.x.y")
        .send();
    sidecar.assert_healthy();
    sidecar.verdict(&mut ex).answers(401, "malformed_token");
}

/// The header map is read in place from the host's buffer (filter/plugin/src/header_map.rs):
/// one that is not exactly one well-formed serialization, or that the host refuses to hand
/// over, refuses the request rather than letting it pass on part of its headers (a caller's
/// `x-certbind-*` among the unread ones).
#[test]
fn a_request_header_map_the_host_tears_or_refuses_is_refused_not_half_read() {
    for fault in [MapFault::Torn, MapFault::Refused] {
        let mut sidecar = Sidecar::new();
        let pki = sidecar.pki.clone();
        let token = sidecar.token(&pki.consumer).build();
        sidecar.request(&pki.consumer, &token).admitted();
        sidecar.vms[0].host_mut().faults.request_headers = fault;
        let ex = sidecar
            .request(&pki.consumer, &token)
            .header(
                "x-certbind-subject",
                b"spiffe://certbind.test/ns/demo/sa/admin",
            )
            .send();
        // Not even the request id can be read: the answer echoes none.
        let Outcome::Replied(reply) = sidecar.outcome(&ex) else {
            panic!(
                "{fault:?}: expected a refusal, got {:?}",
                sidecar.outcome(&ex)
            );
        };
        let body = String::from_utf8_lossy(&reply.body).into_owned();
        assert_eq!(reply.status, 503, "{fault:?}: {body}");
        assert!(
            body.contains(r#""reason":"internal_error""#),
            "{fault:?}: {body}"
        );
        sidecar.assert_healthy();
        sidecar.vms[0].host_mut().faults.request_headers = MapFault::None;
        sidecar.request(&pki.consumer, &token).admitted();
    }
}

#[test]
fn holds_the_request_body_until_the_pdp_decides() {
    let mut sidecar = Sidecar::builder().pdp(|_| Answer::Silent).start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    let mut ex = sidecar
        .request(&pki.consumer, &token)
        .method("POST")
        .path("/orders")
        .body(br#"{"item":"book"}"#)
        .send();
    sidecar.verdict(&mut ex).stays_paused();
    sidecar.answer_pending(Endpoint::Pdp, decision(true, "matched", 60));
    sidecar.verdict(&mut ex).admitted();
}

#[test]
fn holds_the_request_body_of_a_request_waiting_for_the_first_jwks() {
    let mut sidecar = Sidecar::builder().cold().jwks(|_| Answer::Silent).start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    let mut ex = sidecar
        .request(&pki.consumer, &token)
        .method("POST")
        .body(b"payload")
        .send();
    sidecar.verdict(&mut ex).stays_paused();
    sidecar.advance(Duration::from_millis(5_100));
    sidecar.verdict(&mut ex).answers(503, "jwks_unavailable");
}

#[test]
fn a_refused_request_with_a_body_sends_nothing_upstream() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    sidecar
        .request(&pki.consumer, "not-a-token")
        .method("POST")
        .body(b"payload")
        .answers(401, "malformed_token");
}
