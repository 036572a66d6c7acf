//! Flow tests of a DPoP listener: fresh proofs admitted, replays refused across VMs, proofs
//! that do not match the request or token refused, the DPoP challenge.

use super::*;
use crate::dpop::access_token_hash;
use crate::dpop_replay::tests::{jkt_of, proof_header, proof_key, sign_proof};
use crate::dpop_replay::{MemoryStore, SharedStore, StoreError};
use p256::ecdsa::SigningKey;
use serde_json::{Value, json};
use std::cell::RefCell;

const ORIGIN: &str = "https://orders.example:8445";

/// One host's shared data, seen by several engines (worker VMs).
#[derive(Debug, Clone, Default)]
struct Shared(Rc<RefCell<MemoryStore>>);

impl SharedStore for Shared {
    fn get(&mut self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.0.borrow_mut().get(key)
    }
    fn set(&mut self, key: &str, v: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        self.0.borrow_mut().set(key, v, cas)
    }
}

fn dpop_config(c: &mut Value) {
    c["binding"] = "dpop".into();
    c["dpop"] = json!({"public_origin": ORIGIN});
}

fn vm(shared: &Shared) -> Engine {
    let mut w = world_with(dpop_config);
    w.engine.use_replay_store(Box::new(shared.clone()), [7; 32]);
    w.engine
}

fn key() -> SigningKey {
    proof_key(0x11)
}

fn token_with_cnf(cnf: Value) -> String {
    let mut c = claims();
    c["cnf"] = cnf;
    sign(&header(), &c)
}

fn dpop_token() -> String {
    token_with_cnf(json!({"jkt": jkt_of(&key())}))
}

fn proof_claims(jti: &str, token: &str) -> Value {
    json!({
        "jti": jti, "htm": "GET", "htu": format!("{ORIGIN}/orders/1"),
        "iat": NOW, "ath": access_token_hash(token),
    })
}

fn proof(jti: &str, token: &str) -> String {
    sign_proof(&key(), &proof_header(&key()), &proof_claims(jti, token))
}

fn request(authorization: String, proofs: Vec<String>) -> RequestFacts {
    RequestFacts {
        authorization: Some(authorization),
        request_id: "req-1".into(),
        method: "GET".into(),
        path: "/orders/1?x=1".into(),
        peer: PeerIdentity::default(),
        source_ip: Some("127.0.0.1".into()),
        tls_version: Some("TLSv1.3".into()),
        dpop: proofs,
        local_uri_san: None,
    }
}

fn start(engine: &mut Engine, facts: RequestFacts) -> (Flow, Step) {
    Flow::start(engine, facts, NOW_MS)
}

/// The answer to a request with `token` (as `DPoP`) and one proof with these claims.
fn with_claims(edit: impl FnOnce(&mut Value)) -> (Flow, Step) {
    let token = dpop_token();
    let mut c = proof_claims("j-edit", &token);
    edit(&mut c);
    let p = sign_proof(&key(), &proof_header(&key()), &c);
    start(
        &mut vm(&Shared::default()),
        request(format!("DPoP {token}"), vec![p]),
    )
}

