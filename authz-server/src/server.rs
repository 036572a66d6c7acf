//! The authz-server's listener: certbind-tls's accept loop with this server's bounds. Every
//! request carries the caller's socket address ([`PeerAddr`]) and, while the client
//! certificate is still valid and trusted, its DER ([`PeerCertificate`]); a connection without
//! a certificate is served too (endpoints that need one answer `invalid_client`).

use crate::state::PeerCertificate;
use axum::Router;
use axum::body::Body;
use certbind_tls::ReloadingServer;
use certbind_tls::accept::{self, Callers, Event, Limits};
use rustls_pki_types::CertificateDer;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

const LIMITS: Limits = Limits {
    handshake: Duration::from_secs(10),
    header_read: Duration::from_secs(10),
    drain: Duration::from_secs(10),
    max_connections: None,
};

/// The caller's socket address, as a request extension.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Serves `router` over TLS on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ReloadingServer>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    accept::serve(listener, tls, router, Arc::new(Clients), LIMITS, shutdown).await;
}

/// Names callers by their certificate's DER; logs under this module.
struct Clients;

impl Callers for Clients {
    type Identity = PeerCertificate;

    fn identify(&self, chain: &[CertificateDer<'static>]) -> Option<PeerCertificate> {
        Some(PeerCertificate(Arc::new(chain.first()?.to_vec())))
    }

    fn attach(
        &self,
        req: &mut hyper::Request<Body>,
        peer: SocketAddr,
        cert: Option<&PeerCertificate>,
    ) {
        if let Some(cert) = cert {
            req.extensions_mut().insert(cert.clone());
        }
        req.extensions_mut().insert(PeerAddr(peer));
    }

    fn log(&self, event: Event<'_>) {
        certbind_tls::log_accept_event!(
            event,
            "TLS handshake failed",
            "client certificate no longer valid or trusted; ignored"
        );
    }
}
