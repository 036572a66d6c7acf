//! Where the host's callbacks meet the VM: a call's answer is routed here, once, by the
//! table of calls in flight; the root's tick and the end of configuration start here. The
//! modules below (`requests`, `jwks`, `revocation`) never call each other back.

use crate::host;
use crate::requests;
use crate::vm::{FAST_TICK, SLOW_TICK, VmRef};
use certbind_core::jwks::FetchKind;
use certbind_core::pending::{Call, FlowCall};

/// A call's answer arrived in context `receiver` (root or a request).
pub fn on_call_response(vm: &VmRef, receiver: u32, token: u32, body_size: usize) {
    let call = match vm.try_borrow_mut() {
        Ok(mut v) => v.calls.take(token),
        Err(_) => None,
    };
    match call {
        Some(Call::Jwks { .. }) => on_jwks_response(vm, receiver, body_size),
        Some(Call::FeedPoll) => {
            let now = host::now_ms();
            if crate::revocation::on_response(vm, body_size, now) {
                requests::resume_revocation_waiters(vm, now);
            }
        }
        Some(Call::Pdp { ctx, .. }) => {
            requests::on_flow_call_response(vm, receiver, ctx, token, FlowCall::Pdp, body_size);
        }
        Some(Call::Usage { ctx, .. }) => {
            requests::on_flow_call_response(vm, receiver, ctx, token, FlowCall::Usage, body_size);
        }
        // A late answer for a request that is gone, or a repeated callback.
        None => {}
    }
}

fn on_jwks_response(vm: &VmRef, receiver: u32, body_size: usize) {
    let now = host::now_ms();
    if !crate::jwks::on_response(vm, body_size, now) {
        return;
    }
    let Ok(root_id) = vm.try_borrow().map(|v| v.root_id) else {
        return;
    };
    if receiver == root_id {
        requests::resume_jwks_waiters(vm, now, true);
    } else {
        // Resume the receiving request itself; the root resumes the others on its next tick,
        // so their PDP calls are answered to a context that outlives them.
        requests::resume_one_jwks_waiter(vm, receiver, now, false);
        if let Ok(mut v) = vm.try_borrow_mut() {
            v.wake_pending = true;
            v.set_tick(FAST_TICK);
        }
    }
}

/// The root's periodic work: hand Envoy the summed counters, adopt a newer shared JWKS, follow
/// or lead the revocation feed, start a due fetch, resume or time out waiting requests, and pick
/// the next tick period.
pub fn on_tick(vm: &VmRef) {
    host::follow_log_level();
    flush_counters(vm);
    let now = host::now_ms();
    let changed = crate::jwks::sync(vm);
    crate::revocation::follow_on_tick(vm, now);
    // Whichever root context of this VM brought the shared copy its first set.
    if crate::revocation::synced(vm) {
        requests::resume_revocation_waiters(vm, now);
    }
    crate::revocation::lead_on_tick(vm, now);
    let due = vm
        .try_borrow()
        .is_ok_and(|v| v.engine().jwks().needs_refresh(now));
    if due {
        crate::jwks::start_fetch(vm, FetchKind::Scheduled, now);
    }
    let wake = match vm.try_borrow_mut() {
        Ok(mut v) => std::mem::take(&mut v.wake_pending),
        Err(_) => false,
    };
    requests::resume_jwks_waiters(vm, now, changed || wake);
    if let Ok(mut v) = vm.try_borrow_mut() {
        let waiting = v.parked.values().any(|p| p.wait.is_for_data());
        let period = if waiting
            || v.engine().jwks().keys().is_none()
            || crate::revocation::wants_fast_tick(&v)
        {
            FAST_TICK
        } else {
            SLOW_TICK
        };
        v.set_tick(period);
    }
}

/// Hands Envoy the counts summed since the last tick (see `metrics`).
pub fn flush_counters(vm: &VmRef) {
    if let Ok(v) = vm.try_borrow() {
        v.metrics.flush();
    }
}

/// After configuration: adopt a shared JWKS if one exists and tick fast until keys arrive.
pub fn configured(vm: &VmRef) {
    host::follow_log_level();
    crate::jwks::sync(vm);
    if let Ok(mut v) = vm.try_borrow_mut() {
        v.set_tick(FAST_TICK);
    }
}
