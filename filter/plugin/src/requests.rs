//! One request through certbind-core's flow: start it, carry out each `Step` (allow, deny,
//! fetch keys, ask the PDP or the usage counter, wait for revocations), park it while it
//! waits and resume it when what it waits for arrives. Every decision is the flow's; this
//! maps steps onto host calls and records the one decision line.

use crate::host;
use crate::metrics::Counter;
use crate::vm::{self, FAST_TICK, Parked, VmRef, Wait};
use certbind_core::flow::log_safe;
use certbind_core::flow::{Allow, Deny, Flow, Step};
use certbind_core::jwks_share::AfterFetch;
use certbind_core::pending::{Call, FlowCall};
use certbind_core::reason::Reason;
use std::time::Duration;

/// Starts the checks for the current request (context `ctx`); true to continue at once.
pub fn start_request(vm: &VmRef, ctx: u32) -> bool {
    let now = host::now_ms();
    crate::revocation::before_request(vm, now);
    let Some(facts) = crate::facts::read_facts(vm) else {
        return fail_closed(ctx, "");
    };
    let started = match vm.try_borrow_mut() {
        Ok(mut v) => Some(Flow::start(&mut v.engine, facts, now)),
        Err(_) => None,
    };
    match started {
        Some((flow, step)) => act(vm, ctx, flow, step, now, false),
        None => fail_closed(ctx, ""),
    }
}

/// The request could not even be examined (state busy): refuse it rather than pass it.
fn fail_closed(ctx: u32, request_id: &str) -> bool {
    log::error!("[ctx {ctx}] certbind internal state unavailable; refusing the request");
    host::reply(&Deny::new(Reason::InternalError, "certbind", request_id));
    false
}

/// Carries out `step` for request `ctx` until it is allowed, denied or paused.
/// `resuming`: the request is paused already and must be resumed to pass.
/// Returns true when the request may continue right away (only when not resuming).
fn act(vm: &VmRef, ctx: u32, mut flow: Flow, mut step: Step, now: u64, resuming: bool) -> bool {
    loop {
        let (kind, body, timeout_ms) = match step {
            Step::Allow(allow) => {
                allow_request(vm, ctx, &flow, &allow);
                if resuming {
                    host::resume_request();
                }
                return true;
            }
            Step::Deny(deny) => {
                record(vm, ctx, &flow, Outcome::Deny(deny.reason));
                host::reply(&deny);
                return false;
            }
            Step::FetchJwks {
                kind,
                wait_until_ms,
            } => {
                let fresh = crate::jwks::sync(vm)
                    || AfterFetch::of(kind, crate::jwks::start_fetch(vm, kind, now))
                        == AfterFetch::DecideNow;
                if !fresh {
                    let wait = Wait::Jwks {
                        until_ms: wait_until_ms,
                    };
                    park(vm, ctx, flow, wait);
                    return false;
                }
                // Another VM just stored a newer set (that is the fetch this flow asks for),
                // or no new keys are coming: the flow decides with the keys at hand.
                step = match resume_jwks(vm, &mut flow, now) {
                    Some(next) => next,
                    None => return fail_closed(ctx, &flow.facts().request_id),
                };
                continue;
            }
            Step::AwaitRevocations { wait_until_ms } => {
                let wait = Wait::Revocations {
                    until_ms: wait_until_ms,
                };
                park(vm, ctx, flow, wait);
                return false;
            }
            Step::ConsumeUse { body, timeout_ms } => (FlowCall::Usage, body, timeout_ms),
            Step::AskPdp { body, timeout_ms } => (FlowCall::Pdp, body, timeout_ms),
        };
        (flow, step) = match call(vm, ctx, flow, kind, &body, timeout_ms, now) {
            Ok(next) => next,
            Err(go_on) => return go_on,
        };
    }
}

