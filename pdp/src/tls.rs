//! The server's TLS configuration: TLS 1.3 only, ring provider, client certificate required
//! and verified against the internal CA; certificate, key and bundle re-read when they change
//! and session resumption off (certbind-tls).

use std::path::Path;
use std::sync::Arc;

pub use certbind_tls::TlsError;
use certbind_tls::server::ServerFiles;
use certbind_tls::{ClientAuth, ReloadingServer};

/// The server configuration from PEM files, followed on disk. No `allow_unauthenticated`: a
/// handshake without a CA-issued client certificate fails.
pub fn server_config(cert: &Path, key: &Path, ca: &Path) -> Result<Arc<ReloadingServer>, TlsError> {
    let files = ServerFiles {
        cert: cert.to_owned(),
        key: key.to_owned(),
        ca: ca.to_owned(),
        client_auth: ClientAuth::Required,
    };
    Ok(Arc::new(ReloadingServer::load(files)?))
}
