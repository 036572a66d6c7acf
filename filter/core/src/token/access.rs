//! The access token as a resource server reads it (RFC 9068, any issuer the filter trusts):
//! claims validated against [`Expectations`] after the signature held. A [`VerifiedToken`]
//! exists only when every step passed; only this module builds one.

use super::jws::{Es256Verifier, UntrustedJws, VerifiedJws};
use super::{MAX_AUDIENCES, MAX_CLAIM_LEN, MAX_SCOPES};
use crate::jose;
use crate::json::{JsonError, optional_number, optional_string, present, strict_members, string};
use crate::reason::Reason;
use serde_json::{Number, Value};

/// What a token must say to be accepted here.
#[derive(Debug, Clone)]
pub struct Expectations {
    pub issuer: String,
    pub audience: String,
    pub clock_skew_s: u64,
    /// The longest lifetime accepted (`exp - iat`, and `exp` from now beyond the skew).
    pub max_lifetime_s: u64,
}

enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The claims read, each typed as serde's derive typed an `Option<_>` field (`null` is
/// absent), so a token whose claims have the wrong types is malformed before any other check.
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
    /// `cnf."x5t#S256"` and `cnf.jkt`.
    cnf: (Option<String>, Option<String>),
    /// The certificate the token was issued over (certbind's claim, any binding).
    client_x5t_s256: Option<String>,
    max_uses: Option<Number>,
}

/// The claims read; any other member is only checked (for duplicate keys).
pub(super) const CLAIMS: [&str; 12] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "client_id",
    "scope",
    "cnf",
    "client_x5t#S256",
    "max_uses",
];

impl RawClaims {
    /// The claims of `payload`, in one strict pass (no duplicate key at any depth).
    fn read(payload: &[u8]) -> Result<Self, JsonError> {
        let [
            iss,
            sub,
            aud,
            exp,
            nbf,
            iat,
            jti,
            client_id,
            scope,
            cnf,
            x5t,
            uses,
        ] = strict_members(payload, CLAIMS)?;
        let aud = match present(aud) {
            None => None,
            Some(Value::String(one)) => Some(Audience::One(one)),
            Some(Value::Array(many)) => Some(Audience::Many(
                many.into_iter().map(string).collect::<Result<_, _>>()?,
            )),
            Some(_) => return Err(JsonError("`aud` is neither a string nor an array".into())),
        };
        let cnf = match present(cnf) {
            None => (None, None),
            Some(Value::Object(mut cnf)) => (
                optional_string(cnf.remove("x5t#S256"))?,
                optional_string(cnf.remove("jkt"))?,
            ),
            Some(_) => return Err(JsonError("`cnf` is not an object".into())),
        };
        Ok(Self {
            iss: optional_string(iss)?,
            sub: optional_string(sub)?,
            aud,
            exp: optional_number(exp)?,
            nbf: optional_number(nbf)?,
            iat: optional_number(iat)?,
            jti: optional_string(jti)?,
            client_id: optional_string(client_id)?,
            scope: optional_string(scope)?,
            cnf,
            client_x5t_s256: optional_string(x5t)?,
            max_uses: optional_number(uses)?,
        })
    }
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
    /// `cnf_x5t_s256` decoded, when it is one base64url SHA-256: binding compares these bytes
    /// on every request, so they are decoded once per verified token.
    cnf_x5t_digest: Option<[u8; 32]>,
    cnf_jkt: Option<String>,
    client_x5t_s256: Option<String>,
    /// `client_x5t_s256` decoded (always, when present: a token with any other value is refused).
    client_x5t_digest: Option<[u8; 32]>,
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
    /// `cnf."x5t#S256"` as the digest it names; `None` when absent or not one SHA-256.
    pub fn cnf_x5t_digest(&self) -> Option<&[u8; 32]> {
        self.cnf_x5t_digest.as_ref()
    }
    /// `client_x5t#S256` as the digest it names.
    pub fn client_x5t_digest(&self) -> Option<&[u8; 32]> {
        self.client_x5t_digest.as_ref()
    }

    /// The lifetime checks again, for a token verified earlier (the token cache).
    pub fn check_time(&self, now_s: u64, skew_s: u64) -> Result<(), Reason> {
        check_time(self.exp, self.nbf, now_s, skew_s)
    }
}

pub(super) fn check_time(
    exp: u64,
    nbf: Option<u64>,
    now_s: u64,
    skew_s: u64,
) -> Result<(), Reason> {
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
    let claims = RawClaims::read(jws.payload()).map_err(|_| Reason::MalformedToken)?;
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
    let (cnf_x5t_s256, cnf_jkt) = claims.cnf;
    // A thumbprint that cannot be one could never match a revocation: refuse it.
    let client_x5t_s256 = claims.client_x5t_s256;
    let client_x5t_digest = match client_x5t_s256.as_deref() {
        Some(t) => Some(jose::sha256_b64url(t).ok_or(Reason::MalformedToken)?),
        None => None,
    };
    let cnf_x5t_digest = cnf_x5t_s256.as_deref().and_then(jose::sha256_b64url);
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
        cnf_x5t_digest,
        cnf_jkt,
        client_x5t_s256,
        client_x5t_digest,
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
