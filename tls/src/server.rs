//! A server's TLS configuration that follows its files: certificate, key and trust bundle are
//! re-read when they change (checked at most once per second, on the next connection or
//! request), a broken or half-written set keeps the previous configuration, session
//! resumption is off, and every request re-checks the caller's certificate against the
//! current bundle and clock (a TLS connection may outlive the certificate that opened it).

use crate::files::{Stamp, TlsError, read_certs, read_key, stamp};
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, UnixTime};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// How often the files are looked at (a stat of three files, on the next connection).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Whether a handshake without a client certificate is refused at the TLS level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// The PDP: no certificate, no connection.
    Required,
    /// The authz-server: the certificate is requested, and endpoints that need one refuse.
    Optional,
}

/// Where a server's TLS material lives.
#[derive(Debug, Clone)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub client_auth: ClientAuth,
}

/// One loaded generation: the rustls configuration and the client verifier it uses.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
    generation: u64,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerTls(generation {})", self.generation)
    }
}

impl ServerTls {
    /// Whether `chain` (leaf first) chains to the current trust bundle and is inside its
    /// validity window at `now`.
    pub fn admits(&self, chain: &[CertificateDer<'static>], now: UnixTime) -> bool {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return false;
        };
        self.verifier
            .verify_client_cert(leaf, intermediates, now)
            .is_ok()
    }
}

fn build(files: &ServerFiles, generation: u64) -> Result<ServerTls, TlsError> {
    let chain = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&files.ca)? {
        roots.add(ca)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
    let builder = match files.client_auth {
        ClientAuth::Required => builder,
        ClientAuth::Optional => builder.allow_unauthenticated(),
    };
    let verifier = builder
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    // Refuses a key that does not match the certificate (a rotation caught half-way).
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::clone(&verifier))
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No resumption: a ticket or cached session would carry the certificate of the first
    // handshake past its expiry or revocation. Every connection authenticates afresh.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(ServerTls {
        config: Arc::new(config),
        verifier,
        generation,
    })
}

struct Current {
    tls: Arc<ServerTls>,
    stamps: [Stamp; 3],
    checked: Instant,
}

/// The server's TLS configuration, rebuilt when its files change.
pub struct ReloadingServer {
    files: ServerFiles,
    current: RwLock<Current>,
    reloading: Mutex<()>,
}

impl std::fmt::Debug for ReloadingServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReloadingServer({})", self.files.cert.display())
    }
}

impl ReloadingServer {
    /// Loads the files once; an error here is fatal (the server cannot start without them).
    pub fn load(files: ServerFiles) -> Result<Self, TlsError> {
        let stamps = stamps(&files);
        let tls = Arc::new(build(&files, 0)?);
        Ok(Self {
            files,
            current: RwLock::new(Current {
                tls,
                stamps,
                checked: Instant::now(),
            }),
            reloading: Mutex::new(()),
        })
    }

    /// The configuration to use now, after rebuilding it if a file changed since the last
    /// look (at most once per second). A set that does not load keeps the previous one.
    pub fn current(&self) -> Arc<ServerTls> {
        let due = {
            let cur = self.current.read().unwrap_or_else(PoisonError::into_inner);
            if cur.checked.elapsed() < CHECK_EVERY {
                return Arc::clone(&cur.tls);
            }
            true
        };
        if due {
            self.refresh(false);
        }
        let cur = self.current.read().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&cur.tls)
    }

    /// Looks at the files now; returns whether a new configuration was installed.
    pub fn refresh(&self, force: bool) -> bool {
        // One reloader at a time; others keep serving the current generation.
        let Ok(_guard) = self.reloading.try_lock() else {
            return false;
        };
        let now_stamps = stamps(&self.files);
        let (old_stamps, generation) = {
            let mut cur = self.current.write().unwrap_or_else(PoisonError::into_inner);
            cur.checked = Instant::now();
            (cur.stamps, cur.tls.generation)
        };
        if !force && now_stamps == old_stamps {
            return false;
        }
        match build(&self.files, generation + 1) {
            Ok(tls) => {
                let mut cur = self.current.write().unwrap_or_else(PoisonError::into_inner);
                cur.tls = Arc::new(tls);
                cur.stamps = now_stamps;
                tracing::info!(
                    cert = %self.files.cert.display(),
                    generation = generation + 1,
                    "TLS certificate or trust bundle reloaded"
                );
                true
            }
            Err(e) => {
                // Half-way through a rotation (new key, old certificate) or a broken file:
                // keep serving with what we had and look again next time.
                tracing::warn!(error = %e, "TLS files changed but do not load; keeping the previous ones");
                false
            }
        }
    }
}

fn stamps(files: &ServerFiles) -> [Stamp; 3] {
    [stamp(&files.cert), stamp(&files.key), stamp(&files.ca)]
}

/// The caller's certificate chain as presented at the handshake, re-checked per request
/// against the current trust bundle and clock (at most once per second per connection).
#[derive(Debug)]
pub struct PeerChain {
    chain: Vec<CertificateDer<'static>>,
    /// (generation, second) of the last successful check.
    last_ok: Mutex<Option<(u64, u64)>>,
}

impl PeerChain {
    pub fn new(chain: Vec<CertificateDer<'static>>) -> Self {
        Self {
            chain,
            last_ok: Mutex::new(None),
        }
    }

    /// The leaf certificate (DER).
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.chain.first()
    }

    /// Whether the chain is still valid and trusted under `tls` at `now`.
    pub fn valid(&self, tls: &ServerTls, now: UnixTime) -> bool {
        let second = now.as_secs();
        let mut last = self.last_ok.lock().unwrap_or_else(PoisonError::into_inner);
        if *last == Some((tls.generation, second)) {
            return true;
        }
        let ok = tls.admits(&self.chain, now);
        *last = ok.then_some((tls.generation, second));
        ok
    }
}
