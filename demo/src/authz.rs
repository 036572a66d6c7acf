//! Talking to the authz-server as a workload: `POST /token` over mTLS (RFC 8705
//! `tls_client_auth`), `GET /.well-known/jwks.json`, and a token cache that refreshes a token
//! before it expires or after a 401 (the refresh rule is pure and tested without a socket).

use crate::client::{ClientError, HttpsClient, Request};
use crate::forge::{self, EcKey, spiffe_id};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

/// Why no token (or JWKS) came back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthzError {
    /// No HTTP answer at all.
    Client(ClientError),
    /// The authz-server refused (`status`, OAuth `error` code or body excerpt).
    Refused { status: u16, error: String },
    /// It answered 200 with something that is not a token response / JWKS.
    BadAnswer(String),
}

impl fmt::Display for AuthzError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Client(e) => write!(f, "authz-server unreachable: {e}"),
            Self::Refused { status, error } => write!(f, "authz-server refused: {status} {error}"),
            Self::BadAnswer(e) => write!(f, "authz-server answered garbage: {e}"),
        }
    }
}

impl std::error::Error for AuthzError {}

impl From<ClientError> for AuthzError {
    fn from(e: ClientError) -> Self {
        Self::Client(e)
    }
}

/// An access token as issued, with when it stops being usable (local clock).
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub access_token: String,
    pub scope: String,
    /// Seconds since the epoch when we asked for it.
    pub issued_at: u64,
    /// Lifetime the server announced (`expires_in`).
    pub expires_in: u64,
}

impl fmt::Debug for IssuedToken {
    // Never print the token itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IssuedToken(scope={:?}, expires_in={})",
            self.scope, self.expires_in
        )
    }
}

impl IssuedToken {
    /// Whether to fetch a new one at `now`: once 80% of the lifetime has passed, and always in
    /// the last 10 s, so a call never leaves with a token about to expire on the way.
    pub fn needs_refresh(&self, now: u64) -> bool {
        let refresh_after = self.expires_in.saturating_mul(4) / 5;
        let hard_stop = self.expires_in.saturating_sub(10);
        let age = now.saturating_sub(self.issued_at);
        age >= refresh_after.min(hard_stop)
    }

    /// The `kid` of its (unverified) header.
    pub fn kid(&self) -> Option<String> {
        forge::decode_part(&self.access_token, 0)
            .ok()?
            .get("kid")?
            .as_str()
            .map(str::to_owned)
    }
}

/// A workload's view of the authz-server.
#[derive(Debug, Clone)]
pub struct AuthzClient {
    client: HttpsClient,
    addr: SocketAddr,
    /// DPoP-bound tokens: the proof key and the token endpoint's URL (`<issuer>/token`).
    dpop: Option<(EcKey, String)>,
}

impl AuthzClient {
    /// `client` presents the workload's certificate; `addr` is the authz-server.
    pub fn new(client: HttpsClient, addr: SocketAddr) -> Self {
        Self {
            client,
            addr,
            dpop: None,
        }
    }

    /// Asks for DPoP-bound tokens (RFC 9449 §5): every token request carries a proof signed
    /// by `key` for `<issuer>/token`, and only a `token_type: DPoP` answer is accepted.
    pub fn with_dpop(mut self, key: EcKey, issuer: &str) -> Self {
        self.dpop = Some((key, format!("{}/token", issuer.trim_end_matches('/'))));
        self
    }

    /// `grant_type=client_credentials` for `service`'s SPIFFE ID with `scope`.
    pub async fn token(&self, service: &str, scope: &str) -> Result<IssuedToken, AuthzError> {
        self.token_with(service, scope, &[]).await
    }

    /// A usage-bound token (issue 22): good for `max_uses` admitted requests in all.
    pub async fn usage_token(
        &self,
        service: &str,
        scope: &str,
        max_uses: u32,
    ) -> Result<IssuedToken, AuthzError> {
        let n = max_uses.to_string();
        self.token_with(service, scope, &[("max_uses", &n)]).await
    }

    /// [`Self::token`] with `extra` form fields.
    async fn token_with(
        &self,
        service: &str,
        scope: &str,
        extra: &[(&str, &str)],
    ) -> Result<IssuedToken, AuthzError> {
        let audience = spiffe_id(service);
        let mut fields = vec![
            ("grant_type", "client_credentials"),
            ("audience", &audience),
            ("scope", scope),
        ];
        fields.extend_from_slice(extra);
        let mut request = Request::post("/token").form(&fields);
        if let Some((key, token_endpoint)) = &self.dpop {
            let proof = crate::dpop::proof(key, "POST", token_endpoint, None)
                .map_err(|e| AuthzError::BadAnswer(format!("cannot sign a DPoP proof: {e}")))?;
            request = request.header("dpop", &proof);
        }
        let issued_at = forge::now();
        let response = self.client.send(self.addr, &request).await?;
        if response.status != 200 {
            let error = response
                .json_str("error")
                .unwrap_or_else(|| excerpt(&response.text()));
            return Err(AuthzError::Refused {
                status: response.status,
                error,
            });
        }
        let body = response
            .json()
            .ok()
            .ok_or_else(|| AuthzError::BadAnswer("token response is not JSON".into()))?;
        let token_type = body.get("token_type").and_then(Value::as_str);
        if self.dpop.is_some() && token_type != Some("DPoP") {
            return Err(AuthzError::BadAnswer(format!(
                "asked for a DPoP-bound token, got token_type {token_type:?}"
            )));
        }
        parse_token_response(&body, scope, issued_at)
    }

