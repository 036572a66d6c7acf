//! Free loopback ports for a test run, never the fixed ports of CONTRACT §2 and never the same
//! port twice within one test process (several Systems start concurrently).

use crate::Error;
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The fixed ports of CONTRACT §2: `make up` may be holding them.
const CONTRACT_PORTS: [u16; 10] = [9443, 9191, 8443, 8444, 8445, 8080, 8081, 9901, 7001, 7002];

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// The lowest port the kernel hands out for outgoing connections (`ip_local_port_range`).
fn ephemeral_floor() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A loopback port that was free a moment ago, and that this process never hands out again.
///
/// Chosen at random below the ephemeral range: a port from `bind(0)` comes from the range the
/// kernel also uses for outgoing connections, so between picking it and the service binding
/// it, any client socket could take it. Ports below that range only go to whoever binds them.
pub fn free_port() -> Result<u16, Error> {
    const LOW: u16 = 20_000;
    let high = ephemeral_floor().max(LOW + 1_000);
    for _ in 0..256 {
        let mut r = [0u8; 2];
        getrandom::fill(&mut r).map_err(|e| Error::Proc(format!("getrandom: {e}")))?;
        let port = LOW + u16::from_le_bytes(r) % (high - LOW);
        if CONTRACT_PORTS.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
            continue;
        }
        let mut seen = handed_out()
            .lock()
            .map_err(|_| Error::Proc("port registry poisoned".into()))?;
        if seen.insert(port) {
            return Ok(port);
        }
    }
    Err(Error::Proc("no free port after 256 tries".into()))
}

/// `127.0.0.1:<port>`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Whether something accepts TCP connections on `addr` right now.
pub fn is_open(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        // Each port is bound at once and held: other test processes (lifecycle_e2e runs beside
        // this one) pick from the same range, so a port checked later could be theirs by then.
        // Between free_port's check and this bind another process may still take a port (the
        // race free_port narrows, not closes): that port is not held, but it must stay rare.
        let mut held = Vec::new();
        let mut taken_meanwhile = 0;
        for _ in 0..50 {
            let port = free_port().unwrap();
            assert!(
                port < ephemeral_floor().max(21_000) && port >= 20_000,
                "{port}"
            );
            assert!(!CONTRACT_PORTS.contains(&port));
            match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
                Ok(listener) => held.push(listener),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => taken_meanwhile += 1,
                Err(e) => panic!("binding {port}: {e}"),
            }
        }
        assert!(
            taken_meanwhile <= 5,
            "{taken_meanwhile} of 50 ports taken at once"
        );
        let distinct: HashSet<u16> = held
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert_eq!(distinct.len(), held.len());
    }
}
