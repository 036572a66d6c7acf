//! Token crafting for attacks and claim checks: ES256 JWS built by hand, with an attacker's key
//! or with the authz-server's real signing key read from its state directory, so a test can
//! forge exactly the claim (or header, or signature) it wants the filter to refuse.

use crate::{Error, spiffe_id};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use certbind_core::binding::{CertThumbprint, cert_pem_to_der, ec_p256_jwk_thumbprint};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// 128 random bits, base64url: a fresh `jti`.
pub fn random_jti() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::Token(format!("getrandom: {e}")))?;
    Ok(b64url(bytes))
}

/// An EC P-256 signing key with the `kid` it signs under.
#[derive(Clone)]
pub struct EcKey {
    kid: String,
    key: SigningKey,
}

impl std::fmt::Debug for EcKey {
    // Never print the private scalar.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EcKey({})", self.kid)
    }
}

impl EcKey {
    /// A fresh random key (an attacker's), `kid` = its RFC 7638 thumbprint.
    pub fn generate() -> Result<Self, Error> {
        for _ in 0..16 {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| Error::Token(format!("getrandom: {e}")))?;
            if let Ok(key) = SigningKey::from_slice(&bytes) {
                return Self::from_signing(key);
            }
        }
        Err(Error::Token("no valid P-256 scalar after 16 tries".into()))
    }

    /// A PKCS#8 PEM private key file, e.g. the authz-server's `<state>/keys/<kid>.pem`.
    pub fn from_pkcs8_pem_file(path: &Path) -> Result<Self, Error> {
        let pem = std::fs::read_to_string(path)
            .map_err(Error::io(format!("reading {}", path.display())))?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
            Error::Token(format!("{}: not a P-256 PKCS#8 key: {e}", path.display()))
        })?;
        Self::from_signing(key)
    }

    fn from_signing(key: SigningKey) -> Result<Self, Error> {
        let (x, y) = Self::coordinates(&key)?;
        Ok(Self {
            kid: ec_p256_jwk_thumbprint(&x, &y),
            key,
        })
    }

    fn coordinates(key: &SigningKey) -> Result<(String, String), Error> {
        let point = key.verifying_key().to_sec1_point(false);
        match (point.x(), point.y()) {
            (Some(x), Some(y)) => Ok((b64url(x), b64url(y))),
            _ => Err(Error::Token("public key has no affine coordinates".into())),
        }
    }

    /// The same key claiming another `kid` (e.g. the authz-server's real one).
    pub fn with_kid(mut self, kid: &str) -> Self {
        self.kid = kid.to_owned();
        self
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK (for `jwk` header injection attacks).
    pub fn public_jwk(&self) -> Result<Value, Error> {
        let (x, y) = Self::coordinates(&self.key)?;
        Ok(
            json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": self.kid,
                  "use": "sig", "alg": "ES256"}),
        )
    }

    /// ES256 over `message`: the raw 64-byte r‖s of JWS.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let sig: Signature = self.key.sign(message);
        sig.to_bytes().into()
    }
}

/// The authz-server's signing keys in `<state_dir>/keys/*.pem`, newest (the active one) first.
pub fn authz_keys(state_dir: &Path) -> Result<Vec<EcKey>, Error> {
    let dir = state_dir.join("keys");
    let entries =
        std::fs::read_dir(&dir).map_err(Error::io(format!("listing {}", dir.display())))?;
    let mut files: Vec<(SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pem"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    files.sort_by(|a, b| b.cmp(a));
    files
        .iter()
        .map(|(_, path)| EcKey::from_pkcs8_pem_file(path))
        .collect()
}

/// The authz-server's active (newest) signing key.
pub fn authz_active_key(state_dir: &Path) -> Result<EcKey, Error> {
    authz_keys(state_dir)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Token(format!("no key in {}/keys", state_dir.display())))
}

/// The standard header `{"alg":"ES256","typ":"at+jwt","kid":...}`.
pub fn header(kid: &str) -> Value {
    json!({"alg": "ES256", "typ": "at+jwt", "kid": kid})
}

/// `header.payload.signature` from exact JSON texts and any signature bytes (empty for
/// `alg: none`, zeros for a psychic signature, ...).
pub fn assemble(header_json: &str, claims_json: &str, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url(header_json),
        b64url(claims_json),
        b64url(signature)
    )
}

/// A compact ES256 JWS over exact JSON texts (for duplicate keys and other raw tricks).
pub fn jws_raw(header_json: &str, claims_json: &str, key: &EcKey) -> String {
    sign_encoded(&b64url(header_json), &b64url(claims_json), key)
}

/// A validly signed JWS over parts given already encoded, even when they are not base64url at
/// all: the signature is right, so only the parsing can refuse it.
pub fn sign_encoded(header_b64: &str, claims_b64: &str, key: &EcKey) -> String {
    let signing_input = format!("{header_b64}.{claims_b64}");
    let signature = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(signature))
}

/// A compact ES256 JWS of `header` and `claims`, signed by `key`.
pub fn jws(header: &Value, claims: &Value, key: &EcKey) -> String {
    jws_raw(&header.to_string(), &claims.to_string(), key)
}

