//! The one mTLS accept loop of certbind's servers: TCP → TLS handshake (the configuration
//! current at the accept, so a reissued certificate or bundle needs no restart) → HTTP/1.1
//! (hyper) → the axum router. The caller's certificate chain is looked at once per
//! connection and re-checked per request (a connection can outlive its certificate). On
//! shutdown it stops accepting and lets open connections finish within a bound.
//!
//! What differs between servers stays with them ([`Callers`]): how a chain names the caller,
//! what a request carries, and two log wordings; [`log_accept_event!`] writes the lines from
//! the server's own module, so their targets stay the server's.

use crate::server::{PeerChain, ReloadingServer};
use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::{CertificateDer, UnixTime};
use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How long an accept error backs off (out of file descriptors and the like), not to spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A server's bounds on its connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A handshake must finish within this time (slow or silent peers hold no slot for long).
    pub handshake: Duration,
    /// Request headers must arrive within this time.
    pub header_read: Duration,
    /// How long open connections get to finish after the shutdown signal.
    pub drain: Duration,
    /// At most this many connections at once, more wait in the accept queue; `None`: no bound.
    pub max_connections: Option<usize>,
}

/// What the loop reports for the server's log.
pub enum Event<'a> {
    AcceptFailed(&'a dyn Display),
    HandshakeFailed {
        peer: SocketAddr,
        error: &'a dyn Display,
    },
    HandshakeTimedOut {
        peer: SocketAddr,
    },
    /// The connection's certificate expired since the handshake, or its CA left the bundle.
    CertificateStale {
        peer: SocketAddr,
    },
    ConnectionError {
        peer: SocketAddr,
        error: &'a dyn Display,
    },
    DrainTimedOut,
}

/// How a server names its callers and logs its connections.
pub trait Callers: Send + Sync + 'static {
    /// What a request learns of its caller.
    type Identity: Clone + Send + Sync + 'static;
    /// Once per connection, from the chain the handshake verified (leaf first); `None`
    /// leaves the connection anonymous and unchecked.
    fn identify(&self, chain: &[CertificateDer<'static>]) -> Option<Self::Identity>;
    /// Per request: `identity` is the connection's while its certificate is still valid and
    /// trusted, `None` otherwise.
    fn attach(
        &self,
        request: &mut hyper::Request<Body>,
        peer: SocketAddr,
        identity: Option<&Self::Identity>,
    );
    /// Writes one log line for `event` (usually with [`log_accept_event!`]).
    fn log(&self, event: Event<'_>);
}

/// The log line of an accept-loop [`Event`], written where the macro is used (the target is
/// that module): `log_accept_event!(event, "<handshake failed>", "<certificate stale>")`.
#[macro_export]
macro_rules! log_accept_event {
    ($event:expr, $handshake_failed:literal, $stale:literal) => {
        match $event {
            $crate::accept::Event::AcceptFailed(error) => {
                ::tracing::warn!(error = %error, "accept failed");
            }
            $crate::accept::Event::HandshakeFailed { peer, error } => {
                ::tracing::info!(peer = %peer, error = %error, $handshake_failed);
            }
            $crate::accept::Event::HandshakeTimedOut { peer } => {
                ::tracing::info!(peer = %peer, "TLS handshake timed out");
            }
            $crate::accept::Event::CertificateStale { peer } => {
                ::tracing::info!(peer = %peer, $stale);
            }
            $crate::accept::Event::ConnectionError { peer, error } => {
                ::tracing::debug!(peer = %peer, error = %error, "connection ended with an error");
            }
            $crate::accept::Event::DrainTimedOut => {
                ::tracing::warn!("connections still open after the drain timeout; closing them");
            }
        }
    };
}

/// Serves `router` over TLS on `listener` until `shutdown` completes, then stops accepting
/// and drains open connections for at most `limits.drain`.
pub async fn serve<C: Callers>(
    listener: TcpListener,
    tls: Arc<ReloadingServer>,
    router: Router,
    callers: Arc<C>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = limits.max_connections.map(|n| Arc::new(Semaphore::new(n)));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        let permit = match &slots {
            Some(slots) => tokio::select! {
                () = &mut shutdown => break,
                permit = Arc::clone(slots).acquire_owned() => match permit {
                    Ok(permit) => Some(permit),
                    Err(_) => break,
                },
            },
            None => None,
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    callers.log(Event::AcceptFailed(&e));
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let conn = Connection {
            tls: Arc::clone(&tls),
            router: router.clone(),
            callers: Arc::clone(&callers),
            limits,
            peer,
        };
        let stop = stop_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            conn.run(tcp, stop).await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        callers.log(Event::DrainTimedOut);
        connections.abort_all();
    }
}

/// One accepted connection and what it needs to serve.
struct Connection<C> {
    tls: Arc<ReloadingServer>,
    router: Router,
    callers: Arc<C>,
    limits: Limits,
    peer: SocketAddr,
}

impl<C: Callers> Connection<C> {
    async fn run(self, tcp: TcpStream, mut stop: watch::Receiver<bool>) {
        let Self {
            tls,
            router,
            callers,
            limits,
            peer,
        } = self;
        let acceptor = TlsAcceptor::from(Arc::clone(&tls.current().config));
        let stream = match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return callers.log(Event::HandshakeFailed { peer, error: &e }),
            Err(_) => return callers.log(Event::HandshakeTimedOut { peer }),
        };
        let identified = stream.get_ref().1.peer_certificates().and_then(|chain| {
            let identity = callers.identify(chain)?;
            Some((PeerChain::new(chain.to_vec()), identity))
        });
        let log = Arc::clone(&callers);
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(Body::new);
            let identity = identified.as_ref().and_then(|(chain, identity)| {
                let valid = chain.valid(&tls.current(), UnixTime::now());
                if !valid {
                    callers.log(Event::CertificateStale { peer });
                }
                valid.then_some(identity)
            });
            callers.attach(&mut req, peer, identity);
            router.clone().oneshot(req)
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read)
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    log.log(Event::ConnectionError { peer, error: &e });
                }
            }
            () = async { let _ = stop.wait_for(|stopping| *stopping).await; } => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
}

#[cfg(test)]
mod tests;
