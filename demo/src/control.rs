//! Freezing a running service for the fail-closed rows: SIGSTOP makes the PDP or the
//! authz-server hang exactly like a wedged process (TCP still accepts, nothing answers), and
//! SIGCONT — sent by a guard, even when the row fails — brings it back.

use rustix::process::{Pid, Signal, kill_process};
use std::fmt;
use std::path::Path;

/// A service the attacker may freeze.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Frozen {
    Pdp,
    Authz,
}

impl Frozen {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pdp => "pdp",
            Self::Authz => "authz",
        }
    }

    /// The attacker flag that supplies this service's pid.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Pdp => "--pdp-pid-file",
            Self::Authz => "--authz-pid-file",
        }
    }
}

/// The pids of the services that may be frozen; a missing one means its rows are not run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessControl {
    pub pdp: Option<u32>,
    pub authz: Option<u32>,
}

/// Why a service could not be frozen or thawed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlError(pub String);

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ControlError {}

/// The pid in a pid file (`make up` writes `.run/pids/<name>.pid`).
pub fn read_pid_file(path: &Path) -> Result<u32, ControlError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ControlError(format!("{}: {e}", path.display())))?;
    parse_pid(&text).ok_or_else(|| ControlError(format!("{}: not a pid", path.display())))
}

fn parse_pid(text: &str) -> Option<u32> {
    text.trim().parse::<u32>().ok().filter(|pid| *pid > 1)
}

fn signal(pid: u32, signal: Signal) -> Result<(), ControlError> {
    let raw = i32::try_from(pid).map_err(|_| ControlError(format!("pid {pid} out of range")))?;
    let pid = Pid::from_raw(raw).ok_or_else(|| ControlError(format!("pid {raw} invalid")))?;
    kill_process(pid, signal).map_err(|e| ControlError(format!("signal to pid {raw}: {e}")))
}

impl ProcessControl {
    pub fn pid(&self, which: Frozen) -> Option<u32> {
        match which {
            Frozen::Pdp => self.pdp,
            Frozen::Authz => self.authz,
        }
    }

    /// SIGSTOPs `which`; the returned guard SIGCONTs it when dropped.
    pub fn freeze(&self, which: Frozen) -> Result<Thaw, ControlError> {
        let pid = self.pid(which).ok_or_else(|| {
            ControlError(format!(
                "no pid for {} (pass {})",
                which.name(),
                which.flag()
            ))
        })?;
        signal(pid, Signal::STOP)?;
        Ok(Thaw { pid })
    }
}

/// Resumes a frozen process on drop.
#[derive(Debug)]
pub struct Thaw {
    pid: u32,
}

impl Drop for Thaw {
    fn drop(&mut self) {
        if let Err(e) = signal(self.pid, Signal::CONT) {
            eprintln!("certbind-demo: could not resume pid {}: {e}", self.pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_pid_and_refuses_anything_else() {
        assert_eq!(parse_pid("1234\n"), Some(1234));
        for bad in ["", "abc", "-5", "0", "1", "12 34"] {
            assert_eq!(parse_pid(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn refuses_to_freeze_without_a_pid() {
        let err = ProcessControl::default().freeze(Frozen::Pdp).unwrap_err();
        assert!(err.0.contains("--pdp-pid-file"), "{err}");
    }

    #[test]
    fn freezes_and_thaws_a_real_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let control = ProcessControl {
            pdp: Some(child.id()),
            authz: None,
        };
        let state = || {
            std::fs::read_to_string(format!("/proc/{}/stat", child.id()))
                .unwrap()
                .rsplit(')')
                .next()
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned()
        };
        let thaw = control.freeze(Frozen::Pdp).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(state(), "T");
        drop(thaw);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_ne!(state(), "T");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
