//! The system under test on free ports: PKI, the echo upstream, authz-server, PDP and the
//! `ext_authz` service pinned to the load core, and one Envoy per scenario (`--concurrency 1`)
//! pinned to the Envoy core with `taskset`. Every process is a guard killed on drop.

use crate::load::{DpopCredentials, Tokens, client_config};
use crate::mint;
use crate::scenarios::{ConfigVars, Scenario, envoy_config};
use certbind_tests::envoy::Admin;
use certbind_tests::ports::{free_port, loopback};
use certbind_tests::proc::{Proc, Ready, write_file};
use certbind_tests::{Error, prereq};
use rustls::ClientConfig;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

const READY: Duration = Duration::from_secs(60);

/// The no-op filter of S2w.
pub fn noop_wasm() -> Result<PathBuf, String> {
    let path = prereq::target_dir().join("wasm32-wasip1/release/certbind_noop_filter.wasm");
    if path.is_file() {
        trimmed(path)
    } else {
        Err(format!(
            "the no-op filter {} is missing: run `make wasm`",
            path.display()
        ))
    }
}

/// Callbacks neither filter implements: a module still exporting one is cargo's output before
/// `make wasm` trimmed it, which Envoy would enter for nothing on every stream, so it would not
/// be what is deployed.
const NOT_IMPLEMENTED: [&str; 4] = [
    "proxy_on_response_headers",
    "proxy_on_response_body",
    "proxy_on_log",
    "proxy_on_done",
];

/// `path` if its module exports none of [`NOT_IMPLEMENTED`].
pub fn trimmed(path: PathBuf) -> Result<PathBuf, String> {
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let names =
        certbind_wasm_trim::export_names(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    match names.iter().find(|n| NOT_IMPLEMENTED.contains(&n.as_str())) {
        None => Ok(path),
        Some(n) => Err(format!(
            "{} exports {n}, which it does not implement: run `make wasm` (it trims what cargo built, scripts/trim-wasm.sh)",
            path.display()
        )),
    }
}

fn taskset() -> Result<PathBuf, String> {
    ["/usr/bin/taskset", "/bin/taskset"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| "taskset is missing: `apt-get install util-linux`".to_owned())
}

/// Everything the run needs, checked up front so one message lists every missing piece.
pub struct Prerequisites {
    pub authz: PathBuf,
    pub pdp: PathBuf,
    pub echo: PathBuf,
    pub envoy: PathBuf,
    pub certbind_wasm: PathBuf,
    pub noop_wasm: PathBuf,
    pub taskset: PathBuf,
    pub policies: PathBuf,
    pub clients: PathBuf,
}

impl Prerequisites {
    pub fn check() -> Result<Self, String> {
        let e = |r: Result<PathBuf, Error>| r.map_err(|e| e.to_string());
        let parts = [
            e(prereq::release_bin("certbind-authz")),
            e(prereq::release_bin("certbind-pdp")),
            e(prereq::release_bin("certbind-echo")),
            e(prereq::envoy()),
            e(prereq::wasm()).and_then(trimmed),
            noop_wasm(),
            taskset(),
            e(prereq::repo_file("pdp/policies/demo.yaml")),
            e(prereq::repo_file("authz-server/clients.yaml")),
        ];
        let missing: Vec<String> = parts
            .iter()
            .filter_map(|p| p.as_ref().err().map(|e| format!("  - {e}")))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the benchmark cannot run, missing:\n{}\n(`make bench` builds and installs all of them)",
                missing.join("\n")
            ));
        }
        let mut it = parts.into_iter().flatten();
        let mut next = || it.next().ok_or("prerequisite list".to_owned());
        Ok(Self {
            authz: next()?,
            pdp: next()?,
            echo: next()?,
            envoy: next()?,
            certbind_wasm: next()?,
            noop_wasm: next()?,
            taskset: next()?,
            policies: next()?,
            clients: next()?,
        })
    }
}

/// Which core Envoy gets and which everything else gets.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Cores {
    pub envoy: usize,
    pub load: usize,
}

