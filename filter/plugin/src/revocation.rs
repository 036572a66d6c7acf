//! The revocation feed follower. One worker VM per Envoy — the holder of the lease in shared
//! data (`certbind_core::revocation_share`) — long-polls the authz-server's
//! `GET /v1/revocations?since=<seq>` (`dispatch_http_call`), installs each answer into its
//! engine's `RevocationGuard`, publishes the set and a heartbeat in shared data and polls
//! again at once; a failed poll is retried after a short backoff. The other VMs read the
//! heartbeat on their root tick and copy the set only when it changed. Every request is
//! checked against the VM's own guard in certbind-core's flow; nothing here decides a request.

use crate::metrics::Counter;
use crate::vm::{self, Vm, VmRef};
use certbind_core::config::FilterConfig;
use certbind_core::revocation::{FeedError, MAX_FEED_BYTES};
use certbind_core::revocation_share::{Follow, Keys, Lease, Published, Version};
use proxy_wasm::hostcalls;
use std::hash::BuildHasher;
use std::time::Duration;

/// Retry delays after failed polls: 250 ms doubling, capped, so a restarted authz-server is
/// followed again within ~2 s while a dead one costs little.
const BACKOFF_MIN_MS: u64 = 250;
const BACKOFF_MAX_MS: u64 = 2000;

/// A follower with traffic also reads the published state before a request, at most this
/// often, so news reaches it within milliseconds rather than at its next 100 ms tick.
const FOLLOW_ON_REQUEST_MS: u64 = 5;

/// The follower's state: its role, the poll in flight and when to try again.
#[derive(Debug, Default)]
pub struct Feed {
    /// The shared-data keys of the feed; `None` when revocation is not configured.
    keys: Option<Keys>,
    /// This VM's lease id: random, fixed for the VM's life.
    id: u64,
    /// Whether this VM held the lease at its last tick.
    leading: bool,
    in_flight: Option<u32>,
    next_attempt_ms: u64,
    failures: u32,
    /// Sets this VM published while leading (the generation of its `Version`).
    generation: u64,
    /// The feed `seq` of the set last published while leading; `None` until one is.
    published_seq: Option<u64>,
    /// The version of the published set this VM adopted last (followers).
    adopted: Option<Version>,
    /// When a request may next read the published state (followers).
    next_request_follow_ms: u64,
}

impl Feed {
    pub fn new(config: &FilterConfig) -> Self {
        let keys = config
            .revocation
            .as_ref()
            .zip(config.revocation_target())
            .map(|(r, (cluster, _))| Keys::new(cluster, &r.path));
        Self {
            keys,
            id: vm_id(),
            ..Self::default()
        }
    }
}

/// A random id for this VM. std seeds `RandomState` from WASI `random_get` once per VM
/// instance, so every worker VM draws its own.
fn vm_id() -> u64 {
    std::collections::hash_map::RandomState::new()
        .hash_one(0u8)
        .max(1)
}

/// Whether the call `token` is this VM's feed poll.
pub fn owns(vm: &VmRef, token: u32) -> bool {
    vm.try_borrow()
        .is_ok_and(|v| v.feed.in_flight == Some(token))
}

/// The root's tick: a follower adopts what the leader published; then the lease is renewed or
/// taken (when it lapsed), and the leader starts a poll when none is in flight.
pub fn on_tick(vm: &VmRef, now: u64) {
    let Ok(Some((keys, id, was_leading))) = vm
        .try_borrow()
        .map(|v| v.feed.keys.clone().map(|k| (k, v.feed.id, v.feed.leading)))
    else {
        return;
    };
    if !was_leading {
        follow(vm, &keys, now);
    }
    let leading = hold_lease(&keys, id, now);
    let due = match vm.try_borrow_mut() {
        Ok(mut v) => {
            if leading != was_leading {
                v.feed.published_seq = None;
                if leading {
                    // A snapshot is answered at once; a long-poll from the adopted `seq`
                    // could hold the first heartbeat back for the whole feed wait.
                    if let Some(guard) = v.engine_mut().revocations_mut() {
                        guard.resync();
                    }
                }
                log::info!(
                    "certbind revocation feed: this worker VM {} following it",
                    if leading { "is now" } else { "stopped" }
                );
            }
            v.feed.leading = leading;
            leading && v.feed.in_flight.is_none() && now >= v.feed.next_attempt_ms
        }
        Err(_) => false,
    };
    if due {
        poll(vm, now);
    }
}

