//! The server's TLS configuration: TLS 1.3 only, the `ring` provider, our certificate, and
//! client certificates requested and verified against the internal CA but optional at the TLS
//! level (endpoints that need one refuse with `invalid_client`). Certificate, key and trust
//! bundle are re-read when they change (certbind-tls), session resumption is off.

pub use certbind_tls::TlsError;
use certbind_tls::server::ServerFiles;
use certbind_tls::{ClientAuth, ReloadingServer};
use std::path::Path;
use std::sync::Arc;

/// The server identity `<pki_dir>/<name>.crt|.key` and the bundle `<pki_dir>/ca.crt`,
/// followed on disk.
pub fn server_config(pki_dir: &Path, name: &str) -> Result<Arc<ReloadingServer>, TlsError> {
    let files = ServerFiles {
        cert: pki_dir.join(format!("{name}.crt")),
        key: pki_dir.join(format!("{name}.key")),
        ca: pki_dir.join("ca.crt"),
        client_auth: ClientAuth::Optional,
    };
    Ok(Arc::new(ReloadingServer::load(files)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_from_a_fresh_pki_and_refuses_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        assert!(server_config(dir.path(), "authz").is_err());
        crate::ca::init(
            dir.path(),
            &["authz"],
            1,
            false,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        let tls = server_config(dir.path(), "authz").unwrap().current();
        assert_eq!(tls.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(tls.config.send_tls13_tickets, 0, "no resumption tickets");
    }
}
