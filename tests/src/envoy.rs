//! certbind's Envoy for tests: the template's variables as a struct, rendering, `envoy --mode
//! validate`, starting Envoy, reading its stats from the admin port, and the replicated
//! `certbind_authz` cluster (several health-checked authz-servers).

use crate::client::{Request, http_plain};
use crate::proc::{Proc, Ready};
use crate::{Error, prereq, render};
use certbind_core::config::Mode;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `envoy/sidecar.yaml.tmpl`: the sidecar and baseline listeners (see its header).
pub const SIDECAR_TEMPLATE: &str = include_str!("../../envoy/sidecar.yaml.tmpl");

/// Every variable of [`SIDECAR_TEMPLATE`].
#[derive(Debug, Clone)]
pub struct EnvoyVars {
    pub pki_dir: PathBuf,
    pub wasm: PathBuf,
    pub admin_port: u16,
    pub orders_port: u16,
    pub billing_port: u16,
    /// The orders edge listener (DPoP, no client certificate).
    pub edge_port: u16,
    pub baseline_orders_port: u16,
    pub baseline_billing_port: u16,
    pub authz_port: u16,
    pub pdp_port: u16,
    pub orders_upstream_port: u16,
    pub billing_upstream_port: u16,
    pub issuer: String,
    pub mode: Mode,
    /// The optional plugin settings (`CB_*_EXTRA`); `None` leaves the filter's default.
    pub tuning: FilterTuning,
}

/// Plugin settings a test or benchmark changes; each `None` keeps the filter's own default
/// (`filter/core/src/config.rs`), so the defaults live in one place only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterTuning {
    pub jwks_refresh_interval_s: Option<u64>,
    pub jwks_min_refetch_interval_s: Option<u64>,
    pub jwks_max_stale_s: Option<u64>,
    pub jwks_first_fetch_wait_ms: Option<u64>,
    pub jwks_timeout_ms: Option<u64>,
    pub pdp_timeout_ms: Option<u64>,
    pub decision_cache_size: Option<usize>,
    pub token_cache_size: Option<usize>,
    pub clock_skew_s: Option<u64>,
    pub forward_token: Option<bool>,
    /// Revocation feed: staleness bound (s), fail open, first-snapshot wait (ms).
    pub revocation_max_staleness_s: Option<u64>,
    pub revocation_fail_open: Option<bool>,
    pub revocation_first_sync_wait_ms: Option<u64>,
    /// The usage counter call's timeout (`usage.timeout_ms`).
    pub usage_timeout_ms: Option<u64>,
}

/// `, "name": value` for every member that is set.
fn members(pairs: &[(&str, Option<String>)]) -> String {
    pairs
        .iter()
        .filter_map(|(name, value)| Some(format!(", \"{name}\": {}", value.as_ref()?)))
        .collect()
}

fn text<T: ToString>(value: Option<T>) -> Option<String> {
    value.map(|v| v.to_string())
}

impl FilterTuning {
    /// `CB_JWKS_EXTRA`: members appended to the plugin configuration's `jwks` object.
    pub fn jwks_extra(&self) -> String {
        members(&[
            ("refresh_interval_s", text(self.jwks_refresh_interval_s)),
            (
                "min_refetch_interval_s",
                text(self.jwks_min_refetch_interval_s),
            ),
            ("max_stale_s", text(self.jwks_max_stale_s)),
            ("first_fetch_wait_ms", text(self.jwks_first_fetch_wait_ms)),
            ("timeout_ms", text(self.jwks_timeout_ms)),
        ])
    }

    /// `CB_PDP_EXTRA`: members appended to the `pdp` object.
    pub fn pdp_extra(&self) -> String {
        members(&[("timeout_ms", text(self.pdp_timeout_ms))])
    }

    /// `CB_REVOCATION_EXTRA`: members appended to the `revocation` object.
    pub fn revocation_extra(&self) -> String {
        members(&[
            ("max_staleness_s", text(self.revocation_max_staleness_s)),
            ("fail_open", text(self.revocation_fail_open)),
            (
                "first_sync_wait_ms",
                text(self.revocation_first_sync_wait_ms),
            ),
        ])
    }

