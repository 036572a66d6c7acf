//! A child process guard: spawns a service with its output in a log file, waits until it is
//! ready, and kills it when dropped, so no process outlives its test, even one that panics.
//!
//! Children are spawned by one long-lived thread through `setpriv --pdeathsig KILL`: the kernel
//! kills them when that thread dies, i.e. when the test process exits for any reason, which also
//! covers Systems kept in a `static` (whose `Drop` never runs).

use crate::Error;
use crate::ports::is_open;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// When a started process counts as ready.
pub enum Ready {
    /// Its output contains this text (e.g. `listening on`).
    LogLine(String),
    /// It accepts TCP connections on this address.
    Tcp(SocketAddr),
    /// This check returns true.
    Check(Box<dyn Fn() -> bool + Send>),
}

type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The thread every child is spawned from (see the module doc).
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnJob>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("certbind-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop only ends with the process.
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .map(|_| ())
            .unwrap_or(());
        Mutex::new(tx)
    })
}

fn spawn_via_spawner(command: Command) -> Result<Child, Error> {
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .map_err(|_| Error::Proc("spawner poisoned".into()))?
        .send((command, tx))
        .map_err(|_| Error::Proc("spawner thread is gone".into()))?;
    rx.recv()
        .map_err(|_| Error::Proc("spawner thread is gone".into()))?
        .map_err(Error::io("spawning"))
}

fn setpriv() -> Option<&'static Path> {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
}

/// A running child process; killed (SIGKILL) and reaped on drop.
pub struct Proc {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// A process that is not started yet: `program args`, output appended to
    /// `<log_dir>/<name>.log`.
    pub fn new(name: &str, program: &Path, args: &[String], log_dir: &Path) -> Self {
        Self {
            name: name.to_owned(),
            program: program.to_path_buf(),
            args: args.to_vec(),
            log: log_dir.join(format!("{name}.log")),
            child: None,
        }
    }

    /// [`Proc::new`] and [`Proc::start`] in one.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log_dir: &Path,
        ready: Ready,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let mut proc = Self::new(name, program, args, log_dir);
        proc.start(ready, timeout)?;
        Ok(proc)
    }

    /// Starts the command (again, after [`Proc::stop`]; a running child is stopped first),
    /// then waits up to `timeout` for `ready`. Fails with the log's tail if the child exits
    /// first or is not ready in time (it is then stopped).
    pub fn start(&mut self, ready: Ready, timeout: Duration) -> Result<(), Error> {
        self.stop();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(Error::io(format!("opening {}", self.log.display())))?;
        let _ = writeln!(log, "---- certbind-tests: starting {}", self.name);
        // Readiness lines are looked for only in what this run writes.
        let from = log.metadata().map(|m| m.len()).unwrap_or(0);
        let err = log
            .try_clone()
            .map_err(Error::io(format!("cloning {}", self.log.display())))?;
        let mut command = match setpriv() {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.arg("--pdeathsig")
                    .arg("KILL")
                    .arg("--")
                    .arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        self.child = Some(spawn_via_spawner(command).map_err(|e| {
            Error::Proc(format!(
                "{}: cannot start {}: {e}",
                self.name,
                self.program.display()
            ))
        })?);
        self.wait_ready(&ready, from, timeout)
    }

    fn wait_ready(&mut self, ready: &Ready, from: u64, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let is_ready = match ready {
                Ready::LogLine(text) => self.log_since(from).contains(text.as_str()),
                Ready::Tcp(addr) => is_open(*addr),
                Ready::Check(check) => check(),
            };
            if is_ready {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                return Err(Error::Proc(format!(
                    "{} exited ({status}) before it was ready; its log ends:\n{}",
                    self.name,
                    self.log_tail(30)
                )));
            }
            if Instant::now() > deadline {
                let tail = self.log_tail(30);
                self.stop();
                return Err(Error::Proc(format!(
                    "{} was not ready within {timeout:?}; its log ends:\n{tail}",
                    self.name
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `Some(status)` once the child has exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }

    /// The child's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills (SIGKILL) and reaps the child; harmless when it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the child wrote so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// What the child wrote after byte `from` of the log.
    fn log_since(&self, from: u64) -> String {
        let log = std::fs::read(&self.log).unwrap_or_default();
        let from = usize::try_from(from).unwrap_or(usize::MAX).min(log.len());
        String::from_utf8_lossy(&log[from..]).into_owned()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!(
                "---- {} log ({}), last lines:\n{}",
                self.name,
                self.log.display(),
                self.log_tail(25)
            );
        }
        self.stop();
    }
}

/// Creates (truncates) an empty file, e.g. for a rendered config.
pub fn write_file(path: &Path, contents: &str) -> Result<(), Error> {
    let mut f = File::create(path).map_err(Error::io(format!("creating {}", path.display())))?;
    f.write_all(contents.as_bytes())
        .map_err(Error::io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        // A reaped child has no /proc entry; a zombie would still show "State: Z".
        std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
    }

    #[test]
    fn drop_kills_and_reaps_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let sh = Path::new("/bin/sh");
        let args = ["-c".to_owned(), "echo ready now; exec sleep 30".to_owned()];
        let proc = Proc::spawn(
            "sleeper",
            sh,
            &args,
            dir.path(),
            Ready::LogLine("ready now".into()),
            Duration::from_secs(5),
        )
        .unwrap();
        let pid = proc.pid().unwrap();
        assert!(alive(pid));
        drop(proc);
        assert!(!alive(pid), "child {pid} outlived its guard");
    }

    #[test]
    fn a_child_that_dies_before_ready_is_an_error_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let args = [
            "-c".to_owned(),
            "echo cannot bind port >&2; exit 3".to_owned(),
        ];
        let err = Proc::spawn(
            "doomed",
            Path::new("/bin/sh"),
            &args,
            dir.path(),
            Ready::LogLine("listening on".into()),
            Duration::from_secs(5),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("exited") && err.contains("cannot bind port"),
            "{err}"
        );
    }

    #[test]
    fn readiness_after_a_restart_ignores_the_previous_run() {
        let dir = tempfile::tempdir().unwrap();
        let args = [
            "-c".to_owned(),
            "echo listening on; exec sleep 30".to_owned(),
        ];
        let mut proc = Proc::new("twice", Path::new("/bin/sh"), &args, dir.path());
        proc.start(
            Ready::LogLine("listening on".into()),
            Duration::from_secs(5),
        )
        .unwrap();
        proc.stop();
        assert!(!proc.is_running());
        // The old line is in the log, but this run never prints the new one: not ready.
        let err = proc
            .start(
                Ready::LogLine("ready again".into()),
                Duration::from_millis(300),
            )
            .unwrap_err();
        assert!(err.to_string().contains("not ready"), "{err}");
        assert!(!proc.is_running());
        assert_eq!(proc.log().matches("listening on").count(), 2);
    }
}
