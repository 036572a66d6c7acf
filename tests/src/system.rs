//! A whole certbind system on free ports: PKI, authz-server, PDP, the two echo upstreams and
//! Envoy with the real filter, each a [`Proc`] killed when the `System` is dropped.

use crate::client::{Request, Response, TlsClient};
use crate::envoy::{self, Admin, EnvoyVars, FilterTuning};
use crate::ports::{free_port, loopback};
use crate::proc::{Proc, Ready, write_file};
use crate::tokens::{EcKey, Forge, authz_active_key};
use crate::{Error, prereq, spiffe_id};
use certbind_core::config::Mode;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SERVICE_READY: Duration = Duration::from_secs(20);

/// The ports of one System (all on 127.0.0.1).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub authz: u16,
    pub pdp: u16,
    pub orders_upstream: u16,
    pub billing_upstream: u16,
    pub admin: u16,
    pub orders: u16,
    pub billing: u16,
    /// The orders edge listener (DPoP).
    pub edge: u16,
    pub baseline_orders: u16,
    pub baseline_billing: u16,
}

impl Ports {
    fn pick() -> Result<Self, Error> {
        Ok(Self {
            authz: free_port()?,
            pdp: free_port()?,
            orders_upstream: free_port()?,
            billing_upstream: free_port()?,
            admin: free_port()?,
            orders: free_port()?,
            billing: free_port()?,
            edge: free_port()?,
            baseline_orders: free_port()?,
            baseline_billing: free_port()?,
        })
    }
}

/// How to start a [`System`]. The plugin keeps its own defaults except where a test changes
/// them, and two that every test wants: the unknown-`kid` refetch may happen every second (tests
/// rotate keys and send unknown `kid`s back to back) and a request waits at most 2 s for the
/// first JWKS.
#[derive(Debug, Clone)]
pub struct SystemBuilder {
    mode: Mode,
    concurrency: u32,
    start_authz: bool,
    start_pdp: bool,
    tuning: FilterTuning,
    authz_args: Vec<String>,
    pki_args: Vec<String>,
    /// The authz-server's `--issuer` (default `https://127.0.0.1:<its port>`).
    issuer: Option<String>,
    /// Rewrites the rendered Envoy configuration (a deployment whose template is not ours).
    envoy_edit: Option<fn(String) -> String>,
    /// Ports of authz-server replicas for Envoy's `certbind_authz` cluster (empty: the one).
    authz_replicas: Vec<u16>,
}

impl Default for SystemBuilder {
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            concurrency: 1,
            start_authz: true,
            start_pdp: true,
            tuning: FilterTuning {
                jwks_min_refetch_interval_s: Some(1),
                jwks_first_fetch_wait_ms: Some(2000),
                ..FilterTuning::default()
            },
            authz_args: Vec::new(),
            pki_args: Vec::new(),
            issuer: None,
            envoy_edit: None,
            authz_replicas: Vec::new(),
        }
    }
}

