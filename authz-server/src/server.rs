//! The accept loop: TCP → TLS handshake (rustls) → HTTP/1.1 (hyper) → the axum router, with
//! the client certificate attached to every request of the connection while it is still
//! valid and trusted (re-checked per request: a connection can outlive its certificate).
//! Each connection uses the TLS configuration current at its accept, so a reissued server
//! certificate or trust bundle takes effect without a restart. Stops accepting on shutdown
//! and lets open connections finish.

use crate::state::PeerCertificate;
use axum::Router;
use axum::body::Body;
use certbind_tls::{PeerChain, ReloadingServer};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::UnixTime;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        let (tcp, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        connections.spawn(connection(
            Arc::clone(&tls),
            tcp,
            addr,
            router.clone(),
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open after the drain timeout; closing them");
        connections.abort_all();
    }
}

async fn connection(
    tls: Arc<ReloadingServer>,
    tcp: tokio::net::TcpStream,
    addr: SocketAddr,
    router: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(Arc::clone(&tls.current().config));
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::info!(peer = %addr, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(peer = %addr, "TLS handshake timed out");
            return;
        }
    };
    let peer = stream.get_ref().1.peer_certificates().and_then(|chain| {
        let leaf = chain.first()?;
        Some((
            Arc::new(PeerChain::new(chain.to_vec())),
            PeerCertificate(Arc::new(leaf.to_vec())),
        ))
    });
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(Body::new);
        if let Some((chain, cert)) = &peer {
            // Expired since the handshake, or its CA left the bundle: the request goes on
            // without a client certificate, so endpoints that need one answer invalid_client.
            if chain.valid(&tls.current(), UnixTime::now()) {
                req.extensions_mut().insert(cert.clone());
            } else {
                tracing::info!(peer = %addr, "client certificate no longer valid or trusted; ignored");
            }
        }
        req.extensions_mut().insert(PeerAddr(addr));
        router.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
