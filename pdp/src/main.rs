//! certbind-pdp command line: `serve`, `check <file>`, `eval <file> <input.json>`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use certbind_core::decision::{DecisionRequest, OpaInput};
use certbind_pdp::metrics::Metrics;
use certbind_pdp::{
    AppState, CompiledPolicy, PolicyStore, app, decide, health, policy, reload, serve, tls,
};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "certbind-pdp",
    version,
    about = "certbind's policy decision point"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve decisions over mTLS (TLS 1.3, client certificate required).
    Serve(ServeArgs),
    /// Validate a policy file: exit 0 when valid, 1 with `file:line:column: message` when not.
    Check { file: PathBuf },
    /// Decide one request (`DecisionRequest` JSON, or OPA's `{"input": ...}`) and print it.
    Eval {
        file: PathBuf,
        input: PathBuf,
        /// Evaluate at this Unix time instead of now (for time windows and token age).
        #[arg(long)]
        now: Option<u64>,
    },
}

#[derive(clap::Args)]
/// `serve`'s flags; each also from its `CERTBIND_PDP_*` environment variable.
struct ServeArgs {
    #[arg(env = "CERTBIND_PDP_LISTEN", long, default_value = "127.0.0.1:9191")]
    listen: SocketAddr,
    #[arg(
        env = "CERTBIND_PDP_POLICIES",
        long,
        default_value = "pdp/policies/demo.yaml"
    )]
    policies: PathBuf,
    #[arg(env = "CERTBIND_PDP_CERT", long, default_value = ".run/pki/pdp.crt")]
    cert: PathBuf,
    #[arg(env = "CERTBIND_PDP_KEY", long, default_value = ".run/pki/pdp.key")]
    key: PathBuf,
    #[arg(env = "CERTBIND_PDP_CA", long, default_value = ".run/pki/ca.crt")]
    ca: PathBuf,
    /// SPIFFE IDs allowed to ask (repeatable, or comma separated); a path segment may be
    /// `*`, e.g. `spiffe://<td>/ns/*/sa/*` for every sidecar of a mesh.
    #[arg(
        env = "CERTBIND_PDP_CALLERS",
        long = "callers",
        value_delimiter = ',',
        default_value = "spiffe://certbind.test/ns/demo/sa/envoy"
    )]
    callers: Vec<String>,
    /// Plain-HTTP port for /healthz, /readyz and /metrics (kubelet probes, Prometheus);
    /// off unless given, e.g. 127.0.0.1:9192 (it has no TLS and no caller check).
    #[arg(env = "CERTBIND_PDP_HEALTH_LISTEN", long)]
    health_listen: Option<SocketAddr>,
    /// Log one JSON object per line (default: key=value text).
    #[arg(env = "CERTBIND_PDP_LOG_JSON", long)]
    log_json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => run_serve(args),
        Command::Check { file } => run_check(&file),
        Command::Eval { file, input, now } => run_eval(&file, &input, now),
    }
}

fn run_check(file: &Path) -> ExitCode {
    match policy::load(file) {
        Ok((policy, bytes)) => {
            let compiled = CompiledPolicy::compile(policy, &bytes);
            println!(
                "ok: {}: {} rules, policy_version {}",
                file.display(),
                compiled.rules.len(),
                compiled.version
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run_eval(file: &Path, input: &Path, now: Option<u64>) -> ExitCode {
    let (policy, bytes) = match policy::load(file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let compiled = CompiledPolicy::compile(policy, &bytes);
    let text = match std::fs::read(input) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: cannot read: {e}", input.display());
            return ExitCode::FAILURE;
        }
    };
    let request = match serde_json::from_slice::<DecisionRequest>(&text) {
        Ok(r) => r,
        Err(direct) => match serde_json::from_slice::<OpaInput>(&text) {
            Ok(o) => o.input,
            Err(_) => {
                eprintln!("{}: not a decision request: {direct}", input.display());
                return ExitCode::FAILURE;
            }
        },
    };
    let now = now.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    let outcome = decide(&compiled, &request, now);
    let decision = outcome.to_decision(&compiled.version);
    match serde_json::to_string_pretty(&decision) {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("cannot print the decision: {e}");
            return ExitCode::FAILURE;
        }
    }
    eprintln!(
        "{} by rule `{}` ({})",
        if outcome.allow { "allowed" } else { "denied" },
        outcome.policy_id,
        outcome.reason.as_str()
    );
    ExitCode::SUCCESS
}

/// Logs go to stderr: `key=value` text (colours only on a terminal), or one JSON object per line.
fn init_logging(json: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

fn run_serve(args: ServeArgs) -> ExitCode {
    let ServeArgs {
        listen,
        policies,
        cert,
        key,
        ca,
        callers,
        health_listen,
        log_json,
    } = args;
    let (policies, cert, key, ca) = (&policies, &cert, &key, &ca);
    init_logging(log_json);
    let allowed = match certbind_core::caller::CallerList::parse(&callers) {
        Ok(list) => list,
        Err(e) => {
            eprintln!("certbind-pdp: --callers: {e}");
            return ExitCode::FAILURE;
        }
    };
    // An invalid policy at startup stops the process with the file:line:column message.
    let store = match PolicyStore::open(policies) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("certbind-pdp: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tls = match tls::server_config(cert, key, ca) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("certbind-pdp: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("certbind-pdp: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("certbind-pdp: cannot listen on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().unwrap_or(listen);
        let metrics = Arc::new(Metrics::default());
        let watcher =
            tokio::spawn(Arc::clone(&store).watch(Arc::clone(&metrics), reload::POLL_INTERVAL));
        let policy = store.current();
        tracing::info!(
            policy = %store.path().display(),
            policy_version = %policy.version,
            rules = policy.rules.len(),
            callers = ?callers,
            "policy loaded"
        );
        let state = AppState::new(store, metrics, allowed);
        let ready = health::Ready::default();
        let health_task = match health_listen {
            Some(at) => match tokio::net::TcpListener::bind(at).await {
                Ok(l) => {
                    let router = health::router(state.clone(), Arc::clone(&ready));
                    eprintln!(
                        "certbind-pdp health on http://{}",
                        l.local_addr().unwrap_or(at)
                    );
                    Some(tokio::spawn(health::serve(l, router)))
                }
                Err(e) => {
                    eprintln!("certbind-pdp: cannot listen on {at} (--health-listen): {e}");
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        let shutdown = serve::shutdown_signal(); // handlers installed before we announce
        eprintln!("certbind-pdp listening on https://{addr}");
        ready.store(true, std::sync::atomic::Ordering::Release);
        serve::serve(listener, tls, app(state), shutdown).await;
        ready.store(false, std::sync::atomic::Ordering::Release);
        if let Some(task) = health_task {
            task.abort();
        }
        watcher.abort();
        tracing::info!("certbind-pdp stopped");
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_serve_flag_can_come_from_a_certbind_pdp_environment_variable() {
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").unwrap();
        for arg in serve.get_arguments().filter(|a| a.get_long().is_some()) {
            let long = arg.get_long().unwrap();
            if long == "help" {
                continue;
            }
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
            let want = format!("CERTBIND_PDP_{}", long.replace('-', "_").to_uppercase());
            assert_eq!(env, want, "--{long}");
        }
    }
}