impl SystemBuilder {
    /// `enforce` (default) or `shadow`.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Envoy worker threads (default 1).
    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers.max(1);
        self
    }

    /// Envoy starts while the authz-server is down; start it with [`System::start_authz`].
    /// The PKI is still generated.
    pub fn without_authz(mut self) -> Self {
        self.start_authz = false;
        self
    }

    /// Envoy starts while the PDP is down; start it with [`System::start_pdp`].
    pub fn without_pdp(mut self) -> Self {
        self.start_pdp = false;
        self
    }

    /// JWKS timings: refresh interval, unknown-`kid` refetch rate limit, staleness bound (s)
    /// and how long a request waits for the first JWKS (ms).
    pub fn jwks_timing(
        mut self,
        refresh_s: u64,
        min_refetch_s: u64,
        max_stale_s: u64,
        first_wait_ms: u64,
    ) -> Self {
        self.tuning.jwks_refresh_interval_s = Some(refresh_s);
        self.tuning.jwks_min_refetch_interval_s = Some(min_refetch_s);
        self.tuning.jwks_max_stale_s = Some(max_stale_s);
        self.tuning.jwks_first_fetch_wait_ms = Some(first_wait_ms);
        self
    }

    pub fn pdp_timeout_ms(mut self, ms: u64) -> Self {
        self.tuning.pdp_timeout_ms = Some(ms);
        self
    }

    /// Verified-token and PDP-decision cache sizes per worker (0 turns a cache off).
    pub fn caches(mut self, token_cache_size: usize, decision_cache_size: usize) -> Self {
        self.tuning.token_cache_size = Some(token_cache_size);
        self.tuning.decision_cache_size = Some(decision_cache_size);
        self
    }

    /// Extra `certbind-authz serve` arguments (e.g. `--feed-wait 1`).
    pub fn authz_args(mut self, args: &[&str]) -> Self {
        self.authz_args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Rewrites the rendered Envoy configuration before Envoy starts: a test of what the
    /// filter alone does when the template's protections are not there.
    pub fn envoy_config(mut self, edit: fn(String) -> String) -> Self {
        self.envoy_edit = Some(edit);
        self
    }

    /// Extra arguments for `certbind-authz pki init` (e.g. `--leaf-secs 120`).
    pub fn pki_args(mut self, args: &[&str]) -> Self {
        self.pki_args = args.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    /// Any other plugin setting (see [`FilterTuning`]).
    pub fn tuning(mut self, tune: impl FnOnce(&mut FilterTuning)) -> Self {
        tune(&mut self.tuning);
        self
    }

    /// The issuer URL the authz-server signs with and the filter expects (e.g. the cluster
    /// name a mesh manifest gives it); only a name, the server still listens on loopback.
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.issuer = Some(issuer.to_owned());
        self
    }

    /// Envoy reaches the authz-server as one health-checked cluster of these ports (replicas
    /// the test starts with [`System::authz_replica`]; 0 stands for the System's own).
    pub fn authz_replicas(mut self, ports: &[u16]) -> Self {
        self.authz_replicas = ports.to_vec();
        self
    }

    /// Starts everything, or fails with what is missing and how to get it.
    pub fn try_start(self) -> Result<System, Error> {
        System::start_with(self)
    }

    /// [`SystemBuilder::try_start`] for tests: a failure is a panic with the how-to.
    #[allow(clippy::panic)]
    pub fn start(self) -> System {
        match self.try_start() {
            Ok(system) => system,
            Err(e) => panic!("cannot start the certbind system: {e}"),
        }
    }
}

/// The programs and files a System needs, each checked up front so one message lists them all.
struct Prerequisites {
    authz: PathBuf,
    pdp: PathBuf,
    echo: PathBuf,
    wasm: PathBuf,
    policies: PathBuf,
    clients: PathBuf,
}

impl Prerequisites {
    fn check() -> Result<Self, Error> {
        let authz = prereq::release_bin("certbind-authz");
        let pdp = prereq::release_bin("certbind-pdp");
        let echo = prereq::release_bin("certbind-echo");
        let wasm = prereq::wasm();
        let envoy = prereq::envoy();
        let policies = prereq::repo_file("pdp/policies/demo.yaml");
        let clients = prereq::repo_file("authz-server/clients.yaml");
        match (authz, pdp, echo, wasm, envoy, policies, clients) {
            (Ok(authz), Ok(pdp), Ok(echo), Ok(wasm), Ok(_), Ok(policies), Ok(clients)) => {
                Ok(Self {
                    authz,
                    pdp,
                    echo,
                    wasm,
                    policies,
                    clients,
                })
            }
            (a, b, c, d, e, f, g) => {
                let missing: Vec<String> = [
                    a.err(),
                    b.err(),
                    c.err(),
                    d.err(),
                    e.err(),
                    f.err(),
                    g.err(),
                ]
                .into_iter()
                .flatten()
                .map(|e| format!("  - {e}"))
                .collect();
                Err(Error::Missing {
                    what: "part of the system".into(),
                    how: format!("\n{}", missing.join("\n")),
                })
            }
        }
    }
}

/// A running certbind system. Dropping it kills every process and removes its directory.
pub struct System {
    pub ports: Ports,
    issuer: String,
    mode: Mode,
    pki: PathBuf,
    state: PathBuf,
    pub(crate) authz_bin: PathBuf,
    // Drop order: Envoy first, then the services it calls, then the directory.
    envoy: Proc,
    authz: Proc,
    pdp: Proc,
    orders: Proc,
    billing: Proc,
    dir: tempfile::TempDir,
}

impl System {
    /// A builder with the test defaults.
    pub fn builder() -> SystemBuilder {
        SystemBuilder::default()
    }

