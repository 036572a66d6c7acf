//! ES256 access-token verification in a fixed order: bounded split → header (ES256 only,
//! `crit` refused, `typ` at+jwt, `kid` required) → signature → claims. A [`VerifiedToken`]
//! exists only when every step passed; only this module can build one.

use crate::es256::PreparedKey;
use crate::jose;
use crate::json::from_slice_strict;
use crate::reason::Reason;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde::Deserialize;
use serde_json::{Number, Value};

/// Longest token accepted (the whole compact JWS).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest base64url header accepted: a legitimate header is ~60 bytes.
pub const MAX_HEADER_B64: usize = 1024;
/// Most `aud` entries read.
pub const MAX_AUDIENCES: usize = 16;
/// Longest `client_id`, `jti` or `scope` accepted (they become upstream headers).
pub const MAX_CLAIM_LEN: usize = 1024;
/// Most scopes read.
pub const MAX_SCOPES: usize = 64;

/// The token from an `Authorization` value: `Bearer <token>` (scheme case-insensitive).
/// Another scheme, or none, counts as no bearer token at all (RFC 6750 §3.1).
pub fn bearer(authorization: &str) -> Result<&str, Reason> {
    let value = authorization.trim_matches(|c| c == ' ' || c == '\t');
    let scheme = value.split([' ', '\t']).next().unwrap_or_default();
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Reason::MissingToken);
    }
    authorization_token(authorization).map(|(_, token)| token)
}

/// The scheme an access token was presented with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScheme {
    /// `Bearer` (RFC 6750).
    Bearer,
    /// `DPoP` (RFC 9449 §7.1).
    Dpop,
}

/// The scheme and token of an `Authorization` value: `Bearer <token>` or `DPoP <token>`
/// (schemes case-insensitive). Another scheme, or none, counts as no token at all.
pub fn authorization_token(authorization: &str) -> Result<(AuthScheme, &str), Reason> {
    let value = authorization.trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        AuthScheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        AuthScheme::Dpop
    } else {
        return Err(Reason::MissingToken);
    };
    let token = rest.trim_start_matches([' ', '\t']);
    if token.is_empty() || token.contains([' ', '\t']) {
        return Err(Reason::MalformedToken);
    }
    Ok((scheme, token))
}

/// The JOSE header members we read. Others (`jku`, `x5u`, `jwk`, ...) are never used.
#[derive(Deserialize)]
struct RawHeader {
    alg: Option<Value>,
    typ: Option<Value>,
    kid: Option<Value>,
    crit: Option<Value>,
}

/// A compact JWS whose header passed the algorithm checks but whose signature has not been
/// checked: nothing in it may be trusted yet except that it is well-formed.
#[derive(Debug)]
pub struct UntrustedJws<'a> {
    signing_input: &'a str,
    typ: Option<String>,
    kid: Option<String>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

/// Splits and decodes a compact JWS, reading only what selects the verification: the
/// untrusted header. Refuses anything but ES256, and any `crit`.
pub fn decode_metadata(token: &str) -> Result<UntrustedJws<'_>, Reason> {
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(Reason::MalformedToken);
    }
    let mut parts = token.splitn(4, '.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reason::MalformedToken);
    };
    if header_b64.len() > MAX_HEADER_B64 {
        return Err(Reason::MalformedToken);
    }
    let b64 = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| Reason::MalformedToken)
    };
    let header_json = b64(header_b64)?;
    let payload = b64(payload_b64)?;
    let signature = b64(signature_b64)?;
    let header: RawHeader = from_slice_strict(&header_json).map_err(|_| Reason::MalformedToken)?;
    // The token never chooses the algorithm: only ES256 is verified here.
    match header.alg {
        Some(Value::String(alg)) if alg == "ES256" => {}
        Some(Value::String(_)) => return Err(Reason::UnsupportedAlg),
        _ => return Err(Reason::MalformedToken),
    }
    // RFC 7515 §4.1.11: we understand no extension, so any `crit` makes the token unusable.
    if header.crit.is_some() {
        return Err(Reason::MalformedToken);
    }
    let as_string = |v: Option<Value>| match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Reason::MalformedToken),
    };
    let signing_input_len = header_b64.len() + 1 + payload_b64.len();
    Ok(UntrustedJws {
        signing_input: token.get(..signing_input_len).unwrap_or_default(),
        typ: as_string(header.typ)?,
        kid: as_string(header.kid)?,
        payload,
        signature,
    })
}

