//! Every token and binding failure of CONTRACT §4 is refused with its exact answer, and each
//! check has a positive control nearby that passes.

use super::scenario::*;
use super::tokens::{Key, b64};
use serde_json::json;

#[test]
fn refuses_a_request_without_authorization_as_missing_token() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let reply = sidecar
        .request_without_token(&pki.consumer)
        .answers(401, "missing_token");
    assert_eq!(
        reply.headers.get_str("www-authenticate").as_deref(),
        Some("Bearer realm=\"certbind\"")
    );
    assert_eq!(sidecar.pdp_calls(), 0);
}

#[test]
fn refuses_another_authorization_scheme_as_missing_token() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    sidecar
        .request_without_token(&pki.consumer)
        .header("authorization", "Basic Y29uc3VtZXI6cHc=")
        .answers(401, "missing_token");
}

#[test]
fn refuses_a_token_that_is_not_a_compact_jws_as_malformed() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let good = sidecar.token(&pki.consumer).build();
    let parts: Vec<&str> = good.split('.').collect();
    let malformed = [
        "abc".to_owned(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}.extra"),
        format!("{}.{}.{}", parts[0], "!!not-base64!!", parts[2]),
        format!("{}.{}.{}", b64(b"not json"), parts[1], parts[2]),
        format!("{}.{}.{}*", parts[0], parts[1], parts[2]),
    ];
    for token in malformed {
        sidecar
            .request(&pki.consumer, &token)
            .answers(401, "malformed_token");
    }
}

#[test]
fn refuses_algorithms_other_than_es256_as_unsupported_alg() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    for alg in ["HS256", "none", "RS256", "ES384", "es256"] {
        let token = sidecar
            .token(&pki.consumer)
            .header("alg", json!(alg))
            .build();
        sidecar
            .request(&pki.consumer, &token)
            .answers(401, "unsupported_alg");
    }
}

#[test]
fn refuses_a_token_typed_other_than_at_jwt_as_wrong_type() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    for typ in [json!("JWT"), json!("dpop+jwt"), json!(null)] {
        let token = sidecar.token(&pki.consumer).header("typ", typ).build();
        sidecar
            .request(&pki.consumer, &token)
            .answers(401, "wrong_type");
    }
}

#[test]
fn refuses_a_kid_the_jwks_lacks_as_unknown_kid() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let stranger = Key::from_seed(404);
    let token = sidecar.token(&pki.consumer).signed_by(&stranger);
    let token = token.clone().header("kid", json!(stranger.kid)).build();
    sidecar
        .request(&pki.consumer, &token)
        .answers(401, "unknown_kid");
}

#[test]
fn refuses_a_tampered_signature_as_bad_signature() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build_with_bad_signature();
    sidecar
        .request(&pki.consumer, &token)
        .answers(401, "bad_signature");
}

#[test]
fn refuses_a_token_signed_by_another_key_under_a_published_kid() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let forged = sidecar
        .token(&pki.consumer)
        .signed_by(&Key::from_seed(666))
        .build();
    sidecar
        .request(&pki.consumer, &forged)
        .answers(401, "bad_signature");
}

#[test]
fn refuses_a_token_with_modified_claims_as_bad_signature() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    let parts: Vec<&str> = token.split('.').collect();
    let wider = sidecar
        .token(&pki.consumer)
        .scope("orders:read orders:write")
        .signing_input();
    let spliced = format!("{}.{}", wider, parts[2]);
    sidecar
        .request(&pki.consumer, &spliced)
        .answers(401, "bad_signature");
}

#[test]
fn refuses_an_expired_token_beyond_the_clock_skew() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let now = sidecar.now_s();
    let token = sidecar
        .token(&pki.consumer)
        .claim("iat", json!(now - 400))
        .claim("nbf", json!(now - 400))
        .claim("exp", json!(now - 31))
        .build();
    sidecar
        .request(&pki.consumer, &token)
        .answers(401, "expired");
}

#[test]
fn admits_a_token_expired_within_the_clock_skew() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let now = sidecar.now_s();
    let token = sidecar
        .token(&pki.consumer)
        .claim("iat", json!(now - 300))
        .claim("nbf", json!(now - 300))
        .claim("exp", json!(now - 20))
        .build();
    sidecar.request(&pki.consumer, &token).admitted();
}

#[test]
fn refuses_a_token_not_yet_valid_beyond_the_clock_skew() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let now = sidecar.now_s();
    let token = sidecar
        .token(&pki.consumer)
        .claim("nbf", json!(now + 31))
        .build();
    sidecar
        .request(&pki.consumer, &token)
        .answers(401, "not_yet_valid");
    let token = sidecar
        .token(&pki.consumer)
        .claim("nbf", json!(now + 20))
        .build();
    sidecar.request(&pki.consumer, &token).admitted();
}

#[test]
fn refuses_a_token_of_another_issuer_as_wrong_issuer() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let token = sidecar
        .token(&pki.consumer)
        .claim("iss", json!("https://evil.example"))
        .build();
    sidecar
        .request(&pki.consumer, &token)
        .answers(401, "wrong_issuer");
}

#[test]
fn refuses_a_token_for_another_service_as_wrong_audience() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let token = sidecar
        .token(&pki.consumer)
        .claim("aud", json!(super::certs::spiffe("billing")))
        .build();
    sidecar
        .request(&pki.consumer, &token)
        .answers(401, "wrong_audience");
}

#[test]
fn admits_an_audience_array_naming_this_service() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let token = sidecar
        .token(&pki.consumer)
        .claim("aud", json!([super::certs::spiffe("billing"), audience()]))
        .build();
    sidecar.request(&pki.consumer, &token).admitted();
}

