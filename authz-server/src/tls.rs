//! The server's TLS configuration: TLS 1.3 only, the `ring` provider, our certificate, and
//! client certificates requested and verified against the internal CA but optional at the TLS
//! level (endpoints that need one refuse with `invalid_client`).

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("{path}: {why}")]
    Pem { path: String, why: String },
    #[error("{0}: no certificate found")]
    Empty(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn pem_err(path: &Path) -> impl FnOnce(rustls_pki_types::pem::Error) -> TlsError + '_ {
    move |e| TlsError::Pem {
        path: path.display().to_string(),
        why: e.to_string(),
    }
}

/// Loads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_err(path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err(path))?;
    if certs.is_empty() {
        return Err(TlsError::Empty(path.display().to_string()));
    }
    Ok(certs)
}

/// Loads the server identity `<pki_dir>/<name>.crt|.key` and the CA `<pki_dir>/ca.crt`.
pub fn server_config(pki_dir: &Path, name: &str) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_path = pki_dir.join(format!("{name}.crt"));
    let key_path = pki_dir.join(format!("{name}.key"));
    let chain = load_certs(&cert_path)?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(pem_err(&key_path))?;
    let mut roots = RootCertStore::empty();
    for ca in load_certs(&pki_dir.join("ca.crt"))? {
        roots.add(ca)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .allow_unauthenticated()
            .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
        let config = server_config(dir.path(), "authz").unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