impl<'a> UntrustedJws<'a> {
    /// The RFC 9068 profile: `typ` must be `at+jwt` (optionally `application/`, any case),
    /// and a `kid` must say which JWKS key signs. Returns that `kid`.
    pub fn access_token_kid(&self) -> Result<&str, Reason> {
        let typ_ok = self
            .typ
            .as_deref()
            .is_some_and(|typ| jose::is_jwt_type(typ, "at+jwt"));
        if !typ_ok {
            return Err(Reason::WrongType);
        }
        match self.kid.as_deref() {
            Some(kid) if !kid.is_empty() => Ok(kid),
            _ => Err(Reason::MalformedToken),
        }
    }

    /// Checks the ES256 signature (raw `r‖s`, RFC 7518 §3.4) over `header.payload`.
    pub fn verify_signature<K: Es256Verifier + ?Sized>(
        self,
        key: &K,
    ) -> Result<VerifiedJws, Reason> {
        key.verify_es256(self.signing_input.as_bytes(), &self.signature)?;
        Ok(VerifiedJws {
            payload: self.payload,
        })
    }
}

/// ES256: ECDSA P-256 with SHA-256 over `message`, signature as raw `r‖s` (IEEE P1363,
/// 64 bytes). The one place a signature is checked.
pub fn es256_verify(key: &VerifyingKey, message: &[u8], signature: &[u8]) -> Result<(), Reason> {
    let signature = Signature::from_slice(signature).map_err(|_| Reason::BadSignature)?;
    key.verify(message, &signature)
        .map_err(|_| Reason::BadSignature)
}

/// A public key that checks ES256 signatures: a plain key, or a JWKS key with its table.
pub trait Es256Verifier {
    fn verify_es256(&self, message: &[u8], signature: &[u8]) -> Result<(), Reason>;
}

impl Es256Verifier for VerifyingKey {
    fn verify_es256(&self, message: &[u8], signature: &[u8]) -> Result<(), Reason> {
        es256_verify(self, message, signature)
    }
}

impl Es256Verifier for PreparedKey {
    fn verify_es256(&self, message: &[u8], signature: &[u8]) -> Result<(), Reason> {
        if self.verify(message, signature) {
            Ok(())
        } else {
            Err(Reason::BadSignature)
        }
    }
}

/// A JWS whose ES256 signature verified: its payload is authentic, not yet validated.
#[derive(Debug)]
pub struct VerifiedJws {
    payload: Vec<u8>,
}

impl VerifiedJws {
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// What a token must say to be accepted here.
#[derive(Debug, Clone)]
pub struct Expectations {
    pub issuer: String,
    pub audience: String,
    pub clock_skew_s: u64,
    /// The longest lifetime accepted (`exp - iat`, and `exp` from now beyond the skew).
    pub max_lifetime_s: u64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawCnf {
    #[serde(rename = "x5t#S256")]
    x5t_s256: Option<String>,
    jkt: Option<String>,
}

#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<Number>,
    nbf: Option<Number>,
    iat: Option<Number>,
    jti: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    cnf: Option<RawCnf>,
    /// The certificate the token was issued over (certbind's claim, any binding).
    #[serde(rename = "client_x5t#S256")]
    client_x5t_s256: Option<String>,
    max_uses: Option<Number>,
}

/// An RFC 7519 NumericDate; negative or non-finite values are malformed.
fn numeric_date(n: &Number) -> Result<u64, Reason> {
    jose::numeric_date(n).ok_or(Reason::MalformedToken)
}

/// The scopes of a `scope` claim (space separated), bounded to [`MAX_SCOPES`].
pub fn split_scopes(scope: &str) -> impl Iterator<Item = &str> {
    scope.split(' ').filter(|s| !s.is_empty()).take(MAX_SCOPES)
}

/// A token whose signature, lifetime, issuer and audience all checked out. Only
/// [`verify_access_token`] builds one; binding it to the connection is `binding`'s job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    kid: String,
    sub: String,
    client_id: String,
    scope: String,
    jti: String,
    iat: u64,
    exp: u64,
    nbf: Option<u64>,
    cnf_x5t_s256: Option<String>,
    cnf_jkt: Option<String>,
    client_x5t_s256: Option<String>,
    max_uses: Option<u32>,
}

