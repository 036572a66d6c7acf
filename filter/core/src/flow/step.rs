//! What the glue must do next for a request: a [`Step`], and the exact local reply of a
//! denial ([`Deny`], CONTRACT §4).

use super::request::IdentityHeaders;
use crate::config::Binding;
use crate::jwks::FetchKind;
use crate::reason::Reason;

/// What the glue must do next for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Let the request through, after removing any caller `x-certbind-*` and applying these.
    Allow(Allow),
    /// Answer locally and stop the request.
    Deny(Deny),
    /// Keys are needed: start (or join) a JWKS fetch of this kind, pause the request, then
    /// call [`super::Flow::resume_jwks`] when the keys change, the fetch ends, may not start, or
    /// `wait_until_ms` passes.
    FetchJwks { kind: FetchKind, wait_until_ms: u64 },
    /// Ask the PDP (POST `body` to `pdp.path`, timeout `timeout_ms`), then call
    /// [`super::Flow::pdp_answered`].
    AskPdp { body: String, timeout_ms: u64 },
    /// No revocation snapshot yet: pause the request, then call [`super::Flow::resume_jwks`] when
    /// the first snapshot arrives or `wait_until_ms` passes (the same re-run as for keys).
    AwaitRevocations { wait_until_ms: u64 },
    /// A usage-bound token passed every check: spend one use (POST `body` to the usage
    /// counter, timeout `timeout_ms`), then call [`super::Flow::usage_answered`].
    ConsumeUse { body: String, timeout_ms: u64 },
}

/// An allowed request (or, in shadow mode, one that passes despite `shadowed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    /// Verified identity headers to set; empty unless every check passed.
    pub headers: IdentityHeaders,
    /// Remove `authorization` and any `dpop` proof before the upstream (unless
    /// `forward_token`).
    pub remove_authorization: bool,
    /// Shadow mode: the reason the request would have been denied.
    pub shadowed: Option<Reason>,
}

/// A local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    pub reason: Reason,
    pub status: u32,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Deny {
    /// The exact CONTRACT §4 answer for `reason`.
    pub fn new(reason: Reason, realm: &str, request_id: &str) -> Self {
        Self::on_listener(reason, realm, request_id, Binding::Mtls)
    }

    /// The answer on a listener of this `binding`: on a DPoP listener every challenge uses
    /// the `DPoP` scheme with `algs="ES256"` (RFC 9449 §7.1).
    pub fn on_listener(reason: Reason, realm: &str, request_id: &str, binding: Binding) -> Self {
        let challenge = reason.www_authenticate_on(realm, binding == Binding::Dpop);
        let mut headers = vec![
            ("content-type", "application/json".to_owned()),
            ("cache-control", "no-store".to_owned()),
            ("www-authenticate", challenge),
        ];
        if let Some(seconds) = reason.retry_after_s() {
            headers.push(("retry-after", seconds.to_string()));
        }
        Self {
            reason,
            status: reason.status(),
            headers,
            body: reason.body(request_id),
        }
    }
}
