//! One worker VM's state, shared by its root and http contexts through a [`VmRef`]: the core
//! `Engine`, the requests paused on something, the one table of calls in flight, the VM's
//! view of the shared JWKS and revocation feed, and the tick. State only: the modules that
//! act on it are `requests` (one request), `jwks`, `revocation` and `events` (routing).
//!
//! Re-entrancy: the `RefCell` is never borrowed across a host call that can call back into
//! the module (dispatching, replying, resuming), and callbacks use `try_borrow_mut`, so a
//! late or re-entrant callback finds nothing to do instead of aborting the VM.

use crate::feed::Feed;
use crate::host::{self, EnvoySharedData};
use crate::metrics::Metrics;
use certbind_core::binding::PeerIdentity;
use certbind_core::cache::ExpiringCache;
use certbind_core::config::FilterConfig;
use certbind_core::flow::{Engine, Flow};
use certbind_core::jwks_share::JwksShare;
use certbind_core::pending::PendingCalls;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

pub type VmRef = Rc<RefCell<Vm>>;

/// Tick while requests wait for keys (or none arrived yet), and otherwise.
pub const FAST_TICK: Duration = Duration::from_millis(100);
pub const SLOW_TICK: Duration = Duration::from_secs(1);

/// How many downstream connections' facts one VM remembers (oldest forgotten first: a
/// forgotten live connection just has its facts read again).
const CONN_CACHE_SIZE: usize = 512;

/// What a paused request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Jwks {
        until_ms: u64,
    },
    Pdp {
        token: u32,
    },
    /// The usage counter's answer (a usage-bound token, after every other check).
    Usage {
        token: u32,
    },
    /// The first revocation snapshot (the `revocation` module); resumed like a keys wait.
    Revocations {
        until_ms: u64,
    },
}

impl Wait {
    /// Waits the root's tick resumes (keys or the first revocation set), not a call's answer.
    pub fn is_for_data(self) -> bool {
        matches!(self, Self::Jwks { .. } | Self::Revocations { .. })
    }
}

/// A request paused on something, with its flow.
pub struct Parked {
    pub flow: Flow,
    pub wait: Wait,
}

/// What one downstream connection proves: read once per connection and remembered by
/// `connection.id` (unique within the Envoy process, never reused), since a connection's TLS
/// facts and peer cannot change while it lives and re-reading them costs four host calls.
#[derive(Debug, Clone)]
pub struct ConnFacts {
    pub peer: PeerIdentity,
    pub source_ip: Option<Rc<str>>,
    pub tls_version: Option<Rc<str>>,
    pub local_uri_san: Option<Rc<str>>,
}

pub struct Vm {
    pub(crate) engine: Engine,
    pub(crate) root_id: u32,
    pub(crate) metrics: Metrics,
    /// Requests paused on something, by context id.
    pub(crate) parked: HashMap<u32, Parked>,
    /// Every call in flight, by token: JWKS fetches, feed polls, PDP and usage calls.
    pub(crate) calls: PendingCalls,
    /// The shared JWKS copy and fetch record (single flight across VMs).
    pub(crate) jwks: JwksShare,
    /// Keys changed while an http context was active: the root resumes the waiters.
    pub(crate) wake_pending: bool,
    tick: Option<Duration>,
    /// The revocation feed follower's state (the `revocation` module).
    pub(crate) feed: Feed,
    /// Connection facts by `connection.id` (see [`ConnFacts`]).
    pub(crate) conns: ExpiringCache<u64, ConnFacts>,
}

impl Vm {
    pub fn new(config: FilterConfig, root_id: u32) -> Self {
        let jwks = JwksShare::new(&config.jwks.cluster, &config.jwks.path);
        let feed = Feed::new(&config);
        let mut engine = Engine::new(config);
        if let (Some(keys), Some(own)) = (&feed.keys, engine.feed_copy().cloned()) {
            engine.share_revocations(crate::feed::one_copy_per_vm(keys, own));
        }
        engine.use_replay_store(Box::new(EnvoySharedData), replay_hash_key());
        let metrics = Metrics::define();
        crate::crypto::use_host_signatures(&mut engine, &metrics, root_id);
        Self {
            engine,
            root_id,
            metrics,
            parked: HashMap::new(),
            calls: PendingCalls::default(),
            jwks,
            wake_pending: false,
            tick: None,
            feed,
            conns: ExpiringCache::new(CONN_CACHE_SIZE),
        }
    }

    pub fn config(&self) -> &FilterConfig {
        self.engine.config()
    }

    pub(crate) fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Sets the root's tick period (a host call only when it changes).
    pub(crate) fn set_tick(&mut self, period: Duration) {
        if self.tick != Some(period) {
            self.tick = Some(period);
            host::set_tick_period(period);
        }
    }
}

/// A fresh random key for the DPoP replay cache's slot hash (the first VM's becomes every
/// VM's). Without randomness the key is all zeros: replays are still caught, but a client
/// could aim at slots again, so this is logged as an error.
fn replay_hash_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut key) {
        log::error!(
            "certbind: no randomness for the DPoP replay cache key ({e}); using a fixed key"
        );
    }
    key
}

thread_local! {
    /// The SDK context whose callback is running (the receiver of calls dispatched now).
    static ACTIVE: Cell<u32> = const { Cell::new(0) };
}

/// Notes which context's callback is running; the glue calls this on every entry.
pub fn enter(ctx: u32) {
    ACTIVE.with(|a| a.set(ctx));
}

/// The context that receives the answer of a call dispatched now.
pub fn active_context(vm: &VmRef) -> u32 {
    let active = ACTIVE.with(Cell::get);
    if active == 0 {
        vm.try_borrow().map_or(0, |v| v.root_id)
    } else {
        active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_and_revocations_are_waits_the_tick_resumes() {
        assert!(Wait::Jwks { until_ms: 1 }.is_for_data());
        assert!(Wait::Revocations { until_ms: 1 }.is_for_data());
        assert!(!Wait::Pdp { token: 1 }.is_for_data());
        assert!(!Wait::Usage { token: 1 }.is_for_data());
    }
}
