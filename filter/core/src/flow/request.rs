//! What the filter reads about one request ([`RequestFacts`]) and the identity headers it
//! owns on the way upstream.

use crate::binding::PeerIdentity;
use crate::token::VerifiedToken;
use std::rc::Rc;

/// The headers the filter sets on an allowed request (any copy from the caller is removed).
pub const HEADER_SUBJECT: &str = "x-certbind-subject";
pub const HEADER_CLIENT_ID: &str = "x-certbind-client-id";
pub const HEADER_SCOPE: &str = "x-certbind-scope";
pub const HEADER_JTI: &str = "x-certbind-jti";

/// The identity headers' values for one verified token, built once when it is verified and
/// kept with it in the token cache, so a warm request copies no string to set them.
pub type IdentityHeaders = Rc<[(&'static str, Rc<str>)]>;

/// The identity headers of `token` for the caller `subject` (its `sub`, bound).
pub fn identity_headers(subject: &str, token: &VerifiedToken) -> IdentityHeaders {
    Rc::new([
        (HEADER_SUBJECT, Rc::from(subject)),
        (HEADER_CLIENT_ID, Rc::from(token.client_id())),
        (HEADER_SCOPE, Rc::from(token.scope())),
        (HEADER_JTI, Rc::from(token.jti())),
    ])
}

/// Every request header with this prefix is removed before the upstream sees the request.
pub const HEADER_PREFIX: &str = "x-certbind-";

/// Whether a caller's header must be removed: its name, in any case and with `_` read as
/// `-`, starts with [`HEADER_PREFIX`]. CGI, WSGI, Rack and PHP upstreams turn
/// `x_certbind_subject` into the same variable as `x-certbind-subject`.
pub fn is_reserved_header(name: &[u8]) -> bool {
    name.len() >= HEADER_PREFIX.len()
        && name
            .iter()
            .copied()
            .zip(HEADER_PREFIX.bytes())
            .all(|(n, p)| n.to_ascii_lowercase() == p || (n == b'_' && p == b'-'))
}

/// Everything the filter reads about one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    // The connection's facts are `Rc<str>`: shared with the glue's per-connection cache, so a
    // request on a known connection copies none of them.
    /// The `authorization` header, if any.
    pub authorization: Option<String>,
    /// Envoy's `x-request-id`.
    pub request_id: String,
    pub method: String,
    /// `:path`, as Envoy normalised it.
    pub path: String,
    pub peer: PeerIdentity,
    /// The caller's IP (see [`source_ip`]).
    pub source_ip: Option<Rc<str>>,
    /// `connection.tls_version`, e.g. `TLSv1.3`.
    pub tls_version: Option<Rc<str>>,
    /// The value of every `DPoP` header, in order (exactly one is valid on a DPoP listener).
    pub dpop: Vec<String>,
    /// The URI SAN of the listener's own certificate (`connection.uri_san_local_certificate`),
    /// read only when no `audience` is configured: it names this service.
    pub local_uri_san: Option<Rc<str>>,
}

/// The IP of Envoy's `source.address` (`1.2.3.4:5678` or `[::1]:5678`).
pub fn source_ip(address: &str) -> String {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_owned();
    }
    match address.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            ip.to_owned()
        }
        _ => address.to_owned(),
    }
}