    /// `CB_USAGE_EXTRA`: members appended to the `usage` object.
    pub fn usage_extra(&self) -> String {
        members(&[("timeout_ms", text(self.usage_timeout_ms))])
    }

    /// `CB_FILTER_EXTRA`: members appended at the top level.
    pub fn filter_extra(&self) -> String {
        members(&[
            ("decision_cache_size", text(self.decision_cache_size)),
            ("token_cache_size", text(self.token_cache_size)),
            ("clock_skew_s", text(self.clock_skew_s)),
            ("forward_token", text(self.forward_token)),
        ])
    }
}

impl EnvoyVars {
    /// The values `make up` uses: CONTRACT §2's fixed ports and the filter's defaults.
    pub fn contract(pki_dir: &Path, wasm: &Path) -> Self {
        Self {
            pki_dir: pki_dir.to_path_buf(),
            wasm: wasm.to_path_buf(),
            admin_port: 9901,
            orders_port: 8443,
            billing_port: 8444,
            edge_port: 8445,
            baseline_orders_port: 8080,
            baseline_billing_port: 8081,
            authz_port: 9443,
            pdp_port: 9191,
            orders_upstream_port: 7001,
            billing_upstream_port: 7002,
            issuer: "https://127.0.0.1:9443".into(),
            mode: Mode::Enforce,
            tuning: FilterTuning::default(),
        }
    }

