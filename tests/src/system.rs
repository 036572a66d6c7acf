//! A whole certbind system on free ports: PKI, authz-server, PDP, the two echo upstreams and
//! Envoy with the real filter, each a [`Proc`] killed when the `System` is dropped.
//!
//! This file starts one; `system/builder.rs` says how, `system/calls.rs` talks to it as its
//! workloads and operator do, `system/control.rs` watches and steers its processes.

mod builder;
mod calls;
mod control;

pub use builder::{Ports, SystemBuilder};
pub use control::signal;

use crate::envoy::{self, EnvoyVars};
use crate::ports::loopback;
use crate::proc::{Proc, Ready, write_file};
use crate::{Error, spiffe_id};
use builder::Prerequisites;
use certbind_core::config::Mode;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SERVICE_READY: Duration = Duration::from_secs(20);

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
