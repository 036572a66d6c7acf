//! The command line: `pki init|issue|rotate`, `serve`, `keys rotate`, and what each prints.

use crate::app::{AppState, app};
use crate::ca;
use crate::clients::Registry;
use crate::keys::KeyStore;
use crate::revocation::{Request, Revocations};
use crate::{server, tls};
use certbind_core::binding::SpiffeId;
use certbind_core::revocation::Kind;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "certbind-authz",
    version,
    about = "certbind's authorization server and internal CA"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The internal CA and workload certificates.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Run the authorization server (HTTPS, TLS 1.3, client certificates).
    Serve(ServeArgs),
    /// Token signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Revoke a token (jti), a subject (SPIFFE ID) or a client certificate (thumbprint) in
    /// the durable store; a running server publishes it within 100 ms.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["jti", "subject", "cert"])))]
pub struct RevokeArgs {
    /// A token's `jti`: revoked until any token could have expired. (Base64url values may
    /// start with `-`: they are taken as the value, not as an option.)
    #[arg(long, allow_hyphen_values = true)]
    pub jti: Option<String>,
    /// A SPIFFE ID: every token issued to it until now is revoked, and it gets no new token
    /// until the ban is lifted (`--lift`) or `--expires-at`.
    #[arg(long)]
    pub subject: Option<String>,
    /// A client certificate's `x5t#S256` (base64url) or SHA-256 in hex: every request and
    /// token request with it is refused (until `--expires-at`, else until replaced).
    #[arg(long, allow_hyphen_values = true)]
    pub cert: Option<String>,
    /// Why (stored and logged; printable ASCII, at most 200 characters).
    #[arg(long)]
    pub reason: Option<String>,
    /// When a subject ban or certificate revocation ends (Unix seconds).
    #[arg(long)]
    pub expires_at: Option<u64>,
    /// Lift the ban of `--subject` (tokens issued before it stay revoked until they expire).
    #[arg(long, requires = "subject")]
    pub lift: bool,
    /// Holds revocations.db (shared with the running server).
    #[arg(long, default_value = ".run/authz")]
    pub state_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create the CA and the demo workload certificates; keeps what is still valid.
    Init {
        #[arg(long, default_value = ".run/pki")]
        dir: PathBuf,
        /// Validity of new certificates in days.
        #[arg(long, default_value_t = 1)]
        days: u32,
        /// Regenerate the CA and every certificate.
        #[arg(long)]
        force: bool,
    },
    /// Issue one more workload certificate `<name>.crt`/`<name>.key` from the existing CA.
    Issue {
        #[arg(long, default_value = ".run/pki")]
        dir: PathBuf,
        /// Workload name: becomes spiffe://certbind.test/ns/demo/sa/<name>.
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 1)]
        days: u32,
    },
    /// Reissue workload certificates (new key, new serial) from the existing CA, each file
    /// replaced atomically: Envoy rereads them through SDS without a restart.
    Rotate {
        #[arg(long, default_value = ".run/pki")]
        dir: PathBuf,
        /// Workload to reissue (repeatable); default: consumer, orders, billing, envoy.
        #[arg(long = "identity")]
        identities: Vec<String>,
        #[arg(long, default_value_t = 1)]
        days: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key; it signs from now on, older keys stay in the JWKS.
    Rotate {
        #[arg(long, default_value = ".run/authz")]
        state_dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:9443")]
    pub listen: SocketAddr,
    /// Holds ca.crt and the server identity authz.crt/authz.key.
    #[arg(long, default_value = ".run/pki")]
    pub pki_dir: PathBuf,
    /// Holds keys/<kid>.pem.
    #[arg(long, default_value = ".run/authz")]
    pub state_dir: PathBuf,
    #[arg(long, default_value = "authz-server/clients.yaml")]
    pub clients: PathBuf,
    #[arg(long, default_value = "https://127.0.0.1:9443")]
    pub issuer: String,
    /// Access token lifetime in seconds (1..=300).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub token_ttl: u64,
    /// SPIFFE IDs allowed to use the admin API (comma separated).
    #[arg(long, value_delimiter = ',', default_value = crate::app::DEFAULT_OPERATOR)]
    pub operators: Vec<String>,
    /// SPIFFE IDs allowed to follow the revocation feed (comma separated).
    #[arg(long, value_delimiter = ',', default_value = crate::app::DEFAULT_FEED_CALLER)]
    pub feed_callers: Vec<String>,
    /// Seconds a feed long-poll waits for news (keep well below the sidecars' staleness bound).
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub feed_wait: u64,
    /// Posture rules (YAML, e.g. authz-server/posture.yaml); without it `/v1/posture` is 404.
    #[arg(long)]
    pub posture: Option<PathBuf>,
}

/// Runs a parsed command line; errors are printed, never panicked.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Pki { command } => run_pki(command),
        Command::Keys {
            command: KeysCommand::Rotate { state_dir },
        } => rotate_keys(&state_dir),
        Command::Serve(args) => run_serve(args),
        Command::Revoke(args) => run_revoke(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certbind-authz: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Adds a signing key; on an empty key directory the first key is the new one.
fn rotate_keys(state_dir: &std::path::Path) -> Result<(), String> {
    let (store, created) = KeyStore::open_reporting(state_dir).map_err(|e| e.to_string())?;
    let kid = if created {
        store
            .current()
            .ok()
            .and_then(|set| set.active().map(|k| k.kid().to_owned()))
            .unwrap_or_default()
    } else {
        store.rotate().map_err(|e| e.to_string())?
    };
    println!("{}: new signing key {kid} (active)", store.dir().display());
    Ok(())
}

fn run_pki(command: PkiCommand) -> Result<(), String> {
    let now = time::OffsetDateTime::now_utc();
    match command {
        PkiCommand::Init { dir, days, force } => {
            let report = ca::init(&dir, &ca::DEFAULT_WORKLOADS, days, force, now)
                .map_err(|e| e.to_string())?;
            println!("{}: {}", dir.join("ca.crt").display(), report.ca);
            for (name, outcome) in report.leaves {
                println!(
                    "{}: {outcome} ({})",
                    dir.join(format!("{name}.crt")).display(),
                    ca::workload_id(&name)
                        .map(|id| id.to_string())
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        PkiCommand::Issue { dir, name, days } => {
            let path = ca::issue(&dir, &name, days, now).map_err(|e| e.to_string())?;
            println!("{}: created", path.display());
            Ok(())
        }
        PkiCommand::Rotate {
            dir,
            identities,
            days,
        } => {
            let names: Vec<&str> = if identities.is_empty() {
                ca::ROTATE_DEFAULT.to_vec()
            } else {
                identities.iter().map(String::as_str).collect()
            };
            for (name, serial) in ca::rotate(&dir, &names, days, now).map_err(|e| e.to_string())? {
                println!(
                    "{}: rotated (serial {serial})",
                    dir.join(format!("{name}.crt")).display()
                );
            }
            Ok(())
        }
    }
}

fn now_s() -> u64 {
    (crate::app::system_clock())()
}

/// Writes one revocation to the store and prints the recorded row as JSON.
fn run_revoke(args: RevokeArgs) -> Result<(), String> {
    let (kind, value) = match (args.jti, args.subject, args.cert) {
        (Some(v), None, None) => (Kind::Jti, v),
        (None, Some(v), None) => (Kind::Subject, v),
        (None, None, Some(v)) => (Kind::Cert, v),
        _ => return Err("give exactly one of --jti, --subject, --cert".into()),
    };
    let now = now_s();
    let revs = Revocations::open(&args.state_dir, now).map_err(|e| e.to_string())?;
    let req = Request {
        kind,
        value,
        reason: args.reason,
        expires_at: args.expires_at,
        lift: args.lift,
    };
    let row = revs
        .apply_request(&req, now)
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    println!("{}", crate::revoke::row_json(&row));
    Ok(())
}

fn parse_ids(flag: &str, ids: &[String]) -> Result<Vec<SpiffeId>, String> {
    ids.iter()
        .map(|s| SpiffeId::parse(s).map_err(|e| format!("{flag} {s:?}: {e}")))
        .collect()
}

/// Checks the issuer is an https URL without query or fragment (RFC 8414 §2).
pub fn valid_issuer(issuer: &str) -> bool {
    issuer
        .strip_prefix("https://")
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(['?', '#', ' ']))
}

fn run_serve(args: ServeArgs) -> Result<(), String> {
    if !valid_issuer(&args.issuer) {
        return Err(format!(
            "--issuer {:?} must be an https URL without query or fragment",
            args.issuer
        ));
    }
    let registry =
        Registry::load(&args.clients).map_err(|e| format!("{}: {e}", args.clients.display()))?;
    let keys = KeyStore::open(&args.state_dir).map_err(|e| e.to_string())?;
    let tls = tls::server_config(&args.pki_dir, "authz").map_err(|e| e.to_string())?;
    let operators = parse_ids("--operators", &args.operators)?;
    let feed_callers = parse_ids("--feed-callers", &args.feed_callers)?;
    let revocations =
        Arc::new(Revocations::open(&args.state_dir, now_s()).map_err(|e| e.to_string())?);
    let mut state = AppState::new(
        registry,
        keys,
        Arc::clone(&revocations),
        &args.issuer,
        args.token_ttl,
    );
    state.operators = Arc::new(operators);
    state.feed_callers = Arc::new(feed_callers);
    state.usage = Some(Arc::new(
        crate::usage::UsageCounter::open(&args.state_dir).map_err(|e| e.to_string())?,
    ));
    state.feed_wait = Duration::from_secs(args.feed_wait);
    if let Some(path) = &args.posture {
        let policy =
            crate::posture::Policy::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
        state.posture = Some(Arc::new(policy));
    }
    let clock = state.clock.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        // Rows written by `certbind-authz revoke` reach the mirror and the feed from here.
        let watcher = revocations.spawn_watcher(clock);
        // Reports are counted from now: a required subject has one interval to report.
        state.posture_reports = Arc::new(crate::posture::Reports::new(now_s()));
        let watchdog = crate::revoke::spawn_posture_watchdog(state.clone());
        eprintln!("certbind-authz listening on https://{addr}");
        server::serve(listener, tls, app(state), shutdown_signal()).await;
        watcher.abort();
        if let Some(w) = watchdog {
            w.abort();
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_defaults_match_the_contract() {
        let cli = Cli::try_parse_from(["certbind-authz", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.listen.to_string(), "127.0.0.1:9443");
        assert_eq!(args.token_ttl, 300);
        assert_eq!(args.issuer, "https://127.0.0.1:9443");
    }

    #[test]
    fn takes_a_thumbprint_or_jti_starting_with_a_hyphen_as_the_value() {
        let cli = Cli::try_parse_from(["certbind-authz", "revoke", "--cert", "-JxYz"]).unwrap();
        let Command::Revoke(args) = cli.command else {
            panic!("not revoke");
        };
        assert_eq!(args.cert.as_deref(), Some("-JxYz"));
        let cli = Cli::try_parse_from(["certbind-authz", "revoke", "--jti", "-a_b"]).unwrap();
        let Command::Revoke(args) = cli.command else {
            panic!("not revoke");
        };
        assert_eq!(args.jti.as_deref(), Some("-a_b"));
    }

    #[test]
    fn refuses_token_lifetimes_above_300_seconds() {
        assert!(Cli::try_parse_from(["certbind-authz", "serve", "--token-ttl", "301"]).is_err());
        assert!(Cli::try_parse_from(["certbind-authz", "serve", "--token-ttl", "0"]).is_err());
        assert!(Cli::try_parse_from(["certbind-authz", "serve", "--token-ttl", "60"]).is_ok());
    }

    #[test]
    fn issuers_must_be_https_without_query_or_fragment() {
        assert!(valid_issuer("https://127.0.0.1:9443"));
        assert!(!valid_issuer("http://127.0.0.1:9443"));
        assert!(!valid_issuer("https://"));
        assert!(!valid_issuer("https://a?b"));
        assert!(!valid_issuer("https://a#b"));
    }
}
