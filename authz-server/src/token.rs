//! The access token as this server issues it: the claims for a grant, a fresh `jti`, and the
//! active key's signature. The token's shape (RFC 9068 claims bound to the client certificate,
//! RFC 8705, or to a DPoP key, RFC 9449), its encoding and its verification are
//! `certbind_core::token`'s: one codec with the filter. `/introspect` and `/revoke` read tokens
//! back with `certbind_core::token::verify_issued`.

use crate::grant::Grant;
use crate::keys::Key;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
pub use certbind_core::token::{
    CertificateConfirmation, Claims, Confirmation, DpopKeyConfirmation,
};

/// The claims for `grant`, issued at `now` (seconds) for `ttl` seconds, bound to the client
/// certificate (see [`Claims::bound_to_dpop_key`] for a DPoP key).
pub fn claims_for(grant: &Grant, issuer: &str, now: u64, ttl: u64, jti: String) -> Claims {
    Claims {
        iss: issuer.to_owned(),
        sub: grant.subject.as_str().to_owned(),
        client_id: grant.client_id.clone(),
        aud: grant.audience.clone(),
        scope: grant.scope.clone(),
        iat: now,
        nbf: now,
        exp: now.saturating_add(ttl),
        jti,
        cnf: Confirmation::Certificate(CertificateConfirmation {
            x5t_s256: grant.thumbprint.to_cnf(),
        }),
        client_x5t_s256: grant.thumbprint.to_cnf(),
        max_uses: None,
    }
}

