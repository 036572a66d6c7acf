//! The bodies of the cargo-fuzz targets, one function per target, each taking arbitrary bytes.
//! A target passes an input when it returns: every refusal is an error value, never a panic.
//! The same functions replay the committed seeds on stable (`tests/tests/fuzz_seeds.rs`), so
//! the targets cannot rot between fuzzing runs.

use certbind_core::binding::{CertThumbprint, PeerIdentity, SpiffeId, cert_pem_to_der};
use certbind_core::cert_reference;
use certbind_core::config::FilterConfig;
use certbind_core::decision::DecisionRequest;
use certbind_core::dpop::{ProofCheck, ProofWindow, access_token_hash, verify_proof};
use certbind_core::jwks::KeySet;
use certbind_core::revocation::{RevocationSet, parse_feed};
use certbind_core::token::{
    CertificateConfirmation, Claims, Confirmation, DpopKeyConfirmation, Expectations,
    MAX_TOKEN_BYTES, VerifiedToken, authorization_token, decode_metadata, encode,
    verify_access_token, verify_issued,
};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use std::sync::OnceLock;

/// RFC 7515 Appendix A.3's P-256 key, the one the fixed JWKS publishes (`kid` "a3").
const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"a3","use":"sig","alg":"ES256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

/// The demo policy, compiled once.
const DEMO_POLICY: &str = include_str!("../../pdp/policies/demo.yaml");

/// A fixed time inside the RFC examples' range, so time checks run both ways.
const NOW_S: u64 = 1_700_000_000;

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// An `Authorization` value or a bare compact JWS, through decoding and the full ES256 check
/// against a fixed JWKS.
pub fn access_token(data: &[u8]) {
    let Some(input) = text(data) else { return };
    let token = match authorization_token(input) {
        Ok((_, t)) => t,
        Err(_) => input,
    };
    let Ok(keys) = KeySet::parse(JWKS.as_bytes()) else {
        return;
    };
    let Ok(jws) = decode_metadata(token) else {
        return;
    };
    let Some(key) = jws.access_token_kid().ok().and_then(|kid| keys.get(kid)) else {
        return;
    };
    let expect = Expectations {
        issuer: "https://authz.certbind.test".into(),
        audience: "spiffe://certbind.test/ns/demo/sa/orders".into(),
        clock_skew_s: 30,
        max_lifetime_s: 600,
    };
    let _ = verify_access_token(jws, key, &expect, NOW_S);
}

/// The issuer of `issued_token`, and its key's `kid`.
const ISSUER: &str = "https://authz.certbind.test";
const ISSUER_KID: &str = "issuer";

/// A fixed P-256 signing key for the issuer side (a test key, nothing else).
fn issuer_key() -> &'static (SigningKey, VerifyingKey) {
    static KEY: OnceLock<(SigningKey, VerifyingKey)> = OnceLock::new();
    KEY.get_or_init(|| {
        let signing = SigningKey::from_slice(&[0x5a; 32]).expect("a valid scalar");
        let verifying = *signing.verifying_key();
        (signing, verifying)
    })
}

/// The one access-token codec as both sides use it. The input, as a token, goes through the
/// issuer's read-back and the filter's verifier. As claims (JSON, or else fields cut from the
/// bytes) it is issued, then read back: the issuer must get exactly those claims, and what the
/// filter admits must say the same.
pub fn issued_token(data: &[u8]) {
    let (signing, verifying) = issuer_key();
    let lookup = |kid: &str| (kid == ISSUER_KID).then_some(verifying);
    if let Some(token) = text(data) {
        let _ = verify_issued(token, lookup, ISSUER, NOW_S);
        if let Ok(jws) = decode_metadata(token) {
            let expect = expectations(ISSUER, "spiffe://certbind.test/ns/demo/sa/orders");
            let _ = verify_access_token(jws, verifying, &expect, NOW_S);
        }
    }
    let claims = serde_json::from_slice::<Claims>(data).unwrap_or_else(|_| claims_from(data));
    let token = encode(&claims, ISSUER_KID, |message| {
        let signature: Signature = signing.sign(message);
        signature.to_bytes().into()
    })
    .expect("claims always serialize");
    // Inside the token's life and within the size bound, the issuer must read it back.
    let now = claims.nbf;
    if now >= claims.exp || token.len() > MAX_TOKEN_BYTES {
        return;
    }
    let read_back =
        verify_issued(&token, lookup, &claims.iss, now).expect("issued, so it verifies");
    assert_eq!(*read_back, claims, "the issuer reads back what it issued");
    let jws = decode_metadata(&token).expect("issued, so it decodes");
    let expect = Expectations {
        max_lifetime_s: u64::MAX,
        clock_skew_s: 0,
        ..expectations(&claims.iss, &claims.aud)
    };
    // The filter may refuse what it never forwards (control characters, long values); what
    // it admits must be what was issued.
    if let Ok(t) = verify_access_token(jws, verifying, &expect, now) {
        assert_same(&t, &claims);
    }
}

