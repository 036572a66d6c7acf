//! DPoP (RFC 9449) as a client does it: one proof key per workload run, and a fresh proof —
//! signed by that key, for one method and URL, with the `ath` of the token it goes with — for
//! every request. Attack rows build their broken proofs from the same pieces.

use crate::forge::{self, EcKey, ForgeError};
use serde_json::{Value, json};

/// The proof header for `key`: `typ` dpop+jwt, ES256, its public `jwk` (RFC 9449 §4.2).
pub fn header(key: &EcKey) -> Result<Value, ForgeError> {
    let mut jwk = key.public_jwk()?;
    // Only the public key members: the proof key has no `kid` anyone looks up.
    if let Some(map) = jwk.as_object_mut() {
        map.retain(|name, _| matches!(name.as_str(), "kty" | "crv" | "x" | "y"));
    }
    Ok(json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}))
}

/// Fresh claims for `method` `htu` (a random `jti`, `iat` now) and, for a resource request,
/// `ath` = base64url(SHA-256(`access_token`)).
pub fn claims(method: &str, htu: &str, access_token: Option<&str>) -> Result<Value, ForgeError> {
    let mut claims = json!({
        "jti": forge::random_id()?, "htm": method, "htu": htu, "iat": forge::now(),
    });
    if let Some(token) = access_token {
        claims["ath"] = certbind_core::dpop::access_token_hash(token).into();
    }
    Ok(claims)
}

/// A fresh, valid proof.
pub fn proof(
    key: &EcKey,
    method: &str,
    htu: &str,
    access_token: Option<&str>,
) -> Result<String, ForgeError> {
    Ok(forge::es256(
        &header(key)?,
        &claims(method, htu, access_token)?,
        key,
    ))
}

/// `https://host:port` + `path` without its query: the `htu` of a request to `origin`.
pub fn htu(origin: &str, path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    format!("{}{path}", origin.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use certbind_core::dpop::{ProofCheck, ProofWindow, access_token_hash, verify_proof};

    #[test]
    fn a_proof_passes_the_filters_own_check_and_binds_to_the_key() {
        let key = EcKey::generate().unwrap();
        let p = proof(
            &key,
            "GET",
            "https://127.0.0.1:8445/orders/1",
            Some("t.o.k"),
        )
        .unwrap();
        let ath = access_token_hash("t.o.k");
        let check = ProofCheck {
            method: "GET",
            htu: "https://127.0.0.1:8445/orders/1",
            now_s: forge::now(),
            window: ProofWindow {
                max_age_s: 60,
                clock_skew_s: 5,
            },
            ath: Some(&ath),
            jkt: Some(key.kid()),
            nonces: &[],
        };
        assert_eq!(verify_proof(&p, &check).unwrap().jkt(), key.kid());
        let other = access_token_hash("other");
        let check = ProofCheck {
            ath: Some(&other),
            ..check
        };
        assert!(verify_proof(&p, &check).is_err());
    }

    #[test]
    fn htu_drops_the_query() {
        assert_eq!(
            htu("https://127.0.0.1:8445/", "/orders/1?x=1"),
            "https://127.0.0.1:8445/orders/1"
        );
    }

    #[test]
    fn the_header_carries_only_the_public_key() {
        let h = header(&EcKey::generate().unwrap()).unwrap();
        let mut names: Vec<&str> = h["jwk"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["crv", "kty", "x", "y"]);
    }
}
