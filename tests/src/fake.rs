//! A misbehaving HTTPS service for fault tests: it takes the place of the PDP or the
//! authz-server on their port, with their certificate (so Envoy's cluster accepts it), and
//! answers every request the same wrong way: an error status, a garbage or huge body, or
//! nothing until long after the caller's timeout. Each connection gets one answer and is closed.

use crate::Error;
use certbind_demo::client::{read_certs, read_key};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How the fake answers.
#[derive(Debug, Clone)]
pub enum Fault {
    /// This status with this JSON-ish body.
    Status(u16, String),
    /// 200 with a body of this many bytes of `x`.
    Huge(usize),
    /// Waits this long, then answers 200 `{}`.
    Slow(Duration),
}

/// A running fake; dropping it stops it and frees the port.
pub struct FakeService {
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl FakeService {
    /// Serves `fault` on `addr` over TLS with `<name>.crt`/`<name>.key` from `pki_dir`.
    pub fn start(
        addr: SocketAddr,
        pki_dir: &Path,
        name: &str,
        fault: Fault,
    ) -> Result<Self, Error> {
        let tls = |e: String| Error::Tls(format!("fake {name}: {e}"));
        let io = |source: std::io::Error| Error::Io {
            context: format!("fake {name} on {addr}"),
            source,
        };
        let certs =
            read_certs(&pki_dir.join(format!("{name}.crt"))).map_err(|e| tls(e.to_string()))?;
        let key = read_key(&pki_dir.join(format!("{name}.key"))).map_err(|e| tls(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| tls(e.to_string()))?;
        let config = Arc::new(config);
        let listener = TcpListener::bind(addr).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let (stop2, requests2) = (Arc::clone(&stop), Arc::clone(&requests));
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((tcp, _)) => {
                        let (config, fault, stop, requests) = (
                            Arc::clone(&config),
                            fault.clone(),
                            Arc::clone(&stop2),
                            Arc::clone(&requests2),
                        );
                        std::thread::spawn(move || serve(tcp, config, &fault, &stop, &requests));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self {
            stop,
            requests,
            addr,
            thread: Some(thread),
        })
    }

    /// Requests received so far (a `Slow` one counts as soon as its head arrived).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for FakeService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request on one connection: read the head (then count it), answer `fault`, close.
fn serve(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    fault: &Fault,
    stop: &AtomicBool,
    requests: &AtomicU64,
) {
    let _ = tcp.set_nonblocking(false);
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
    }
    requests.fetch_add(1, Ordering::Relaxed);
    let (status, body) = match fault {
        Fault::Status(s, b) => (*s, b.clone().into_bytes()),
        Fault::Huge(n) => (200, vec![b'x'; *n]),
        Fault::Slow(d) => {
            let until = std::time::Instant::now() + *d;
            while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            (200, b"{}".to_vec())
        }
    };
    let answer = format!(
        "HTTP/1.1 {status} Fault\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = tls.write_all(answer.as_bytes());
    let _ = tls.write_all(&body);
    let _ = tls.flush();
    tls.conn.send_close_notify();
    let _ = tls.flush();
}
