//! Flow tests: the fixtures (`World`: an engine with keys, a consumer and an inventory
//! certificate) and the mTLS listener's checks; revocation, DPoP, decisions shared across a
//! client's tokens and audience-less listeners have their own files.

/// One mesh-wide configuration: the audience from the listener's certificate.
mod audience;
mod decisions;
mod dpop;
mod revocation;
mod trace;

use super::*;
use crate::binding::bind_tests::{CONSUMER, cert};
use crate::binding::{CertThumbprint, PeerIdentity};
use crate::config::FilterConfig;
use crate::config::tests::MINIMAL;
use crate::decision::DecisionRequest;
use crate::host_es256_reference::ReferenceHost;
use crate::jwks::FetchKind;
use crate::jwks::tests::{RFC7515_X, RFC7515_Y, jwk, jwks_body};
use crate::reason::Reason;
use crate::revocation::Kind;
use crate::token::tests::{NOW, claims, header, sign};
use std::rc::Rc;

const NOW_MS: u64 = NOW * 1000;
const INVENTORY: &str = "spiffe://certbind.test/ns/demo/sa/inventory";

pub(crate) struct World {
    pub(crate) engine: Engine,
    pub(crate) consumer: (Vec<u8>, String),
    inventory: (Vec<u8>, String),
}

fn config(edit: impl FnOnce(&mut serde_json::Value)) -> FilterConfig {
    let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
    edit(&mut v);
    FilterConfig::from_json(v.to_string().as_bytes()).unwrap()
}

pub(crate) fn world_with(edit: impl FnOnce(&mut serde_json::Value)) -> World {
    let mut engine = Engine::new(config(edit));
    engine
        .install_jwks(&jwks_body(&[jwk("k1", RFC7515_X, RFC7515_Y)]), NOW_MS)
        .unwrap();
    World {
        engine,
        consumer: cert(&[CONSUMER]),
        inventory: cert(&[INVENTORY]),
    }
}

fn world() -> World {
    world_with(|_| {})
}

fn token_bound_to(der: &[u8]) -> String {
    let mut c = claims();
    c["cnf"] = serde_json::json!({"x5t#S256": CertThumbprint::from_der(der).to_cnf()});
    sign(&header(), &c)
}

pub(crate) fn facts(cert: &(Vec<u8>, String), authorization: Option<String>) -> RequestFacts {
    RequestFacts {
        authorization,
        request_id: "req-1".into(),
        method: "GET".into(),
        path: "/orders/1?x=1".into(),
        peer: PeerIdentity::from_cert_der(&cert.0),
        source_ip: Some("127.0.0.1".into()),
        tls_version: Some("TLSv1.3".into()),
        dpop: Vec::new(),
        local_uri_san: None,
    }
}

