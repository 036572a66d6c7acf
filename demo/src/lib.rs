//! certbind's demo workloads as a library: an HTTPS client, token forging, the authz-server
//! client, the consumer's flow and the attack table, so the bins and the end-to-end test share
//! one implementation.

pub mod attacks;
pub mod authz;
pub mod client;
pub mod consumer;
pub mod control;
pub mod dpop;
pub mod forge;
pub mod hardening;
pub mod report;
pub mod usage;

/// A `--authz`/`--orders`/... argument: `address:port`, or `host:port` resolved once at start
/// (docker compose: each service its own host name). The first address wins.
pub fn socket_addr(arg: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    arg.to_socket_addrs()
        .map_err(|e| format!("{arg:?}: {e} (expected host:port)"))?
        .next()
        .ok_or_else(|| format!("{arg:?}: the name has no address"))
}

/// The fixed addresses of CONTRACT §2 (what `make up` uses).
pub mod defaults {
    pub const AUTHZ: &str = "127.0.0.1:9443";
    pub const ORDERS: &str = "127.0.0.1:8443";
    pub const BILLING: &str = "127.0.0.1:8444";
    pub const EDGE: &str = "127.0.0.1:8445";
    /// The edge listener's public origin (the `htu` of proofs sent to it).
    pub const EDGE_ORIGIN: &str = "https://127.0.0.1:8445";
    pub const BASELINE_ORDERS: &str = "127.0.0.1:8080";
    pub const BASELINE_BILLING: &str = "127.0.0.1:8081";
    pub const ISSUER: &str = "https://127.0.0.1:9443";
    pub const PKI_DIR: &str = ".run/pki";
    pub const STATE_DIR: &str = ".run/authz";
    pub const PDP_PID_FILE: &str = ".run/pids/pdp.pid";
    pub const AUTHZ_PID_FILE: &str = ".run/pids/authz.pid";
    pub const JSON: &str = ".run/attacks.json";
    pub const MARKDOWN: &str = "docs/attacks.md";
}

#[cfg(test)]
mod tests {
    use super::socket_addr;

    #[test]
    fn socket_addr_takes_addresses_and_host_names_and_refuses_the_rest() {
        assert_eq!(
            socket_addr("127.0.0.1:9443").unwrap().to_string(),
            "127.0.0.1:9443"
        );
        assert_eq!(socket_addr("localhost:8443").unwrap().port(), 8443);
        for bad in ["127.0.0.1", "authz", "", "host.invalid:9443"] {
            assert!(socket_addr(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
