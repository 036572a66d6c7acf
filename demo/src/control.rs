//! Taking a dependency down for the fail-closed rows. [`Switch`] is the seam: the bins freeze
//! a process by pid ([`ProcessControl`]: SIGSTOP makes the PDP or the authz-server hang exactly
//! like a wedged process — TCP still accepts, nothing answers — and SIGCONT brings it back),
//! a test may stop and restart its own child instead. An [`Outage`] guard always restores it.

use rustix::process::{Pid, Signal, kill_process};
use std::fmt;
use std::path::Path;

/// A dependency of the sidecar the attacker may take down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dependency {
    Pdp,
    Authz,
}

impl Dependency {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pdp => "pdp",
            Self::Authz => "authz",
        }
    }

    /// The program a pid for this dependency must be running.
    pub fn program(self) -> &'static str {
        match self {
            Self::Pdp => "certbind-pdp",
            Self::Authz => "certbind-authz",
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

/// The pids of the dependencies that may be frozen; a missing one means its rows are not run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessControl {
    pub pdp: Option<u32>,
    pub authz: Option<u32>,
}

/// Why a dependency could not be taken down or brought back.
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

/// Whether `pid` runs `program` (its argv[0] names it).
fn runs(pid: u32, program: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        let name = argv0.rsplit(|b| *b == b'/').next().unwrap_or_default();
        name == program.as_bytes()
    })
}

fn signal(pid: u32, signal: Signal) -> Result<(), ControlError> {
    let raw = i32::try_from(pid).map_err(|_| ControlError(format!("pid {pid} out of range")))?;
    let pid = Pid::from_raw(raw).ok_or_else(|| ControlError(format!("pid {raw} invalid")))?;
    kill_process(pid, signal).map_err(|e| ControlError(format!("signal to pid {raw}: {e}")))
}

/// Takes a dependency down and brings it back.
pub trait Switch: fmt::Debug + Send + Sync {
    /// Whether `which` can be taken down here.
    fn available(&self, which: Dependency) -> bool;
    /// Makes `which` stop answering.
    fn down(&self, which: Dependency) -> Result<(), ControlError>;
    /// Makes `which` answer again.
    fn up(&self, which: Dependency) -> Result<(), ControlError>;
}

/// No dependency can be taken down (the outage rows are reported as not run).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSwitch;

impl Switch for NoSwitch {
    fn available(&self, _: Dependency) -> bool {
        false
    }
    fn down(&self, which: Dependency) -> Result<(), ControlError> {
        Err(ControlError(format!("cannot take {} down", which.name())))
    }
    fn up(&self, _: Dependency) -> Result<(), ControlError> {
        Ok(())
    }
}

impl ProcessControl {
    pub fn pid(&self, which: Dependency) -> Option<u32> {
        match which {
            Dependency::Pdp => self.pdp,
            Dependency::Authz => self.authz,
        }
    }

    fn required_pid(&self, which: Dependency) -> Result<u32, ControlError> {
        let pid = self.pid(which).ok_or_else(|| {
            ControlError(format!(
                "no pid for {} (pass {})",
                which.name(),
                which.flag()
            ))
        })?;
        // A stale pid file may name a pid the kernel has since given to anything else: never
        // stop a process that is not the service.
        if runs(pid, which.program()) {
            Ok(pid)
        } else {
            Err(ControlError(format!(
                "pid {pid} is not {} (stale pid file?)",
                which.program()
            )))
        }
    }
}

impl Switch for ProcessControl {
    fn available(&self, which: Dependency) -> bool {
        self.pid(which).is_some()
    }

    /// SIGSTOP.
    fn down(&self, which: Dependency) -> Result<(), ControlError> {
        signal(self.required_pid(which)?, Signal::STOP)
    }

    /// SIGCONT.
    fn up(&self, which: Dependency) -> Result<(), ControlError> {
        signal(self.required_pid(which)?, Signal::CONT)
    }
}

/// `which` is down until this guard is dropped.
#[derive(Debug)]
pub struct Outage<'a> {
    switch: &'a dyn Switch,
    which: Dependency,
}

/// Takes `which` down; it comes back when the returned guard is dropped, even on a failure.
pub fn outage(switch: &dyn Switch, which: Dependency) -> Result<Outage<'_>, ControlError> {
    switch.down(which)?;
    Ok(Outage { switch, which })
}

impl Drop for Outage<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.switch.up(self.which) {
            eprintln!(
                "certbind-demo: could not bring {} back: {e}",
                self.which.name()
            );
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
        let err = outage(&ProcessControl::default(), Dependency::Pdp).unwrap_err();
        assert!(err.0.contains("--pdp-pid-file"), "{err}");
        assert!(!NoSwitch.available(Dependency::Authz));
        assert!(outage(&NoSwitch, Dependency::Authz).is_err());
    }

    #[test]
    fn refuses_to_freeze_a_pid_that_is_not_the_service() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let control = ProcessControl {
            pdp: Some(child.id()),
            authz: Some(child.id()),
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        let err = outage(&control, Dependency::Authz).unwrap_err();
        assert!(err.0.contains("is not certbind-authz"), "{err}");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn freezes_and_thaws_a_real_process() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg0("certbind-pdp")
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
        // Until the child has exec'd, /proc shows the test binary's command line.
        for _ in 0..100 {
            if runs(child.id(), "certbind-pdp") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(control.available(Dependency::Pdp) && !control.available(Dependency::Authz));
        let thaw = outage(&control, Dependency::Pdp).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(state(), "T");
        drop(thaw);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_ne!(state(), "T");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