pub(crate) fn bearer_of(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

pub(crate) const PDP_ALLOW: &[u8] =
    br#"{"allow":true,"policy_id":"p","reason":"matched","ttl_s":60}"#;

pub(crate) fn denied(step: Step) -> Reason {
    match step {
        Step::Deny(d) => d.reason,
        other => panic!("expected a denial, got {other:?}"),
    }
}

pub(crate) fn allowed(step: Step) -> Allow {
    match step {
        Step::Allow(a) => a,
        other => panic!("expected an allow, got {other:?}"),
    }
}

/// Start a request with the consumer's bound token and answer the PDP's question.
fn full_allow(w: &mut World, now_ms: u64) -> (Flow, Allow) {
    let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
    let (mut flow, step) = Flow::start(&mut w.engine, f, now_ms);
    let Step::AskPdp { .. } = step else {
        panic!("expected a PDP question, got {step:?}")
    };
    let step = flow
        .pdp_answered(&mut w.engine, Some(200), PDP_ALLOW, now_ms)
        .unwrap();
    (flow, allowed(step))
}

#[test]
fn refuses_a_request_without_a_token() {
    let mut w = world();
    let (_, step) = Flow::start(&mut w.engine, facts(&w.consumer.clone(), None), NOW_MS);
    let Step::Deny(d) = step else {
        panic!("{step:?}")
    };
    assert_eq!((d.reason, d.status), (Reason::MissingToken, 401));
    assert!(
        d.headers
            .contains(&("www-authenticate", "Bearer realm=\"certbind\"".into()))
    );
    assert!(d.body.contains("\"request_id\":\"req-1\""));
}

#[test]
fn refuses_a_malformed_token() {
    let mut w = world();
    let f = facts(&w.consumer, Some("Bearer not.a.jwt".into()));
    assert_eq!(
        denied(Flow::start(&mut w.engine, f, NOW_MS).1),
        Reason::MalformedToken
    );
}

/// The token's text is checked only when the cache has no entry for it: a cached token
/// with a blank put in, or a blank at its end, is a token the cache has not seen and is
/// refused as malformed, before and after the clean one is cached.
#[test]
fn a_token_with_a_blank_is_malformed_whether_or_not_its_clean_self_is_cached() {
    let mut w = world();
    let token = token_bound_to(&w.consumer.0);
    let (head, tail) = token.split_at(40);
    let spoiled = [
        format!("Bearer {head} {tail}"),
        format!("Bearer {head}\t{tail}"),
        format!("Bearer {token} x"),
        "Bearer ".to_owned(),
    ];
    for cached in [false, true] {
        if cached {
            full_allow(&mut w, NOW_MS);
        }
        for value in &spoiled {
            let f = facts(&w.consumer, Some(value.clone()));
            let reason = denied(Flow::start(&mut w.engine, f, NOW_MS + 1).1);
            assert_eq!(reason, Reason::MalformedToken, "{value:?}, cached {cached}");
        }
    }
    let f = facts(&w.consumer, Some(format!("Bearer  \t{token}  ")));
    let (flow, step) = Flow::start(&mut w.engine, f, NOW_MS + 1);
    assert!(flow.token_cache_hit());
    allowed(step);
}

#[test]
fn admits_a_bound_token_the_pdp_allows_with_verified_headers() {
    let mut w = world();
    let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
    let (mut flow, step) = Flow::start(&mut w.engine, f, NOW_MS);
    let Step::AskPdp { body, timeout_ms } = step else {
        panic!("{step:?}")
    };
    assert_eq!(timeout_ms, 200);
    let asked: DecisionRequest = serde_json::from_str(&body).unwrap();
    assert_eq!(asked.subject, CONSUMER);
    assert_eq!(asked.action, "GET");
    assert_eq!(asked.resource, "/orders/1");
    assert_eq!(asked.audience, "spiffe://certbind.test/ns/demo/sa/orders");
    assert_eq!(asked.scopes, ["orders:read", "orders:write"]);
    assert_eq!(asked.context.source_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(asked.context.tls_version.as_deref(), Some("TLSv1.3"));
    assert_eq!(asked.context.jti.as_deref(), Some("j-1"));
    assert_eq!(asked.context.iat, Some(NOW - 10));
    let allow = allowed(
        flow.pdp_answered(&mut w.engine, Some(200), PDP_ALLOW, NOW_MS)
            .unwrap(),
    );
    assert_eq!(
        *allow.headers,
        [
            (HEADER_SUBJECT, Rc::from(CONSUMER)),
            (HEADER_CLIENT_ID, Rc::from("consumer")),
            (HEADER_SCOPE, Rc::from("orders:read orders:write")),
            (HEADER_JTI, Rc::from("j-1")),
        ]
    );
    assert!(allow.remove_authorization);
    assert_eq!(allow.shadowed, None);
    assert_eq!(flow.subject(), Some(CONSUMER));
    assert!(flow.is_done());
}

#[test]
fn forwards_the_token_only_when_configured() {
    let mut w = world_with(|c| c["forward_token"] = true.into());
    let (_, allow) = full_allow(&mut w, NOW_MS);
    assert!(!allow.remove_authorization);
}

#[test]
fn refuses_token_bound_to_other_cert() {
    let mut w = world();
    let stolen = token_bound_to(&w.consumer.0);
    let f = facts(&w.inventory, bearer_of(&stolen));
    assert_eq!(
        denied(Flow::start(&mut w.engine, f, NOW_MS).1),
        Reason::BindingMismatch
    );
}

#[test]
fn refuses_a_cached_token_presented_on_another_certificate() {
    let mut w = world();
    let (first, _) = full_allow(&mut w, NOW_MS);
    assert!(!first.token_cache_hit());
    let stolen = token_bound_to(&w.consumer.0);
    let f = facts(&w.inventory, bearer_of(&stolen));
    let (flow, step) = Flow::start(&mut w.engine, f, NOW_MS + 1);
    assert!(flow.token_cache_hit());
    assert_eq!(denied(step), Reason::BindingMismatch);
}

#[test]
fn refuses_a_subject_other_than_the_certificate() {
    let mut w = world();
    let mut c = claims();
    c["cnf"] = serde_json::json!({"x5t#S256": CertThumbprint::from_der(&w.inventory.0).to_cnf()});
    let f = facts(&w.inventory, bearer_of(&sign(&header(), &c)));
    assert_eq!(
        denied(Flow::start(&mut w.engine, f, NOW_MS).1),
        Reason::SubjectMismatch
    );
}

#[test]
fn reuses_the_verified_token_and_the_allow_for_the_same_request() {
    let mut w = world();
    let (_, first) = full_allow(&mut w, NOW_MS);
    let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
    let (flow, step) = Flow::start(&mut w.engine, f, NOW_MS + 1_000);
    assert!(flow.token_cache_hit());
    assert!(flow.decision_cache_hit());
    let again = allowed(step);
    assert_eq!(again.headers.len(), 4);
    // The identity headers were built once, with the verified token, and are shared.
    assert!(Rc::ptr_eq(&first.headers, &again.headers));
}

#[test]
fn asks_the_pdp_again_for_another_resource() {
    let mut w = world();
    full_allow(&mut w, NOW_MS);
    let mut f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
    f.path = "/orders/2".into();
    let (_, step) = Flow::start(&mut w.engine, f, NOW_MS);
    assert!(matches!(step, Step::AskPdp { .. }), "{step:?}");
}

#[test]
fn the_cached_allow_expires_with_its_ttl() {
    let mut w = world();
    full_allow(&mut w, NOW_MS);
    let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
    let (_, step) = Flow::start(&mut w.engine, f, NOW_MS + 60_000);
    assert!(matches!(step, Step::AskPdp { .. }), "{step:?}");
}

#[test]
fn the_cached_token_expires_with_exp() {
    let mut w = world();
    full_allow(&mut w, NOW_MS);
    let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
    let (flow, step) = Flow::start(&mut w.engine, f, (NOW + 290 + 30) * 1000);
    assert!(!flow.token_cache_hit());
    assert_eq!(denied(step), Reason::Expired);
}

#[test]
fn refuses_when_the_pdp_denies() {
    let mut w = world();
    let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
    let (mut flow, _) = Flow::start(&mut w.engine, f.clone(), NOW_MS);
    let deny = br#"{"allow":false,"policy_id":"default","reason":"no_rule","ttl_s":0}"#;
    let Step::Deny(d) = flow
        .pdp_answered(&mut w.engine, Some(200), deny, NOW_MS)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!((d.reason, d.status), (Reason::PolicyDenied, 403));
    assert!(d.body.contains("\"error\":\"access_denied\""));
    let (mut flow, _) = Flow::start(&mut w.engine, f, NOW_MS);
    let scope = br#"{"allow":false,"policy_id":"p","reason":"missing_scope","ttl_s":0}"#;
    let Step::Deny(d) = flow
        .pdp_answered(&mut w.engine, Some(200), scope, NOW_MS)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(d.reason, Reason::InsufficientScope);
    assert!(d.body.contains("\"error\":\"insufficient_scope\""));
    assert!(d.body.contains("\"reason\":\"policy_denied\""));
}

#[test]
fn answers_503_when_the_pdp_is_unavailable() {
    let mut w = world();
    let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
    let (mut flow, _) = Flow::start(&mut w.engine, f, NOW_MS);
    let Step::Deny(d) = flow.pdp_answered(&mut w.engine, None, b"", NOW_MS).unwrap() else {
        panic!()
    };
    assert_eq!((d.reason, d.status), (Reason::PdpUnavailable, 503));
    assert!(d.headers.contains(&("retry-after", "5".into())));
}

#[test]
fn a_late_or_repeated_callback_is_ignored() {
    let mut w = world();
    let (mut flow, _) = full_allow(&mut w, NOW_MS);
    assert_eq!(
        flow.pdp_answered(&mut w.engine, Some(200), PDP_ALLOW, NOW_MS),
        None
    );
    assert_eq!(flow.resume_jwks(&mut w.engine, NOW_MS), None);
}

#[test]
fn waits_for_the_first_jwks_then_resumes() {
    let mut engine = Engine::new(config(|_| {}));
    let consumer = cert(&[CONSUMER]);
    let f = facts(&consumer, bearer_of(&token_bound_to(&consumer.0)));
    let (mut flow, step) = Flow::start(&mut engine, f, NOW_MS);
    assert_eq!(
        step,
        Step::FetchJwks {
            kind: FetchKind::Scheduled,
            wait_until_ms: NOW_MS + 5_000
        }
    );
    // A failed fetch: keep waiting.
    assert!(matches!(
        flow.resume_jwks(&mut engine, NOW_MS + 100),
        Some(Step::FetchJwks { .. })
    ));
    engine
        .install_jwks(&jwks_body(&[jwk("k1", RFC7515_X, RFC7515_Y)]), NOW_MS + 200)
        .unwrap();
    assert!(matches!(
        flow.resume_jwks(&mut engine, NOW_MS + 200),
        Some(Step::AskPdp { .. })
    ));
}

#[test]
fn answers_503_when_no_jwks_arrives_in_time() {
    let mut engine = Engine::new(config(|_| {}));
    let consumer = cert(&[CONSUMER]);
    let f = facts(&consumer, bearer_of(&token_bound_to(&consumer.0)));
    let (mut flow, _) = Flow::start(&mut engine, f, NOW_MS);
    let Some(Step::Deny(d)) = flow.resume_jwks(&mut engine, NOW_MS + 5_000) else {
        panic!()
    };
    assert_eq!((d.reason, d.status), (Reason::JwksUnavailable, 503));
    assert!(d.headers.contains(&("retry-after", "5".into())));
}

#[test]
fn an_unknown_kid_asks_for_one_refetch_then_refuses() {
    let mut w = world();
    let mut h = header();
    h["kid"] = "k2".into();
    let mut c = claims();
    c["cnf"] = serde_json::json!({"x5t#S256": CertThumbprint::from_der(&w.consumer.0).to_cnf()});
    let f = facts(&w.consumer, bearer_of(&sign(&h, &c)));
    let (mut flow, step) = Flow::start(&mut w.engine, f, NOW_MS);
    assert!(
        matches!(
            step,
            Step::FetchJwks {
                kind: FetchKind::UnknownKid,
                ..
            }
        ),
        "{step:?}"
    );
    let step = flow.resume_jwks(&mut w.engine, NOW_MS + 10).unwrap();
    assert_eq!(denied(step), Reason::UnknownKid);
}

#[test]
fn a_rotated_key_is_picked_up_by_the_refetch() {
    let mut w = world();
    let mut h = header();
    h["kid"] = "k2".into();
    let mut c = claims();
    c["cnf"] = serde_json::json!({"x5t#S256": CertThumbprint::from_der(&w.consumer.0).to_cnf()});
    let f = facts(&w.consumer, bearer_of(&sign(&h, &c)));
    let (mut flow, _) = Flow::start(&mut w.engine, f, NOW_MS);
    w.engine
        .install_jwks(&jwks_body(&[jwk("k2", RFC7515_X, RFC7515_Y)]), NOW_MS + 5)
        .unwrap();
    assert!(matches!(
        flow.resume_jwks(&mut w.engine, NOW_MS + 10),
        Some(Step::AskPdp { .. })
    ));
}

#[test]
fn a_cached_token_is_refused_once_its_key_is_withdrawn() {
    let mut w = world();
    full_allow(&mut w, NOW_MS);
    w.engine
        .install_jwks(&jwks_body(&[jwk("k9", RFC7515_X, RFC7515_Y)]), NOW_MS + 5)
        .unwrap();
    let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
    let (flow, step) = Flow::start(&mut w.engine, f, NOW_MS + 10);
    assert!(!flow.token_cache_hit());
    assert!(matches!(
        step,
        Step::FetchJwks {
            kind: FetchKind::UnknownKid,
            ..
        }
    ));
}

#[test]
fn refuses_with_jwks_unavailable_once_the_set_is_too_stale() {
    let mut w = world();
    full_allow(&mut w, NOW_MS);
    let f = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
    let (_, step) = Flow::start(&mut w.engine, f, NOW_MS + 3_600_001);
    assert_eq!(denied(step), Reason::JwksUnavailable);
}

#[test]
fn shadow_mode_lets_a_failing_request_pass_without_identity() {
    let mut w = world_with(|c| c["mode"] = "shadow".into());
    let stolen = token_bound_to(&w.consumer.0);
    let f = facts(&w.inventory, bearer_of(&stolen));
    let allow = allowed(Flow::start(&mut w.engine, f, NOW_MS).1);
    assert_eq!(allow.shadowed, Some(Reason::BindingMismatch));
    assert!(allow.headers.is_empty());
    let f = facts(&w.inventory, None);
    assert_eq!(
        allowed(Flow::start(&mut w.engine, f, NOW_MS).1).shadowed,
        Some(Reason::MissingToken)
    );
}

#[test]
fn shadow_mode_still_sets_identity_when_everything_passes() {
    let mut w = world_with(|c| c["mode"] = "shadow".into());
    let (_, allow) = full_allow(&mut w, NOW_MS);
    assert_eq!(allow.shadowed, None);
    assert_eq!(allow.headers.len(), 4);
}

#[test]
fn peer_identity_is_parsed_once_per_certificate() {
    let mut w = world();
    let (der, pem) = w.consumer.clone();
    let hex: String = CertThumbprint::from_der(&der)
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut reads = 0;
    for _ in 0..3 {
        let id = w.engine.peer_identity(true, Some(&hex), || {
            reads += 1;
            (Some(pem.clone()), None)
        });
        assert_eq!(id.spiffe_id().unwrap().as_str(), CONSUMER);
    }
    assert_eq!(reads, 1);
    let none = w
        .engine
        .peer_identity(false, Some(&hex), || panic!("not read without mTLS"));
    assert_eq!(none, PeerIdentity::default());
}

/// The consumer's certificate valid from `NOW - 60` until `not_after_s`: (DER, PEM).
fn consumer_cert_until(not_after_s: u64) -> (Vec<u8>, String) {
    consumer_cert_between(NOW - 60, not_after_s)
}

fn consumer_cert_between(not_before_s: u64, not_after_s: u64) -> (Vec<u8>, String) {
    use rcgen::{CertificateParams, KeyPair, SanType};
    let at = |s: u64| rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(s);
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::URI(CONSUMER.try_into().unwrap())];
    params.not_before = at(not_before_s);
    params.not_after = at(not_after_s);
    let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
    (cert.der().to_vec(), cert.pem())
}

#[test]
fn refuses_a_certificate_past_its_validity_even_with_token_and_decision_cached() {
    let mut w = world();
    w.consumer = consumer_cert_until(NOW + 10);
    // Admitted while the certificate is valid, up to and including its last second.
    full_allow(&mut w, NOW_MS);
    let request = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
    let (flow, step) = Flow::start(&mut w.engine, request.clone(), (NOW + 10) * 1000 + 999);
    assert!(flow.decision_cache_hit());
    allowed(step);
    // One second later the same connection (a resumed TLS session) is refused.
    let (flow, step) = Flow::start(&mut w.engine, request, (NOW + 11) * 1000);
    assert!(flow.token_cache_hit());
    let Step::Deny(d) = step else {
        panic!("{step:?}")
    };
    assert_eq!((d.reason, d.status), (Reason::CertificateExpired, 401));
    assert!(d.body.contains("\"error\":\"invalid_token\""), "{}", d.body);
}

#[test]
fn refuses_a_certificate_not_yet_valid() {
    let mut w = world();
    w.consumer = consumer_cert_between(NOW + 1, NOW + 600);
    let request = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
    let (_, step) = Flow::start(&mut w.engine, request, NOW_MS + 999);
    assert_eq!(denied(step), Reason::CertificateExpired);
}

#[test]
fn refuses_a_connection_whose_certificate_window_is_unknown() {
    let mut w = world();
    let hex: String = CertThumbprint::from_der(&w.consumer.0)
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut request = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
    // Envoy's digest and URI SAN, but no PEM: the binding holds, the window is unknown.
    request.peer = PeerIdentity::from_envoy(true, Some(&hex), None, Some(CONSUMER));
    let (_, step) = Flow::start(&mut w.engine, request, NOW_MS);
    assert_eq!(denied(step), Reason::CertificateExpired);
}

#[test]
fn binding_is_checked_before_the_certificate_window() {
    let mut w = world();
    w.consumer = consumer_cert_until(NOW - 1);
    let stolen = token_bound_to(&w.inventory.0);
    let request = facts(&w.consumer, bearer_of(&stolen));
    assert_eq!(
        denied(Flow::start(&mut w.engine, request, NOW_MS).1),
        Reason::BindingMismatch
    );
}

#[test]
fn reserved_headers_include_case_and_underscore_variants() {
    for name in [
        "x-certbind-subject",
        "X-Certbind-Subject",
        "x_certbind_subject",
        "X_CERTBIND_SCOPE",
        "x-certbind_jti",
        "x_certbind-",
    ] {
        assert!(is_reserved_header(name.as_bytes()), "{name}");
    }
}

#[test]
fn other_headers_are_not_reserved() {
    for name in [
        "x-certbind",
        "x-certbindsubject",
        "xx-certbind-subject",
        "x-request-id",
        "authorization",
        "",
    ] {
        assert!(!is_reserved_header(name.as_bytes()), "{name}");
    }
}

#[test]
fn source_ip_drops_the_port() {
    assert_eq!(source_ip("127.0.0.1:5678"), "127.0.0.1");
    assert_eq!(source_ip("[::1]:5678"), "::1");
    assert_eq!(source_ip("10.0.0.1"), "10.0.0.1");
    assert_eq!(source_ip("::1"), "::1");
}

#[test]
fn verifies_tokens_through_the_host_once_probed() {
    let host = Rc::new(ReferenceHost::default());
    let mut w = world();
    assert!(!w.engine.host_signatures());
    w.engine.use_host_signatures(Box::new(Rc::clone(&host)));
    assert!(w.engine.host_signatures());
    full_allow(&mut w, NOW_MS);
    let again = facts(&w.consumer, bearer_of(&token_bound_to(&w.consumer.0)));
    allowed(Flow::start(&mut w.engine, again, NOW_MS).1);
    assert_eq!(
        host.calls.get(),
        1,
        "verified once, then from the token cache"
    );
    let mut forged = token_bound_to(&w.inventory.0);
    forged.replace_range(forged.len() - 3.., "AAA");
    let f = facts(&w.inventory, bearer_of(&forged));
    assert_eq!(
        denied(Flow::start(&mut w.engine, f, NOW_MS).1),
        Reason::BadSignature
    );
    assert_eq!(host.calls.get(), 2);
}
