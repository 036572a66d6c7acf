//! The command line: `pki init|issue|rotate|renew`, `serve`, `keys rotate`, `revoke`, and what
//! each prints. The flags are here; starting the server is in `serve.rs`, the tests in `tests.rs`.

mod serve;

pub use serve::valid_issuer;

use crate::ca;
use crate::keys::KeyStore;
use crate::revocation::{Request, Revocations};
use certbind_core::revocation::Kind;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Shared store for replicas: a `postgres://user@host:port/db` URL (revocations, signing
    /// keys, DPoP proof jtis). Without it: SQLite and key files in the state directory.
    #[arg(long)]
    pub store: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create the CA and the demo workload certificates; keeps what is still valid.
    Init {
        #[arg(long, default_value = ".run/pki")]
        dir: PathBuf,
        #[command(flatten)]
        life: LifeArgs,
        /// Regenerate the CA and every certificate.
        #[arg(long)]
        force: bool,
    },
    /// Keep the PKI alive: reissue every leaf at 2/3 of its life and roll the CA over before
    /// it ends (new root in the bundle, then signing, then the old root removed).
    Renew {
        #[arg(long, default_value = ".run/pki")]
        dir: PathBuf,
        #[command(flatten)]
        life: LifeArgs,
        /// Seconds every process gets to pick up a changed trust bundle before the next
        /// rollover phase.
        /// (Envoy replaces its connections to the authz-server and the PDP every 30 s, so the
        /// default leaves every connection opened under the old root time to end.)
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
        overlap_secs: u64,
        /// Keep running, looking again every twentieth of a leaf's life (1 s to 1 min).
        #[arg(long)]
        watch: bool,
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

/// Lifetimes of new certificates (`--leaf-secs`/`--ca-secs` override the days, for tests).
#[derive(Debug, Args)]
pub struct LifeArgs {
    /// Validity of new leaf certificates in days.
    #[arg(long, default_value_t = 1)]
    pub days: u32,
    /// Validity of a new CA in days (at least three leaf lifetimes).
    #[arg(long, default_value_t = ca::DEFAULT_CA_DAYS)]
    pub ca_days: u32,
    /// Validity of new leaves in seconds (overrides --days).
    #[arg(long)]
    pub leaf_secs: Option<u32>,
    /// Validity of a new CA in seconds (overrides --ca-days).
    #[arg(long)]
    pub ca_secs: Option<u32>,
    /// Extra DNS names for the server certificates (authz, pdp, orders, billing): `NAME` for
    /// every server, `WORKLOAD=NAME` for that one only, e.g. the host names of a compose
    /// network (repeatable).
    #[arg(long = "dns", value_name = "[WORKLOAD=]NAME", value_parser = server_dns)]
    pub dns: Vec<String>,
}

/// `NAME` or `WORKLOAD=NAME` where WORKLOAD holds a server certificate and NAME is a DNS name.
fn server_dns(arg: &str) -> Result<String, String> {
    let (workload, host) = match arg.split_once('=') {
        Some((w, h)) => (Some(w), h),
        None => (None, arg),
    };
    if let Some(w) = workload
        && !ca::SERVERS.contains(&w)
    {
        return Err(format!(
            "{w:?} holds no server certificate (servers: {:?})",
            ca::SERVERS
        ));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(format!("{host:?} is not a DNS name"));
    }
    Ok(arg.to_owned())
}

impl LifeArgs {
    fn lifetimes(&self) -> Result<ca::Lifetimes, String> {
        let days = |d: u32| time::Duration::days(i64::from(d));
        let secs = |s: u32| time::Duration::seconds(i64::from(s));
        if !(1..=3650).contains(&self.days) || !(1..=3650).contains(&self.ca_days) {
            return Err("--days and --ca-days must be between 1 and 3650".into());
        }
        let leaf = self.leaf_secs.map_or(days(self.days), secs);
        let ca = self.ca_secs.map_or(days(self.ca_days), secs);
        ca::Lifetimes::new(ca, leaf).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key; it signs from now on, older keys stay in the JWKS.
    Rotate {
        #[arg(long, default_value = ".run/authz")]
        state_dir: PathBuf,
        /// The replicas' shared store (`postgres://…`) instead of the state directory.
        #[arg(long)]
        store: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(env = "CERTBIND_AUTHZ_LISTEN", long, default_value = "127.0.0.1:9443")]
    pub listen: SocketAddr,
    /// Holds ca.crt and the server identity authz.crt/authz.key.
    #[arg(env = "CERTBIND_AUTHZ_PKI_DIR", long, default_value = ".run/pki")]
    pub pki_dir: PathBuf,
    /// Holds keys/<kid>.pem.
    #[arg(env = "CERTBIND_AUTHZ_STATE_DIR", long, default_value = ".run/authz")]
    pub state_dir: PathBuf,
    #[arg(
        env = "CERTBIND_AUTHZ_CLIENTS",
        long,
        default_value = "authz-server/clients.yaml"
    )]
    pub clients: PathBuf,
    #[arg(
        env = "CERTBIND_AUTHZ_ISSUER",
        long,
        default_value = "https://127.0.0.1:9443"
    )]
    pub issuer: String,
    /// Access token lifetime in seconds (1..=300).
    #[arg(env = "CERTBIND_AUTHZ_TOKEN_TTL", long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub token_ttl: u64,
    /// SPIFFE IDs allowed to use the admin API (comma separated).
    #[arg(env = "CERTBIND_AUTHZ_OPERATORS", long, value_delimiter = ',', default_value = crate::app::DEFAULT_OPERATOR)]
    pub operators: Vec<String>,
    /// SPIFFE IDs allowed to follow the revocation feed (comma separated); a path segment
    /// may be `*`, e.g. `spiffe://<td>/ns/*/sa/*` for every sidecar of a mesh.
    #[arg(env = "CERTBIND_AUTHZ_FEED_CALLERS", long, value_delimiter = ',', default_value = crate::app::DEFAULT_FEED_CALLER)]
    pub feed_callers: Vec<String>,
    /// Seconds a feed long-poll waits for news (keep well below the sidecars' staleness bound).
    #[arg(env = "CERTBIND_AUTHZ_FEED_WAIT", long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub feed_wait: u64,
    /// Plain-HTTP port for /healthz, /readyz and /metrics (kubelet probes, Prometheus); off
    /// unless given, e.g. 127.0.0.1:9444 (it has no TLS and answers nothing else).
    #[arg(env = "CERTBIND_AUTHZ_HEALTH_LISTEN", long)]
    pub health_listen: Option<SocketAddr>,
    /// Log one JSON object per line (default: key=value text).
    #[arg(env = "CERTBIND_AUTHZ_LOG_JSON", long)]
    pub log_json: bool,
    /// Posture rules (YAML, e.g. authz-server/posture.yaml); without it `/v1/posture` is 404.
    #[arg(env = "CERTBIND_AUTHZ_POSTURE", long)]
    pub posture: Option<PathBuf>,
    /// Shared store for replicas: a `postgres://user@host:port/db` URL (revocations, signing
    /// keys, DPoP proof jtis). Without it: SQLite and key files in the state directory.
    #[arg(env = "CERTBIND_AUTHZ_STORE", long)]
    pub store: Option<String>,
    /// With `--store`: rotate the signing key when it is this many seconds old (one replica
    /// rotates, under a lock; the new key is published 2 s before it signs).
    #[arg(env = "CERTBIND_AUTHZ_ROTATE_KEYS_EVERY", long, requires = "store", value_parser = clap::value_parser!(u64).range(5..))]
    pub rotate_keys_every: Option<u64>,
}