impl Cores {
    /// Envoy on core 0, the rest on core 1; on a one-core machine both share core 0.
    pub fn detect() -> Self {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            envoy: 0,
            load: usize::from(n >= 2),
        }
    }
}

/// Pins a process (every thread, `all`) or one thread to `core` with util-linux's `taskset`.
pub fn pin(taskset: &Path, id: u32, core: usize, all: bool) -> Result<(), String> {
    let mut cmd = Command::new(taskset);
    if all {
        cmd.arg("-a");
    }
    let out = cmd
        .args(["-p", "-c", &core.to_string(), &id.to_string()])
        .output()
        .map_err(|e| format!("taskset (util-linux): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "taskset -p -c {core} {id}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// How each Envoy is started: directly (the benchmark), or under a tool such as valgrind
/// (the `instr` mode), which needs longer to become ready.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The command and arguments Envoy runs under, `{scenario}` replaced by the scenario's id.
    pub wrapper: Vec<String>,
    pub ready: Duration,
}

impl Default for Launch {
    fn default() -> Self {
        Self {
            wrapper: Vec::new(),
            ready: READY,
        }
    }
}

impl Launch {
    fn wrapper(&self, scenario: Scenario) -> impl Iterator<Item = String> + '_ {
        self.wrapper
            .iter()
            .map(move |a| a.replace("{scenario}", scenario.id()))
    }
}

/// One scenario's Envoy.
pub struct ScenarioEnvoy {
    pub proc: Proc,
    pub listen: SocketAddr,
    pub admin: Admin,
    pub config: PathBuf,
}

impl ScenarioEnvoy {
    pub fn pid(&self) -> Result<u32, String> {
        self.proc
            .pid()
            .ok_or_else(|| "Envoy is not running".to_owned())
    }
}

/// The running system.
pub struct Bench {
    pub cores: Cores,
    pub pki: PathBuf,
    pub authz_addr: SocketAddr,
    pub mtls: Arc<ClientConfig>,
    /// The consumer's mTLS towards the authz-server (pinned to its SPIFFE ID), for minting.
    pub authz_mtls: Arc<ClientConfig>,
    pub tls_only: Arc<ClientConfig>,
    pub envoys: BTreeMap<Scenario, ScenarioEnvoy>,
    /// S5d's DPoP proof key (one per run, like a workload's).
    dpop_key: certbind_tests::tokens::EcKey,
    // Drop order: Envoys (above) first, then the services, then the directory.
    services: Vec<Proc>,
    dir: tempfile::TempDir,
}

impl Bench {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The pid of the service started as `name` (`upstream`, `authz`, `pdp`).
    pub fn service_pid(&self, name: &str) -> Option<u32> {
        self.services.iter().find(|p| p.name() == name)?.pid()
    }

    /// The last lines of every log, for an error message.
    pub fn logs_tail(&self, lines: usize) -> String {
        self.envoys
            .values()
            .map(|e| &e.proc)
            .chain(self.services.iter())
            .map(|p| format!("---- {} ----\n{}", p.name(), p.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Starts the services and an Envoy for each of `scenarios`.
    pub fn start(bins: &Prerequisites, scenarios: &[Scenario]) -> Result<Self, String> {
        Self::start_with(bins, scenarios, &Launch::default())
    }

    /// [`Bench::start`] with each Envoy started under `launch` (e.g. valgrind).
    pub fn start_with(
        bins: &Prerequisites,
        scenarios: &[Scenario],
        launch: &Launch,
    ) -> Result<Self, String> {
        let cores = Cores::detect();
        // Children inherit the affinity of the thread that spawns them: pin first.
        pin(&bins.taskset, std::process::id(), cores.load, true)?;
        let dir = tempfile::Builder::new()
            .prefix("certbind-bench.")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let root = dir.path().to_path_buf();
        let logs = root.join("logs");
        let pki = root.join("pki");
        std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
        let out = Command::new(&bins.authz)
            .args(["pki", "init", "--dir"])
            .arg(&pki)
            .output()
            .map_err(|e| format!("certbind-authz pki init: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "certbind-authz pki init: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let port = || free_port().map_err(|e| e.to_string());
        let (upstream_port, authz_port, pdp_port) = (port()?, port()?, port()?);
        let issuer = format!("https://127.0.0.1:{authz_port}");
        let s = |p: &Path| p.display().to_string();
        let e = |r: Result<Proc, Error>| r.map_err(|e| e.to_string());
        // In order; a failure drops (stops) the ones already started.
        let services = vec![
            e(Proc::spawn(
                "upstream",
                &bins.echo,
                &["orders".into(), loopback(upstream_port).to_string()],
                &logs,
                Ready::LogLine("listening on".into()),
                READY,
            ))?,
            e(Proc::spawn(
                "authz",
                &bins.authz,
                &[
                    "serve".into(),
                    "--listen".into(),
                    loopback(authz_port).to_string(),
                    "--pki-dir".into(),
                    s(&pki),
                    "--state-dir".into(),
                    s(&root.join("authz-state")),
                    "--clients".into(),
                    s(&bins.clients),
                    "--issuer".into(),
                    issuer.clone(),
                ],
                &logs,
                Ready::LogLine("certbind-authz listening on".into()),
                READY,
            ))?,
            e(Proc::spawn(
                "pdp",
                &bins.pdp,
                &[
                    "serve".into(),
                    "--listen".into(),
                    loopback(pdp_port).to_string(),
                    "--policies".into(),
                    s(&bins.policies),
                    "--cert".into(),
                    s(&pki.join("pdp.crt")),
                    "--key".into(),
                    s(&pki.join("pdp.key")),
                    "--ca".into(),
                    s(&pki.join("ca.crt")),
                    "--callers".into(),
                    certbind_tests::spiffe_id("envoy"),
                ],
                &logs,
                Ready::LogLine("certbind-pdp listening on".into()),
                READY,
            ))?,
        ];
        let authz_addr = loopback(authz_port);
        let jwks_json = mint::jwks(authz_addr, &pki)?;
        let mtls = client_config(
            &pki.join("ca.crt"),
            Some((
                &pki.join(format!("{}.crt", mint::CLIENT)),
                &pki.join(format!("{}.key", mint::CLIENT)),
            )),
        )?;
        let authz_mtls = crate::load::client_config_for(
            &pki.join("ca.crt"),
            Some((
                &pki.join(format!("{}.crt", mint::CLIENT)),
                &pki.join(format!("{}.key", mint::CLIENT)),
            )),
            "authz",
        )?;
        let tls_only = client_config(&pki.join("ca.crt"), None)?;
        // S2v's host verify hashes what a fresh token's does: a real token's signing input.
        let verify_arguments = if scenarios.contains(&Scenario::S2v) {
            let sample = mint::tokens(authz_addr, Arc::clone(&authz_mtls), 1)?;
            mint::verify_floor_arguments(sample.first().map_or("", String::as_str))?
        } else {
            String::new()
        };

        // Render every configuration first (a refused one fails before anything starts).
        let mut pending = Vec::new();
        for &scenario in scenarios.iter() {
            let (admin_port, listen_port) = (port()?, port()?);
            let vars = ConfigVars {
                pki_dir: pki.clone(),
                admin_port,
                listen_port,
                sibling_ports: [port()?, port()?],
                upstream_port,
                authz_port,
                pdp_port,
                issuer: issuer.clone(),
                jwks_json: jwks_json.clone(),
                certbind_wasm: bins.certbind_wasm.clone(),
                noop_wasm: bins.noop_wasm.clone(),
                verify_arguments: verify_arguments.clone(),
            };
            let config = root.join(format!("envoy-{}.yaml", scenario.id()));
            write_file(&config, &envoy_config(scenario, &vars)?).map_err(|e| e.to_string())?;
            let wrapper = launch.wrapper(scenario);
            let args: Vec<String> = ["-c".to_owned(), cores.envoy.to_string()]
                .into_iter()
                .chain(wrapper)
                .chain(
                    [
                        &s(&bins.envoy),
                        "-c",
                        &s(&config),
                        "--disable-hot-restart",
                        "--concurrency",
                        "1",
                        "--log-level",
                        "warn",
                    ]
                    .into_iter()
                    .map(str::to_owned),
                )
                .collect();
            let proc = Proc::new(
                &format!("envoy-{}", scenario.id()),
                &bins.taskset,
                &args,
                &logs,
            );
            pending.push((scenario, proc, admin_port, listen_port, config));
        }
        // Envoys start in parallel: each takes a second or more to load V8 and its modules.
        let ready = launch.ready;
        let started: Vec<Result<(Scenario, ScenarioEnvoy), String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = pending
                .into_iter()
                .map(|(scenario, mut proc, admin_port, listen_port, config)| {
                    scope.spawn(move || {
                        let admin = Admin::new(loopback(admin_port));
                        proc.start(Ready::Check(Box::new(move || admin.is_live())), ready)
                            .map_err(|e| format!("Envoy for {}: {e}", scenario.id()))?;
                        Ok((
                            scenario,
                            ScenarioEnvoy {
                                proc,
                                listen: loopback(listen_port),
                                admin,
                                config,
                            },
                        ))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("Envoy starter died".into()))
                })
                .collect()
        });
        let mut envoys = BTreeMap::new();
        for s in started {
            let (scenario, envoy) = s?;
            envoys.insert(scenario, envoy);
        }
        Ok(Self {
            cores,
            pki,
            authz_addr,
            mtls,
            authz_mtls,
            tls_only,
            envoys,
            dpop_key: certbind_tests::tokens::EcKey::generate().map_err(|e| e.to_string())?,
            services,
            dir,
        })
    }

    /// Fresh tokens for the benchmark's one request (expire after the authz-server's lifetime).
    pub fn tokens(&self, n: usize) -> Result<Vec<String>, String> {
        mint::tokens(self.authz_addr, Arc::clone(&self.authz_mtls), n)
    }

    /// A DPoP-bound token and `proofs` fresh proofs for `scenario`'s listener (S5d).
    pub fn dpop_credentials(&self, scenario: Scenario, proofs: usize) -> Result<Tokens, String> {
        let envoy = self
            .envoys
            .get(&scenario)
            .ok_or_else(|| format!("{} has no Envoy", scenario.id()))?;
        let htu = format!("https://127.0.0.1:{}{}", envoy.listen.port(), mint::PATH);
        let token = mint::dpop_token(self.authz_addr, &self.pki, &self.dpop_key)?;
        let proofs = mint::dpop_proofs(&self.dpop_key, &token, &htu, proofs)?;
        Ok(Tokens::Dpop(Arc::new(DpopCredentials {
            token,
            proofs,
            key: self.dpop_key.clone(),
            htu,
            next: AtomicU64::new(0),
            signed_late: AtomicU64::new(0),
        })))
    }

    /// One request through `scenario` with `token`, read fully; for checks and diagnostics.
    pub fn probe(&self, scenario: Scenario, token: &str) -> Result<(u16, String), String> {
        let envoy = self
            .envoys
            .get(&scenario)
            .ok_or_else(|| format!("{} has no Envoy", scenario.id()))?;
        let mut request = certbind_tests::Request::get(mint::PATH).bearer(token);
        if scenario == Scenario::S5d {
            let htu = format!("https://127.0.0.1:{}{}", envoy.listen.port(), mint::PATH);
            let token = mint::dpop_token(self.authz_addr, &self.pki, &self.dpop_key)?;
            let proof = mint::dpop_proofs(&self.dpop_key, &token, &htu, 1)?.concat();
            request = certbind_tests::Request::get(mint::PATH)
                .header("authorization", &format!("DPoP {token}"))
                .header("dpop", &proof);
        }
        let response = if scenario.tls() {
            let identity = scenario.mtls().then_some(mint::CLIENT);
            certbind_tests::TlsClient::for_workload(&self.pki, identity)
                .and_then(|c| c.expecting("orders"))
                .and_then(|c| c.send(envoy.listen, &request))
        } else {
            certbind_tests::client::http_plain(envoy.listen, &request)
        }
        .map_err(|e| format!("{}: {e}", scenario.id()))?;
        Ok((response.status, response.text()))
    }
}
