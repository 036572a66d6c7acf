//! A real PostgreSQL for tests: Debian's `postgresql` package, a cluster of the test's own
//! (`initdb` in a temporary directory, its own port, trust on loopback), started with
//! `pg_ctl`, restartable, stopped when dropped. As root (CI), the server runs as the
//! `postgres` user (PostgreSQL refuses root).

use crate::Error;
use crate::ports::{free_port, is_open, loopback};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const HOW: &str = "install Debian's PostgreSQL: `apt-get install -y postgresql` (`make deps` does)";

/// `/usr/lib/postgresql/<version>/bin`, the newest version installed.
fn bin_dir() -> Result<PathBuf, Error> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map_err(|_| Error::Missing {
            what: "PostgreSQL (/usr/lib/postgresql)".into(),
            how: HOW.into(),
        })?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, b)| b)
        .ok_or_else(|| Error::Missing {
            what: "PostgreSQL's initdb under /usr/lib/postgresql/*/bin".into(),
            how: HOW.into(),
        })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A running PostgreSQL cluster of this test.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// initdb + start on a free port; a database `certbind` owned by the user `certbind`.
    pub fn start() -> Result<Self, Error> {
        let bin = bin_dir()?;
        let dir = tempfile::tempdir().map_err(Error::io("creating the PostgreSQL directory"))?;
        let as_postgres = is_root();
        let data = dir.path().join("data");
        if as_postgres {
            // The server's user must own its directory and reach it.
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .map_err(Error::io("chown"))?;
            if !status.success() {
                return Err(Error::Missing {
                    what: "the `postgres` user".into(),
                    how: HOW.into(),
                });
            }
        }
        let this = Self {
            bin,
            data,
            port: free_port()?,
            as_postgres,
            _dir: dir,
        };
        let data = this.data.display().to_string();
        this.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "certbind",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        this.pg_ctl(&["start", "-w", "-t", "30"])?;
        this.run(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &this.port.to_string(),
                "-U",
                "certbind",
                "certbind",
            ],
        )?;
        Ok(this)
    }

    /// `postgres://certbind@127.0.0.1:<port>/certbind`.
    pub fn url(&self) -> String {
        format!("postgres://certbind@127.0.0.1:{}/certbind", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (fast shutdown: connections are closed) and waits.
    pub fn stop(&self) -> Result<(), Error> {
        self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "30"])
    }

    /// Starts it again on the same port and data.
    pub fn restart(&self) -> Result<(), Error> {
        self.pg_ctl(&["start", "-w", "-t", "30"])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_open(loopback(self.port)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), Error> {
        let log = self
            .data
            .with_file_name("postgres.log")
            .display()
            .to_string();
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.socket_dir()
        );
        let data = self.data.display().to_string();
        let mut all = vec!["-D", &data, "-l", &log, "-o", &opts];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all)
    }

    fn socket_dir(&self) -> String {
        self.data
            .parent()
            .unwrap_or(&self.data)
            .display()
            .to_string()
    }

    /// Runs a PostgreSQL program (as `postgres` when we are root).
    fn run(&self, program: &str, args: &[&str]) -> Result<(), Error> {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = command
            .args(args)
            .output()
            .map_err(Error::io(format!("running {}", path.display())))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::Proc(format!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "10"]);
    }
}