impl VerifiedToken {
    /// `max_uses` of a usage-bound token (issue 22): each admission spends one use.
    pub fn max_uses(&self) -> Option<u32> {
        self.max_uses
    }
    pub fn kid(&self) -> &str {
        &self.kid
    }
    pub fn subject(&self) -> &str {
        &self.sub
    }
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
    /// The `scope` claim as issued (space separated).
    pub fn scope(&self) -> &str {
        &self.scope
    }
    /// The scopes, bounded to [`MAX_SCOPES`].
    pub fn scopes(&self) -> Vec<String> {
        split_scopes(&self.scope).map(str::to_owned).collect()
    }
    pub fn jti(&self) -> &str {
        &self.jti
    }
    pub fn iat(&self) -> u64 {
        self.iat
    }
    pub fn exp(&self) -> u64 {
        self.exp
    }
    /// `cnf."x5t#S256"`, unchecked until `binding` compares it.
    pub fn cnf_x5t_s256(&self) -> Option<&str> {
        self.cnf_x5t_s256.as_deref()
    }
    /// `cnf.jkt` (DPoP-bound token).
    pub fn cnf_jkt(&self) -> Option<&str> {
        self.cnf_jkt.as_deref()
    }
    /// `client_x5t#S256`: the certificate the token was issued over (checked to be a
    /// base64url SHA-256 when present), for certificate revocations of DPoP-bound tokens.
    pub fn client_x5t_s256(&self) -> Option<&str> {
        self.client_x5t_s256.as_deref()
    }

    /// The lifetime checks again, for a token verified earlier (the token cache).
    pub fn check_time(&self, now_s: u64, skew_s: u64) -> Result<(), Reason> {
        check_time(self.exp, self.nbf, now_s, skew_s)
    }
}

