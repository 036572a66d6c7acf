//! The edge listener (`binding: dpop`, RFC 9449): a DPoP-bound token passes with a fresh proof
//! of its key for this request, and is refused as `dpop_invalid` / `dpop_replay` otherwise.

use super::certs::no_client_cert_properties;
use super::scenario::*;
use super::tokens::{Key, TokenBuilder, b64};
use certbind_core::binding::ec_p256_jwk_thumbprint;
use serde_json::json;
use sha2::{Digest, Sha256};

pub(super) const ORIGIN: &str = "https://127.0.0.1:8445";

pub(super) fn edge() -> Sidecar {
    Sidecar::builder()
        .config(|c| {
            c["binding"] = json!("dpop");
            c["dpop"] = json!({"public_origin": ORIGIN});
        })
        .start()
}

/// The client's proof-of-possession key.
pub(super) fn client_key() -> Key {
    Key::from_seed(0xd0b0)
}

/// A token bound to `key` (`cnf.jkt`) for the consumer.
pub(super) fn dpop_token(sidecar: &mut Sidecar, key: &Key) -> String {
    let pki = sidecar.pki.clone();
    sidecar
        .token(&pki.consumer)
        .claim(
            "cnf",
            json!({"jkt": ec_p256_jwk_thumbprint(&key.x, &key.y)}),
        )
        .build()
}

/// A DPoP proof by `key` for `method` and `url`, hashing `token` into `ath`.
pub(super) fn proof(
    sidecar: &Sidecar,
    key: &Key,
    jti: &str,
    method: &str,
    url: &str,
    token: &str,
) -> String {
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": key.x, "y": key.y});
    let builder = TokenBuilder {
        header: json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}),
        claims: json!({
            "jti": jti,
            "htm": method,
            "htu": url,
            "iat": sidecar.now_s(),
            "ath": b64(&Sha256::digest(token.as_bytes())),
        }),
        key: key.clone(),
    };
    builder.build()
}

pub(super) fn send(
    sidecar: &mut Sidecar,
    token: &str,
    proof: Option<&str>,
    scheme: &str,
) -> Exchange {
    let pki = sidecar.pki.clone();
    let mut r = sidecar
        .request_without_token(&pki.consumer)
        .header("authorization", format!("{scheme} {token}"));
    r.properties = no_client_cert_properties();
    if let Some(p) = proof {
        r = r.header("dpop", p);
    }
    r.send()
}

#[test]
fn admits_a_dpop_bound_token_with_a_fresh_proof_and_strips_it() {
    let mut sidecar = edge();
    let key = client_key();
    let token = dpop_token(&mut sidecar, &key);
    let p = proof(
        &sidecar,
        &key,
        "p-1",
        "GET",
        &format!("{ORIGIN}/orders/1"),
        &token,
    );
    let mut ex = send(&mut sidecar, &token, Some(&p), "DPoP");
    let headers = sidecar.verdict(&mut ex).admitted();
    assert_eq!(headers.get(b"dpop"), None, "the proof went upstream");
    assert_eq!(
        headers.get(b"authorization"),
        None,
        "the token went upstream"
    );
    assert_eq!(
        headers.get_str("x-certbind-subject"),
        Some(super::certs::spiffe("consumer"))
    );
}

#[test]
fn refuses_a_dpop_bound_token_without_a_proof() {
    let mut sidecar = edge();
    let key = client_key();
    let token = dpop_token(&mut sidecar, &key);
    let mut ex = send(&mut sidecar, &token, None, "DPoP");
    let reply = sidecar.verdict(&mut ex).answers(401, "dpop_invalid");
    let challenge = reply
        .headers
        .get_str("www-authenticate")
        .unwrap_or_default();
    assert!(challenge.starts_with("DPoP "), "{challenge}");
}

#[test]
fn refuses_a_dpop_bound_token_presented_as_bearer() {
    let mut sidecar = edge();
    let key = client_key();
    let token = dpop_token(&mut sidecar, &key);
    let p = proof(
        &sidecar,
        &key,
        "p-2",
        "GET",
        &format!("{ORIGIN}/orders/1"),
        &token,
    );
    let mut ex = send(&mut sidecar, &token, Some(&p), "Bearer");
    sidecar.verdict(&mut ex).answers(401, "dpop_invalid");
}

#[test]
fn refuses_a_proof_for_another_request_key_or_token() {
    let mut sidecar = edge();
    let key = client_key();
    let token = dpop_token(&mut sidecar, &key);
    let other_token = dpop_token(&mut sidecar, &key);
    let url = format!("{ORIGIN}/orders/1");
    let bad = [
        proof(&sidecar, &key, "b-1", "POST", &url, &token),
        proof(
            &sidecar,
            &key,
            "b-2",
            "GET",
            &format!("{ORIGIN}/billing/1"),
            &token,
        ),
        proof(
            &sidecar,
            &key,
            "b-3",
            "GET",
            "https://evil.example/orders/1",
            &token,
        ),
        proof(&sidecar, &key, "b-4", "GET", &url, &other_token),
        proof(&sidecar, &Key::from_seed(0xbad), "b-5", "GET", &url, &token),
    ];
    for p in bad {
        let mut ex = send(&mut sidecar, &token, Some(&p), "DPoP");
        sidecar.verdict(&mut ex).answers(401, "dpop_invalid");
    }
}

#[test]
fn refuses_a_replayed_proof_even_on_another_worker_vm() {
    let mut sidecar = Sidecar::builder()
        .vms(2)
        .config(|c| {
            c["binding"] = json!("dpop");
            c["dpop"] = json!({"public_origin": ORIGIN});
        })
        .start();
    let key = client_key();
    let token = dpop_token(&mut sidecar, &key);
    let p = proof(
        &sidecar,
        &key,
        "once",
        "GET",
        &format!("{ORIGIN}/orders/1"),
        &token,
    );
    let mut first = send(&mut sidecar, &token, Some(&p), "DPoP");
    sidecar.verdict(&mut first).admitted();
    let pki = sidecar.pki.clone();
    let mut again = sidecar
        .request_without_token(&pki.consumer)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", &p)
        .on_vm(1);
    again.properties = no_client_cert_properties();
    let mut ex = again.send();
    sidecar.verdict(&mut ex).answers(401, "dpop_replay");
}

#[test]
fn refuses_a_proof_older_than_its_max_age() {
    let mut sidecar = edge();
    let key = client_key();
    let token = dpop_token(&mut sidecar, &key);
    let p = proof(
        &sidecar,
        &key,
        "old",
        "GET",
        &format!("{ORIGIN}/orders/1"),
        &token,
    );
    sidecar.advance_s(120);
    let mut ex = send(&mut sidecar, &token, Some(&p), "DPoP");
    sidecar.verdict(&mut ex).answers(401, "dpop_invalid");
}