fn expectations(issuer: &str, audience: &str) -> Expectations {
    Expectations {
        issuer: issuer.into(),
        audience: audience.into(),
        clock_skew_s: 30,
        max_lifetime_s: 600,
    }
}

/// Claims cut from arbitrary bytes: text fields split at newlines, the binding chosen by the
/// first byte, so the fuzzer reaches the issuer without writing JSON.
fn claims_from(data: &[u8]) -> Claims {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\n').map(str::to_owned);
    let mut next = || fields.next().unwrap_or_default();
    let (iss, sub, client_id, aud, scope, jti, thumbprint) =
        (next(), next(), next(), next(), next(), next(), next());
    let first = data.first().copied().unwrap_or_default();
    let cnf = if first % 2 == 0 {
        Confirmation::Certificate(CertificateConfirmation {
            x5t_s256: thumbprint.clone(),
        })
    } else {
        Confirmation::DpopKey(DpopKeyConfirmation { jkt: next() })
    };
    Claims {
        iss,
        sub,
        client_id,
        aud,
        scope,
        iat: NOW_S,
        nbf: NOW_S,
        exp: NOW_S.saturating_add(u64::from(first)),
        jti,
        cnf,
        client_x5t_s256: thumbprint,
        max_uses: (first % 3 == 0).then(|| u32::try_from(data.len()).unwrap_or(u32::MAX)),
    }
}

/// What the filter's [`VerifiedToken`] carries equals what was issued.
fn assert_same(t: &VerifiedToken, c: &Claims) {
    assert_eq!(t.kid(), ISSUER_KID);
    assert_eq!(
        (t.subject(), t.client_id(), t.scope(), t.jti()),
        (
            c.sub.as_str(),
            c.client_id.as_str(),
            c.scope.as_str(),
            c.jti.as_str()
        )
    );
    assert_eq!((t.iat(), t.exp(), t.max_uses()), (c.iat, c.exp, c.max_uses));
    let (x5t, jkt) = match &c.cnf {
        Confirmation::Certificate(x) => (Some(x.x5t_s256.as_str()), None),
        Confirmation::DpopKey(k) => (None, Some(k.jkt.as_str())),
    };
    assert_eq!((t.cnf_x5t_s256(), t.cnf_jkt()), (x5t, jkt));
    assert_eq!(t.client_x5t_s256(), Some(c.client_x5t_s256.as_str()));
}

/// A JWKS document.
pub fn jwks(data: &[u8]) {
    if let Ok(set) = KeySet::parse(data) {
        let kids: Vec<String> = set.kids().map(str::to_owned).collect();
        for kid in kids {
            let _ = set.get(&kid);
        }
    }
}

