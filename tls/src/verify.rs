//! The client side: a server is accepted only if its certificate chains to the trust bundle,
//! is a server certificate (serverAuth) for the name dialled, is valid now, AND carries
//! exactly the expected SPIFFE ID. Any workload certificate holder could otherwise pose as
//! the authz-server or a sidecar. The bundle file is re-read when it changes, so a client
//! follows a CA rollover without a restart.

use crate::files::{Stamp, TlsError, read_certs, stamp};
use certbind_core::binding::SpiffeId;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

/// The trust domain of the demo identities.
pub const TRUST_DOMAIN: &str = "certbind.test";
/// The identities that serve TLS (the authz-server, the PDP, the sidecar listeners): the only
/// ones the CA gives server certificates, and the only ones a client accepts as a server.
pub const SERVERS: [&str; 4] = ["authz", "pdp", "orders", "billing"];

/// The SPIFFE ID of a demo workload name (`spiffe://certbind.test/ns/demo/sa/<name>`).
pub fn demo_id(name: &str) -> Result<SpiffeId, TlsError> {
    SpiffeId::parse(&format!("spiffe://{TRUST_DOMAIN}/ns/demo/sa/{name}"))
        .map_err(|e| TlsError::Verifier(format!("server identity {name:?}: {e}")))
}

/// Every demo server's SPIFFE ID.
pub fn demo_servers() -> Result<Vec<SpiffeId>, TlsError> {
    SERVERS.iter().map(|name| demo_id(name)).collect()
}

/// Why a server's SPIFFE ID was refused (surfaces inside rustls' certificate error).
#[derive(Debug, thiserror::Error)]
#[error("server certificate is {got}, expected one of {expected}")]
pub struct WrongServer {
    pub got: String,
    pub expected: String,
}

struct Roots {
    stamp: Stamp,
    inner: Arc<WebPkiServerVerifier>,
}

/// Pins the server's SPIFFE ID on top of the usual WebPKI checks.
pub struct SpiffeServerVerifier {
    expected: Vec<SpiffeId>,
    ca_path: Option<PathBuf>,
    provider: Arc<CryptoProvider>,
    roots: RwLock<Roots>,
}

impl std::fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SpiffeServerVerifier(expects {:?})", self.expected)
    }
}

fn webpki(
    certs: Vec<CertificateDer<'static>>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in certs {
        roots.add(ca)?;
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))
}

impl SpiffeServerVerifier {
    /// Trusts the bundle at `ca` (re-read when the file changes) and only servers whose one
    /// SPIFFE ID is in `expected` (usually exactly one).
    pub fn from_file(ca: &Path, expected: Vec<SpiffeId>) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamp = stamp(ca);
        let inner = webpki(read_certs(ca)?, &provider)?;
        Ok(Arc::new(Self {
            expected,
            ca_path: Some(ca.to_owned()),
            provider,
            roots: RwLock::new(Roots { stamp, inner }),
        }))
    }

    /// Trusts exactly `roots` (fixed) and only `expected`.
    pub fn from_roots(
        roots: Vec<CertificateDer<'static>>,
        expected: Vec<SpiffeId>,
    ) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = webpki(roots, &provider)?;
        Ok(Arc::new(Self {
            expected,
            ca_path: None,
            provider,
            roots: RwLock::new(Roots { stamp: None, inner }),
        }))
    }

    /// The WebPKI verifier over the current bundle (re-read if the file changed; a bundle
    /// that does not load keeps the previous one).
    fn inner(&self) -> Arc<WebPkiServerVerifier> {
        let Some(path) = &self.ca_path else {
            return self.fallback();
        };
        let now = stamp(path);
        if now
            == self
                .roots
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .stamp
        {
            return self.fallback();
        }
        match read_certs(path).and_then(|certs| webpki(certs, &self.provider)) {
            Ok(inner) => {
                let mut roots = self.roots.write().unwrap_or_else(PoisonError::into_inner);
                roots.stamp = now;
                roots.inner = Arc::clone(&inner);
                inner
            }
            Err(e) => {
                tracing::warn!(error = %e, "trust bundle changed but does not load; keeping the previous one");
                self.fallback()
            }
        }
    }

    fn fallback(&self) -> Arc<WebPkiServerVerifier> {
        let roots = self.roots.read().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&roots.inner)
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        match SpiffeId::from_cert_der(end_entity.as_ref()) {
            Ok(id) if self.expected.contains(&id) => Ok(ServerCertVerified::assertion()),
            got => Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(WrongServer {
                    got: got.map_or_else(
                        |e| format!("without one SPIFFE ID ({e})"),
                        |id| id.to_string(),
                    ),
                    expected: self
                        .expected
                        .iter()
                        .map(SpiffeId::as_str)
                        .collect::<Vec<_>>()
                        .join(", "),
                })),
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.fallback().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.fallback().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.fallback().supported_verify_schemes()
    }
}