/// Dispatches the flow's call and parks the request on it (`Err(false)`: paused), or, when
/// the host refuses the call, hands back the flow with its next step without it.
fn call(
    vm: &VmRef,
    ctx: u32,
    mut flow: Flow,
    kind: FlowCall,
    body: &str,
    timeout_ms: u64,
    now: u64,
) -> Result<(Flow, Step), bool> {
    let Some(token) = dispatch_post(vm, kind, body, timeout_ms) else {
        // Not dispatched (no such cluster, breaker open): the flow hears a failed call.
        let step = match vm.try_borrow_mut() {
            Ok(mut v) => kind.undispatched(&mut flow, &mut v.engine, now),
            Err(_) => return Err(fail_closed(ctx, &flow.facts().request_id)),
        };
        return Ok((flow, step));
    };
    let receiver = vm::active_context(vm);
    let (pending, wait) = match kind {
        FlowCall::Pdp => (Call::Pdp { ctx, receiver }, Wait::Pdp { token }),
        FlowCall::Usage => (Call::Usage { ctx, receiver }, Wait::Usage { token }),
    };
    if let Ok(mut v) = vm.try_borrow_mut() {
        v.calls.insert(token, pending);
    }
    park(vm, ctx, flow, wait);
    Err(false)
}

fn dispatch_post(vm: &VmRef, kind: FlowCall, body: &str, timeout_ms: u64) -> Option<u32> {
    let (cluster, authority, path) = {
        let v = vm.try_borrow().ok()?;
        let c = v.config();
        match kind {
            FlowCall::Pdp => (
                c.pdp.cluster.clone(),
                c.pdp.authority.clone(),
                c.pdp.path.clone(),
            ),
            FlowCall::Usage => {
                let (cluster, authority) = c.usage_target()?;
                let path = c.usage.as_ref()?.path.clone();
                (cluster.to_owned(), authority.to_owned(), path)
            }
        }
    };
    let timeout = Duration::from_millis(timeout_ms);
    host::dispatch(&cluster, &authority, &path, Some(body.as_bytes()), timeout).ok()
}

fn resume_jwks(vm: &VmRef, flow: &mut Flow, now: u64) -> Option<Step> {
    let mut v = vm.try_borrow_mut().ok()?;
    flow.resume_jwks(&mut v.engine, now)
}

fn park(vm: &VmRef, ctx: u32, flow: Flow, wait: Wait) {
    if let Ok(mut v) = vm.try_borrow_mut() {
        v.parked.insert(ctx, Parked { flow, wait });
        if wait.is_for_data() {
            v.set_tick(FAST_TICK);
        }
    }
}

fn allow_request(vm: &VmRef, ctx: u32, flow: &Flow, allow: &Allow) {
    // `add`, not `replace`: read_facts removed every caller-sent `x-certbind-*` header, so
    // Envoy need not look for one to replace.
    for (name, value) in allow.headers.iter() {
        host::add_request_header(name, value);
    }
    // Removing a header the request does not carry is a host call for nothing.
    if allow.remove_authorization {
        if flow.facts().authorization.is_some() {
            host::remove_request_header("authorization");
        }
        if !flow.facts().dpop.is_empty() {
            host::remove_request_header("dpop");
        }
    }
    let outcome = match allow.shadowed {
        Some(reason) => Outcome::Shadow(reason),
        None => Outcome::Allow,
    };
    record(vm, ctx, flow, outcome);
}

enum Outcome {
    Allow,
    Deny(Reason),
    Shadow(Reason),
}

/// Counters and the one log line of a decision (never the token).
fn record(vm: &VmRef, ctx: u32, flow: &Flow, outcome: Outcome) {
    let Ok(v) = vm.try_borrow() else {
        return;
    };
    let (word, reason) = match outcome {
        Outcome::Allow => {
            v.metrics.bump(Counter::Allowed);
            ("allow", "ok")
        }
        Outcome::Deny(reason) => {
            v.metrics.bump(Counter::Denied(reason));
            ("deny", reason.as_str())
        }
        Outcome::Shadow(reason) => {
            v.metrics.bump(Counter::Denied(reason));
            v.metrics.bump(Counter::ShadowPassed);
            ("shadow", reason.as_str())
        }
    };
    if flow.token_cache_hit() {
        v.metrics.bump(Counter::TokenCacheHit);
    }
    if flow.decision_cache_hit() {
        v.metrics.bump(Counter::DecisionCacheHit);
    }
    if flow.revocation_unchecked() {
        v.metrics.bump(Counter::RevocationFailOpen);
        log::warn!(
            "certbind revocation feed stale: request_id={} admitted unchecked (fail_open)",
            log_safe(&flow.facts().request_id)
        );
    }
    log::info!(
        "{}",
        flow.trace().log_line(
            ctx,
            &flow.facts().request_id,
            word,
            reason,
            v.config().mode.as_str()
        )
    );
}

