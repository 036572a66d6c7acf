//! Several authz-server replicas: one more beside a System (Envoy reaches them all as one
//! health-checked cluster, [`crate::envoy::authz_cluster`]), and a TCP proxy a test can cut, to
//! partition one replica from the database.

use crate::ports::loopback;
use crate::proc::{Proc, Ready};
use crate::{Error, System, prereq};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

impl System {
    /// Another authz-server `name` on `port` with the same PKI, clients and issuer, its own
    /// state directory, and `args` (e.g. `--store postgres://…`); not started yet.
    pub fn authz_replica(&self, name: &str, port: u16, args: &[&str]) -> Result<Proc, Error> {
        let clients = prereq::repo_file("authz-server/clients.yaml")?;
        let state = self.dir().join(format!("{name}-state"));
        let mut all: Vec<String> = [
            "serve".into(),
            "--listen".into(),
            loopback(port).to_string(),
            "--pki-dir".into(),
            self.pki_dir().display().to_string(),
            "--state-dir".into(),
            state.display().to_string(),
            "--clients".into(),
            clients.display().to_string(),
            "--issuer".into(),
            self.issuer().to_owned(),
        ]
        .into();
        all.extend(args.iter().map(|a| (*a).to_owned()));
        Ok(Proc::new(
            name,
            &self.authz_bin,
            &all,
            &self.dir().join("logs"),
        ))
    }

    /// When an authz-server started with [`Proc::start`] counts as ready.
    pub fn authz_ready() -> Ready {
        crate::system::authz_ready()
    }
}

/// A TCP proxy from a free local port to `target`, which [`CutProxy::cut`] turns into a
/// partition (open connections reset, new ones closed at once) until [`CutProxy::heal`].
pub struct CutProxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl CutProxy {
    pub fn start(target: SocketAddr) -> Result<Self, Error> {
        let listener = TcpListener::bind(loopback(0)).map_err(Error::io("binding the proxy"))?;
        let addr = listener.local_addr().map_err(Error::io("proxy address"))?;
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (c, o) = (Arc::clone(&cut), Arc::clone(&open));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if c.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
                    continue;
                };
                let streams = [&client, &server].map(|s| s.try_clone());
                if let Ok(mut list) = o.lock() {
                    list.extend(streams.into_iter().flatten());
                }
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
        Ok(Self { addr, cut, open })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Partitions: every open connection is shut down, new ones are closed on accept.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Ok(mut list) = self.open.lock() {
            for s in list.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// Ends the partition.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` → `to` on a thread until either side closes.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