fn check_time(exp: u64, nbf: Option<u64>, now_s: u64, skew_s: u64) -> Result<(), Reason> {
    if now_s >= exp.saturating_add(skew_s) {
        return Err(Reason::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now_s.saturating_add(skew_s)) {
        return Err(Reason::NotYetValid);
    }
    Ok(())
}

/// Validates the claims of a signature-verified JWS: shape, then `exp`, `nbf`, `iss`, `aud`.
pub fn validate_claims(
    jws: VerifiedJws,
    kid: &str,
    expect: &Expectations,
    now_s: u64,
) -> Result<VerifiedToken, Reason> {
    let claims: RawClaims = from_slice_strict(jws.payload()).map_err(|_| Reason::MalformedToken)?;
    let (Some(iss), Some(sub), Some(aud), Some(exp), Some(iat), Some(jti), Some(client_id)) = (
        claims.iss,
        claims.sub,
        claims.aud,
        claims.exp,
        claims.iat,
        claims.jti,
        claims.client_id,
    ) else {
        return Err(Reason::MalformedToken);
    };
    let exp = numeric_date(&exp)?;
    let iat = numeric_date(&iat)?;
    let nbf = claims.nbf.as_ref().map(numeric_date).transpose()?;
    check_time(exp, nbf, now_s, expect.clock_skew_s)?;
    // A lifetime longer than the issuer ever grants: `exp` is out of range, so `expired`.
    // Both spans count, so a future `iat` cannot stretch the token's remaining life.
    if exp.saturating_sub(iat) > expect.max_lifetime_s
        || exp.saturating_sub(now_s) > expect.max_lifetime_s.saturating_add(expect.clock_skew_s)
    {
        return Err(Reason::Expired);
    }
    if iss != expect.issuer {
        return Err(Reason::WrongIssuer);
    }
    let audience_ok = match &aud {
        Audience::One(one) => *one == expect.audience,
        Audience::Many(many) => many.len() <= MAX_AUDIENCES && many.contains(&expect.audience),
    };
    if !audience_ok {
        return Err(Reason::WrongAudience);
    }
    // These travel to the upstream as header values: printable ASCII only.
    let scope = claims.scope.unwrap_or_default();
    if ![client_id.as_str(), jti.as_str(), scope.as_str()]
        .iter()
        .all(|v| v.len() <= MAX_CLAIM_LEN && jose::is_printable_ascii(v))
    {
        return Err(Reason::MalformedToken);
    }
    // A usage-bound token names a whole number of uses, at least one.
    let max_uses = match claims.max_uses {
        None => None,
        Some(n) => Some(
            n.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or(Reason::MalformedToken)?,
        ),
    };
    let (cnf_x5t_s256, cnf_jkt) = claims
        .cnf
        .map_or((None, None), |cnf| (cnf.x5t_s256, cnf.jkt));
    // A thumbprint that cannot be one could never match a revocation: refuse it.
    let client_x5t_s256 = claims.client_x5t_s256;
    if client_x5t_s256
        .as_deref()
        .is_some_and(|t| URL_SAFE_NO_PAD.decode(t).map_or(true, |d| d.len() != 32))
    {
        return Err(Reason::MalformedToken);
    }
    Ok(VerifiedToken {
        kid: kid.to_owned(),
        sub,
        client_id,
        scope,
        jti,
        iat,
        exp,
        nbf,
        cnf_x5t_s256,
        cnf_jkt,
        client_x5t_s256,
        max_uses,
    })
}

/// The whole check of a token whose header was already decoded and whose `kid`'s key was
/// found: signature, then claims.
pub fn verify_access_token<K: Es256Verifier + ?Sized>(
    jws: UntrustedJws<'_>,
    key: &K,
    expect: &Expectations,
    now_s: u64,
) -> Result<VerifiedToken, Reason> {
    let kid = jws.access_token_kid()?.to_owned();
    let verified = jws.verify_signature(key)?;
    validate_claims(verified, &kid, expect, now_s)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::jwks::ec_p256_key;
    use crate::jwks::tests::{RFC7515_X, RFC7515_Y};
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer;

    /// RFC 7515 Appendix A.3.1: the ES256 JWS, transcribed.
    const RFC7515_A3_JWS: &str = concat!(
        "eyJhbGciOiJFUzI1NiJ9",
        ".",
        "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFt",
        "cGxlLmNvbS9pc19yb290Ijp0cnVlfQ",
        ".",
        "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSA",
        "pmWQxfKTUJqPP3-Kg6NU1Q"
    );
    /// RFC 7515 Appendix A.3.1: the private scalar `d`.
    pub(crate) const RFC7515_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";

    pub(crate) const ISSUER: &str = "https://127.0.0.1:9443";
    pub(crate) const AUDIENCE: &str = "spiffe://certbind.test/ns/demo/sa/orders";
    pub(crate) const SUBJECT: &str = "spiffe://certbind.test/ns/demo/sa/consumer";
    pub(crate) const NOW: u64 = 1_800_000_000;

    pub(crate) fn signing_key() -> SigningKey {
        SigningKey::from_slice(&URL_SAFE_NO_PAD.decode(RFC7515_D).unwrap()).unwrap()
    }

    pub(crate) fn rfc_key() -> VerifyingKey {
        ec_p256_key(RFC7515_X, RFC7515_Y).unwrap()
    }

    pub(crate) fn expect() -> Expectations {
        Expectations {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            clock_skew_s: 30,
            max_lifetime_s: 600,
        }
    }

    pub(crate) fn claims() -> Value {
        serde_json::json!({
            "iss": ISSUER, "sub": SUBJECT, "client_id": "consumer", "aud": AUDIENCE,
            "scope": "orders:read orders:write", "iat": NOW - 10, "nbf": NOW - 10,
            "exp": NOW + 290, "jti": "j-1",
            "cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg0"}
        })
    }

    pub(crate) fn header() -> Value {
        serde_json::json!({"alg":"ES256","typ":"at+jwt","kid":"k1"})
    }

    /// Signs raw header and payload JSON texts with the RFC 7515 key.
    pub(crate) fn sign_raw(header: &str, payload: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let sig: Signature = signing_key().sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    pub(crate) fn sign(header: &Value, claims: &Value) -> String {
        sign_raw(&header.to_string(), &claims.to_string())
    }

    fn check(token: &str) -> Result<VerifiedToken, Reason> {
        check_at(token, NOW)
    }

    fn check_at(token: &str, now: u64) -> Result<VerifiedToken, Reason> {
        let jws = decode_metadata(token)?;
        verify_access_token(jws, &rfc_key(), &expect(), now)
    }

    fn with_claim(name: &str, value: Value) -> String {
        let mut c = claims();
        c[name] = value;
        sign(&header(), &c)
    }

    fn without_claim(name: &str) -> String {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(name);
        sign(&header(), &c)
    }

    fn with_header(name: &str, value: Value) -> String {
        let mut h = header();
        h[name] = value;
        sign(&h, &claims())
    }

    #[test]
    fn rfc7515_a3_signature_verifies_with_its_key() {
        let jws = decode_metadata(RFC7515_A3_JWS).unwrap();
        let verified = jws.verify_signature(&rfc_key()).unwrap();
        assert!(verified.payload().starts_with(b"{\"iss\":\"joe\""));
    }

    #[test]
    fn rfc7515_a3_fails_the_access_token_profile_for_lack_of_typ() {
        let jws = decode_metadata(RFC7515_A3_JWS).unwrap();
        assert_eq!(jws.access_token_kid(), Err(Reason::WrongType));
    }

    #[test]
    fn rfc7515_a3_refused_when_one_bit_of_payload_changes() {
        let tampered = RFC7515_A3_JWS.replacen("eyJpc3MiOiJqb2Ui", "eyJpc3MiOiJqb2Ug", 1);
        let jws = decode_metadata(&tampered).unwrap();
        assert_eq!(
            jws.verify_signature(&rfc_key()).unwrap_err(),
            Reason::BadSignature
        );
    }

    #[test]
    fn admits_a_well_formed_access_token() {
        let t = check(&sign(&header(), &claims())).unwrap();
        assert_eq!(t.subject(), SUBJECT);
        assert_eq!(t.client_id(), "consumer");
        assert_eq!(t.scopes(), ["orders:read", "orders:write"]);
        assert_eq!(t.jti(), "j-1");
        assert_eq!(t.kid(), "k1");
        assert_eq!(t.exp(), NOW + 290);
        assert_eq!(t.iat(), NOW - 10);
        assert!(t.cnf_x5t_s256().is_some());
    }

    #[test]
    fn keeps_the_issuing_certificate_thumbprint_and_refuses_one_that_cannot_be() {
        let mut c = claims();
        let t = URL_SAFE_NO_PAD.encode([7u8; 32]);
        c["client_x5t#S256"] = t.clone().into();
        let v = check(&sign(&header(), &c)).unwrap();
        assert_eq!(v.client_x5t_s256(), Some(t.as_str()));
        for bad in [
            Value::from(URL_SAFE_NO_PAD.encode([7u8; 31])),
            Value::from("not base64!"),
            Value::from(7),
        ] {
            c["client_x5t#S256"] = bad.clone();
            assert_eq!(
                check(&sign(&header(), &c)).unwrap_err(),
                Reason::MalformedToken,
                "{bad}"
            );
        }
    }

    #[test]
    fn bearer_extracts_the_token() {
        assert_eq!(bearer("Bearer abc.def.ghi"), Ok("abc.def.ghi"));
        assert_eq!(bearer("bearer  abc"), Ok("abc"));
        assert_eq!(bearer(" BEARER abc "), Ok("abc"));
    }

    #[test]
    fn bearer_refuses_other_schemes_and_empty_tokens() {
        assert_eq!(bearer(""), Err(Reason::MissingToken));
        assert_eq!(bearer("Basic dXNlcjpwdw=="), Err(Reason::MissingToken));
        assert_eq!(bearer("DPoP abc"), Err(Reason::MissingToken));
        assert_eq!(bearer("Bearerabc"), Err(Reason::MissingToken));
        assert_eq!(bearer("Bearer"), Err(Reason::MalformedToken));
        assert_eq!(bearer("Bearer a b"), Err(Reason::MalformedToken));
    }

    #[test]
    fn authorization_token_reads_the_bearer_and_dpop_schemes() {
        assert_eq!(
            authorization_token("DPoP abc.def.ghi"),
            Ok((AuthScheme::Dpop, "abc.def.ghi"))
        );
        assert_eq!(
            authorization_token("dpop  abc"),
            Ok((AuthScheme::Dpop, "abc"))
        );
        assert_eq!(
            authorization_token("Bearer abc"),
            Ok((AuthScheme::Bearer, "abc"))
        );
        assert_eq!(authorization_token("Basic x"), Err(Reason::MissingToken));
        assert_eq!(authorization_token("DPoP"), Err(Reason::MalformedToken));
        assert_eq!(authorization_token("DPoP a b"), Err(Reason::MalformedToken));
    }

    #[test]
    fn refuses_tokens_that_are_not_three_base64url_parts() {
        let good = sign(&header(), &claims());
        let (h, rest) = good.split_once('.').unwrap();
        for bad in [
            String::new(),
            "a.b".into(),
            format!("{good}.x"),
            format!("{h}.{rest}="),
            format!("{h}+.{rest}"),
            format!("{h}.!{rest}"),
            good.replacen('.', "..", 1),
        ] {
            assert_eq!(
                decode_metadata(&bad).unwrap_err(),
                Reason::MalformedToken,
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_tokens_longer_than_the_bound() {
        let mut c = claims();
        c["pad"] = "x".repeat(MAX_TOKEN_BYTES).into();
        assert_eq!(
            check(&sign(&header(), &c)).unwrap_err(),
            Reason::MalformedToken
        );
    }

    #[test]
    fn admits_a_token_just_under_the_bound() {
        let mut c = claims();
        let base = sign(&header(), &c).len();
        // Each 3 bytes of JSON are 4 of base64url.
        c["pad"] = "x".repeat((MAX_TOKEN_BYTES - base - 20) * 3 / 4).into();
        let token = sign(&header(), &c);
        assert!(token.len() <= MAX_TOKEN_BYTES, "{}", token.len());
        assert!(check(&token).is_ok());
    }

    #[test]
    fn refuses_an_oversized_header() {
        let token = with_header("pad", "x".repeat(MAX_HEADER_B64).into());
        assert_eq!(check(&token).unwrap_err(), Reason::MalformedToken);
    }

    #[test]
    fn refuses_a_header_that_is_not_a_json_object() {
        for header in ["[]", "null", "\"ES256\"", "{", "{\"alg\":\"ES256\"} x"] {
            let token = sign_raw(header, &claims().to_string());
            assert_eq!(
                check(&token).unwrap_err(),
                Reason::MalformedToken,
                "{header}"
            );
        }
    }

    #[test]
    fn refuses_every_algorithm_but_es256() {
        for alg in [
            "none", "HS256", "RS256", "ES384", "ES512", "PS256", "EdDSA", "es256", "ES256K", "",
        ] {
            assert_eq!(
                check(&with_header("alg", alg.into())).unwrap_err(),
                Reason::UnsupportedAlg,
                "{alg}"
            );
        }
    }

    #[test]
    fn refuses_a_missing_or_non_string_alg() {
        let mut h = header();
        h.as_object_mut().unwrap().remove("alg");
        assert_eq!(
            check(&sign(&h, &claims())).unwrap_err(),
            Reason::MalformedToken
        );
        assert_eq!(
            check(&with_header("alg", serde_json::json!(["ES256"]))).unwrap_err(),
            Reason::MalformedToken
        );
    }

    #[test]
    fn refuses_any_crit_header() {
        assert_eq!(
            check(&with_header("crit", serde_json::json!(["exp"]))).unwrap_err(),
            Reason::MalformedToken
        );
        assert_eq!(
            check(&with_header("crit", serde_json::json!([]))).unwrap_err(),
            Reason::MalformedToken
        );
    }

    #[test]
    fn refuses_duplicate_header_members() {
        let token = sign_raw(
            r#"{"alg":"ES256","typ":"at+jwt","kid":"k1","alg":"none"}"#,
            &claims().to_string(),
        );
        assert_eq!(check(&token).unwrap_err(), Reason::MalformedToken);
    }

    #[test]
    fn refuses_wrong_or_missing_typ() {
        for typ in [
            "JWT",
            "jwt",
            "at+jwt2",
            "application/jwt",
            "text/at+jwt",
            "",
        ] {
            assert_eq!(
                check(&with_header("typ", typ.into())).unwrap_err(),
                Reason::WrongType,
                "{typ}"
            );
        }
        let mut h = header();
        h.as_object_mut().unwrap().remove("typ");
        assert_eq!(check(&sign(&h, &claims())).unwrap_err(), Reason::WrongType);
    }

    #[test]
    fn admits_every_spelling_of_the_at_jwt_type() {
        for typ in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+Jwt",
        ] {
            assert!(check(&with_header("typ", typ.into())).is_ok(), "{typ}");
        }
    }

    #[test]
    fn refuses_a_missing_or_empty_kid() {
        let mut h = header();
        h.as_object_mut().unwrap().remove("kid");
        assert_eq!(
            check(&sign(&h, &claims())).unwrap_err(),
            Reason::MalformedToken
        );
        assert_eq!(
            check(&with_header("kid", "".into())).unwrap_err(),
            Reason::MalformedToken
        );
        assert_eq!(
            check(&with_header("kid", 7.into())).unwrap_err(),
            Reason::MalformedToken
        );
    }

    #[test]
    fn refuses_a_signature_by_another_key() {
        let other = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let token = sign(&header(), &claims());
        let input = token.rsplit_once('.').unwrap().0;
        let sig: Signature = other.sign(input.as_bytes());
        let forged = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        assert_eq!(check(&forged).unwrap_err(), Reason::BadSignature);
    }

    #[test]
    fn refuses_a_signature_of_the_wrong_length_or_zero() {
        let token = sign(&header(), &claims());
        let input = token.rsplit_once('.').unwrap().0;
        for sig in [vec![1u8; 63], vec![1u8; 65], vec![0u8; 64], Vec::new()] {
            let bad = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig));
            assert_eq!(check(&bad).unwrap_err(), Reason::BadSignature);
        }
    }

    #[test]
    fn refuses_claims_changed_after_signing() {
        let token = sign(&header(), &claims());
        let parts: Vec<&str> = token.split('.').collect();
        let mut c = claims();
        c["sub"] = "spiffe://certbind.test/ns/demo/sa/attacker".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(c.to_string()),
            parts[2]
        );
        assert_eq!(check(&forged).unwrap_err(), Reason::BadSignature);
    }

    #[test]
    fn refuses_expired_tokens_beyond_the_skew() {
        let token = with_claim("exp", (NOW - 30).into());
        assert_eq!(check(&token).unwrap_err(), Reason::Expired);
        assert!(check(&with_claim("exp", (NOW - 29).into())).is_ok());
    }

    #[test]
    fn refuses_a_token_living_longer_than_the_maximum() {
        // exp - iat = 601 > 600.
        let mut c = claims();
        c["iat"] = (NOW - 10).into();
        c["exp"] = (NOW + 591).into();
        assert_eq!(check(&sign(&header(), &c)).unwrap_err(), Reason::Expired);
        // A future `iat` does not stretch it: exp is 631 s from now (> 600 + 30 skew).
        c["iat"] = (NOW + 100).into();
        c["exp"] = (NOW + 631).into();
        assert_eq!(check(&sign(&header(), &c)).unwrap_err(), Reason::Expired);
        assert_eq!(
            check(&with_claim("exp", serde_json::json!(u64::MAX))).unwrap_err(),
            Reason::Expired
        );
    }

    #[test]
    fn admits_a_token_living_exactly_the_maximum() {
        let mut c = claims();
        c["iat"] = (NOW - 10).into();
        c["exp"] = (NOW + 590).into();
        assert!(check(&sign(&header(), &c)).is_ok());
        c["iat"] = (NOW + 30).into();
        c["exp"] = (NOW + 630).into();
        assert!(check(&sign(&header(), &c)).is_ok());
    }

    #[test]
    fn refuses_tokens_not_yet_valid_beyond_the_skew() {
        assert_eq!(
            check(&with_claim("nbf", (NOW + 31).into())).unwrap_err(),
            Reason::NotYetValid
        );
        assert!(check(&with_claim("nbf", (NOW + 30).into())).is_ok());
        assert!(check(&without_claim("nbf")).is_ok());
    }

    #[test]
    fn admits_fractional_numeric_dates() {
        assert!(
            check(&with_claim(
                "exp",
                serde_json::json!((NOW + 100) as f64 + 0.5)
            ))
            .is_ok()
        );
    }

    #[test]
    fn refuses_non_numeric_or_negative_dates() {
        for v in [
            serde_json::json!("1900000000"),
            serde_json::json!(-1),
            serde_json::json!(null),
        ] {
            assert_eq!(
                check(&with_claim("exp", v.clone())).unwrap_err(),
                Reason::MalformedToken,
                "{v}"
            );
        }
    }

    #[test]
    fn refuses_a_wrong_issuer() {
        for iss in ["https://evil.example", "https://127.0.0.1:9443/", ""] {
            assert_eq!(
                check(&with_claim("iss", iss.into())).unwrap_err(),
                Reason::WrongIssuer
            );
        }
    }

    #[test]
    fn refuses_a_wrong_audience() {
        let billing = "spiffe://certbind.test/ns/demo/sa/billing";
        assert_eq!(
            check(&with_claim("aud", billing.into())).unwrap_err(),
            Reason::WrongAudience
        );
        assert_eq!(
            check(&with_claim("aud", serde_json::json!([billing]))).unwrap_err(),
            Reason::WrongAudience
        );
        assert_eq!(
            check(&with_claim("aud", serde_json::json!([]))).unwrap_err(),
            Reason::WrongAudience
        );
    }

    #[test]
    fn admits_an_audience_array_naming_this_service() {
        let aud = serde_json::json!(["spiffe://certbind.test/ns/demo/sa/billing", AUDIENCE]);
        assert!(check(&with_claim("aud", aud)).is_ok());
    }

    #[test]
    fn refuses_missing_required_claims() {
        for name in ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"] {
            assert_eq!(
                check(&without_claim(name)).unwrap_err(),
                Reason::MalformedToken,
                "{name}"
            );
        }
    }

    #[test]
    fn refuses_claims_that_cannot_be_header_values() {
        for (name, value) in [
            ("client_id", "a\r\nx-certbind-subject: admin"),
            ("jti", "j\u{0}"),
            ("scope", "orders:read\torders:write"),
            ("client_id", "é"),
        ] {
            assert_eq!(
                check(&with_claim(name, value.into())).unwrap_err(),
                Reason::MalformedToken,
                "{name}"
            );
        }
        let long = "x".repeat(MAX_CLAIM_LEN + 1);
        assert_eq!(
            check(&with_claim("jti", long.into())).unwrap_err(),
            Reason::MalformedToken
        );
    }

    #[test]
    fn refuses_duplicate_claims() {
        let payload = claims().to_string().replacen(
            "\"iss\"",
            "\"sub\":\"spiffe://certbind.test/ns/demo/sa/admin\",\"iss\"",
            1,
        );
        let token = sign_raw(&header().to_string(), &payload);
        assert_eq!(check(&token).unwrap_err(), Reason::MalformedToken);
    }

    #[test]
    fn checks_run_in_contract_order() {
        // Expired and from the wrong issuer: expiry is reported first.
        let mut c = claims();
        c["exp"] = (NOW - 100).into();
        c["iss"] = "https://evil.example".into();
        assert_eq!(check(&sign(&header(), &c)).unwrap_err(), Reason::Expired);
        // Wrong type and bad signature: the header is reported first.
        let mut h = header();
        h["typ"] = "JWT".into();
        let token = sign(&h, &claims());
        let bad_sig = format!("{}.{}", token.rsplit_once('.').unwrap().0, "A".repeat(86));
        assert_eq!(check(&bad_sig).unwrap_err(), Reason::WrongType);
    }

    #[test]
    fn cached_token_time_is_rechecked() {
        let t = check(&sign(&header(), &claims())).unwrap();
        assert!(t.check_time(NOW + 290 + 29, 30).is_ok());
        assert_eq!(t.check_time(NOW + 290 + 30, 30), Err(Reason::Expired));
    }
}