/// Runs a parsed command line; errors are printed, never panicked.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Pki { command } => run_pki(command),
        Command::Keys {
            command: KeysCommand::Rotate { state_dir, store },
        } => match store {
            Some(url) => rotate_shared_keys(&url),
            None => rotate_keys(&state_dir),
        },
        Command::Serve(args) => serve::run_serve(args),
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

/// Adds a signing key to the replicas' shared store (published 2 s before it signs).
fn rotate_shared_keys(url: &str) -> Result<(), String> {
    let keys = crate::pg_keys::PgKeys::open(crate::pg::config(url)?).map_err(|e| e.to_string())?;
    let kid = crate::keys::KeySource::rotate(&keys).map_err(|e| e.to_string())?;
    println!("shared store: new signing key {kid} (signs in 2 s)");
    Ok(())
}

/// The revocation service on the configured store: PostgreSQL with `--store`, else SQLite in
/// the state directory.
fn open_revocations(
    store: Option<&str>,
    state_dir: &std::path::Path,
) -> Result<Revocations, String> {
    match store {
        Some(url) => {
            let backend = crate::pg::PgStore::open(crate::pg::config(url)?)
                .map_err(|e| format!("--store: {e}"))?;
            Revocations::with_backend(Box::new(backend), now_s()).map_err(|e| e.to_string())
        }
        None => Revocations::open(state_dir, now_s()).map_err(|e| e.to_string()),
    }
}

fn run_pki(command: PkiCommand) -> Result<(), String> {
    let now = time::OffsetDateTime::now_utc();
    match command {
        PkiCommand::Init { dir, life, force } => {
            let report = ca::init_with(
                &dir,
                &ca::DEFAULT_WORKLOADS,
                life.lifetimes()?,
                &life.dns,
                force,
                now,
            )
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
        PkiCommand::Renew {
            dir,
            life,
            overlap_secs,
            watch,
        } => run_renew(&dir, &life, overlap_secs, watch),
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

/// `pki renew`: one pass, or passes forever with `--watch` (a failed pass is reported and
/// retried: the next one may succeed, and the certificates on disk stay as they were).
fn run_renew(
    dir: &std::path::Path,
    life: &LifeArgs,
    overlap_secs: u64,
    watch: bool,
) -> Result<(), String> {
    let lifetimes = life.lifetimes()?;
    let overlap = time::Duration::seconds(i64::try_from(overlap_secs).unwrap_or(i64::MAX));
    let interval = crate::renew::poll_interval(lifetimes.leaf);
    if watch {
        eprintln!(
            "certbind-authz renewer watching {} every {} s",
            dir.display(),
            interval.as_secs()
        );
    }
    loop {
        let now = time::OffsetDateTime::now_utc();
        match crate::rollover::renew_once(
            dir,
            &ca::DEFAULT_WORKLOADS,
            lifetimes,
            overlap,
            &life.dns,
            now,
        ) {
            Ok(done) => {
                for line in done {
                    println!("{now}: {}: {line}", dir.display());
                }
            }
            Err(e) if watch => eprintln!("certbind-authz: renew: {e} (retrying)"),
            Err(e) => return Err(e.to_string()),
        }
        if !watch {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}

fn now_s() -> u64 {
    (crate::clock::system_clock())()
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
    let revs = open_revocations(args.store.as_deref(), &args.state_dir)?;
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

#[cfg(test)]
mod tests;
