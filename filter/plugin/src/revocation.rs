//! The revocation feed follower. One worker VM per Envoy — the holder of the lease in shared
//! data (`certbind_core::revocation_share`) — long-polls the authz-server's
//! `GET /v1/revocations?since=<seq>` (`dispatch_http_call`), installs each answer into its
//! engine's `RevocationGuard`, publishes the set and a heartbeat in shared data and polls
//! again at once; a failed poll is retried after a short backoff. The other VMs read the
//! heartbeat on their root tick and copy the set only when it changed. Every request is
//! checked against the VM's own guard in certbind-core's flow; nothing here decides a request.
//! Functions that can complete the first set say so (`true`): the caller (`events`)
//! resumes the requests waiting for it.

use crate::feed::POLL_BACKOFF;
use crate::host::{self, EnvoySharedData};
use crate::metrics::Counter;
use crate::vm::{Vm, VmRef};
use certbind_core::pending::Call;
use certbind_core::revocation::MAX_FEED_BYTES;
use certbind_core::revocation_share::{Follow, Keys, Published, Version, hold_lease, lease_held};
use certbind_core::shared::SharedStore;
use std::time::Duration;

/// A follower with traffic also reads the published state before a request, at most this
/// often, so news reaches it within milliseconds rather than at its next 100 ms tick.
const FOLLOW_ON_REQUEST_MS: u64 = 5;

/// The root's tick, first half: a follower adopts what the leader published. True when this
/// gave the VM its first set.
pub fn follow_on_tick(vm: &VmRef, now: u64) -> bool {
    let Ok(Some((keys, leading))) = vm
        .try_borrow()
        .map(|v| v.feed.keys.clone().map(|k| (k, v.feed.leading)))
    else {
        return false;
    };
    !leading && follow(vm, &keys, now)
}

/// The root's tick, second half: the lease is renewed or taken (when it lapsed), and the
/// leader starts a poll when none is in flight.
pub fn lead_on_tick(vm: &VmRef, now: u64) {
    let Ok(Some((keys, id, was_leading))) = vm
        .try_borrow()
        .map(|v| v.feed.keys.clone().map(|k| (k, v.feed.id, v.feed.leading)))
    else {
        return;
    };
    let leading = hold_lease(&mut EnvoySharedData, &keys, id, now);
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
            leading && !v.calls.feed_polling() && now >= v.feed.next_attempt_ms
        }
        Err(_) => false,
    };
    if due {
        poll(vm, now);
    }
}

/// Before a request on a follower that holds a set: adopt newer news first (throttled).
/// Requests waiting for the first set are the root tick's business, which resumes them (a VM
/// without a set does not follow here, so this never completes the first set).
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

/// A follower adopts a newer published set, or only the newer heartbeat. True when this gave
/// the VM its first set.
fn follow(vm: &VmRef, keys: &Keys, now: u64) -> bool {
    let mut store = EnvoySharedData;
    let state = store.get(&keys.state).map(|(value, _)| value);
    let published = state.as_deref().and_then(Published::parse);
    let Ok(mut v) = vm.try_borrow_mut() else {
        return false;
    };
    let adopted = v.feed.adopted;
    let Some(guard) = v.engine_mut().revocations_mut() else {
        return false;
    };
    match Follow::decide(adopted, guard.last_ok_ms(), published) {
        Follow::Nothing => false,
        Follow::Heard { last_ok_ms } => {
            guard.heard(last_ok_ms);
            false
        }
        Follow::Adopt(p) => {
            let set = store.get(&keys.set).map(|(value, _)| value);
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
            !synced_before
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
    let mut store = EnvoySharedData;
    if !lease_held(&mut store, &keys, id, now) {
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
        let _ = store.set(&keys.set, &json, None);
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
    let _ = store.set(&keys.state, state.encode().as_bytes(), None);
}

/// Tick fast while a follower (the heartbeat is read on the tick), while no snapshot has
/// arrived, or while a retry is pending.
pub fn wants_fast_tick(v: &Vm) -> bool {
    v.engine()
        .revocations()
        .is_some_and(|g| !v.feed.leading || !g.is_synced() || !v.calls.feed_polling())
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
    match host::dispatch(&cluster, &authority, &path, None, timeout) {
        Ok(token) => {
            if let Ok(mut v) = vm.try_borrow_mut() {
                v.calls.insert(token, Call::FeedPoll);
            }
        }
        Err(status) => failed(vm, now, &format!("dispatch refused ({status:?})")),
    }
}

/// The poll's answer arrived (or it failed: no status). True after a good answer: the caller
/// resumes the requests waiting for a first set.
pub fn on_response(vm: &VmRef, body_size: usize, now: u64) -> bool {
    let (status, body) = host::call_response(body_size, MAX_FEED_BYTES);
    let outcome = match vm.try_borrow_mut() {
        Ok(mut v) => {
            let synced_before = v.engine().revocations().is_some_and(|g| g.is_synced());
            match (status, v.engine_mut().revocations_mut()) {
                (Some(200), Some(guard)) => match guard.install(&body, now) {
                    Ok(()) => Ok((synced_before, guard.set().len(), guard.set().since())),
                    Err(e) => {
                        if e.forces_resync() {
                            guard.resync();
                        }
                        Err(e.to_string())
                    }
                },
                (status, _) => Err(format!("status {status:?}")),
            }
        }
        Err(_) => return false,
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
            true
        }
        Err(why) => {
            failed(vm, now, &why);
            false
        }
    }
}

/// Counts a failed poll and schedules the retry (the tick starts it).
fn failed(vm: &VmRef, now: u64, why: &str) {
    let Ok(mut v) = vm.try_borrow_mut() else {
        return;
    };
    v.feed.failures = v.feed.failures.saturating_add(1);
    let delay = POLL_BACKOFF.delay_ms(v.feed.failures);
    v.feed.next_attempt_ms = now.saturating_add(delay);
    v.metrics().bump(Counter::RevocationFeedFailed);
    // First failure and then every 20th: a dead feed must not flood the log.
    if v.feed.failures % 20 == 1 {
        log::warn!(
            "certbind revocation feed poll failed ({} in a row): {why}",
            v.feed.failures
        );
    }
}
