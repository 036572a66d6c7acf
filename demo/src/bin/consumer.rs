//! certbind-consumer: the legitimate workload. Gets tokens over mTLS with its certificate,
//! calls orders and billing through the sidecar, prints one line per call, and exits non-zero
//! when any answer differs from what the demo policy promises. With `--dpop` the tokens are
//! DPoP-bound (RFC 9449) and the calls go to the orders edge listener, a fresh proof each.

use certbind_demo::consumer::{Consumer, ConsumerConfig, DpopTarget};
use certbind_demo::defaults;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "certbind-consumer",
    version,
    about = "certbind's legitimate demo caller"
)]
struct Cli {
    /// The authz-server (token endpoint).
    #[arg(long, default_value = defaults::AUTHZ, value_parser = certbind_demo::socket_addr)]
    authz: SocketAddr,
    /// The orders sidecar listener.
    #[arg(long, default_value = defaults::ORDERS, value_parser = certbind_demo::socket_addr)]
    orders: SocketAddr,
    /// The billing sidecar listener.
    #[arg(long, default_value = defaults::BILLING, value_parser = certbind_demo::socket_addr)]
    billing: SocketAddr,
    /// Holds ca.crt and <name>.crt/.key.
    #[arg(long, default_value = defaults::PKI_DIR)]
    pki_dir: PathBuf,
    /// The workload identity to call as.
    #[arg(long, default_value = "consumer")]
    name: String,
    /// How many times to run the calls (tokens are refreshed before they expire).
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Seconds between rounds.
    #[arg(long, default_value_t = 5)]
    interval_s: u64,
    /// Skip the least-privilege call (POST /billing/1, or DELETE /orders/1 with --dpop; 403).
    #[arg(long)]
    no_least_privilege: bool,
    /// DPoP mode: DPoP-bound tokens (proof to the authz-server over mTLS), calls to the orders
    /// edge listener without a client certificate, a fresh proof per request.
    #[arg(long)]
    dpop: bool,
    /// The orders edge listener (DPoP mode).
    #[arg(long, default_value = defaults::EDGE, value_parser = certbind_demo::socket_addr)]
    edge: SocketAddr,
    /// The edge listener's public origin, as proofs name it (DPoP mode).
    #[arg(long, default_value = defaults::EDGE_ORIGIN)]
    edge_origin: String,
    /// The authz-server's issuer URL: token proofs are for `<issuer>/token` (DPoP mode).
    #[arg(long, default_value = defaults::ISSUER)]
    issuer: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = ConsumerConfig {
        authz: cli.authz,
        orders: cli.orders,
        billing: cli.billing,
        pki_dir: cli.pki_dir,
        name: cli.name,
        rounds: cli.rounds,
        interval: Duration::from_secs(cli.interval_s),
        least_privilege: !cli.no_least_privilege,
        dpop: cli.dpop.then_some(DpopTarget {
            edge: cli.edge,
            origin: cli.edge_origin,
            issuer: cli.issuer,
        }),
    };
    let mut consumer = match Consumer::new(config) {
        Ok(consumer) => consumer,
        Err(e) => {
            eprintln!("certbind-consumer: {e} (run `make pki`?)");
            return ExitCode::from(2);
        }
    };
    let results = consumer.run(|r| println!("{}", r.line())).await;
    let failed = results.iter().filter(|r| !r.ok).count();
    println!(
        "{} calls, {} as expected, {} tokens fetched",
        results.len(),
        results.len() - failed,
        consumer.tokens_fetched()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("certbind-consumer: {failed} calls did not get the expected answer");
        ExitCode::from(1)
    }
}
