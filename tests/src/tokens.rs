//! Token crafting for attacks and claim checks. The JWS pieces (keys, headers, ES256 signing,
//! thumbprints, DPoP proofs) are the demo's (`certbind_demo::forge` and `::dpop`), shared with
//! the attack table; this module adds what only the tests need: the authz-server's real keys
//! read from its state directory, a [`Forge`] that issues tokens the way the authz-server does,
//! and JWS built from parts that are not even base64url.

use crate::Error;
use certbind_demo::forge::{self, ForgeError};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use certbind_demo::dpop::{claims as dpop_claims, header as dpop_header, proof as dpop_proof};
pub use certbind_demo::forge::{
    EcKey, assemble, b64url, cert_thumbprint, es256 as jws, es256_raw as jws_raw, header, now,
};

impl From<ForgeError> for Error {
    fn from(e: ForgeError) -> Self {
        Self::Token(e.0)
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
        .map(|(_, path)| Ok(EcKey::from_pkcs8_pem_file(path)?))
        .collect()
}

/// The authz-server's active (newest) signing key.
pub fn authz_active_key(state_dir: &Path) -> Result<EcKey, Error> {
    authz_keys(state_dir)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Token(format!("no key in {}/keys", state_dir.display())))
}

/// A validly signed JWS over parts given already encoded, even when they are not base64url at
/// all: the signature is right, so only the parsing can refuse it.
pub fn sign_encoded(header_b64: &str, claims_b64: &str, key: &EcKey) -> String {
    let signing_input = format!("{header_b64}.{claims_b64}");
    let signature = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(signature))
}

/// The (unverified) header of a token.
pub fn decode_header(token: &str) -> Result<Value, Error> {
    Ok(forge::decode_part(token, 0)?)
}

/// The (unverified) claims of a token.
pub fn decode_claims(token: &str) -> Result<Value, Error> {
    Ok(forge::decode_part(token, 1)?)
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
        let cnf = cert_thumbprint(&self.pki_dir.join(format!("{client}.crt")))?;
        Ok(forge::claims(&self.issuer, client, service, scope, &cnf)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use certbind_core::binding::ec_p256_jwk_thumbprint;
    use serde_json::json;

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
        let key = EcKey::generate().unwrap();
        let token = sign_encoded(&b64url(r#"{"alg":"ES256"}"#), "!!!", &key);
        assert!(token.starts_with(&format!("{}.!!!.", b64url(r#"{"alg":"ES256"}"#))));
    }

    #[test]
    fn tokens_decode_back_to_their_header_and_claims() {
        let key = EcKey::generate().unwrap();
        let token = jws(&header(key.kid()), &json!({"sub": "x"}), &key);
        assert_eq!(decode_header(&token).unwrap()["kid"], key.kid());
        assert_eq!(decode_claims(&token).unwrap()["sub"], "x");
    }
}
