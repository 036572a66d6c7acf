//! The active policy and its hot reload: the file is polled, a changed file is compiled and
//! swapped in only if valid; a refused change keeps the previous policy and is counted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::compile::{CompiledPolicy, version_of};
use crate::metrics::Metrics;
use crate::policy::{self, PolicyError};

/// How often the policy file is polled. A change applies within one interval plus the
/// compile time, well inside the 2 s the contract promises.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What one poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The file's content is what was last seen (applied or refused).
    Unchanged,
    /// A new version is active.
    Applied { version: String },
    /// The change was refused; the previous policy stays.
    Refused(PolicyError),
}

/// Holds the active compiled policy; readers take a cheap `Arc` snapshot.
#[derive(Debug)]
pub struct PolicyStore {
    path: PathBuf,
    active: RwLock<Arc<CompiledPolicy>>,
    /// Version (content hash) of the last content considered, or of the last read error, so a
    /// refused file is reported and counted once, not on every poll.
    last_seen: Mutex<String>,
}

impl PolicyStore {
    /// Loads the file; an invalid file is an error (the process must not start with it).
    pub fn open(path: &Path) -> Result<Self, PolicyError> {
        let (policy, bytes) = policy::load(path)?;
        let compiled = CompiledPolicy::compile(policy, &bytes);
        let seen = compiled.version.clone();
        Ok(Self {
            path: path.to_owned(),
            active: RwLock::new(Arc::new(compiled)),
            last_seen: Mutex::new(seen),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A snapshot of the active policy.
    pub fn current(&self) -> Arc<CompiledPolicy> {
        match self.active.read() {
            Ok(guard) => Arc::clone(&guard),
            // A writer never panics while holding the lock, but stay total anyway.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn set_active(&self, compiled: CompiledPolicy) {
        let new = Arc::new(compiled);
        match self.active.write() {
            Ok(mut guard) => *guard = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    /// Reads the file once and applies it if its content changed and is valid.
    pub fn poll_once(&self, metrics: &Metrics) -> ReloadOutcome {
        let mut last_seen = match self.last_seen.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => {
                // A missing file mid-rename is common; report a persistent failure once.
                let marker = format!("read-error:{}", e.kind());
                if *last_seen == marker {
                    return ReloadOutcome::Unchanged;
                }
                *last_seen = marker;
                metrics.record_reload(false);
                return ReloadOutcome::Refused(PolicyError {
                    file: self.path.display().to_string(),
                    position: None,
                    message: format!("cannot read: {e}"),
                });
            }
        };
        let version = version_of(&bytes);
        if *last_seen == version {
            return ReloadOutcome::Unchanged;
        }
        *last_seen = version.clone();
        if version == self.current().version {
            return ReloadOutcome::Unchanged; // back to the active content after a bad edit
        }
        let name = self.path.display().to_string();
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|_| PolicyError {
                file: name.clone(),
                position: None,
                message: "not UTF-8".into(),
            })
            .and_then(|text| policy::parse(text, &name));
        match parsed {
            Ok(policy) => {
                self.set_active(CompiledPolicy::compile(policy, &bytes));
                metrics.record_reload(true);
                ReloadOutcome::Applied { version }
            }
            Err(e) => {
                metrics.record_reload(false);
                ReloadOutcome::Refused(e)
            }
        }
    }

    /// Polls every `interval` until the task is dropped, logging each outcome.
    pub async fn watch(self: Arc<Self>, metrics: Arc<Metrics>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let store = Arc::clone(&self);
            let m = Arc::clone(&metrics);
            // File I/O and compiling are blocking work: keep them off the async workers.
            let outcome = tokio::task::spawn_blocking(move || store.poll_once(&m)).await;
            match outcome {
                Ok(ReloadOutcome::Unchanged) => {}
                Ok(ReloadOutcome::Applied { version }) => {
                    tracing::info!(policy_version = %version, "policy reloaded");
                }
                Ok(ReloadOutcome::Refused(e)) => {
                    tracing::error!(error = %e, "policy change refused; previous policy kept");
                }
                Err(e) => tracing::error!(error = %e, "policy poll task failed"),
            }
        }
    }
}