/// Whether request `ctx` is paused waiting for keys or the PDP (or its state is busy).
pub fn is_waiting(vm: &VmRef, ctx: u32) -> bool {
    vm.try_borrow()
        .map_or(true, |v| v.parked.contains_key(&ctx))
}

/// The request context went away: forget its paused flow and calls. A JWKS fetch whose
/// answer would have gone to it frees its lease so another context can fetch.
pub fn forget_context(vm: &VmRef, ctx: u32) {
    let forgotten = match vm.try_borrow_mut() {
        Ok(mut v) => {
            v.parked.remove(&ctx);
            v.calls.forget_context(ctx)
        }
        Err(_) => return,
    };
    if forgotten.orphaned_jwks_fetch {
        crate::jwks::abandon_fetch(vm);
        if let Ok(mut v) = vm.try_borrow_mut() {
            v.wake_pending = true;
        }
    }
}

/// Re-runs the flows waiting for keys or revocations (all of them, or only those past their
/// deadline).
pub fn resume_jwks_waiters(vm: &VmRef, now: u64, all: bool) {
    resume_waiters(vm, now, |wait| match wait {
        Wait::Jwks { until_ms } | Wait::Revocations { until_ms } => all || now >= until_ms,
        Wait::Pdp { .. } | Wait::Usage { .. } => false,
    });
}

/// Re-runs the requests waiting for the first revocation snapshot (root context).
pub fn resume_revocation_waiters(vm: &VmRef, now: u64) {
    resume_waiters(vm, now, |wait| matches!(wait, Wait::Revocations { .. }));
}

fn resume_waiters(vm: &VmRef, now: u64, due: impl Fn(Wait) -> bool) {
    let waiting: Vec<u32> = match vm.try_borrow() {
        Ok(v) => v
            .parked
            .iter()
            .filter_map(|(ctx, p)| due(p.wait).then_some(*ctx))
            .collect(),
        Err(_) => return,
    };
    for ctx in waiting {
        resume_one_jwks_waiter(vm, ctx, now, true);
    }
    if let Ok(root) = vm.try_borrow().map(|v| v.root_id) {
        host::set_effective_context(root);
    }
}

/// Re-runs request `ctx` if it waits for keys or revocations. `switch_context`: the callback
/// running is another context's, so host calls must be pointed at `ctx` first.
pub fn resume_one_jwks_waiter(vm: &VmRef, ctx: u32, now: u64, switch_context: bool) {
    let parked = match vm.try_borrow_mut() {
        Ok(mut v) => match v.parked.get(&ctx).map(|p| p.wait) {
            Some(wait) if wait.is_for_data() => v.parked.remove(&ctx),
            _ => None,
        },
        Err(_) => None,
    };
    let Some(Parked { mut flow, .. }) = parked else {
        return;
    };
    if switch_context && !host::set_effective_context(ctx) {
        // The request is gone.
        return;
    }
    let Some(step) = resume_jwks(vm, &mut flow, now) else {
        return;
    };
    act(vm, ctx, flow, step, now, true);
}

/// The answer to call `token` of request `ctx` (the PDP's or the usage counter's), delivered
/// to context `receiver`: read while it is the current answer, then the flow moves on.
pub fn on_flow_call_response(
    vm: &VmRef,
    receiver: u32,
    ctx: u32,
    token: u32,
    kind: FlowCall,
    body_size: usize,
) {
    let now = host::now_ms();
    let parked = match vm.try_borrow_mut() {
        Ok(mut v) => match v.parked.get(&ctx).map(|p| p.wait) {
            Some(Wait::Pdp { token: t } | Wait::Usage { token: t }) if t == token => {
                v.parked.remove(&ctx)
            }
            _ => None,
        },
        Err(_) => None,
    };
    let Some(Parked { mut flow, .. }) = parked else {
        return;
    };
    // Read the answer before switching context: it belongs to the call being delivered.
    let (status, body) = host::call_response(body_size, kind.max_answer_bytes());
    let step = match vm.try_borrow_mut() {
        Ok(mut v) => kind.answer(&mut flow, &mut v.engine, status, &body, now),
        Err(_) => None,
    };
    if receiver != ctx && !host::set_effective_context(ctx) {
        return;
    }
    if let Some(step) = step {
        act(vm, ctx, flow, step, now, true);
    }
    if receiver != ctx {
        host::set_effective_context(receiver);
    }
}