/// A revocation feed answer: whatever the feed's streaming reader accepts, the generic strict
/// reader reads as the same document, and a set built from it round-trips through its
/// snapshot for the other VMs.
pub fn revocation_feed(data: &[u8]) {
    let Ok(answer) = parse_feed(data) else {
        return;
    };
    let mut generic: serde_json::Value = certbind_core::json::from_slice_strict(data)
        .expect("the strict generic reader refused what the feed reader accepted");
    // An explicit `"not_before_iat": null` reads as absent, which is how it is written back.
    if let Some(entries) = generic["revocations"].as_array_mut() {
        for entry in entries.iter_mut().filter_map(|e| e.as_object_mut()) {
            if entry
                .get("not_before_iat")
                .is_some_and(serde_json::Value::is_null)
            {
                entry.remove("not_before_iat");
            }
        }
    }
    assert_eq!(
        serde_json::to_value(&answer).ok(),
        Some(generic),
        "the feed reader and the strict generic reader read different documents"
    );
    let mut set = RevocationSet::new();
    if set.apply(answer, NOW_S).is_ok()
        && let Some(snapshot) = set.snapshot_json()
    {
        let mut again = RevocationSet::new();
        again
            .apply_body(&snapshot, NOW_S)
            .expect("a set's own snapshot must be accepted");
        assert_eq!(again, set, "a set must round-trip through its snapshot");
    }
}

/// Certificate and thumbprint handling: the input is tried as Envoy's hex digest, a `cnf`
/// `x5t#S256` value, a SPIFFE ID, a PEM certificate and a DER certificate; wherever the strict
/// certificate walk and x509-cert both read a certificate, they must read the same facts.
pub fn binding(data: &[u8]) {
    let _ = SpiffeId::from_cert_der(data);
    assert!(
        cert_reference::agrees(data),
        "the strict certificate walk and x509-cert read different facts"
    );
    let _ = CertThumbprint::from_der(data).to_cnf();
    let _ = PeerIdentity::from_cert_der(data);
    if let Some(s) = text(data) {
        let _ = CertThumbprint::from_hex(s);
        if let Ok(t) = CertThumbprint::from_cnf(s) {
            assert_eq!(t.to_cnf(), s, "a cnf value must round-trip exactly");
        }
        let _ = SpiffeId::parse(s);
        let _ = SpiffeId::from_cert_pem(s);
        if let Some(der) = certbind_core::cert::pem_to_der(s) {
            assert!(
                cert_reference::agrees(&der),
                "the walk and x509-cert differ"
            );
        }
        let _ = cert_pem_to_der(s);
        let _ = PeerIdentity::from_envoy(true, Some(s), Some(s), Some(s));
    }
}

/// A DPoP proof for a resource request, checked against fixed expectations.
pub fn dpop_proof(data: &[u8]) {
    let Some(proof) = text(data) else { return };
    let ath = access_token_hash("t.o.k");
    let check = ProofCheck {
        method: "GET",
        htu: "https://127.0.0.1:8445/orders/1",
        now_s: NOW_S,
        window: ProofWindow {
            max_age_s: 60,
            clock_skew_s: 5,
        },
        ath: Some(&ath),
        jkt: None,
        nonces: &[],
    };
    let _ = verify_proof(proof, &check);
}

/// The filter's plugin configuration.
pub fn filter_config(data: &[u8]) {
    let _ = FilterConfig::from_json(data);
}

/// A PDP policy document, parsed, validated and compiled.
pub fn pdp_policy(data: &[u8]) {
    let Some(source) = text(data) else { return };
    if let Ok(policy) = certbind_pdp::policy::parse(source, "fuzz.yaml") {
        let _ = certbind_pdp::CompiledPolicy::compile(policy, data);
    }
}

/// A decision request (the PDP's JSON body) decided by the demo policy.
pub fn pdp_decision(data: &[u8]) {
    static POLICY: OnceLock<Option<certbind_pdp::CompiledPolicy>> = OnceLock::new();
    let policy = POLICY.get_or_init(|| {
        certbind_pdp::policy::parse(DEMO_POLICY, "demo.yaml")
            .ok()
            .map(|p| certbind_pdp::CompiledPolicy::compile(p, DEMO_POLICY.as_bytes()))
    });
    let (Some(policy), Ok(request)) = (policy, serde_json::from_slice::<DecisionRequest>(data))
    else {
        return;
    };
    let _ = certbind_pdp::decide(policy, &request, NOW_S);
}
