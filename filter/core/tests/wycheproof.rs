//! Third-party vectors (C2SP/wycheproof, see `tests/corpora/README.md`) against the one ES256
//! verify of certbind-core, and the Wycheproof JWS file against the whole header → key →
//! signature path: ES256 cases right, every other algorithm refused. Every vector also goes
//! through the host path (r‖s → DER, protobuf arguments) against a native DER verifier, which
//! must give the very same answers.

// Test helpers outside `#[test]` functions: a broken corpus must stop the test loudly.
#![allow(clippy::unwrap_used, clippy::panic)]

use certbind_core::es256::PreparedKey;
use certbind_core::host_es256::{HostKey, p1363_to_der, spki_der};
use certbind_core::host_es256_reference::ReferenceHost;
use certbind_core::jwks::KeySet;
use certbind_core::token::{Es256Verifier, decode_metadata, es256_verify};
use p256::ecdsa::VerifyingKey;
use serde_json::Value;
use std::path::PathBuf;

fn corpus(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpora/wycheproof")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the Wycheproof corpus {} ({e}): it is part of the repository \
             (C2SP/wycheproof commit dac1dd47); restore it with git",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn tests_of(group: &Value) -> &Vec<Value> {
    group["tests"].as_array().unwrap()
}

#[test]
fn all_262_ecdsa_p256_sha256_p1363_vectors() {
    let doc = corpus("ecdsa_secp256r1_sha256_p1363_test.json");
    let (mut valid, mut invalid, mut acceptable) = (0, 0, 0);
    for group in doc["testGroups"].as_array().unwrap() {
        let sec1 = hex::decode(group["publicKey"]["uncompressed"].as_str().unwrap()).unwrap();
        let key = VerifyingKey::from_sec1_bytes(&sec1);
        for t in tests_of(group) {
            let id = &t["tcId"];
            let msg = hex::decode(t["msg"].as_str().unwrap()).unwrap();
            let sig = hex::decode(t["sig"].as_str().unwrap()).unwrap();
            let verdict = key
                .as_ref()
                .map_err(|_| ())
                .and_then(|k| es256_verify(k, &msg, &sig).map_err(|_| ()));
            // The tabulated verifier of JWKS keys must give the very same answer.
            let prepared = key
                .as_ref()
                .map(|k| PreparedKey::new(*k).verify(&msg, &sig));
            assert_eq!(
                prepared.unwrap_or(false),
                verdict.is_ok(),
                "tcId {id}: tabulated verify differs"
            );
            // Through the conversion to DER and a native DER verifier (the host path).
            let host = ReferenceHost::default();
            let via_host = key.as_ref().map(|k| {
                HostKey::new(&host, &spki_der(k))
                    .verify_es256(&msg, &sig)
                    .is_ok()
            });
            assert_eq!(
                via_host.unwrap_or(false),
                verdict.is_ok(),
                "tcId {id}: the host path differs: {}",
                t["comment"]
            );
            // A signature the conversion accepts is the same (r, s) in DER.
            if let Some(der) = p1363_to_der(&sig) {
                let back = p256::ecdsa::Signature::from_der(&der).unwrap();
                assert_eq!(back.to_bytes().as_slice(), sig.as_slice(), "tcId {id}");
            }
            match t["result"].as_str().unwrap() {
                "valid" => {
                    valid += 1;
                    assert!(
                        verdict.is_ok(),
                        "tcId {id} is valid but was refused: {}",
                        t["comment"]
                    );
                }
                "invalid" => {
                    invalid += 1;
                    assert!(
                        verdict.is_err(),
                        "tcId {id} is invalid but verified: {}",
                        t["comment"]
                    );
                }
                _ => acceptable += 1,
            }
        }
    }
    assert_eq!((valid, invalid, acceptable), (173, 89, 0));
}

/// The verdict of certbind's path for one compact JWS with the group's key published as the
/// JWKS: header checks, key selection by `kid`, signature.
fn certbind_verdict(jws: &str, jwks: &Result<KeySet, String>) -> Result<Vec<u8>, String> {
    let keys = jwks.as_ref().map_err(Clone::clone)?;
    let untrusted = decode_metadata(jws).map_err(|r| r.to_string())?;
    let kid = jws_kid(jws).unwrap_or_else(|| keys.kids().next().unwrap_or_default().to_owned());
    let key = keys.get(&kid).ok_or("unknown_kid")?;
    // The same JWS through the host path must get the same answer.
    let host = ReferenceHost::default();
    let via_host = decode_metadata(jws)
        .map_err(|r| r.to_string())?
        .verify_signature(&HostKey::new(&host, key.spki()))
        .map(|v| v.payload().to_vec())
        .map_err(|r| r.to_string());
    let in_module = untrusted
        .verify_signature(key)
        .map(|v| v.payload().to_vec())
        .map_err(|r| r.to_string());
    assert_eq!(via_host, in_module, "the host path differs on {jws}");
    in_module
}

/// The `kid` of the header, read independently of certbind's parser (test bookkeeping only).
fn jws_kid(jws: &str) -> Option<String> {
    use base64::Engine;
    let header = jws.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v["kid"].as_str().map(str::to_owned)
}

/// The group's public key as a one-key JWKS (private members dropped), through certbind's
/// JWKS parser, so keys meant for other uses are refused the way production refuses them.
fn group_jwks(group: &Value) -> Result<KeySet, String> {
    let key = group.get("public").unwrap_or(&group["private"]);
    let mut keys = match key.get("keys") {
        Some(Value::Array(keys)) => keys.clone(),
        _ => vec![key.clone()],
    };
    for jwk in &mut keys {
        let obj = jwk.as_object_mut().unwrap();
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            obj.remove(private);
        }
        obj.entry("kid").or_insert("wycheproof".into());
    }
    let body = serde_json::json!({ "keys": keys }).to_string();
    KeySet::parse(body.as_bytes()).map_err(|e| e.to_string())
}

