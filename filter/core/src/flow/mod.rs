//! The per-request machine: from the request's facts to a [`Step`] — allow (with the verified
//! headers), deny (with the exact reply), or wait for the JWKS or the PDP — checking in
//! CONTRACT §4's order. The [`Engine`] holds what outlives a request in one VM: configuration,
//! keys and the caches.
//!
//! A listener binds tokens either to the client certificate (`binding: mtls`, RFC 8705) or to
//! a DPoP key (`binding: dpop`, RFC 9449): there `Authorization: DPoP <token>`, one `DPoP`
//! proof signed by the token's `cnf.jkt` key for this method and URL, and a `jti` never seen
//! by any worker VM within the proof's window (the shared replay cache).
//!
//! Files: `engine` (the VM-wide state), `request` (the facts read and the headers owned),
//! `machine` (the per-request [`Flow`] and its order of checks), `verify` (the token step),
//! `dpop` (the DPoP step), `step` (what the glue does next, the exact denial), `trace` (what
//! the checks observed, rendered as the one log line).

mod dpop;
mod engine;
mod machine;
mod request;
mod step;
mod trace;
mod verify;

pub use engine::Engine;
pub use machine::Flow;
pub use request::{
    HEADER_CLIENT_ID, HEADER_JTI, HEADER_PREFIX, HEADER_SCOPE, HEADER_SUBJECT, IdentityHeaders,
    RequestFacts, is_reserved_header, source_ip,
};
pub use step::{Allow, Deny, Step};
pub use trace::{DecisionTrace, log_safe};

#[cfg(test)]
pub(crate) mod tests;
