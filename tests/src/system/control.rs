//! Watching and steering a running [`System`]: Envoy's admin counters and the processes' logs,
//! stopping and starting each process (as a crash, a hang or a restart would), and their pids.

use super::{SERVICE_READY, System, authz_ready, pdp_ready};
use crate::Error;
use crate::envoy::{self, Admin};
use crate::ports::loopback;
use std::process::Command;
use std::time::{Duration, Instant};

impl System {
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
