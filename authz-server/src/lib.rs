//! certbind-authz: the internal CA and the authorization server that issues ES256 access
//! tokens bound to the caller's client certificate (RFC 8705, RFC 9068).

pub mod app;
pub mod body;
pub mod ca;
pub mod cli;
pub mod clients;
pub mod clock;
pub mod dpop_jtis;
pub mod fsutil;
pub mod grant;
pub mod health;
pub mod keys;
pub mod oauth;
pub mod pg;
pub mod pg_keys;
pub mod pg_usage;
pub mod posture;
pub mod quota;
pub mod renew;
pub mod replica;
pub mod revocation;
pub mod revoke;
pub mod rollover;
pub mod server;
pub mod state;
pub mod store;
pub mod tls;
pub mod token;
pub mod usage;
pub mod x509;

pub use app::{AppState, PeerCertificate, app};
