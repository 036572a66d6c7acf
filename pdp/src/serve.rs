//! The PDP's mTLS listener: certbind-tls's accept loop with this server's bounds. The
//! caller's SPIFFE ID is read from its certificate once per connection, and each request
//! carries it ([`PeerIdentity`]) only while the certificate stays valid and trusted. Also the
//! shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use certbind_core::binding::SpiffeId;
use certbind_tls::ReloadingServer;
use certbind_tls::accept::{self, Callers, Event, Limits};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;

use crate::app::PeerIdentity;

const LIMITS: Limits = Limits {
    handshake: Duration::from_secs(5),
    header_read: Duration::from_secs(10),
    drain: Duration::from_secs(5),
    max_connections: Some(1024),
};

/// Serves until `shutdown` completes, then stops accepting and drains open connections.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ReloadingServer>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    accept::serve(listener, tls, router, Arc::new(Workloads), LIMITS, shutdown).await;
}

/// Names callers by the SPIFFE ID in their certificate; logs under this module.
struct Workloads;

impl Callers for Workloads {
    type Identity = SpiffeId;

    fn identify(&self, chain: &[CertificateDer<'static>]) -> Option<SpiffeId> {
        SpiffeId::from_cert_der(chain.first()?.as_ref()).ok()
    }

    /// A certificate that expired since the handshake, or whose CA left the bundle, no longer
    /// names the caller: the request is treated as anonymous.
    fn attach(&self, req: &mut hyper::Request<Body>, _: SocketAddr, id: Option<&SpiffeId>) {
        req.extensions_mut().insert(PeerIdentity(id.cloned()));
    }

    fn log(&self, event: Event<'_>) {
        certbind_tls::log_accept_event!(
            event,
            "TLS handshake refused",
            "client certificate no longer valid or trusted"
        );
    }
}

/// Completes on SIGTERM or SIGINT. The handlers are installed when this is called (inside the
/// runtime), not when the future is first polled, so a signal sent right after the process
/// announced it is listening cannot hit the default action and kill it abruptly.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    tracing::warn!("cannot install signal handlers; stop with SIGKILL");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
