//! The revocation feed follower. One root context per Envoy — the holder of the lease in
//! shared data (`certbind_core::revocation_share`) — long-polls the authz-server's
//! `GET /v1/revocations?since=<seq>` (`dispatch_http_call`), installs each answer into its
//! VM's copy of the set, publishes each change and a heartbeat in shared data and polls again
//! at once; a failed poll is retried after a short backoff. The others read the heartbeat on
//! their root tick; when the set changed they apply the deltas that changed it, or read the
//! whole set when they are too far behind for those. A VM's root contexts on the same feed
//! share one copy (`feed::one_copy_per_vm`). Every request is checked against that copy in
//! certbind-core's flow; nothing here decides a request. The poll's answer says whether it
//! was good (`true`): the caller (`events`) resumes the requests waiting for a first set.

use crate::feed::POLL_BACKOFF;
use crate::host::{self, EnvoySharedData};
use crate::metrics::Counter;
use crate::vm::{Vm, VmRef};
use certbind_core::pending::Call;
use certbind_core::revocation::MAX_FEED_BYTES;
use certbind_core::revocation_share::{
    CatchUpError, CaughtUp, Delta, Follow, Installed, Keys, Published, hold_lease, lease_held,
};
use certbind_core::shared::SharedStore;
use std::time::Duration;

/// A follower with traffic also reads the published state before a request, at most this
/// often, so news reaches it within milliseconds rather than at its next 100 ms tick.
const FOLLOW_ON_REQUEST_MS: u64 = 5;

/// The root's tick, first half: a follower adopts what the leader published.
pub fn follow_on_tick(vm: &VmRef, now: u64) {
    let Ok(Some((keys, leading))) = vm
        .try_borrow()
        .map(|v| v.feed.keys.clone().map(|k| (k, v.feed.leading)))
    else {
        return;
    };
    if !leading {
        follow(vm, &keys, now);
    }
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
                v.feed.publisher.reset();
                if leading {
                    // A snapshot is answered at once; a long-poll from the adopted `seq`
                    // could hold the first heartbeat back for the whole feed wait.
                    if let Some(mut guard) = v.engine_mut().revocations_mut() {
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

/// Whether the VM's copy of the feed holds a set.
pub fn synced(vm: &VmRef) -> bool {
    vm.try_borrow()
        .is_ok_and(|v| v.engine().revocations().is_some_and(|g| g.is_synced()))
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

/// A follower catches up with a newer published version, or hears the newer heartbeat. The
/// copy may be shared with the VM's other root contexts: whichever reads news first brings it
/// up to date for all (each resumes its own requests waiting for a first set on its tick).
fn follow(vm: &VmRef, keys: &Keys, now: u64) {
    let mut store = EnvoySharedData;
    let state = store.get(&keys.state).map(|(value, _)| value);
    let published = state.as_deref().and_then(Published::parse);
    let Ok(v) = vm.try_borrow() else {
        return;
    };
    let Some(mut copy) = v.engine().feed_copy().map(|c| c.borrow_mut()) else {
        return;
    };
    let p = match copy.follow(published) {
        Follow::Nothing => return,
        Follow::Heard { last_ok_ms } => {
            copy.guard_mut().heard(last_ok_ms);
            return;
        }
        Follow::Adopt(p) => p,
    };
    let synced_before = copy.guard().is_synced();
    match copy.catch_up(&mut store, keys, p, now) {
        Ok(how) => {
            v.metrics().bump(match how {
                CaughtUp::Deltas => Counter::RevocationAdoptedDelta,
                CaughtUp::Base => Counter::RevocationAdoptedSet,
            });
            if !synced_before {
                log::info!(
                    "certbind revocation set adopted from the following VM: seq={} entries={}",
                    copy.guard().set().since().unwrap_or_default(),
                    copy.guard().set().len()
                );
            }
        }
        // Not retried until the next version, and its heartbeats do not count: this VM's set
        // stays where it got to and goes stale (fails closed) unless a newer one comes.
        Err(e @ CatchUpError::Missing) => {
            log::info!("certbind published revocation set moved on while read: {e}")
        }
        Err(e @ CatchUpError::Refused(_)) => {
            log::warn!("certbind published revocation set not adopted: {e}")
        }
    }
}

/// The leader publishes after every good answer (`Publisher`). A VM that lost the lease
/// publishes nothing.
fn publish(vm: &VmRef, now: u64, installed: Installed<'_>) {
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
    let Vm { engine, feed, .. } = &mut *v;
    if let Some(copy) = engine.feed_copy() {
        let mut copy = copy.borrow_mut();
        feed.publisher
            .publish(&mut store, &keys, id, &mut copy, Some(installed), now);
    }
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
                (Some(200), Some(mut guard)) => {
                    let since = guard.set().since();
                    match guard.install(&body, now) {
                        // A delta is published with the `seq` it applied to (a delta is
                        // only ever installed onto a set; `None`: it was a snapshot).
                        Ok(delta) => Ok((
                            synced_before,
                            guard.set().len(),
                            guard.set().since(),
                            since.filter(|_| delta),
                        )),
                        Err(e) => {
                            if e.forces_resync() {
                                guard.resync();
                            }
                            Err(e.to_string())
                        }
                    }
                }
                (status, _) => Err(format!("status {status:?}")),
            }
        }
        Err(_) => return false,
    };
    match outcome {
        Ok((synced_before, entries, seq, delta_since)) => {
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
                let installed = match delta_since {
                    Some(since) => Installed::Delta(Delta {
                        since,
                        answer: &body,
                    }),
                    None => Installed::Snapshot(&body),
                };
                publish(vm, now, installed);
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