#[test]
fn refuses_a_bearer_token_without_cnf_as_binding_missing() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).without_claim("cnf").build();
    sidecar
        .request(&pki.consumer, &token)
        .answers(401, "binding_missing");
}

#[test]
fn refuses_a_stolen_token_replayed_over_another_certificate_as_binding_mismatch() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let stolen = sidecar.token(&pki.consumer).build();
    sidecar
        .request(&pki.inventory, &stolen)
        .answers(401, "binding_mismatch");
    // The same SPIFFE ID with another key pair is another certificate, so no match either.
    sidecar
        .request(&pki.consumer_reissued, &stolen)
        .answers(401, "binding_mismatch");
    // Positive control: the certificate the token is bound to.
    sidecar.request(&pki.consumer, &stolen).admitted();
}

#[test]
fn refuses_a_token_presented_without_a_client_certificate() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    let mut request = sidecar.request(&pki.consumer, &token);
    request.properties = super::certs::no_client_cert_properties();
    request.answers(401, "binding_mismatch");
}

#[test]
fn refuses_a_certificate_digest_that_disagrees_with_the_certificate() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    sidecar
        .request(&pki.consumer, &token)
        .property(
            "connection.sha256_peer_certificate_digest",
            pki.inventory.hex_digest(),
        )
        .answers(401, "binding_mismatch");
}

#[test]
fn refuses_a_token_whose_subject_is_not_the_certificates_spiffe_id() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let token = sidecar
        .token(&pki.consumer)
        .claim("sub", json!(pki.inventory.spiffe_id()))
        .build();
    sidecar
        .request(&pki.consumer, &token)
        .answers(401, "subject_mismatch");
}

#[test]
fn refuses_certificates_outside_the_trust_domain_or_without_one_spiffe_id() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    for cert in [&pki.foreign, &pki.no_san, &pki.two_sans] {
        let token = sidecar.token(cert).build();
        sidecar
            .request(cert, &token)
            .answers(401, "subject_mismatch");
    }
}

#[test]
fn refuses_when_envoy_gives_no_certificate_pem_and_uses_the_uri_san_for_the_subject() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    // Without the certificate its validity window is unknown: fail closed.
    sidecar
        .request(&pki.consumer, &token)
        .without_property("connection.peer_certificate")
        .answers(401, "certificate_expired");
    let token = sidecar.token(&pki.inventory).build();
    sidecar
        .request(&pki.inventory, &token)
        .without_property("connection.peer_certificate")
        .property(
            "connection.uri_san_peer_certificate",
            pki.consumer.spiffe_id(),
        )
        .answers(401, "subject_mismatch");
}

#[test]
fn admits_a_bound_token_and_forwards_only_the_verified_identity() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer);
    let headers = sidecar
        .request(&pki.consumer, &token.build())
        .header(
            "x-certbind-subject",
            "spiffe://certbind.test/ns/demo/sa/admin",
        )
        .add_header("X-Certbind-Scope", "orders:admin")
        .header("x-certbind-extra", "smuggled")
        .admitted();
    assert_identity(&headers, &token);
    assert!(headers.all("x-certbind-extra").is_empty(), "{headers:?}");
    assert_eq!(headers.get_str(":path").as_deref(), Some("/orders/1"));
}

#[test]
fn forwards_the_token_upstream_only_when_configured_to() {
    let mut sidecar = Sidecar::builder()
        .config(|c| c["forward_token"] = json!(true))
        .start();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).build();
    let headers = sidecar.request(&pki.consumer, &token).admitted();
    assert_eq!(
        headers.get_str("authorization"),
        Some(format!("Bearer {token}"))
    );
}

#[test]
fn refuses_caller_identity_headers_with_a_bad_token_and_sends_nothing_upstream() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    sidecar
        .request(&pki.consumer, "a.b.c")
        .header("x-certbind-subject", pki.consumer.spiffe_id())
        .answers(401, "malformed_token");
    assert_eq!(sidecar.pdp_calls(), 0);
}

#[test]
fn refuses_a_connection_whose_certificate_expired_and_admits_it_before() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let cert = &pki.consumer_short_lived;
    let token = sidecar.token(cert).build();
    sidecar.request(cert, &token).admitted();
    // The connection lives on (a resumed TLS session) past the certificate's notAfter.
    sidecar.advance_s(super::certs::SHORT_LIVED_UNTIL_S + 1 - sidecar.now_s());
    let token = sidecar.token(cert).build();
    sidecar
        .request(cert, &token)
        .answers(401, "certificate_expired");
    // Another, valid certificate of the same workload still passes.
    let token = sidecar.token(&pki.consumer).build();
    sidecar.request(&pki.consumer, &token).admitted();
}

#[test]
fn strips_underscore_and_case_variants_of_the_identity_headers() {
    let mut sidecar = Sidecar::new();
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer);
    let headers = sidecar
        .request(&pki.consumer, &token.build())
        .header(
            "x_certbind_subject",
            "spiffe://certbind.test/ns/demo/sa/admin",
        )
        .add_header("X_Certbind_Scope", "orders:admin")
        .add_header("x-certbind_extra", "smuggled")
        .add_header("x_certbind", "not reserved: no trailing separator")
        .admitted();
    assert_identity(&headers, &token);
    for name in ["x_certbind_subject", "X_Certbind_Scope", "x-certbind_extra"] {
        assert!(
            headers.all(name).is_empty(),
            "{name} reached the upstream: {headers:?}"
        );
    }
    assert_eq!(
        headers.get_str("x_certbind").as_deref(),
        Some("not reserved: no trailing separator")
    );
}
