//! `certbind-authz serve`: checks the flags, opens the stores and keys, then runs the mTLS
//! listener, the optional health port and the background watchers until SIGTERM or SIGINT.

use super::{ServeArgs, now_s, open_revocations};
use crate::app::{AppState, app};
use crate::clients::Registry;
use crate::keys::KeyStore;
use crate::{server, tls};
use certbind_core::binding::SpiffeId;
use std::sync::Arc;
use std::time::Duration;

fn parse_ids(flag: &str, ids: &[String]) -> Result<Vec<SpiffeId>, String> {
    ids.iter()
        .map(|s| SpiffeId::parse(s).map_err(|e| format!("{flag} {s:?}: {e}")))
        .collect()
}

/// Checks the issuer is an https URL without query or fragment (RFC 8414 §2).
pub fn valid_issuer(issuer: &str) -> bool {
    issuer
        .strip_prefix("https://")
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(['?', '#', ' ']))
}

pub(super) fn run_serve(args: ServeArgs) -> Result<(), String> {
    if !valid_issuer(&args.issuer) {
        return Err(format!(
            "--issuer {:?} must be an https URL without query or fragment",
            args.issuer
        ));
    }
    let registry =
        Registry::load(&args.clients).map_err(|e| format!("{}: {e}", args.clients.display()))?;
    let shared_keys = match &args.store {
        Some(url) => Some(Arc::new(
            crate::pg_keys::PgKeys::open(crate::pg::config(url)?)
                .map_err(|e| format!("--store: {e}"))?,
        )),
        None => None,
    };
    let keys = match &shared_keys {
        Some(k) => KeyStore::shared(Arc::clone(k) as Arc<dyn crate::keys::KeySource>),
        None => KeyStore::open(&args.state_dir).map_err(|e| e.to_string())?,
    };
    let tls = tls::server_config(&args.pki_dir, "authz").map_err(|e| e.to_string())?;
    let operators = parse_ids("--operators", &args.operators)?;
    let feed_callers = certbind_core::caller::CallerList::parse(&args.feed_callers)
        .map_err(|e| format!("--feed-callers: {e}"))?;
    let revocations = Arc::new(open_revocations(args.store.as_deref(), &args.state_dir)?);
    let mut state = AppState::new(
        registry,
        keys,
        Arc::clone(&revocations),
        &args.issuer,
        args.token_ttl,
    );
    state.operators = Arc::new(operators);
    state.feed_callers = Arc::new(feed_callers);
    // With replicas the count lives in the shared store, so a token's uses are spent once.
    let usage = match args.store.as_deref() {
        Some(url) => crate::usage::UsageCounter::on(Box::new(
            crate::pg::PgStore::open(crate::pg::config(url)?)
                .map_err(|e| format!("--store: {e}"))?,
        )),
        None => crate::usage::UsageCounter::open(&args.state_dir).map_err(|e| e.to_string())?,
    };
    state.usage = Some(Arc::new(usage));
    state.feed_wait = Duration::from_secs(args.feed_wait);
    if let Some(path) = &args.posture {
        let policy =
            crate::posture::Policy::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
        state.posture = Some(Arc::new(policy));
    }
    let clock = state.clock.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        // Rows written by `certbind-authz revoke` reach the mirror and the feed from here.
        let watcher = Arc::clone(&revocations).spawn_watcher(clock.clone());
        if let Some(url) = &args.store {
            // NOTIFY from other replicas' writes; the watcher's poll stays as the backstop.
            Arc::clone(&revocations)
                .spawn_listener(crate::pg::config(url)?, clock)
                .map_err(|e| format!("cannot start the store listener: {e}"))?;
        }
        let key_watcher = shared_keys
            .map(|k| spawn_key_watcher(k, args.rotate_keys_every.map(Duration::from_secs)));
        // Reports are counted from now: a required subject has one interval to report.
        state.posture_reports = Arc::new(crate::posture::Reports::new(now_s()));
        let watchdog = crate::revoke::spawn_posture_watchdog(state.clone());
        let ready = crate::health::Ready::default();
        let health = match args.health_listen {
            Some(at) => {
                let l = tokio::net::TcpListener::bind(at)
                    .await
                    .map_err(|e| format!("cannot listen on {at} (--health-listen): {e}"))?;
                let router = crate::health::router(state.clone(), Arc::clone(&ready));
                eprintln!(
                    "certbind-authz health on http://{}",
                    l.local_addr().unwrap_or(at)
                );
                Some(tokio::spawn(crate::health::serve(l, router)))
            }
            None => None,
        };
        eprintln!("certbind-authz listening on https://{addr}");
        ready.store(true, std::sync::atomic::Ordering::Release);
        server::serve(listener, tls, app(state), shutdown_signal()).await;
        ready.store(false, std::sync::atomic::Ordering::Release);
        if let Some(task) = health {
            task.abort();
        }
        watcher.abort();
        if let Some(w) = key_watcher {
            w.abort();
        }
        if let Some(w) = watchdog {
            w.abort();
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// Rereads the shared key table every [`crate::revocation::WATCH_INTERVAL`] and, with
/// `--rotate-keys-every`, rotates when the signing key is that old (the replica holding the
/// lock does; the others see its key at their next read).
fn spawn_key_watcher(
    keys: Arc<crate::pg_keys::PgKeys>,
    rotate_every: Option<Duration>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::revocation::WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            let k = Arc::clone(&keys);
            let done = tokio::task::spawn_blocking(move || {
                if let Some(every) = rotate_every {
                    k.rotate_if_due(every)?;
                }
                k.refresh()
            })
            .await;
            match done {
                Ok(Ok(())) => failing = false,
                Ok(Err(e)) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "shared key store read failed; serving the keys read last");
                }
                Ok(Err(_)) => {}
                Err(e) => tracing::error!(error = %e, "shared key store task failed"),
            }
        }
    })
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutdown requested");
}