    fn start_with(b: SystemBuilder) -> Result<Self, Error> {
        let bins = Prerequisites::check()?;
        let dir = temp_dir()?;
        let root = dir.path().to_path_buf();
        let logs = root.join("logs");
        let pki = root.join("pki");
        let state = root.join("authz-state");
        std::fs::create_dir_all(&logs)
            .map_err(Error::io(format!("creating {}", logs.display())))?;

        pki_init_with(&bins.authz, &pki, &b.pki_args)?;
        let ports = Ports::pick()?;
        let issuer = b
            .issuer
            .clone()
            .unwrap_or_else(|| format!("https://127.0.0.1:{}", ports.authz));
        let s = |p: &Path| p.display().to_string();

        let echo = |name: &str, port: u16| -> Result<Proc, Error> {
            Proc::spawn(
                name,
                &bins.echo,
                &[name.to_owned(), loopback(port).to_string()],
                &logs,
                Ready::LogLine("listening on".into()),
                SERVICE_READY,
            )
        };
        let orders = echo("orders", ports.orders_upstream)?;
        let billing = echo("billing", ports.billing_upstream)?;

        let mut authz = Proc::new(
            "authz",
            &bins.authz,
            &[
                &[
                    "serve".into(),
                    "--listen".into(),
                    loopback(ports.authz).to_string(),
                    "--pki-dir".into(),
                    s(&pki),
                    "--state-dir".into(),
                    s(&state),
                    "--clients".into(),
                    s(&bins.clients),
                    "--issuer".into(),
                    issuer.clone(),
                ],
                b.authz_args.as_slice(),
            ]
            .concat(),
            &logs,
        );
        if b.start_authz {
            authz.start(authz_ready(), SERVICE_READY)?;
        }
        let mut pdp = Proc::new(
            "pdp",
            &bins.pdp,
            &[
                "serve".into(),
                "--listen".into(),
                loopback(ports.pdp).to_string(),
                "--policies".into(),
                s(&bins.policies),
                "--cert".into(),
                s(&pki.join("pdp.crt")),
                "--key".into(),
                s(&pki.join("pdp.key")),
                "--ca".into(),
                s(&pki.join("ca.crt")),
                "--callers".into(),
                spiffe_id("envoy"),
            ],
            &logs,
        );
        if b.start_pdp {
            pdp.start(pdp_ready(), SERVICE_READY)?;
        }

        let vars = EnvoyVars {
            pki_dir: pki.clone(),
            wasm: bins.wasm.clone(),
            admin_port: ports.admin,
            orders_port: ports.orders,
            billing_port: ports.billing,
            edge_port: ports.edge,
            baseline_orders_port: ports.baseline_orders,
            baseline_billing_port: ports.baseline_billing,
            authz_port: ports.authz,
            pdp_port: ports.pdp,
            orders_upstream_port: ports.orders_upstream,
            billing_upstream_port: ports.billing_upstream,
            issuer: issuer.clone(),
            mode: b.mode,
            tuning: b.tuning.clone(),
        };
        let config = root.join("envoy.yaml");
        let mut rendered = vars.render_sidecar()?;
        if let Some(edit) = b.envoy_edit {
            rendered = edit(rendered);
        }
        if !b.authz_replicas.is_empty() {
            let list: Vec<u16> = b
                .authz_replicas
                .iter()
                .map(|p| if *p == 0 { ports.authz } else { *p })
                .collect();
            rendered = crate::envoy::authz_cluster(&rendered, ports.authz, &list)?;
        }
        write_file(&config, &rendered)?;
        let envoy = envoy::start(&config, ports.admin, b.concurrency, &logs)?;

        Ok(Self {
            ports,
            issuer,
            mode: b.mode,
            pki,
            state,
            authz_bin: bins.authz,
            envoy,
            authz,
            pdp,
            orders,
            billing,
            dir,
        })
    }

    /// The system's own directory (logs, PKI, authz state, rendered config).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `ca.crt` and `<name>.crt`/`.key` of every demo workload.
    /// The `certbind-authz` binary this system runs (for its `pki` and `revoke` commands).
    pub fn authz_bin(&self) -> &Path {
        &self.authz_bin
    }

    pub fn pki_dir(&self) -> &Path {
        &self.pki
    }

    /// The authz-server's `--state-dir` (signing keys in `keys/<kid>.pem`).
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The zero-trust sidecar listener of `service` (`orders` or `billing`).
    pub fn sidecar(&self, service: &str) -> SocketAddr {
        loopback(match service {
            "billing" => self.ports.billing,
            _ => self.ports.orders,
        })
    }

