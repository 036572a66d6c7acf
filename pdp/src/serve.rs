//! The mTLS listener: accepts connections, completes the TLS handshake with the TLS
//! configuration current at the accept (reloaded from disk), extracts the peer's SPIFFE ID,
//! serves HTTP/1.1 with the router — each request carrying the identity only while the
//! certificate stays valid and trusted — and drains connections on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use certbind_core::binding::SpiffeId;
use certbind_tls::{PeerChain, ReloadingServer};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::UnixTime;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::app::PeerIdentity;

/// A handshake must finish within this time (slow or silent peers hold no slot for long).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Request headers must arrive within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many connections at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 1024;
/// How long open connections get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until `shutdown` completes, then stops accepting and drains open connections.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ReloadingServer>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer_addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let tls = Arc::clone(&tls);
        let router = router.clone();
        let stop = stop_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            serve_connection(tls, tcp, peer_addr, router, stop).await;
        });
        // Reap finished connections so the set does not grow without bound.
        while conns.try_join_next().is_some() {}
    }
    let _ = stop_tx.send(true);
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open after the drain timeout; closing them");
        conns.abort_all();
    }
}

async fn serve_connection(
    reloading: Arc<ReloadingServer>,
    tcp: tokio::net::TcpStream,
    peer_addr: SocketAddr,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(Arc::clone(&reloading.current().config));
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(peer = %peer_addr, error = %e, "TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::info!(peer = %peer_addr, "TLS handshake timed out");
            return;
        }
    };
    let peer = tls.get_ref().1.peer_certificates().and_then(|chain| {
        let id = SpiffeId::from_cert_der(chain.first()?.as_ref()).ok()?;
        Some((PeerChain::new(chain.to_vec()), id))
    });
    let service = hyper::service::service_fn(
        move |mut req: hyper::Request<hyper::body::Incoming>| {
            // A certificate that expired since the handshake, or whose CA left the bundle,
            // no longer names the caller: the request is treated as anonymous.
            let identity = peer.as_ref().and_then(|(chain, id)| {
                let ok = chain.valid(&reloading.current(), UnixTime::now());
                if !ok {
                    tracing::info!(peer = %peer_addr, "client certificate no longer valid or trusted");
                }
                ok.then(|| id.clone())
            });
            req.extensions_mut().insert(PeerIdentity(identity));
            router.clone().oneshot(req.map(axum::body::Body::new))
        },
    );
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(peer = %peer_addr, error = %e, "connection ended with an error");
            }
        }
        () = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
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
