//! Turns an operator's request to revoke into the row to write: the value in its canonical
//! form, the reason checked, and the expiry rules of the module above (`revocation`). Pure:
//! no store, no clock of its own.

use crate::quota::{CLOCK_SKEW_MARGIN, MAX_TOKEN_TTL};
use crate::store::{NewRevocation, Row};
use certbind_core::binding::{CertThumbprint, SpiffeId};
use certbind_core::revocation::Kind;

/// Longest reason accepted.
pub const MAX_REASON_LEN: usize = 200;

/// What an operator (admin API or CLI) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: Kind,
    pub value: String,
    pub reason: Option<String>,
    /// `subject`/`cert` only: when the revocation ends (Unix seconds).
    pub expires_at: Option<u64>,
    /// `subject` only: lift an existing ban instead of revoking.
    pub lift: bool,
}

/// Why a request was refused (a fixed description, safe to send).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The canonical value of `kind`: a SPIFFE ID as parsed, a thumbprint in its `cnf` form (from
/// base64url or Envoy's 64 hex digits), a `jti` as given.
pub fn canonical_value(kind: Kind, value: &str) -> Result<String, Invalid> {
    match kind {
        Kind::Jti if certbind_core::revocation::valid_value(Kind::Jti, value) => {
            Ok(value.to_owned())
        }
        Kind::Jti => Err(Invalid("a jti is 1..=256 printable ASCII characters")),
        Kind::Subject => SpiffeId::parse(value)
            .map(|id| id.as_str().to_owned())
            .map_err(|_| Invalid("the subject is not a valid SPIFFE ID")),
        Kind::Cert => CertThumbprint::from_cnf(value)
            .or_else(|_| CertThumbprint::from_hex(value))
            .map(|t| t.to_cnf())
            .map_err(|_| {
                Invalid("the certificate thumbprint is not base64url x5t#S256 or 64 hex digits")
            }),
    }
}

fn check_reason(reason: Option<&str>) -> Result<String, Invalid> {
    match reason {
        None => Ok("unspecified".to_owned()),
        Some(r)
            if !r.is_empty()
                && r.len() <= MAX_REASON_LEN
                && r.bytes().all(|b| (0x20..=0x7e).contains(&b)) =>
        {
            Ok(r.to_owned())
        }
        Some(_) => Err(Invalid("reason is 1..=200 printable ASCII characters")),
    }
}

/// Plans the row for `req` at `now`; `existing` is the current row of the same key.
pub fn plan(req: &Request, now: u64, existing: Option<&Row>) -> Result<NewRevocation, Invalid> {
    let value = canonical_value(req.kind, &req.value)?;
    let reason = check_reason(req.reason.as_deref())?;
    let after_last_token = |from: u64| {
        from.saturating_add(MAX_TOKEN_TTL)
            .saturating_add(CLOCK_SKEW_MARGIN)
    };
    if req.expires_at.is_some_and(|e| e <= now) {
        return Err(Invalid("expires_at must be in the future"));
    }
    if req.lift {
        if req.kind != Kind::Subject {
            return Err(Invalid("only a subject ban can be lifted"));
        }
        let Some(row) = existing.filter(|r| r.entry.banned && r.live(now)) else {
            return Err(Invalid("the subject is not banned"));
        };
        let since = row.entry.not_before_iat.unwrap_or(row.entry.revoked_at);
        return Ok(NewRevocation {
            kind: Kind::Subject,
            value,
            reason,
            revoked_at: row.entry.revoked_at,
            not_before_iat: Some(since),
            expires_at: Some(after_last_token(since)),
            banned: false,
            client_id: None,
        });
    }
    let (not_before_iat, expires_at, banned) = match req.kind {
        Kind::Jti if req.expires_at.is_some() => {
            return Err(Invalid("a jti revocation lasts as long as a token can"));
        }
        Kind::Jti => (None, Some(after_last_token(now)), false),
        Kind::Subject => (
            Some(now),
            req.expires_at.map(|e| e.max(after_last_token(now))),
            true,
        ),
        Kind::Cert => (None, req.expires_at, true),
    };
    Ok(NewRevocation {
        kind: req.kind,
        value,
        reason,
        revoked_at: now,
        not_before_iat,
        expires_at,
        banned,
        client_id: None,
    })
}
