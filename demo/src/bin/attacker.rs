//! certbind-attacker: runs the attack table against a running system (baseline vs certbind),
//! prints it, writes the JSON record and the Markdown table, and exits non-zero when certbind
//! admits an attack, answers one unexpectedly, or a positive control fails.

use certbind_demo::attacks::{self, Context, Target};
use certbind_demo::control::{ProcessControl, read_pid_file};
use certbind_demo::{defaults, forge, report};
use clap::Parser;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "certbind-attacker",
    version,
    about = "certbind's attack table: baseline vs certbind"
)]
struct Cli {
    /// The authz-server (tokens for the legitimate workloads, JWKS).
    #[arg(long, default_value = defaults::AUTHZ, value_parser = certbind_demo::socket_addr)]
    authz: SocketAddr,
    /// certbind's orders sidecar listener.
    #[arg(long, default_value = defaults::ORDERS, value_parser = certbind_demo::socket_addr)]
    orders: SocketAddr,
    /// certbind's billing sidecar listener.
    #[arg(long, default_value = defaults::BILLING, value_parser = certbind_demo::socket_addr)]
    billing: SocketAddr,
    /// The baseline orders listener (TLS + jwt_authn).
    #[arg(long, default_value = defaults::BASELINE_ORDERS, value_parser = certbind_demo::socket_addr)]
    baseline_orders: SocketAddr,
    /// The baseline billing listener.
    #[arg(long, default_value = defaults::BASELINE_BILLING, value_parser = certbind_demo::socket_addr)]
    baseline_billing: SocketAddr,
    /// certbind's orders edge listener (DPoP, no client certificate).
    #[arg(long, default_value = defaults::EDGE, value_parser = certbind_demo::socket_addr)]
    edge: SocketAddr,
    /// The edge listener's public origin, as proofs name it.
    #[arg(long, default_value = defaults::EDGE_ORIGIN)]
    edge_origin: String,
    /// The authz-server's issuer URL.
    #[arg(long, default_value = defaults::ISSUER)]
    issuer: String,
    /// Holds ca.crt and the workload certificates.
    #[arg(long, default_value = defaults::PKI_DIR)]
    pki_dir: PathBuf,
    /// The authz-server's state directory (keys/<kid>.pem) for the insider rows.
    #[arg(long, default_value = defaults::STATE_DIR)]
    state_dir: PathBuf,
    /// The PDP's pid file, to freeze it for the "PDP down" row (skipped when absent).
    #[arg(long, default_value = defaults::PDP_PID_FILE)]
    pdp_pid_file: PathBuf,
    /// The authz-server's pid file, for the "JWKS down" rows (skipped when absent).
    #[arg(long, default_value = defaults::AUTHZ_PID_FILE)]
    authz_pid_file: PathBuf,
    /// Never freeze a process: the PDP/JWKS-down rows are reported as not run.
    #[arg(long)]
    no_process_control: bool,
    /// Where to write the JSON record.
    #[arg(long, default_value = defaults::JSON)]
    json: PathBuf,
    /// Where to write the Markdown table.
    #[arg(long, default_value = defaults::MARKDOWN)]
    markdown: PathBuf,
}

fn pid(path: &Path, enabled: bool) -> Option<u32> {
    if !enabled {
        return None;
    }
    match read_pid_file(path) {
        Ok(pid) => Some(pid),
        Err(e) => {
            eprintln!("certbind-attacker: no pid ({e}); its rows will not run");
            None
        }
    }
}

fn write(path: &Path, contents: &str) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, contents).map_err(|e| format!("{}: {e}", path.display()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let enabled = !cli.no_process_control;
    let target = Target {
        authz: cli.authz,
        orders: cli.orders,
        billing: cli.billing,
        baseline_orders: cli.baseline_orders,
        baseline_billing: cli.baseline_billing,
        edge: cli.edge,
        edge_origin: cli.edge_origin,
        pki_dir: cli.pki_dir,
        state_dir: Some(cli.state_dir),
        issuer: cli.issuer,
        control: Arc::new(ProcessControl {
            pdp: pid(&cli.pdp_pid_file, enabled),
            authz: pid(&cli.authz_pid_file, enabled),
        }),
    };
    let ctx = match Context::prepare(target).await {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("certbind-attacker: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{}", report::header_line());
    let mut n = 0;
    let table = attacks::run(&ctx, |row| {
        n += 1;
        println!("{}", report::line(n, row));
    });
    // On Ctrl-C the table is dropped mid-row, and with it the guard that brings a frozen PDP or
    // authz-server back: the attacker never leaves the system stopped.
    let rows = tokio::select! {
        rows = table => rows,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("certbind-attacker: interrupted; every frozen service was resumed");
            return ExitCode::from(130);
        }
    };
    let counts = report::Counts::of(&rows);
    println!("\n{}", counts.sentence());
    let json = report::json(&rows, forge::now());
    let mut failed_write = false;
    for (path, text) in [
        (&cli.json, format!("{json:#}\n")),
        (&cli.markdown, report::markdown(&rows)),
    ] {
        match write(path, &text) {
            Ok(()) => println!("wrote {}", path.display()),
            Err(e) => {
                eprintln!("certbind-attacker: cannot write {e}");
                failed_write = true;
            }
        }
    }
    if !counts.ok() {
        eprintln!(
            "certbind-attacker: FAILED: certbind admitted an attack, answered one unexpectedly, or a control failed"
        );
        return ExitCode::from(1);
    }
    if failed_write {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