fn refused(step: Step) -> Deny {
    match step {
        Step::Deny(d) => d,
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn admits_a_dpop_bound_token_with_a_fresh_proof() {
    let mut engine = vm(&Shared::default());
    let token = dpop_token();
    let f = request(format!("DPoP {token}"), vec![proof("p-1", &token)]);
    let (mut flow, step) = start(&mut engine, f);
    assert!(matches!(step, Step::AskPdp { .. }), "{step:?}");
    let allow = allowed(
        flow.pdp_answered(&mut engine, Some(200), PDP_ALLOW, NOW_MS)
            .unwrap(),
    );
    assert_eq!(allow.headers[0], (HEADER_SUBJECT, Rc::from(CONSUMER)));
    assert!(allow.remove_authorization);
    assert_eq!(flow.dpop_detail(), None);
}

/// A first proof for `token` (`p-1`), admitted by the PDP: token and decision are cached.
fn cache_token_and_decision(engine: &mut Engine, token: &str) {
    let f = request(format!("DPoP {token}"), vec![proof("p-1", token)]);
    let (mut flow, _) = start(engine, f);
    flow.pdp_answered(engine, Some(200), PDP_ALLOW, NOW_MS);
}

#[test]
fn admits_every_fresh_proof_with_a_cached_token_and_decision() {
    let mut engine = vm(&Shared::default());
    let token = dpop_token();
    cache_token_and_decision(&mut engine, &token);
    let f = request(format!("DPoP {token}"), vec![proof("p-2", &token)]);
    let (flow, step) = start(&mut engine, f);
    assert!(flow.token_cache_hit() && flow.decision_cache_hit());
    allowed(step);
}

#[test]
fn a_flow_resumed_after_waiting_for_revocations_does_not_replay_its_own_proof() {
    let mut w = world_with(|c| {
        dpop_config(c);
        c["revocation"] = json!({"first_sync_wait_ms": 1000});
    });
    w.engine
        .use_replay_store(Box::new(Shared::default()), [7; 32]);
    let token = dpop_token();
    let f = request(format!("DPoP {token}"), vec![proof("p-1", &token)]);
    let (mut flow, step) = start(&mut w.engine, f.clone());
    assert!(matches!(step, Step::AwaitRevocations { .. }), "{step:?}");
    w.engine
        .revocations_mut()
        .unwrap()
        .install(
            br#"{"seq":1,"snapshot":true,"revocations":[]}"#,
            NOW_MS + 10,
        )
        .unwrap();
    let step = flow.resume_jwks(&mut w.engine, NOW_MS + 10).unwrap();
    assert!(matches!(step, Step::AskPdp { .. }), "{step:?}");
    // The proof is still spent for any other request.
    let d = refused(start(&mut w.engine, f).1);
    assert_eq!(d.reason, Reason::DpopReplay);
}

#[test]
fn refuses_a_proof_replayed_on_the_same_or_another_vm() {
    let shared = Shared::default();
    let (mut vm1, mut vm2) = (vm(&shared), vm(&shared));
    let token = dpop_token();
    let f = request(format!("DPoP {token}"), vec![proof("p-1", &token)]);
    assert!(matches!(start(&mut vm1, f.clone()).1, Step::AskPdp { .. }));
    for engine in [&mut vm2, &mut vm1] {
        let (flow, step) = start(engine, f.clone());
        let d = refused(step);
        assert_eq!((d.reason, d.status), (Reason::DpopReplay, 401));
        assert_eq!(flow.dpop_detail(), Some("replayed"));
    }
}

#[test]
fn a_proof_refused_for_another_reason_does_not_use_up_its_jti() {
    let mut engine = vm(&Shared::default());
    let token = dpop_token();
    let mut f = request(format!("DPoP {token}"), vec![proof("p-1", &token)]);
    f.method = "POST".into();
    assert_eq!(
        refused(start(&mut engine, f.clone()).1).reason,
        Reason::DpopInvalid
    );
    f.method = "GET".into();
    assert!(matches!(start(&mut engine, f).1, Step::AskPdp { .. }));
}

#[test]
fn answers_with_the_dpop_challenge() {
    let (_, step) = with_claims(|c| c["htm"] = "POST".into());
    let d = refused(step);
    assert_eq!(d.status, 401);
    assert!(d.headers.contains(&(
        "www-authenticate",
        "DPoP realm=\"certbind\", error=\"invalid_dpop_proof\", error_description=\"dpop_invalid\", algs=\"ES256\"".into()
    )));
    assert!(d.body.contains("\"error\":\"invalid_dpop_proof\""));
    let f = RequestFacts {
        authorization: None,
        ..request(String::new(), Vec::new())
    };
    let d = refused(start(&mut vm(&Shared::default()), f).1);
    assert_eq!(d.reason, Reason::MissingToken);
    assert!(d.headers.contains(&(
        "www-authenticate",
        "DPoP realm=\"certbind\", algs=\"ES256\"".into()
    )));
}

#[test]
fn refuses_proofs_that_do_not_match_the_request_or_token() {
    let mut other = claims();
    other["cnf"] = json!({"jkt": jkt_of(&key())});
    other["jti"] = "j-other".into();
    let other_token = sign(&header(), &other);
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("wrong_method", Box::new(|c| c["htm"] = "DELETE".into())),
        (
            "wrong_uri",
            Box::new(|c| c["htu"] = format!("{ORIGIN}/orders/2").into()),
        ),
        (
            "wrong_uri",
            Box::new(|c| c["htu"] = "https://other.example:8445/orders/1".into()),
        ),
        (
            "missing_ath",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("ath");
            }),
        ),
        (
            "ath_mismatch",
            Box::new(move |c| c["ath"] = access_token_hash(&other_token).into()),
        ),
        ("too_old", Box::new(|c| c["iat"] = (NOW - 66).into())),
        (
            "issued_in_future",
            Box::new(|c| c["iat"] = (NOW + 6).into()),
        ),
    ];
    for (detail, edit) in cases {
        let (flow, step) = with_claims(edit);
        assert_eq!(refused(step).reason, Reason::DpopInvalid, "{detail}");
        assert_eq!(flow.dpop_detail(), Some(detail));
    }
}

#[test]
fn refuses_a_proof_signed_by_a_key_other_than_cnf_jkt() {
    let token = dpop_token();
    let thief = proof_key(0x22);
    let p = sign_proof(&thief, &proof_header(&thief), &proof_claims("p", &token));
    let (flow, step) = start(
        &mut vm(&Shared::default()),
        request(format!("DPoP {token}"), vec![p]),
    );
    assert_eq!(refused(step).reason, Reason::DpopInvalid);
    assert_eq!(flow.dpop_detail(), Some("jkt_mismatch"));
}

#[test]
fn refuses_a_proof_carrying_a_private_key() {
    let token = dpop_token();
    let mut h = proof_header(&key());
    h["jwk"]["d"] = URL_SAFE_NO_PAD_D.into();
    let p = sign_proof(&key(), &h, &proof_claims("p", &token));
    let (flow, step) = start(
        &mut vm(&Shared::default()),
        request(format!("DPoP {token}"), vec![p]),
    );
    assert_eq!(refused(step).reason, Reason::DpopInvalid);
    assert_eq!(flow.dpop_detail(), Some("private_key"));
}

