//! The accept loop on a real socket: a silent peer is dropped after the handshake bound and
//! reported, and shutdown ends the loop.

use super::*;
use crate::server::{ClientAuth, ServerFiles};
use std::sync::Mutex;

/// Records the events the loop reports.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Callers for Recorder {
    type Identity = ();
    fn identify(&self, _: &[CertificateDer<'static>]) -> Option<()> {
        Some(())
    }
    fn attach(&self, _: &mut hyper::Request<Body>, _: SocketAddr, _: Option<&()>) {}
    fn log(&self, event: Event<'_>) {
        let name = match event {
            Event::AcceptFailed(_) => "accept_failed",
            Event::HandshakeFailed { .. } => "handshake_failed",
            Event::HandshakeTimedOut { .. } => "handshake_timed_out",
            Event::CertificateStale { .. } => "certificate_stale",
            Event::ConnectionError { .. } => "connection_error",
            Event::DrainTimedOut => "drain_timed_out",
        };
        self.0.lock().unwrap().push(name.to_owned());
    }
}

/// A self-signed server certificate that is also the trust bundle.
fn tls(dir: &std::path::Path) -> Arc<ReloadingServer> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("s.crt"), dir.join("s.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let files = ServerFiles {
        cert: cert.clone(),
        key,
        ca: cert,
        client_auth: ClientAuth::Optional,
    };
    Arc::new(ReloadingServer::load(files).unwrap())
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_handshake_bound_and_shutdown_ends_the_loop() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recorder = Arc::new(Recorder::default());
    let limits = Limits {
        handshake: Duration::from_millis(200),
        header_read: Duration::from_secs(1),
        drain: Duration::from_secs(1),
        max_connections: Some(4),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let server = tokio::spawn(serve(
        listener,
        tls(dir.path()),
        Router::new(),
        Arc::clone(&recorder),
        limits,
        shutdown,
    ));
    let _silent = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(*recorder.0.lock().unwrap(), ["handshake_timed_out"]);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("the loop ends on shutdown")
        .unwrap();
}
