//! The VM's JWKS over the host: adopting the copy another VM stored, starting a fetch when
//! the shared record allows it (`certbind_core::jwks_share`), and installing its answer.
//! Resuming the requests that wait for keys is the caller's (`events`, `requests`).

use crate::host::{self, EnvoySharedData};
use crate::metrics::Counter;
use crate::vm::{self, VmRef};
use certbind_core::jwks::{FetchKind, FetchStart, MAX_JWKS_BYTES};
use certbind_core::pending::Call;
use std::time::Duration;

/// Installs the shared JWKS copy if another VM (or this one) stored a newer one.
/// Returns true when the keys changed.
pub fn sync(vm: &VmRef) -> bool {
    let Ok(mut v) = vm.try_borrow_mut() else {
        return false;
    };
    let Some((fetched_at, body)) = v.jwks.newer_set(&mut EnvoySharedData) else {
        return false;
    };
    match v.engine.install_jwks(&body, fetched_at) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("certbind shared JWKS refused: {e}");
            false
        }
    }
}

/// Starts a JWKS fetch if this VM may (single flight across VMs, rate limit, backoff).
pub fn start_fetch(vm: &VmRef, kind: FetchKind, now: u64) -> FetchStart {
    let start = match vm.try_borrow() {
        Ok(v) => {
            let due = v.engine.jwks().needs_refresh(now);
            let policy = *v.engine.jwks().policy();
            v.jwks
                .begin_fetch(&mut EnvoySharedData, kind, due, &policy, now)
        }
        Err(_) => return FetchStart::InFlight,
    };
    if start != FetchStart::Begun {
        return start;
    }
    let receiver = vm::active_context(vm);
    match dispatch(vm) {
        Some(token) => {
            if let Ok(mut v) = vm.try_borrow_mut() {
                v.calls.insert(token, Call::Jwks { receiver });
            }
            FetchStart::Begun
        }
        None => {
            if let Ok(v) = vm.try_borrow() {
                v.jwks.end_fetch(&mut EnvoySharedData, false, now);
                v.metrics.bump(Counter::JwksFetchFailed);
            }
            log::warn!("certbind JWKS fetch could not be dispatched");
            FetchStart::NotNow
        }
    }
}

fn dispatch(vm: &VmRef) -> Option<u32> {
    let (cluster, authority, path, timeout) = {
        let v = vm.try_borrow().ok()?;
        let j = &v.config().jwks;
        (
            j.cluster.clone(),
            j.authority.clone(),
            j.path.clone(),
            Duration::from_millis(j.timeout_ms),
        )
    };
    host::dispatch(&cluster, &authority, &path, None, timeout).ok()
}

/// The fetch's answer arrived (or it failed: no status): installs a good set, stores it for
/// the other VMs, and ends the fetch in the shared record. False when the VM's state was busy
/// (nothing was done).
pub fn on_response(vm: &VmRef, body_size: usize, now: u64) -> bool {
    let (status, body) = host::call_response(body_size, MAX_JWKS_BYTES);
    let Ok(mut v) = vm.try_borrow_mut() else {
        return false;
    };
    let installed = if status == Some(200) {
        v.engine.install_jwks(&body, now).map_err(|e| e.to_string())
    } else {
        Err(format!("status {status:?}"))
    };
    match &installed {
        Ok(()) => {
            v.jwks.publish_set(&mut EnvoySharedData, now, &body);
            v.metrics.bump(Counter::JwksFetchOk);
            log::info!("certbind JWKS installed");
        }
        Err(e) => {
            v.metrics.bump(Counter::JwksFetchFailed);
            log::warn!("certbind JWKS fetch failed: {e}; keeping the last good set");
        }
    }
    v.jwks
        .end_fetch(&mut EnvoySharedData, installed.is_ok(), now);
    true
}

/// A fetch whose answer would have gone to a context that went away: free its lease so
/// another context can fetch.
pub fn abandon_fetch(vm: &VmRef) {
    if let Ok(v) = vm.try_borrow() {
        v.jwks.abandon_fetch(&mut EnvoySharedData);
    }
}