    /// The orders edge listener (TLS without client certificates, DPoP-bound tokens only).
    pub fn edge(&self) -> SocketAddr {
        loopback(self.ports.edge)
    }

    /// The edge listener's public origin: a proof's `htu` is this plus the path.
    pub fn edge_origin(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.edge)
    }

    /// A DPoP-bound token (`cnf.jkt` of `key`) from the authz-server: `POST /token` as
    /// `client` (mTLS) with a proof signed by `key` for the token endpoint.
    pub fn dpop_token(
        &self,
        client: &str,
        service: &str,
        scope: &str,
        key: &EcKey,
    ) -> Result<String, Error> {
        let audience = spiffe_id(service);
        let htu = format!("{}/token", self.issuer);
        let proof = crate::tokens::dpop_proof(key, "POST", &htu, None)?;
        let request = Request::post("/token").header("dpop", &proof).form(&[
            ("grant_type", "client_credentials"),
            ("audience", &audience),
            ("scope", scope),
        ]);
        let response = self
            .authz_client(Some(client))?
            .send(self.authz_addr(), &request)?;
        let body = response.json().ok();
        let token_type = body.as_ref().and_then(|b| b.get("token_type")?.as_str());
        match (response.status, token_type) {
            (200, Some("DPoP")) => body
                .as_ref()
                .and_then(|b| b.get("access_token")?.as_str())
                .map(str::to_owned)
                .ok_or_else(|| Error::Http("token response without access_token".into())),
            _ => Err(Error::Http(format!(
                "authz-server refused a DPoP token for {client} → {service} ({scope}): {} {}",
                response.status,
                response.text()
            ))),
        }
    }

    /// The baseline (bearer-only) listener of `service`.
    pub fn baseline(&self, service: &str) -> SocketAddr {
        loopback(match service {
            "billing" => self.ports.baseline_billing,
            _ => self.ports.baseline_orders,
        })
    }

    pub fn authz_addr(&self) -> SocketAddr {
        loopback(self.ports.authz)
    }

    pub fn pdp_addr(&self) -> SocketAddr {
        loopback(self.ports.pdp)
    }

    /// A TLS client trusting the system's CA, presenting `identity`'s certificate (or none).
    pub fn client(&self, identity: Option<&str>) -> Result<TlsClient, Error> {
        TlsClient::for_workload(&self.pki, identity)
    }

    /// A TLS client as `identity` that accepts only the authz-server's SPIFFE ID.
    pub fn authz_client(&self, identity: Option<&str>) -> Result<TlsClient, Error> {
        self.client(identity)?.expecting("authz")
    }

    /// One request to `service`'s sidecar as `identity` (`None`: no client certificate); the
    /// sidecar must prove `service`'s SPIFFE ID.
    pub fn call(
        &self,
        identity: Option<&str>,
        service: &str,
        request: &Request,
    ) -> Result<Response, Error> {
        self.client(identity)?
            .expecting(service)?
            .send(self.sidecar(service), request)
    }

    /// `POST /token` as `client` (its certificate authenticates it) with these form fields.
    pub fn token_request(&self, client: &str, form: &[(&str, &str)]) -> Result<Response, Error> {
        self.authz_client(Some(client))?
            .send(self.authz_addr(), &Request::post("/token").form(form))
    }

    /// A real access token from the authz-server for `client` towards `service` with `scope`.
    pub fn token(&self, client: &str, service: &str, scope: &str) -> Result<String, Error> {
        let audience = spiffe_id(service);
        let response = self.token_request(
            client,
            &[
                ("grant_type", "client_credentials"),
                ("audience", &audience),
                ("scope", scope),
            ],
        )?;
        if response.status != 200 {
            return Err(Error::Http(format!(
                "authz-server refused a token for {client} → {service} ({scope}): {} {}",
                response.status,
                response.text()
            )));
        }
        response
            .json()?
            .get("access_token")
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .ok_or_else(|| Error::Http("token response without access_token".into()))
    }

    /// `POST /v1/admin/revocations` as the `operator` identity: revokes `value` of `kind`
    /// (`jti`, `subject`, `cert`); returns the answer (200 with the recorded row).
    pub fn revoke(&self, kind: &str, value: &str) -> Result<Response, Error> {
        let body = serde_json::json!({"kind": kind, "value": value, "reason": "test"});
        self.authz_client(Some("operator"))?.send(
            self.authz_addr(),
            &Request::post("/v1/admin/revocations").json(&body),
        )
    }

    /// `POST /revoke` (RFC 7009) as `client` for its own `token`.
    pub fn revoke_token(&self, client: &str, token: &str) -> Result<Response, Error> {
        self.authz_client(Some(client))?.send(
            self.authz_addr(),
            &Request::post("/revoke").form(&[("token", token)]),
        )
    }

    /// `certbind-authz revoke <args> --state-dir S` (the operator's command line).
    pub fn revoke_cli(&self, args: &[&str]) -> Result<String, Error> {
        let out = Command::new(&self.authz_bin)
            .arg("revoke")
            .args(args)
            .arg("--state-dir")
            .arg(&self.state)
            .output()
            .map_err(Error::io("running certbind-authz revoke"))?;
        if !out.status.success() {
            return Err(Error::Proc(format!(
                "certbind-authz revoke failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A forge signing with the authz-server's active key (tokens only the claim checks refuse).
    pub fn forge(&self) -> Result<Forge, Error> {
        Ok(Forge::new(
            &self.issuer,
            &self.pki,
            authz_active_key(&self.state)?,
        ))
    }

    /// A forge signing with a fresh attacker key (its own `kid`).
    pub fn attacker_forge(&self) -> Result<Forge, Error> {
        Ok(Forge::new(&self.issuer, &self.pki, EcKey::generate()?))
    }

    /// `certbind-authz keys rotate --state-dir S`; returns the new active key's `kid`.
    pub fn rotate_keys(&self) -> Result<String, Error> {
        let out = Command::new(&self.authz_bin)
            .args(["keys", "rotate", "--state-dir"])
            .arg(&self.state)
            .output()
            .map_err(Error::io("running certbind-authz keys rotate"))?;
        if !out.status.success() {
            return Err(Error::Proc(format!(
                "certbind-authz keys rotate failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(authz_active_key(&self.state)?.kid().to_owned())
    }

    /// `certbind-authz pki rotate --dir <pki> [--identity NAME]...` (no names: consumer, orders,
    /// billing, envoy): new keys and certificates from the same CA; Envoy rereads them via SDS.
    /// Returns what the command printed (one line per certificate, with its serial).
    pub fn rotate_certs(&self, identities: &[&str]) -> Result<String, Error> {
        let mut cmd = Command::new(&self.authz_bin);
        cmd.args(["pki", "rotate", "--dir"]).arg(&self.pki);
        for name in identities {
            cmd.args(["--identity", name]);
        }
        let out = cmd
            .output()
            .map_err(Error::io("running certbind-authz pki rotate"))?;
        if !out.status.success() {
            return Err(Error::Proc(format!(
                "certbind-authz pki rotate failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A second, unrelated PKI (`certbind-authz pki init` into `<dir>/<name>`): same SPIFFE
    /// IDs, another CA, for impersonation attempts.
    pub fn foreign_pki(&self, name: &str) -> Result<PathBuf, Error> {
        let dir = self.dir.path().join(name);
        pki_init(&self.authz_bin, &dir)?;
        Ok(dir)
    }

    pub fn admin(&self) -> Admin {
        Admin::new(loopback(self.ports.admin))
    }

    /// A filter counter (`certbind.allowed`, `certbind.denied.<reason>`, ...).
    pub fn counter(&self, name: &str) -> Result<u64, Error> {
        self.admin().counter(name)
    }

    /// Waits until `counter` reaches `at_least` (e.g. the first JWKS fetch).
    pub fn wait_for_counter(
        &self,
        counter: &str,
        at_least: u64,
        timeout: Duration,
    ) -> Result<u64, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.counter(counter)?;
            if value >= at_least {
                return Ok(value);
            }
            if Instant::now() > deadline {
                return Err(Error::Proc(format!(
                    "{counter} stayed at {value} (< {at_least}) for {timeout:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything Envoy logged (the filter's decision lines included).
    pub fn envoy_log(&self) -> String {
        self.envoy.log()
    }

    /// The last lines of every process's log, for a failure message.
    pub fn logs_tail(&self, lines: usize) -> String {
        [
            &self.envoy,
            &self.authz,
            &self.pdp,
            &self.orders,
            &self.billing,
        ]
        .iter()
        .map(|p| format!("---- {} ----\n{}", p.name(), p.log_tail(lines)))
        .collect::<Vec<_>>()
        .join("\n")
    }

    pub fn stop_authz(&mut self) {
        self.authz.stop();
    }

    /// Stops the authz-server gracefully (SIGTERM: it finishes the requests it has begun, as
    /// in a rolling restart) and waits until it has exited.
    pub fn terminate_authz(&mut self) -> Result<(), Error> {
        if let Some(pid) = self.authz.pid() {
            signal(pid, "TERM")?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.authz.is_running() {
            if Instant::now() > deadline {
                return Err(Error::Proc(
                    "the authz-server ignored SIGTERM for 30 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.authz.stop();
        Ok(())
    }

    /// Starts (or restarts) the authz-server on its port with the same state (keys).
    pub fn start_authz(&mut self) -> Result<(), Error> {
        self.authz.start(authz_ready(), SERVICE_READY)
    }

    /// Stops the echo upstream of `service` (`orders` or `billing`), e.g. to put a
    /// [`crate::capture::CaptureUpstream`] on its port (`ports.orders_upstream`).
    pub fn stop_upstream(&mut self, service: &str) {
        match service {
            "billing" => self.billing.stop(),
            _ => self.orders.stop(),
        }
    }

    pub fn stop_pdp(&mut self) {
        self.pdp.stop();
    }

    pub fn start_pdp(&mut self) -> Result<(), Error> {
        self.pdp.start(pdp_ready(), SERVICE_READY)
    }

    /// Kills Envoy (SIGKILL, as a crash or `kill -9` would); the other services keep running.
    pub fn stop_envoy(&mut self) {
        self.envoy.stop();
    }

    /// Starts Envoy again with the same rendered config on the same ports; returns once its
    /// admin port says it is ready (the filter has not necessarily fetched anything yet).
    pub fn start_envoy(&mut self) -> Result<(), Error> {
        self.envoy
            .start(envoy::ready(self.ports.admin), envoy::READY_TIMEOUT)
    }

    /// Envoy's pid (e.g. to prove a rotation was picked up without a restart).
    pub fn envoy_pid(&self) -> Option<u32> {
        self.envoy.pid()
    }

    /// The PDP's pid while it runs.
    pub fn pdp_pid(&self) -> Option<u32> {
        self.pdp.pid()
    }

    /// The authz-server's pid while it runs.
    pub fn authz_pid(&self) -> Option<u32> {
        self.authz.pid()
    }
}

/// Sends `signal` (e.g. `STOP`, `CONT`) to `pid` with kill(1): a stopped service still accepts
/// connections (the kernel's backlog) but never answers, which is how a hung service looks.
pub fn signal(pid: u32, signal: &str) -> Result<(), Error> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .map_err(Error::io("running kill"))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Proc(format!(
            "kill -{signal} {pid} failed ({status})"
        )))
    }
}

pub(crate) fn authz_ready() -> Ready {
    Ready::LogLine("certbind-authz listening on".into())
}

fn pdp_ready() -> Ready {
    Ready::LogLine("certbind-pdp listening on".into())
}

/// `certbind-authz pki init --dir <dir>`.
fn pki_init(authz: &Path, dir: &Path) -> Result<(), Error> {
    pki_init_with(authz, dir, &[])
}

fn pki_init_with(authz: &Path, dir: &Path, args: &[String]) -> Result<(), Error> {
    let out = Command::new(authz)
        .args(["pki", "init", "--dir"])
        .arg(dir)
        .args(args)
        .output()
        .map_err(Error::io(format!("running {} pki init", authz.display())))?;
    if out.status.success() && dir.join("ca.crt").is_file() {
        Ok(())
    } else {
        Err(Error::Proc(format!(
            "certbind-authz pki init failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// A fresh `certbind-e2e.<pid>.*` directory. Directories of test processes that are gone (a
/// System kept in a `static` is never dropped) are removed first.
fn temp_dir() -> Result<tempfile::TempDir, Error> {
    let base = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("certbind-e2e."))
                .and_then(|n| n.split('.').next())
            else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    tempfile::Builder::new()
        .prefix(&format!("certbind-e2e.{}.", std::process::id()))
        .tempdir()
        .map_err(Error::io("creating a temporary directory"))
}
