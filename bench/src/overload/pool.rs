//! The open loop's keep-alive connections to Envoy, kept like a client's connection pool, and
//! one request sent on one of them.

use super::answer::{
    Answer, BACKED_OFF, CONNECTION_BACKED_OFF, CONNECTION_REFUSED, classify, is_refusal,
};
use crate::load::{Sender, Target, connect};
use crate::traffic::{self, Kind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// How long one request may take before the generator gives up on it (an error, not an answer).
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Like a client's connection pool, the generator does not try a new connection for
/// [`BACKOFF`] after Envoy refused one: a request finding no idle connection then is refused
/// on the spot. Without this, one load-generator core spends itself on refused handshakes
/// (a run at 2x did: the generator at 94 % CPU, Envoy idle at 40 %, answers 10 s late).
const BACKOFF: Duration = Duration::from_millis(10);

/// Keep-alive connections to Envoy: an idle one if there is one, else a new one up to the cap,
/// else the request waits for one to come back (and its clock keeps running).
pub(super) struct Pool {
    target: Target,
    idle: Mutex<Vec<Sender>>,
    pub(super) open: AtomicUsize,
    cap: usize,
    freed: Notify,
    pub(super) opened_total: AtomicU64,
    /// After Envoy refused a new connection, no new one is tried until then.
    refused_until: Mutex<Option<tokio::time::Instant>>,
}

impl Pool {
    pub(super) fn new(target: Target, cap: usize) -> Self {
        Self {
            target,
            idle: Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
            cap: cap.max(1),
            freed: Notify::new(),
            opened_total: AtomicU64::new(0),
            refused_until: Mutex::new(None),
        }
    }

    /// Opens connections until `n` are open (clients already connected when the load starts).
    pub(super) async fn warm(self: &Arc<Self>, n: usize) -> Result<(), String> {
        let mut batch = Vec::new();
        while self.open.load(Ordering::Relaxed) < n.min(self.cap) {
            let lease = self.checkout_new().await?;
            batch.push(lease);
        }
        for lease in batch {
            lease.give_back();
        }
        Ok(())
    }

    async fn checkout_new(self: &Arc<Self>) -> Result<Lease, String> {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.opened_total.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(self);
        let sender = connect(&self.target).await?;
        std::mem::forget(slot);
        Ok(Lease {
            pool: Arc::clone(self),
            sender: Some(sender),
        })
    }

    fn pop_idle(&self) -> Option<Sender> {
        self.idle.lock().ok()?.pop()
    }

    async fn checkout(self: &Arc<Self>) -> Result<Lease, String> {
        let lease = |sender| Lease {
            pool: Arc::clone(self),
            sender: Some(sender),
        };
        loop {
            if let Some(s) = self.pop_idle() {
                if s.is_closed() {
                    self.lost();
                    continue;
                }
                return Ok(lease(s));
            }
            if self.open.load(Ordering::Relaxed) < self.cap {
                let now = tokio::time::Instant::now();
                if self
                    .refused_until
                    .lock()
                    .is_ok_and(|until| until.is_some_and(|u| now < u))
                {
                    return Err(BACKED_OFF.into());
                }
                let fresh = self.checkout_new().await;
                if let Err(e) = &fresh
                    && is_refusal(e)
                    && let Ok(mut until) = self.refused_until.lock()
                {
                    *until = Some(tokio::time::Instant::now() + BACKOFF);
                }
                return fresh;
            }
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let any_idle = self.idle.lock().map(|i| !i.is_empty()).unwrap_or(false);
            if !any_idle {
                freed.await;
            }
        }
    }

    fn checkin(&self, sender: Sender) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(sender);
        }
        self.freed.notify_one();
    }

    /// A connection broke or was dropped: its slot is free for a new one.
    fn lost(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.freed.notify_one();
    }
}

/// A connection taken from the pool: given back with [`Lease::give_back`] after an answer;
/// dropped otherwise (an error, or the request abandoned mid-way), its slot is freed.
struct Lease {
    pool: Arc<Pool>,
    sender: Option<Sender>,
}

impl Lease {
    fn sender(&mut self) -> Option<&mut Sender> {
        self.sender.as_mut()
    }

    fn give_back(mut self) {
        if let Some(s) = self.sender.take() {
            self.pool.checkin(s);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.sender.take().is_some() {
            self.pool.lost();
        }
    }
}

/// A connection slot being filled; dropped unfilled, it frees the slot.
struct Slot<'a>(&'a Pool);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.lost();
    }
}

/// Sends the `n`-th request of the run on `sender` and classifies its answer.
async fn exchange(sender: &mut Sender, kind: &Kind, n: u64) -> Answer {
    let path = kind.path_of(n);
    match tokio::time::timeout(REQUEST_TIMEOUT, traffic::one(sender, kind, &path)).await {
        Ok(Ok((status, body))) => classify(kind, status, &body),
        Ok(Err(e)) => Answer::Error(e),
        Err(_) => Answer::Error("timeout".into()),
    }
}

/// One request on a pooled connection; the connection goes back only after a full answer.
pub(super) async fn leased_exchange(pool: &Arc<Pool>, kind: &Kind, n: u64) -> Answer {
    let mut lease = match pool.checkout().await {
        Ok(l) => l,
        // Envoy closes a connection over its listener's limit right after accepting it.
        Err(e) if is_refusal(&e) => return Answer::Shed(CONNECTION_REFUSED),
        Err(e) if e == BACKED_OFF => return Answer::Shed(CONNECTION_BACKED_OFF),
        Err(e) => return Answer::Error(e),
    };
    let Some(sender) = lease.sender() else {
        return Answer::Error("empty lease".into());
    };
    let answer = exchange(sender, kind, n).await;
    if !matches!(answer, Answer::Error(_)) {
        lease.give_back();
    }
    answer
}
