//! One mesh-wide configuration without `audience`: the real `.wasm` takes the service's
//! identity from the listener's certificate (`connection.uri_san_local_certificate`).

use super::certs::spiffe;
use super::scenario::*;
use serde_json::json;

const LOCAL_SAN: &str = "connection.uri_san_local_certificate";

fn mesh_sidecar() -> Sidecar {
    Sidecar::builder()
        .config(|c| {
            c.as_object_mut().unwrap().remove("audience");
        })
        .start()
}

#[test]
fn admits_a_token_for_the_service_its_listener_certificate_names() {
    let mut sidecar = mesh_sidecar();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    let headers = sidecar
        .request(&pki.consumer, &token)
        .property(LOCAL_SAN, spiffe("orders"))
        .admitted();
    assert_eq!(
        headers.get_str("x-certbind-subject"),
        Some(pki.consumer.spiffe_id())
    );
    let asked = sidecar.calls_for(Endpoint::Pdp);
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].body_json()["audience"], json!(spiffe("orders")));
}

#[test]
fn refuses_a_token_for_another_service_with_the_same_configuration() {
    let mut sidecar = mesh_sidecar();
    let pki = sidecar.pki.clone();
    let for_orders = sidecar.token(&pki.consumer).build();
    sidecar
        .request(&pki.consumer, &for_orders)
        .property(LOCAL_SAN, spiffe("billing"))
        .answers(401, "wrong_audience");
    let for_billing = sidecar
        .token(&pki.consumer)
        .claim("aud", json!(spiffe("billing")))
        .build();
    sidecar
        .request(&pki.consumer, &for_billing)
        .property(LOCAL_SAN, spiffe("billing"))
        .admitted();
    assert_eq!(sidecar.counter("certbind.denied.wrong_audience"), 1);
}

#[test]
fn refuses_every_token_on_a_listener_without_a_spiffe_certificate_of_the_trust_domain() {
    let mut sidecar = mesh_sidecar();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    sidecar
        .request(&pki.consumer, &token)
        .answers(401, "wrong_audience");
    sidecar
        .request(&pki.consumer, &token)
        .property(LOCAL_SAN, "spiffe://other.test/ns/demo/sa/orders")
        .answers(401, "wrong_audience");
    assert_eq!(sidecar.pdp_calls(), 0);
    assert!(
        sidecar
            .logs()
            .iter()
            .any(|l| l.contains("listener's certificate has no SPIFFE ID")),
        "{:?}",
        sidecar.logs()
    );
}

#[test]
fn a_configured_audience_ignores_the_listener_certificate() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    sidecar
        .request(&pki.consumer, &token)
        .property(LOCAL_SAN, spiffe("billing"))
        .admitted();
}
