//! certbind-tls: the rustls pieces every certbind process shares — a server configuration
//! rebuilt when its certificate, key or trust bundle changes on disk, a per-request check that
//! the caller's certificate is still valid and trusted, and a client-side verifier that admits
//! only the expected server SPIFFE ID. Also the servers' one mTLS accept loop (`accept`) and
//! their plain-HTTP health port (`health`).

pub mod accept;
pub mod files;
pub mod health;
pub mod server;
pub mod verify;

pub use files::TlsError;
pub use server::{ClientAuth, PeerChain, ReloadingServer, ServerTls};
pub use verify::{SERVERS, SpiffeServerVerifier, demo_id, demo_servers};