/// The JWK file: no case publishes a usable ES256 key (wrong `alg`, `use`, curve, `kty`, an
/// invalid point, symmetric keys), so every token in it must be refused.
#[test]
fn wycheproof_jwk_cases_never_yield_a_usable_key_for_a_token() {
    let doc = corpus("json_web_key_test.json");
    let mut count = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        let jwks = group_jwks(group);
        for t in tests_of(group) {
            count += 1;
            let jws = t["jws"].as_str().unwrap_or_default();
            assert!(
                certbind_verdict(jws, &jwks).is_err(),
                "tcId {} ({}) was admitted",
                t["tcId"],
                group["comment"]
            );
        }
    }
    assert_eq!(count, 26);
}

#[test]
fn wycheproof_jws_es256_cases_right_and_every_other_algorithm_refused() {
    let doc = corpus("json_web_signature_test.json");
    let (mut es256_valid, mut es256_invalid, mut others) = (0, 0, 0);
    for group in doc["testGroups"].as_array().unwrap() {
        let jwks = group_jwks(group);
        let comment = group["comment"].as_str().unwrap_or_default();
        let is_es256 = comment == "es256" || comment == "SpecialCaseEs256";
        for t in tests_of(group) {
            let id = &t["tcId"];
            let jws = t["jws"].as_str().unwrap_or_default();
            let verdict = certbind_verdict(jws, &jwks);
            match (is_es256, t["result"].as_str().unwrap()) {
                (true, "valid") => {
                    es256_valid += 1;
                    assert_eq!(verdict.as_deref(), Ok(&b"foo"[..]), "tcId {id} ({comment})");
                }
                (true, _) => {
                    es256_invalid += 1;
                    assert!(
                        verdict.is_err(),
                        "tcId {id} ({comment}) verified: {}",
                        t["comment"]
                    );
                }
                (false, _) => {
                    others += 1;
                    assert!(
                        verdict.is_err(),
                        "tcId {id} ({comment}, not ES256) was admitted: {}",
                        t["comment"]
                    );
                }
            }
        }
    }
    assert_eq!(es256_valid + es256_invalid, 39);
    assert_eq!(es256_valid + es256_invalid + others, 401);
}
