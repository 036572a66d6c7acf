//! The binding checks (`bind`, `bind_dpop`) and the test certificates other modules reuse.

use super::*;
use crate::token::tests::{NOW, claims, expect, header, rfc_key, sign};
use crate::token::{decode_metadata, verify_access_token};
use rcgen::{CertificateParams, KeyPair, SanType};

pub(crate) const TRUST_DOMAIN: &str = "certbind.test";
pub(crate) const CONSUMER: &str = "spiffe://certbind.test/ns/demo/sa/consumer";

/// A self-signed certificate with the given URI SANs: (DER, PEM).
pub(crate) fn cert(uris: &[&str]) -> (Vec<u8>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().unwrap()))
        .collect();
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.der().to_vec(), cert.pem())
}

pub(crate) fn token_for(cnf: serde_json::Value, sub: &str) -> Rc<VerifiedToken> {
    let mut c = claims();
    c["cnf"] = cnf;
    c["sub"] = sub.into();
    let jws = sign(&header(), &c);
    Rc::new(
        verify_access_token(decode_metadata(&jws).unwrap(), &rfc_key(), &expect(), NOW).unwrap(),
    )
}

fn cnf_of(der: &[u8]) -> serde_json::Value {
    serde_json::json!({"x5t#S256": CertThumbprint::from_der(der).to_cnf()})
}

fn envoy_peer(der: &[u8], pem: &str) -> PeerIdentity {
    let hex: String = CertThumbprint::from_der(der)
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    PeerIdentity::from_envoy(true, Some(&hex), Some(pem), None)
}

#[test]
fn admits_a_token_bound_to_this_connection_certificate() {
    let (der, pem) = cert(&[CONSUMER]);
    let bound = bind(
        token_for(cnf_of(&der), CONSUMER),
        &envoy_peer(&der, &pem),
        TRUST_DOMAIN,
    )
    .unwrap();
    assert_eq!(bound.subject().as_str(), CONSUMER);
    assert_eq!(bound.token().client_id(), "consumer");
}

#[test]
fn refuses_a_token_without_cnf() {
    let (der, pem) = cert(&[CONSUMER]);
    let peer = envoy_peer(&der, &pem);
    let mut c = claims();
    c.as_object_mut().unwrap().remove("cnf");
    let t = Rc::new(
        verify_access_token(
            decode_metadata(&sign(&header(), &c)).unwrap(),
            &rfc_key(),
            &expect(),
            NOW,
        )
        .unwrap(),
    );
    assert_eq!(bind(t, &peer, TRUST_DOMAIN), Err(Reason::BindingMissing));
    let dpop_only = token_for(
        serde_json::json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}),
        CONSUMER,
    );
    assert_eq!(
        bind(dpop_only, &peer, TRUST_DOMAIN),
        Err(Reason::BindingMissing)
    );
}

#[test]
fn refuses_token_bound_to_other_cert() {
    let (der, pem) = cert(&[CONSUMER]);
    let (other_der, _) = cert(&[CONSUMER]);
    let t = token_for(cnf_of(&other_der), CONSUMER);
    assert_eq!(
        bind(t, &envoy_peer(&der, &pem), TRUST_DOMAIN),
        Err(Reason::BindingMismatch)
    );
}

#[test]
fn refuses_a_malformed_cnf_thumbprint() {
    let (der, pem) = cert(&[CONSUMER]);
    let t = token_for(
        serde_json::json!({"x5t#S256": "not-a-thumbprint"}),
        CONSUMER,
    );
    assert_eq!(
        bind(t, &envoy_peer(&der, &pem), TRUST_DOMAIN),
        Err(Reason::BindingMismatch)
    );
}

#[test]
fn refuses_a_connection_without_client_certificate() {
    let (der, _) = cert(&[CONSUMER]);
    let t = token_for(cnf_of(&der), CONSUMER);
    assert_eq!(
        bind(t.clone(), &PeerIdentity::default(), TRUST_DOMAIN),
        Err(Reason::BindingMismatch)
    );
    let not_mtls = PeerIdentity::from_envoy(false, Some(&"00".repeat(32)), None, Some(CONSUMER));
    assert_eq!(
        bind(t, &not_mtls, TRUST_DOMAIN),
        Err(Reason::BindingMismatch)
    );
}

#[test]
fn refuses_a_subject_other_than_the_certificate_spiffe_id() {
    let (der, pem) = cert(&["spiffe://certbind.test/ns/demo/sa/inventory"]);
    let t = token_for(cnf_of(&der), CONSUMER);
    assert_eq!(
        bind(t, &envoy_peer(&der, &pem), TRUST_DOMAIN),
        Err(Reason::SubjectMismatch)
    );
}