/// `cnf."x5t#S256"` of a PEM certificate file: the binding a token for its holder carries.
pub fn cert_thumbprint(cert_pem: &Path) -> Result<String, Error> {
    let pem = std::fs::read_to_string(cert_pem)
        .map_err(Error::io(format!("reading {}", cert_pem.display())))?;
    let der =
        cert_pem_to_der(&pem).map_err(|e| Error::Token(format!("{}: {e}", cert_pem.display())))?;
    Ok(CertThumbprint::from_der(&der).to_cnf())
}

fn decode_part(token: &str, index: usize) -> Result<Value, Error> {
    let part = token
        .split('.')
        .nth(index)
        .ok_or_else(|| Error::Token("not a compact JWS".into()))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| Error::Token(format!("part {index}: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Token(format!("part {index}: {e}")))
}

/// The (unverified) header of a token.
pub fn decode_header(token: &str) -> Result<Value, Error> {
    decode_part(token, 0)
}

/// The (unverified) claims of a token.
pub fn decode_claims(token: &str) -> Result<Value, Error> {
    decode_part(token, 1)
}

/// Builds tokens the way the authz-server does, from a key of one's choosing, so a test changes
/// exactly one thing and expects exactly one reason.
#[derive(Debug, Clone)]
pub struct Forge {
    issuer: String,
    pki_dir: PathBuf,
    key: EcKey,
}

impl Forge {
    pub fn new(issuer: &str, pki_dir: &Path, key: EcKey) -> Self {
        Self {
            issuer: issuer.to_owned(),
            pki_dir: pki_dir.to_path_buf(),
            key,
        }
    }

    pub fn key(&self) -> &EcKey {
        &self.key
    }

    /// The same forge signing with another key.
    pub fn with_key(&self, key: EcKey) -> Self {
        Self {
            key,
            ..self.clone()
        }
    }

    /// The claims the authz-server would issue to `client` for `service` with `scope`, bound to
    /// `client`'s own certificate (`<pki>/<client>.crt`), valid from now for 300 s.
    pub fn claims(&self, client: &str, service: &str, scope: &str) -> Result<Value, Error> {
        let now = now();
        Ok(json!({
            "iss": self.issuer,
            "sub": spiffe_id(client),
            "client_id": client,
            "aud": spiffe_id(service),
            "scope": scope,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": random_jti()?,
            "cnf": {"x5t#S256": cert_thumbprint(&self.pki_dir.join(format!("{client}.crt")))?},
        }))
    }

    /// Signs `claims` under the standard header with this forge's key and `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        jws(&header(self.key.kid()), claims, &self.key)
    }

    /// Signs `claims` under any header.
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        jws(header, claims, &self.key)
    }

    /// A token the filter should admit, as `client` to `service`.
    pub fn token(&self, client: &str, service: &str, scope: &str) -> Result<String, Error> {
        Ok(self.sign(&self.claims(client, service, scope)?))
    }
}

// ---------------------------------------------------------------------------------------
// DPoP (RFC 9449)

/// The `DPoP` proof header for `key` (`typ` dpop+jwt, ES256, its public `jwk`).
pub fn dpop_header(key: &EcKey) -> Result<Value, Error> {
    Ok(json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk()?}))
}

/// Fresh proof claims for `method` and `htu` (a random `jti`, `iat` now) and, for a
/// resource request, the `ath` of `access_token`.
pub fn dpop_claims(method: &str, htu: &str, access_token: Option<&str>) -> Result<Value, Error> {
    let mut claims = json!({"jti": random_jti()?, "htm": method, "htu": htu, "iat": now()});
    if let Some(token) = access_token {
        claims["ath"] = certbind_core::dpop::access_token_hash(token).into();
    }
    Ok(claims)
}

/// A fresh, valid proof signed by `key`.
pub fn dpop_proof(
    key: &EcKey,
    method: &str,
    htu: &str,
    access_token: Option<&str>,
) -> Result<String, Error> {
    Ok(jws(
        &dpop_header(key)?,
        &dpop_claims(method, htu, access_token)?,
        key,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::VerifyingKey;
    use p256::ecdsa::signature::Verifier;

    #[test]
    fn forged_es256_tokens_verify_with_the_signing_key_only() {
        let key = EcKey::generate().unwrap();
        let other = EcKey::generate().unwrap();
        let token = jws(&header(key.kid()), &json!({"sub": "x"}), &key);
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
        let vk: &VerifyingKey = key.key.verifying_key();
        assert!(vk.verify(input.as_bytes(), &sig).is_ok());
        assert!(
            other
                .key
                .verifying_key()
                .verify(input.as_bytes(), &sig)
                .is_err()
        );
        assert_eq!(decode_header(&token).unwrap()["kid"], key.kid());
        assert_eq!(decode_claims(&token).unwrap()["sub"], "x");
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint_of_the_public_key() {
        let key = EcKey::generate().unwrap();
        let jwk = key.public_jwk().unwrap();
        let kid = ec_p256_jwk_thumbprint(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap());
        assert_eq!(kid, key.kid());
        assert_eq!(key.clone().with_kid("real").kid(), "real");
    }

    #[test]
    fn raw_parts_keep_exact_bytes() {
        let t = assemble(r#"{"alg":"none"}"#, r#"{"a":1,"a":2}"#, b"");
        assert_eq!(
            t,
            format!(
                "{}.{}.",
                b64url(r#"{"alg":"none"}"#),
                b64url(r#"{"a":1,"a":2}"#)
            )
        );
    }
}