/// Before a request on a follower that holds a set: adopt newer news first (throttled).
/// Requests waiting for the first set are the root tick's business, which resumes them.
pub fn before_request(vm: &VmRef, now: u64) {
    let keys = match vm.try_borrow_mut() {
        Ok(mut v) => {
            let synced = v.engine().revocations().is_some_and(|g| g.is_synced());
            if v.feed.leading || !synced || now < v.feed.next_request_follow_ms {
                return;
            }
            v.feed.next_request_follow_ms = now.saturating_add(FOLLOW_ON_REQUEST_MS);
            v.feed.keys.clone()
        }
        Err(_) => return,
    };
    if let Some(keys) = keys {
        follow(vm, &keys, now);
    }
}

/// Renews or takes the lease; true when this VM holds it now.
fn hold_lease(keys: &Keys, id: u64, now: u64) -> bool {
    for _ in 0..2 {
        let (value, cas) = hostcalls::get_shared_data(&keys.lease).unwrap_or((None, None));
        if cas.is_none() {
            // No lease yet. Envoy compares no CAS on a key it does not hold, so two VMs
            // starting together would both win; create a lapsed lease first and claim that.
            let _ = hostcalls::set_shared_data(&keys.lease, Some(b"0:0"), None);
            continue;
        }
        let current = value.as_deref().and_then(Lease::parse);
        return match Lease::claim(current, id, now) {
            Some(lease) => {
                hostcalls::set_shared_data(&keys.lease, Some(lease.encode().as_bytes()), cas)
                    .is_ok()
            }
            None => false,
        };
    }
    false
}

/// A follower's tick: adopt a newer published set, or only the newer heartbeat.
fn follow(vm: &VmRef, keys: &Keys, now: u64) {
    let (state, _) = hostcalls::get_shared_data(&keys.state).unwrap_or((None, None));
    let published = state.as_deref().and_then(Published::parse);
    let Ok(mut v) = vm.try_borrow_mut() else {
        return;
    };
    let adopted = v.feed.adopted;
    let Some(guard) = v.engine_mut().revocations_mut() else {
        return;
    };
    match Follow::decide(adopted, guard.last_ok_ms(), published) {
        Follow::Nothing => {}
        Follow::Heard { last_ok_ms } => guard.heard(last_ok_ms),
        Follow::Adopt(p) => {
            let (set, _) = hostcalls::get_shared_data(&keys.set).unwrap_or((None, None));
            let synced_before = guard.is_synced();
            match guard.adopt(set.as_deref().unwrap_or_default(), p.last_ok_ms, now) {
                Ok(()) => {
                    if !synced_before {
                        log::info!(
                            "certbind revocation set adopted from the following VM: seq={} entries={}",
                            guard.set().since().unwrap_or_default(),
                            guard.set().len()
                        );
                    }
                }
                // Not retried until the next version: a set the leader wrote and this VM
                // refuses would be refused again. The guard keeps its set and goes stale.
                Err(e) => log::warn!("certbind published revocation set refused: {e}"),
            }
            v.feed.adopted = Some(p.version);
            if !synced_before {
                drop(v);
                vm::resume_revocation_waiters(vm, now);
            }
        }
    }
}

/// The leader publishes after every good answer: the set when its `seq` moved (or this VM
/// has not published it yet), then the heartbeat. A VM that lost the lease publishes nothing.
fn publish(vm: &VmRef, now: u64) {
    let Ok(Some((keys, id))) = vm
        .try_borrow()
        .map(|v| v.feed.keys.clone().map(|k| (k, v.feed.id)))
    else {
        return;
    };
    let (lease, _) = hostcalls::get_shared_data(&keys.lease).unwrap_or((None, None));
    if !lease
        .as_deref()
        .and_then(Lease::parse)
        .is_some_and(|l| l.held_by(id, now))
    {
        return;
    }
    let Ok(mut v) = vm.try_borrow_mut() else {
        return;
    };
    let Some(guard) = v.engine().revocations() else {
        return;
    };
    let seq = guard.set().since();
    if v.feed.published_seq.is_none() || v.feed.published_seq != seq {
        let Some(json) = guard.snapshot_json() else {
            return;
        };
        // The set before the state: a follower that sees a new version finds its set.
        let _ = hostcalls::set_shared_data(&keys.set, Some(json.as_bytes()), None);
        v.feed.generation = v.feed.generation.saturating_add(1);
        v.feed.published_seq = seq;
    }
    let state = Published {
        version: Version {
            holder: id,
            generation: v.feed.generation,
        },
        last_ok_ms: now,
    };
    let _ = hostcalls::set_shared_data(&keys.state, Some(state.encode().as_bytes()), None);
}