#[test]
fn refuses_a_certificate_from_another_trust_domain() {
    let other = "spiffe://evil.test/ns/demo/sa/consumer";
    let (der, pem) = cert(&[other]);
    let t = token_for(cnf_of(&der), other);
    assert_eq!(
        bind(t, &envoy_peer(&der, &pem), TRUST_DOMAIN),
        Err(Reason::SubjectMismatch)
    );
}

#[test]
fn refuses_a_certificate_with_two_uri_sans() {
    let (der, pem) = cert(&[CONSUMER, "spiffe://certbind.test/ns/demo/sa/admin"]);
    let t = token_for(cnf_of(&der), CONSUMER);
    assert_eq!(
        bind(t, &envoy_peer(&der, &pem), TRUST_DOMAIN),
        Err(Reason::SubjectMismatch)
    );
}

#[test]
fn refuses_facts_that_disagree_about_the_certificate() {
    let (der, pem) = cert(&[CONSUMER]);
    let peer = PeerIdentity::from_envoy(true, Some(&"ab".repeat(32)), Some(&pem), None);
    assert_eq!(peer, PeerIdentity::default());
    let t = token_for(cnf_of(&der), CONSUMER);
    assert_eq!(bind(t, &peer, TRUST_DOMAIN), Err(Reason::BindingMismatch));
}

/// A PEM whose bytes match Envoy's digest but are not exactly one DER certificate (here one
/// with a byte after it) gives the peer no identity at all, not even the thumbprint.
#[test]
fn refuses_a_pem_that_is_not_one_der_certificate() {
    use base64::Engine;
    let (der, _) = cert(&[CONSUMER]);
    let trailing = [der.as_slice(), &[0]].concat();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&trailing);
    let pem = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
    let peer = envoy_peer(&trailing, &pem);
    assert_eq!(peer, PeerIdentity::default());
    let t = token_for(cnf_of(&trailing), CONSUMER);
    assert_eq!(bind(t, &peer, TRUST_DOMAIN), Err(Reason::BindingMismatch));
}

#[test]
fn admits_envoy_digest_and_uri_san_when_no_pem_is_available() {
    let (der, _) = cert(&[CONSUMER]);
    let hex: String = CertThumbprint::from_der(&der)
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let peer = PeerIdentity::from_envoy(true, Some(&hex), None, Some(CONSUMER));
    assert!(bind(token_for(cnf_of(&der), CONSUMER), &peer, TRUST_DOMAIN).is_ok());
    let from_der = PeerIdentity::from_cert_der(&der);
    assert_eq!(from_der.thumbprint(), peer.thumbprint());
    assert_eq!(from_der.spiffe_id(), peer.spiffe_id());
    // Without the certificate itself its validity window is unknown (the flow refuses).
    assert_eq!(peer.validity(), None);
    assert!(from_der.validity().is_some());
}

/// `bind_dpop` with a proof of the tests' proof key and a token bound to that key's `jkt`.
fn dpop_bound(sub: &str, subject: Option<&str>) -> Result<BoundToken, Reason> {
    use crate::dpop_replay::tests::{jkt_of, proof_key, proof_with_jti};
    let proof = proof_with_jti("j-1", NOW);
    let token = token_for(serde_json::json!({"jkt": jkt_of(&proof_key(0x11))}), sub);
    let subject = subject.map(|s| SpiffeId::parse(s).unwrap());
    bind_dpop(token, &proof, subject.as_ref(), TRUST_DOMAIN)
}

#[test]
fn bind_dpop_admits_the_tokens_own_subject_in_the_trust_domain() {
    let bound = dpop_bound(CONSUMER, Some(CONSUMER)).unwrap();
    assert_eq!(bound.subject().as_str(), CONSUMER);
}

#[test]
fn bind_dpop_refuses_a_subject_that_is_not_the_tokens_or_not_ours() {
    // A parsed subject kept for another token binds nothing.
    let other = "spiffe://certbind.test/ns/demo/sa/inventory";
    assert_eq!(
        dpop_bound(CONSUMER, Some(other)).err(),
        Some(Reason::SubjectMismatch)
    );
    // A `sub` that is no SPIFFE ID, or one of another trust domain.
    assert_eq!(
        dpop_bound("consumer", None).err(),
        Some(Reason::SubjectMismatch)
    );
    let foreign = "spiffe://elsewhere.test/ns/demo/sa/consumer";
    assert_eq!(
        dpop_bound(foreign, Some(foreign)).err(),
        Some(Reason::SubjectMismatch)
    );
}
