//! How a [`System`] is asked for: the [`SystemBuilder`] (the plugin's defaults except where a
//! test changes them), the [`Ports`] it picks, and the [`Prerequisites`] it checks up front.

use super::System;
use crate::envoy::FilterTuning;
use crate::ports::free_port;
use crate::{Error, prereq};
use certbind_core::config::Mode;
use std::path::PathBuf;

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
    pub(super) fn pick() -> Result<Self, Error> {
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
    pub(super) mode: Mode,
    pub(super) concurrency: u32,
    pub(super) start_authz: bool,
    pub(super) start_pdp: bool,
    pub(super) tuning: FilterTuning,
    pub(super) authz_args: Vec<String>,
    pub(super) pki_args: Vec<String>,
    /// The authz-server's `--issuer` (default `https://127.0.0.1:<its port>`).
    pub(super) issuer: Option<String>,
    /// Rewrites the rendered Envoy configuration (a deployment whose template is not ours).
    pub(super) envoy_edit: Option<fn(String) -> String>,
    /// Ports of authz-server replicas for Envoy's `certbind_authz` cluster (empty: the one).
    pub(super) authz_replicas: Vec<u16>,
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
pub(super) struct Prerequisites {
    pub(super) authz: PathBuf,
    pub(super) pdp: PathBuf,
    pub(super) echo: PathBuf,
    pub(super) wasm: PathBuf,
    pub(super) policies: PathBuf,
    pub(super) clients: PathBuf,
}

impl Prerequisites {
    pub(super) fn check() -> Result<Self, Error> {
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