/// 128 random bits, base64url: the token's `jti`.
pub fn new_jti() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Signs `claims` with `key` as a compact JWS `header.payload.signature`.
pub fn encode(claims: &Claims, key: &Key) -> Result<String, serde_json::Error> {
    certbind_core::token::encode(claims, key.kid(), |message| key.sign(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeySet, KeyStore};
    use certbind_core::binding::{CertThumbprint, SpiffeId};
    use certbind_core::token::{MAX_TOKEN_BYTES, verify_issued};

    const ISS: &str = "https://127.0.0.1:9443";

    fn grant() -> Grant {
        Grant {
            client_id: "consumer".into(),
            subject: SpiffeId::parse("spiffe://certbind.test/ns/demo/sa/consumer").unwrap(),
            audience: "spiffe://certbind.test/ns/demo/sa/orders".into(),
            scope: "orders:read".into(),
            thumbprint: CertThumbprint::from_der(b"cert"),
        }
    }

    fn keys() -> (tempfile::TempDir, KeySet) {
        let dir = tempfile::tempdir().unwrap();
        let set = KeyStore::open(dir.path()).unwrap().current().unwrap();
        (dir, set)
    }

    /// What `/introspect` and `/revoke` make of a token: core's read-back with our keys.
    fn verify(token: &str, keys: &KeySet, issuer: &str, now: u64) -> Option<Claims> {
        verify_issued(token, |kid| keys.verifying_key(kid), issuer, now)
            .ok()
            .map(|t| t.into_claims())
    }

    fn b64json(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn issues_exactly_the_contract_header_and_claims() {
        let (_d, set) = keys();
        let key = set.active().unwrap();
        let claims = claims_for(&grant(), ISS, 1000, 300, new_jti().unwrap());
        let jws = encode(&claims, key).unwrap();
        let parts: Vec<&str> = jws.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(
            header,
            format!(r#"{{"alg":"ES256","typ":"at+jwt","kid":"{}"}}"#, key.kid())
        );
        let body = b64json(parts[1]);
        let mut names: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "aud",
                "client_id",
                "client_x5t#S256",
                "cnf",
                "exp",
                "iat",
                "iss",
                "jti",
                "nbf",
                "scope",
                "sub"
            ]
        );
        assert_eq!(body["exp"], 1300);
        assert_eq!(body["nbf"], body["iat"]);
        assert_eq!(
            body["cnf"]["x5t#S256"],
            CertThumbprint::from_der(b"cert").to_cnf()
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(body["jti"].as_str().unwrap())
                .unwrap()
                .len(),
            16
        );
    }

    #[test]
    fn a_dpop_bound_token_carries_only_cnf_jkt_and_verifies() {
        let (_d, set) = keys();
        let jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
        let claims =
            claims_for(&grant(), ISS, 1000, 300, new_jti().unwrap()).bound_to_dpop_key(jkt);
        assert_eq!(claims.token_type(), "DPoP");
        let jws = encode(&claims, set.active().unwrap()).unwrap();
        let body = b64json(jws.split('.').nth(1).unwrap());
        assert_eq!(body["cnf"], serde_json::json!({ "jkt": jkt }));
        // The certificate that obtained it is still named, so its revocation reaches it.
        assert_eq!(
            body["client_x5t#S256"],
            CertThumbprint::from_der(b"cert").to_cnf()
        );
        assert_eq!(body.as_object().unwrap().len(), 11);
        assert_eq!(verify(&jws, &set, ISS, 1000), Some(claims));
    }

    #[test]
    fn a_certificate_bound_token_is_a_bearer_token() {
        let claims = claims_for(&grant(), ISS, 1000, 300, new_jti().unwrap());
        assert_eq!(claims.token_type(), "Bearer");
    }

    #[test]
    fn refuses_a_signed_token_whose_cnf_is_not_exactly_one_binding() {
        let (_d, set) = keys();
        let key = set.active().unwrap();
        let claims = claims_for(&grant(), ISS, 1000, 300, new_jti().unwrap());
        let mut body = serde_json::to_value(&claims).unwrap();
        for cnf in [
            serde_json::json!({}),
            serde_json::json!({"x5t#S256": "a", "jkt": "b"}),
            serde_json::json!({"jkt": "b", "extra": 1}),
            serde_json::json!({"jkt": 7}),
        ] {
            body["cnf"] = cnf.clone();
            let mut jws = URL_SAFE_NO_PAD.encode(format!(
                r#"{{"alg":"ES256","typ":"at+jwt","kid":"{}"}}"#,
                key.kid()
            ));
            jws.push('.');
            jws.push_str(&URL_SAFE_NO_PAD.encode(body.to_string()));
            let sig = key.sign(jws.as_bytes());
            jws.push('.');
            jws.push_str(&URL_SAFE_NO_PAD.encode(sig));
            assert_eq!(verify(&jws, &set, ISS, 1000), None, "{cnf}");
        }
    }

    #[test]
    fn jtis_are_unique() {
        let a = new_jti().unwrap();
        let b = new_jti().unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn verifies_a_fresh_token_and_refuses_expired_or_early_ones() {
        let (_d, set) = keys();
        let claims = claims_for(&grant(), ISS, 1000, 300, new_jti().unwrap());
        let jws = encode(&claims, set.active().unwrap()).unwrap();
        assert_eq!(verify(&jws, &set, ISS, 1000), Some(claims.clone()));
        assert_eq!(verify(&jws, &set, ISS, 1299), Some(claims));
        assert_eq!(verify(&jws, &set, ISS, 1300), None);
        assert_eq!(verify(&jws, &set, ISS, 999), None);
        assert_eq!(verify(&jws, &set, "https://other", 1000), None);
    }

    #[test]
    fn refuses_tampered_foreign_or_malformed_tokens() {
        let (_d, set) = keys();
        let (_d2, other) = keys();
        let claims = claims_for(&grant(), ISS, 1000, 300, new_jti().unwrap());
        let jws = encode(&claims, set.active().unwrap()).unwrap();
        let parts: Vec<&str> = jws.split('.').collect();
        // Payload swapped for one with a wider scope, signature kept.
        let mut wider = claims.clone();
        wider.scope = "orders:read orders:write".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wider).unwrap()),
            parts[2]
        );
        // Signed by a key that is not ours but claims our kid.
        let foreign = encode(&claims, other.active().unwrap()).unwrap();
        let foreign_parts: Vec<&str> = foreign.split('.').collect();
        let foreign_with_our_kid = format!("{}.{}.{}", parts[0], parts[1], foreign_parts[2]);
        let alg_none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(format!(
                r#"{{"alg":"none","typ":"at+jwt","kid":"{}"}}"#,
                set.active().unwrap().kid()
            )),
            parts[1]
        );
        let crit = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(format!(
                r#"{{"alg":"ES256","typ":"at+jwt","kid":"{}","crit":["x"]}}"#,
                set.active().unwrap().kid()
            )),
            parts[1],
            parts[2]
        );
        for bad in [
            forged.as_str(),
            foreign.as_str(),
            foreign_with_our_kid.as_str(),
            alg_none.as_str(),
            crit.as_str(),
            "",
            "a.b",
            "a.b.c.d",
            &format!("{jws}."),
            &format!("{jws}x"),
            &"a".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert_eq!(verify(bad, &set, ISS, 1000), None, "accepted {bad}");
        }
    }
}