/// Tick fast while a follower (the heartbeat is read on the tick), while no snapshot has
/// arrived, or while a retry is pending.
pub fn wants_fast_tick(v: &Vm, _now: u64) -> bool {
    v.engine()
        .revocations()
        .is_some_and(|g| !v.feed.leading || !g.is_synced() || v.feed.in_flight.is_none())
}

fn poll(vm: &VmRef, now: u64) {
    let Ok(target) = vm.try_borrow().map(|v| {
        let guard = v.engine().revocations()?;
        let (cluster, authority) = v.config().revocation_target()?;
        Some((
            cluster.to_owned(),
            authority.to_owned(),
            guard.poll_path(),
            Duration::from_millis(guard.config().timeout_ms),
        ))
    }) else {
        return;
    };
    let Some((cluster, authority, path, timeout)) = target else {
        return;
    };
    let headers = vec![
        (":method", "GET"),
        (":path", path.as_str()),
        (":authority", authority.as_str()),
        (":scheme", "https"),
        ("accept", "application/json"),
    ];
    match hostcalls::dispatch_http_call(&cluster, headers, None, vec![], timeout) {
        Ok(token) => {
            if let Ok(mut v) = vm.try_borrow_mut() {
                v.feed.in_flight = Some(token);
            }
        }
        Err(status) => failed(vm, now, &format!("dispatch refused ({status:?})")),
    }
}

/// A poll answered (or failed: no status).
pub fn on_response(vm: &VmRef, token: u32, body_size: usize) {
    let now = vm::now_ms();
    let (status, body) = vm::call_response(body_size, MAX_FEED_BYTES);
    let outcome = match vm.try_borrow_mut() {
        Ok(mut v) => {
            if v.feed.in_flight != Some(token) {
                return;
            }
            v.feed.in_flight = None;
            let synced_before = v.engine().revocations().is_some_and(|g| g.is_synced());
            match (status, v.engine_mut().revocations_mut()) {
                (Some(200), Some(guard)) => match guard.install(&body, now) {
                    Ok(()) => Ok((synced_before, guard.set().len(), guard.set().since())),
                    Err(e) => {
                        if matches!(
                            e,
                            FeedError::WentBackwards | FeedError::Sequence | FeedError::NoSnapshot
                        ) {
                            guard.resync();
                        }
                        Err(e.to_string())
                    }
                },
                (status, _) => Err(format!("status {status:?}")),
            }
        }
        Err(_) => return,
    };
    match outcome {
        Ok((synced_before, entries, seq)) => {
            let leading = match vm.try_borrow_mut() {
                Ok(mut v) => {
                    if v.feed.failures > 0 || !synced_before {
                        log::info!(
                            "certbind revocation feed followed: seq={} entries={entries}",
                            seq.unwrap_or_default()
                        );
                    }
                    v.feed.failures = 0;
                    v.metrics().bump(Counter::RevocationFeedOk);
                    v.feed.leading
                }
                Err(_) => false,
            };
            if leading {
                publish(vm, now);
                poll(vm, now);
            }
            vm::resume_revocation_waiters(vm, now);
        }
        Err(why) => failed(vm, now, &why),
    }
}

/// Counts a failed poll and schedules the retry (the tick starts it).
fn failed(vm: &VmRef, now: u64, why: &str) {
    let Ok(mut v) = vm.try_borrow_mut() else {
        return;
    };
    v.feed.in_flight = None;
    let shift = v.feed.failures.min(8);
    let delay = BACKOFF_MIN_MS
        .saturating_mul(1 << shift)
        .min(BACKOFF_MAX_MS);
    v.feed.next_attempt_ms = now.saturating_add(delay);
    v.feed.failures = v.feed.failures.saturating_add(1);
    v.metrics().bump(Counter::RevocationFeedFailed);
    // First failure and then every 20th: a dead feed must not flood the log.
    if v.feed.failures % 20 == 1 {
        log::warn!(
            "certbind revocation feed poll failed ({} in a row): {why}",
            v.feed.failures
        );
    }
}
