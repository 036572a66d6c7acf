//! Free loopback ports for a test run, never the fixed ports of CONTRACT §2 and never the same
//! port twice within one test process (several Systems start concurrently).

use crate::Error;
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The fixed ports of CONTRACT §2: `make up` may be holding them.
const CONTRACT_PORTS: [u16; 11] = [
    9443, 9191, 8443, 8444, 8445, 8080, 8081, 9901, 7001, 7002, 0,
];

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A loopback port that was free a moment ago: the kernel picks it (bind to port 0), and this
/// process never hands it out again.
pub fn free_port() -> Result<u16, Error> {
    for _ in 0..64 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(Error::io("binding 127.0.0.1:0 to find a free port"))?;
        let port = listener
            .local_addr()
            .map_err(Error::io("reading a bound port"))?
            .port();
        if CONTRACT_PORTS.contains(&port) {
            continue;
        }
        let mut seen = handed_out()
            .lock()
            .map_err(|_| Error::Proc("port registry poisoned".into()))?;
        if seen.insert(port) {
            return Ok(port);
        }
    }
    Err(Error::Proc("no free port after 64 tries".into()))
}

/// `127.0.0.1:<port>`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Whether something accepts TCP connections on `addr` right now.
pub fn is_open(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}