    /// Revokes one of this client's own tokens (RFC 7009 `POST /revoke`, `200` even for a token
    /// the server does not know).
    pub async fn revoke(&self, token: &str) -> Result<(), AuthzError> {
        let request = Request::post("/revoke").form(&[("token", token)]);
        let response = self.client.send(self.addr, &request).await?;
        if response.status != 200 {
            return Err(AuthzError::Refused {
                status: response.status,
                error: excerpt(&response.text()),
            });
        }
        Ok(())
    }

    /// The published JWKS.
    pub async fn jwks(&self) -> Result<Value, AuthzError> {
        let response = self
            .client
            .send(self.addr, &Request::get("/.well-known/jwks.json"))
            .await?;
        if response.status != 200 {
            return Err(AuthzError::Refused {
                status: response.status,
                error: excerpt(&response.text()),
            });
        }
        response
            .json()
            .ok()
            .filter(|v| v.get("keys").is_some_and(Value::is_array))
            .ok_or_else(|| AuthzError::BadAnswer("JWKS without `keys`".into()))
    }
}

/// The token out of an RFC 6749 §5.1 answer.
fn parse_token_response(
    body: &Value,
    asked: &str,
    issued_at: u64,
) -> Result<IssuedToken, AuthzError> {
    let access_token = body
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AuthzError::BadAnswer("no access_token".into()))?;
    let expires_in = body
        .get("expires_in")
        .and_then(Value::as_u64)
        .ok_or_else(|| AuthzError::BadAnswer("no expires_in".into()))?;
    let scope = body
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or(asked)
        .to_owned();
    Ok(IssuedToken {
        access_token: access_token.to_owned(),
        scope,
        issued_at,
        expires_in,
    })
}

/// The first line of a body, at most 80 characters (errors only, never a token).
pub fn excerpt(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    line.chars().take(80).collect()
}

/// Tokens per (service, scope), fetched on first use, refreshed before expiry, dropped on 401.
#[derive(Debug)]
pub struct TokenCache {
    authz: AuthzClient,
    tokens: HashMap<(String, String), IssuedToken>,
    /// How many tokens were fetched (first fetches and refreshes).
    pub fetched: u32,
}

impl TokenCache {
    pub fn new(authz: AuthzClient) -> Self {
        Self {
            authz,
            tokens: HashMap::new(),
            fetched: 0,
        }
    }

    /// A usable token for `service` with `scope`; `refreshed` says whether it is new.
    pub async fn get(
        &mut self,
        service: &str,
        scope: &str,
    ) -> Result<(IssuedToken, bool), AuthzError> {
        let key = (service.to_owned(), scope.to_owned());
        if let Some(token) = self.tokens.get(&key)
            && !token.needs_refresh(forge::now())
        {
            return Ok((token.clone(), false));
        }
        let token = self.authz.token(service, scope).await?;
        self.fetched += 1;
        self.tokens.insert(key, token.clone());
        Ok((token, true))
    }

    /// Uses `token` for `service`/`scope` until it needs a refresh (a token obtained elsewhere,
    /// or a stale one in a test of the refresh paths).
    pub fn insert(&mut self, service: &str, scope: &str, token: IssuedToken) {
        self.tokens
            .insert((service.to_owned(), scope.to_owned()), token);
    }

    /// Forgets the token for `service`/`scope` (after the sidecar said 401).
    pub fn invalidate(&mut self, service: &str, scope: &str) {
        self.tokens.remove(&(service.to_owned(), scope.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(issued_at: u64, expires_in: u64) -> IssuedToken {
        IssuedToken {
            access_token: "t".into(),
            scope: "s".into(),
            issued_at,
            expires_in,
        }
    }

    #[test]
    fn refreshes_after_four_fifths_of_the_lifetime() {
        let t = token(1000, 300);
        assert!(!t.needs_refresh(1000));
        assert!(!t.needs_refresh(1239));
        assert!(t.needs_refresh(1240));
        assert!(t.needs_refresh(2000));
    }

    #[test]
    fn refreshes_in_the_last_ten_seconds_of_a_short_lifetime() {
        let t = token(1000, 20);
        assert!(!t.needs_refresh(1009));
        assert!(t.needs_refresh(1010));
        assert!(token(1000, 5).needs_refresh(1000));
    }

    #[test]
    fn reads_a_token_response() {
        let body = json!({"access_token": "abc", "token_type": "Bearer", "expires_in": 300, "scope": "orders:read"});
        let t = parse_token_response(&body, "x", 7).unwrap();
        assert_eq!(
            (
                t.access_token.as_str(),
                t.scope.as_str(),
                t.issued_at,
                t.expires_in
            ),
            ("abc", "orders:read", 7, 300)
        );
    }

    #[test]
    fn refuses_a_token_response_without_token_or_lifetime() {
        for body in [
            json!({"expires_in": 300}),
            json!({"access_token": "", "expires_in": 1}),
            json!({"access_token": "a"}),
        ] {
            assert!(
                matches!(
                    parse_token_response(&body, "x", 0),
                    Err(AuthzError::BadAnswer(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let t = token(0, 300);
        assert!(!format!("{t:?}").contains("\"t\""));
    }
}