    /// `CB_*` name → value, as the template and `envsubst` expect them.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        [
            ("CB_PKI_DIR", self.pki_dir.display().to_string()),
            ("CB_WASM", self.wasm.display().to_string()),
            ("CB_ADMIN_PORT", self.admin_port.to_string()),
            ("CB_ORDERS_PORT", self.orders_port.to_string()),
            ("CB_BILLING_PORT", self.billing_port.to_string()),
            ("CB_EDGE_PORT", self.edge_port.to_string()),
            (
                "CB_BASELINE_ORDERS_PORT",
                self.baseline_orders_port.to_string(),
            ),
            (
                "CB_BASELINE_BILLING_PORT",
                self.baseline_billing_port.to_string(),
            ),
            ("CB_AUTHZ_PORT", self.authz_port.to_string()),
            ("CB_PDP_PORT", self.pdp_port.to_string()),
            (
                "CB_ORDERS_UPSTREAM_PORT",
                self.orders_upstream_port.to_string(),
            ),
            (
                "CB_BILLING_UPSTREAM_PORT",
                self.billing_upstream_port.to_string(),
            ),
            ("CB_ISSUER", self.issuer.clone()),
            // Every service on loopback (docker compose sets host names, see the template).
            ("CB_LISTEN_ADDRESS", "127.0.0.1".to_owned()),
            ("CB_AUTHZ_HOST", "127.0.0.1".to_owned()),
            ("CB_PDP_HOST", "127.0.0.1".to_owned()),
            ("CB_ORDERS_UPSTREAM_HOST", "127.0.0.1".to_owned()),
            ("CB_BILLING_UPSTREAM_HOST", "127.0.0.1".to_owned()),
            ("CB_CLUSTER_TYPE", "STATIC".to_owned()),
            ("CB_MODE", self.mode.as_str().to_owned()),
            ("CB_JWKS_EXTRA", self.tuning.jwks_extra()),
            ("CB_PDP_EXTRA", self.tuning.pdp_extra()),
            ("CB_FILTER_EXTRA", self.tuning.filter_extra()),
            ("CB_REVOCATION_EXTRA", self.tuning.revocation_extra()),
            ("CB_USAGE_EXTRA", self.tuning.usage_extra()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The sidecar template rendered with these values.
    pub fn render_sidecar(&self) -> Result<String, Error> {
        render::render(SIDECAR_TEMPLATE, &self.to_map())
    }
}

/// Runs `envoy --mode validate -c <config>`; Envoy's complaint is the error.
pub fn validate(config: &Path) -> Result<(), Error> {
    let envoy = prereq::envoy()?;
    let out = Command::new(&envoy)
        .arg("--mode")
        .arg("validate")
        .arg("-c")
        .arg(config)
        .arg("--log-level")
        .arg("error")
        .output()
        .map_err(Error::io(format!("running {}", envoy.display())))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "envoy --mode validate refused {}:\n{}{}",
            config.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// Starts Envoy on a rendered config and waits until its admin port says it is live.
/// `--disable-hot-restart` keeps it out of shared memory, so any number run side by side (and
/// beside `make up`).
pub fn start(
    config: &Path,
    admin_port: u16,
    concurrency: u32,
    log_dir: &Path,
) -> Result<Proc, Error> {
    let envoy = prereq::envoy()?;
    let args: Vec<String> = [
        "-c",
        &config.display().to_string(),
        "--disable-hot-restart",
        "--concurrency",
        &concurrency.to_string(),
        "--log-level",
        "warn",
        // The filter's decision lines are info-level logs of the `wasm` component.
        "--component-log-level",
        "wasm:info",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    Proc::spawn(
        "envoy",
        &envoy,
        &args,
        log_dir,
        ready(admin_port),
        READY_TIMEOUT,
    )
}

/// How long Envoy may take from spawn to a ready admin port.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Envoy is ready once its admin port on `admin_port` answers `/ready` with 200.
pub fn ready(admin_port: u16) -> Ready {
    let admin = Admin::new(crate::ports::loopback(admin_port));
    Ready::Check(Box::new(move || admin.is_live()))
}

/// Envoy's admin endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Admin {
    addr: SocketAddr,
}

impl Admin {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `GET /ready` answers 200 once every listener is up.
    pub fn is_live(&self) -> bool {
        http_plain(self.addr, &Request::get("/ready")).is_ok_and(|r| r.status == 200)
    }

    /// [`Self::stats`] once the filter's counters of the requests already answered are in:
    /// certbind sums the allow path's counters and hands them over on its 1 s tick.
    pub fn settled_stats(&self) -> Result<BTreeMap<String, u64>, Error> {
        std::thread::sleep(std::time::Duration::from_millis(2200));
        self.stats()
    }

    /// Every counter and gauge (`name: value` lines of `/stats`; histograms are left out).
    pub fn stats(&self) -> Result<BTreeMap<String, u64>, Error> {
        let response = http_plain(self.addr, &Request::get("/stats"))?;
        if response.status != 200 {
            return Err(Error::Http(format!(
                "admin /stats answered {}",
                response.status
            )));
        }
        Ok(response
            .text()
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(": ")?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect())
    }

    /// A filter counter such as `certbind.allowed`. Envoy files metrics a Wasm module defines
    /// under `wasmcustom.`; both spellings are summed, a counter not yet defined reads 0.
    pub fn counter(&self, name: &str) -> Result<u64, Error> {
        let stats = self.stats()?;
        let custom = format!("wasmcustom.{name}");
        Ok(stats
            .iter()
            .filter(|(k, _)| **k == name || **k == custom)
            .map(|(_, v)| *v)
            .sum())
    }
}

/// The health check added to the replicated cluster: every 500 ms, one failure takes a
/// replica out, one success brings it back.
const HEALTH_CHECK: &str = "    health_checks:
    - timeout: 1s
      interval: 0.5s
      no_traffic_interval: 0.5s
      unhealthy_threshold: 1
      healthy_threshold: 1
      http_health_check: { path: /v1/health }
";

/// `rendered` with the `certbind_authz` cluster (whose one endpoint is `port`) pointing at
/// every port of `replicas`, health-checked.
pub fn authz_cluster(rendered: &str, port: u16, replicas: &[u16]) -> Result<String, Error> {
    let endpoint = |p: u16| {
        format!(
            "        - endpoint:\n            address:\n              socket_address: {{ address: 127.0.0.1, port_value: {p} }}\n"
        )
    };
    let start = rendered
        .find("  - name: certbind_authz\n")
        .ok_or_else(|| Error::Proc("no certbind_authz cluster in the sidecar config".into()))?;
    let (head, tail) = rendered.split_at(start);
    let one = endpoint(port);
    let transport = "    transport_socket:\n";
    if !tail.contains(&one) || !tail.contains(transport) {
        return Err(Error::Proc(
            "the certbind_authz cluster changed shape".into(),
        ));
    }
    let all: String = replicas.iter().map(|p| endpoint(*p)).collect();
    let tail =
        tail.replacen(&one, &all, 1)
            .replacen(transport, &format!("{HEALTH_CHECK}{transport}"), 1);
    Ok(format!("{head}{tail}"))
}
