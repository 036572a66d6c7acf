//! Access tokens as the authz-server issues them (CONTRACT §3): ES256 JWS signed with a p256
//! key, a JWKS that publishes it, and a builder to bend any header field, claim or byte.

use super::certs::Cert;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use certbind_core::binding::ec_p256_jwk_thumbprint;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// One ES256 signing key and its JWK (kid = RFC 7638 thumbprint, as the authz-server does).
#[derive(Clone)]
pub struct Key {
    pub signing: SigningKey,
    pub kid: String,
    pub x: String,
    pub y: String,
}

impl Key {
    /// A key derived from `seed`, so every run (and every randomized case) is reproducible.
    pub fn from_seed(seed: u64) -> Self {
        let mut n = 0u64;
        loop {
            let bytes = Sha256::digest([seed.to_le_bytes(), n.to_le_bytes()].concat());
            if let Ok(signing) = SigningKey::from_slice(&bytes) {
                let point = signing.verifying_key().to_sec1_point(false);
                let raw = point.as_bytes();
                let x = b64(&raw[1..33]);
                let y = b64(&raw[33..65]);
                let kid = ec_p256_jwk_thumbprint(&x, &y);
                return Self { signing, kid, x, y };
            }
            n += 1;
        }
    }

    pub fn jwk(&self) -> Value {
        json!({"kty": "EC", "crv": "P-256", "x": self.x, "y": self.y,
               "kid": self.kid, "alg": "ES256", "use": "sig"})
    }

    pub fn sign(&self, signing_input: &[u8]) -> Vec<u8> {
        let sig: Signature = self.signing.sign(signing_input);
        sig.to_bytes().to_vec()
    }
}

/// `{"keys": [...]}` publishing `keys`.
pub fn jwks(keys: &[&Key]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

/// A token under construction: header and claims as JSON, then signed by `key`.
#[derive(Clone)]
pub struct TokenBuilder {
    pub header: Value,
    pub claims: Value,
    pub key: Key,
}

impl TokenBuilder {
    /// The token the authz-server would issue to `cert` for `audience` at `now_s`.
    pub fn for_cert(key: &Key, cert: &Cert, issuer: &str, audience: &str, now_s: u64) -> Self {
        Self {
            header: json!({"alg": "ES256", "typ": "at+jwt", "kid": key.kid}),
            claims: json!({
                "iss": issuer,
                "sub": cert.spiffe_id(),
                "client_id": cert.name,
                "aud": audience,
                "scope": "orders:read",
                "iat": now_s,
                "nbf": now_s,
                "exp": now_s + 300,
                "jti": format!("{:032x}", now_s as u128 * 0x1_0000_0001 + cert.der.len() as u128),
                "cnf": {"x5t#S256": cert.cnf()},
            }),
            key: key.clone(),
        }
    }

    pub fn claim(mut self, name: &str, value: Value) -> Self {
        self.claims[name] = value;
        self
    }

    pub fn without_claim(mut self, name: &str) -> Self {
        if let Some(o) = self.claims.as_object_mut() {
            o.remove(name);
        }
        self
    }

    pub fn header(mut self, name: &str, value: Value) -> Self {
        self.header[name] = value;
        self
    }

    pub fn signed_by(mut self, key: &Key) -> Self {
        self.key = key.clone();
        self
    }

    pub fn scope(self, scope: &str) -> Self {
        self.claim("scope", json!(scope))
    }

    pub fn jti(self, jti: &str) -> Self {
        self.claim("jti", json!(jti))
    }

    /// `header.payload`, unsigned.
    pub fn signing_input(&self) -> String {
        format!(
            "{}.{}",
            b64(self.header.to_string().as_bytes()),
            b64(self.claims.to_string().as_bytes())
        )
    }

    pub fn build(&self) -> String {
        let input = self.signing_input();
        let sig = self.key.sign(input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }

    /// A correct signature over the token, then one bit of it flipped.
    pub fn build_with_bad_signature(&self) -> String {
        let input = self.signing_input();
        let mut sig = self.key.sign(input.as_bytes());
        sig[10] ^= 0x01;
        format!("{input}.{}", b64(&sig))
    }
}