const URL_SAFE_NO_PAD_D: &str = "EREREREREREREREREREREREREREREREREREREREREREE";

#[test]
fn refuses_no_proof_or_two_proofs() {
    let token = dpop_token();
    for (proofs, detail) in [
        (Vec::new(), "no_proof"),
        (vec![proof("a", &token), proof("b", &token)], "many_proofs"),
    ] {
        let (flow, step) = start(
            &mut vm(&Shared::default()),
            request(format!("DPoP {token}"), proofs),
        );
        assert_eq!(refused(step).reason, Reason::DpopInvalid);
        assert_eq!(flow.dpop_detail(), Some(detail));
    }
}

#[test]
fn refuses_a_dpop_bound_token_sent_as_bearer() {
    let token = dpop_token();
    let (flow, step) = start(
        &mut vm(&Shared::default()),
        request(format!("Bearer {token}"), vec![proof("p", &token)]),
    );
    assert_eq!(refused(step).reason, Reason::DpopInvalid);
    assert_eq!(flow.dpop_detail(), Some("bearer_scheme"));
}

#[test]
fn refuses_a_certificate_bound_or_unbound_token() {
    let x5t = token_with_cnf(json!({"x5t#S256": CertThumbprint::from_der(b"c").to_cnf()}));
    let mut unbound = claims();
    unbound.as_object_mut().unwrap().remove("cnf");
    let unbound = sign(&header(), &unbound);
    for (token, reason) in [
        (x5t, Reason::BindingMismatch),
        (unbound, Reason::BindingMissing),
    ] {
        for scheme in ["DPoP", "Bearer"] {
            let f = request(format!("{scheme} {token}"), vec![proof("p", &token)]);
            let d = refused(start(&mut vm(&Shared::default()), f).1);
            assert_eq!(d.reason, reason, "{scheme}");
        }
    }
}

#[test]
fn refuses_a_subject_outside_the_trust_domain() {
    let mut c = claims();
    c["cnf"] = json!({"jkt": jkt_of(&key())});
    c["sub"] = "spiffe://other.test/ns/demo/sa/consumer".into();
    let token = sign(&header(), &c);
    let f = request(format!("DPoP {token}"), vec![proof("p", &token)]);
    let d = refused(start(&mut vm(&Shared::default()), f).1);
    assert_eq!(d.reason, Reason::SubjectMismatch);
}

#[test]
fn the_mtls_listener_refuses_a_dpop_bound_token() {
    let mut w = world();
    let token = dpop_token();
    let mut f = facts(&w.consumer, bearer_of(&token));
    f.dpop = vec![proof("p", &token)];
    assert_eq!(
        denied(Flow::start(&mut w.engine, f.clone(), NOW_MS).1),
        Reason::BindingMissing
    );
    f.authorization = Some(format!("DPoP {token}"));
    assert_eq!(
        denied(Flow::start(&mut w.engine, f, NOW_MS).1),
        Reason::MissingToken
    );
}

#[test]
fn verifies_the_token_and_every_proof_through_the_host_once_probed() {
    let host = Rc::new(ReferenceHost::default());
    let mut engine = vm(&Shared::default());
    engine.use_host_signatures(Box::new(Rc::clone(&host)));
    let token = dpop_token();
    let f = request(format!("DPoP {token}"), vec![proof("h-1", &token)]);
    let (mut flow, _) = start(&mut engine, f);
    allowed(
        flow.pdp_answered(&mut engine, Some(200), PDP_ALLOW, NOW_MS)
            .unwrap(),
    );
    assert_eq!(host.calls.get(), 2, "one token and one proof");
    let mut forged = proof("h-2", &token);
    forged.replace_range(forged.len() - 3.., "AAA");
    let (flow, step) = start(&mut engine, request(format!("DPoP {token}"), vec![forged]));
    assert_eq!(refused(step).reason, Reason::DpopInvalid);
    assert_eq!(flow.dpop_detail(), Some("bad_signature"));
    assert_eq!(
        host.calls.get(),
        3,
        "the cached token is not verified again"
    );
}

#[test]
fn a_cached_tokens_remembered_ath_still_refuses_a_proof_made_for_another_token() {
    let mut engine = vm(&Shared::default());
    let token = dpop_token();
    cache_token_and_decision(&mut engine, &token);
    let mut c = proof_claims("p-2", &token);
    c["ath"] = access_token_hash("another.token.here").into();
    let p = sign_proof(&key(), &proof_header(&key()), &c);
    let (flow, step) = start(&mut engine, request(format!("DPoP {token}"), vec![p]));
    assert!(flow.token_cache_hit());
    assert_eq!(refused(step).reason, Reason::DpopInvalid);
    assert_eq!(flow.dpop_detail(), Some("ath_mismatch"));
    // The token's own hash, remembered, still admits its next proof.
    let f = request(format!("DPoP {token}"), vec![proof("p-3", &token)]);
    allowed(start(&mut engine, f).1);
}
