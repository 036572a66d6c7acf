//! The revocation feed follower of one VM: its root context long-polls the authz-server's
//! `GET /v1/revocations?since=<seq>` (`dispatch_http_call`), installs each answer into the
//! engine's `RevocationGuard` and polls again at once; a failed poll is retried after a short
//! backoff. Every request is checked against the guard in certbind-core's flow; nothing here
//! decides a request.
//!
//! Each worker VM follows the feed itself (one long-poll per worker, answered at once on news),
//! so a revocation reaches every worker without waiting for a tick.

use crate::metrics::Counter;
use crate::vm::{self, Vm, VmRef};
use certbind_core::revocation::{FeedError, MAX_FEED_BYTES};
use proxy_wasm::hostcalls;
use std::time::Duration;

/// Retry delays after failed polls: 250 ms doubling, capped, so a restarted authz-server is
/// followed again within ~2 s while a dead one costs little.
const BACKOFF_MIN_MS: u64 = 250;
const BACKOFF_MAX_MS: u64 = 2000;

/// The follower's state: the poll in flight and when to try again.
#[derive(Debug, Default)]
pub struct Feed {
    in_flight: Option<u32>,
    next_attempt_ms: u64,
    failures: u32,
}

/// Whether the call `token` is this VM's feed poll.
pub fn owns(vm: &VmRef, token: u32) -> bool {
    vm.try_borrow()
        .is_ok_and(|v| v.feed.in_flight == Some(token))
}

/// The root's tick: start a poll when none is in flight and the backoff allows.
pub fn on_tick(vm: &VmRef, now: u64) {
    let due = vm.try_borrow().is_ok_and(|v| {
        v.engine().revocations().is_some()
            && v.feed.in_flight.is_none()
            && now >= v.feed.next_attempt_ms
    });
    if due {
        poll(vm, now);
    }
}

/// Tick fast while no snapshot has arrived or a retry is pending.
pub fn wants_fast_tick(v: &Vm, _now: u64) -> bool {
    v.engine()
        .revocations()
        .is_some_and(|g| !g.is_synced() || v.feed.in_flight.is_none())
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
            if let Ok(mut v) = vm.try_borrow_mut() {
                if v.feed.failures > 0 || !synced_before {
                    log::info!(
                        "certbind revocation feed followed: seq={} entries={entries}",
                        seq.unwrap_or_default()
                    );
                }
                v.feed.failures = 0;
                v.metrics().bump(Counter::RevocationFeedOk);
            }
            poll(vm, now);
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
