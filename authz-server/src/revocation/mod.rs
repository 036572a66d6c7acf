//! The revocation service: turns a request to revoke into a row (validation, expiry rules),
//! writes it durably through the [`Store`], keeps an in-memory mirror that answers the
//! server's own checks (`/token`, `/introspect`, with `certbind_core::revocation`, the same
//! code the filter runs) and the feed, and wakes long-polling subscribers through one
//! `tokio::sync::watch` channel (no subscriber ever touches SQLite).
//!
//! Expiry rules (a row is kept until no token it covers can still be valid):
//! - `jti`: the token's `exp` when known (`/revoke`), else revocation time + [`MAX_TOKEN_TTL`];
//!   plus [`CLOCK_SKEW_MARGIN`] for sidecar clocks.
//! - `subject`: a ban. Tokens with `iat` ≤ the revocation time are revoked and no new token is
//!   issued to the subject while the ban holds. With no `expires_at` the ban has no end until
//!   an operator lifts it; lifting keeps the row (old tokens stay revoked) until
//!   revocation time + [`MAX_TOKEN_TTL`] + margin, and issuance resumes at once.
//! - `cert`: every request with that certificate, and every `/token` request presenting it,
//!   is refused until the given `expires_at` (ideally the certificate's `notAfter`), or
//!   forever when none is given (a thumbprint alone does not tell us the certificate's end).
//!
//! A write made by this process is in the mirror before the `200`; a write made by another
//! process (`certbind-authz revoke`) is picked up by [`Revocations::spawn_watcher`] within
//! one poll interval.
//!
//! On a store shared by replicas (PostgreSQL) a replica also follows `NOTIFY` and watches its
//! own freshness (`replica.rs`). Requests are validated and planned into rows in `plan.rs`;
//! the tests are in `tests.rs`.

use crate::store::{Backend, Changes, NewRevocation, Row, Store, StoreError};
use certbind_core::binding::{CertThumbprint, SpiffeId};
use certbind_core::revocation::{FeedAnswer, Kind, Presented, RevocationSet};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

mod plan;

pub use crate::quota::{CLOCK_SKEW_MARGIN, MAX_TOKEN_TTL};
pub use plan::{Invalid, MAX_REASON_LEN, Request, canonical_value, plan};
/// How often the watcher checks the store for other writers and compacts.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// A replica of a shared store that has not read it for this long is not current.
pub const STALE_AFTER: Duration = Duration::from_secs(2);
/// How often expired rows are deleted.
const COMPACT_EVERY: Duration = Duration::from_secs(60);

/// The in-memory copy of the store.
#[derive(Debug, Default)]
struct Mirror {
    by_seq: BTreeMap<u64, Row>,
    seq_of: HashMap<(Kind, String), u64>,
    latest: u64,
    compacted_through: u64,
    /// The same checks the filter runs, for `/introspect`.
    set: RevocationSet,
}

impl Mirror {
    fn apply(&mut self, changes: Changes, now: u64) {
        for row in &changes.rows {
            let key = (row.entry.kind, row.entry.value.clone());
            if let Some(old) = self.seq_of.insert(key, row.seq) {
                self.by_seq.remove(&old);
            }
            self.by_seq.insert(row.seq, row.clone());
        }
        self.latest = self.latest.max(changes.latest);
        self.compacted_through = self.compacted_through.max(changes.compacted_through);
        let Some(held) = self.set.since() else {
            self.rebuild(now);
            return;
        };
        let delta = FeedAnswer {
            seq: self.latest.max(held),
            snapshot: false,
            revocations: changes
                .rows
                .iter()
                .filter(|r| r.seq > held)
                .map(Row::to_feed)
                .collect(),
        };
        if let Err(e) = self.set.apply(delta, now) {
            // Cannot happen for rows read in order; rebuild from the mirror to stay exact.
            tracing::warn!(error = %e, "rebuilding the revocation set");
            self.rebuild(now);
        }
    }

    fn rebuild(&mut self, now: u64) {
        let mut set = RevocationSet::new();
        self.prune_rows(now);
        let snapshot = FeedAnswer {
            seq: self.latest,
            snapshot: true,
            revocations: self.by_seq.values().map(Row::to_feed).collect(),
        };
        if set.apply(snapshot, now).is_ok() {
            self.set = set;
        }
    }

    fn prune(&mut self, now: u64) {
        self.prune_rows(now);
        self.set.prune(now);
    }

    fn prune_rows(&mut self, now: u64) {
        let expired: Vec<u64> = self
            .by_seq
            .values()
            .filter(|r| !r.live(now))
            .map(|r| r.seq)
            .collect();
        for seq in expired {
            if let Some(row) = self.by_seq.remove(&seq) {
                self.seq_of.remove(&(row.entry.kind, row.entry.value));
            }
        }
    }

    fn live_row(&self, kind: Kind, value: &str, now: u64) -> Option<&Row> {
        self.seq_of
            .get(&(kind, value.to_owned()))
            .and_then(|seq| self.by_seq.get(seq))
            .filter(|r| r.live(now))
    }
}

/// A serialized feed answer, shared by every subscriber that asks the same question.
#[derive(Debug, Clone)]
pub struct FeedBody {
    pub json: axum::body::Bytes,
    pub snapshot: bool,
    pub entries: usize,
}

/// The last answer built: (since, latest, compaction point, now) → body. When a revocation
/// wakes 1,000 subscribers at the same `since`, one serializes and the rest share it.
type Memo = Option<((Option<u64>, u64, u64, u64), FeedBody)>;

/// The revocation service shared by every handler.
#[derive(Debug)]
pub struct Revocations {
    store: Mutex<Box<dyn Backend>>,
    /// The store is shared by replicas: freshness is watched.
    pub(crate) shared: bool,
    /// When the store was last read successfully.
    pub(crate) synced: Mutex<Option<Instant>>,
    mirror: RwLock<Mirror>,
    latest: watch::Sender<u64>,
    memo: Mutex<Memo>,
}

impl Revocations {
    /// Opens `<state_dir>/revocations.db` and loads it.
    pub fn open(state_dir: &Path, now: u64) -> Result<Self, StoreError> {
        Self::with_backend(Box::new(Store::open(state_dir)?), now)
    }

    /// Loads a store of any kind.
    pub fn with_backend(store: Box<dyn Backend>, now: u64) -> Result<Self, StoreError> {
        let (latest, _) = watch::channel(0);
        let this = Self {
            shared: store.shared(),
            synced: Mutex::new(None),
            store: Mutex::new(store),
            mirror: RwLock::new(Mirror::default()),
            latest,
            memo: Mutex::new(None),
        };
        this.refresh(now)?;
        Ok(this)
    }

    pub(crate) fn store(&self) -> std::sync::MutexGuard<'_, Box<dyn Backend>> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions).
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn mirror(&self) -> std::sync::RwLockReadGuard<'_, Mirror> {
        self.mirror.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Loads what other writers added; wakes subscribers if the latest `seq` moved.
    /// Blocking (SQLite): call from `spawn_blocking` in async code.
    pub fn refresh(&self, now: u64) -> Result<u64, StoreError> {
        let mut store = self.store();
        let since = self.mirror().latest;
        let changes = store.changes_since(since)?;
        *self.synced.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        let latest = {
            let mut m = self.mirror.write().unwrap_or_else(PoisonError::into_inner);
            m.apply(changes, now);
            m.latest
        };
        drop(store);
        self.latest.send_if_modified(|seen| {
            let moved = *seen != latest;
            *seen = latest;
            moved
        });
        Ok(latest)
    }

    /// Records a row durably (fsynced) and publishes it before returning. Blocking.
    pub fn record(&self, new: &NewRevocation, now: u64) -> Result<Row, StoreError> {
        let row = self.store().record(new)?;
        self.refresh(now)?;
        Ok(row)
    }

    /// Plans and records an operator request. Blocking.
    pub fn apply_request(
        &self,
        req: &Request,
        now: u64,
    ) -> Result<Result<Row, Invalid>, StoreError> {
        let value = match canonical_value(req.kind, &req.value) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let existing = self.store().get(req.kind, &value)?;
        let replaces = existing.as_ref().is_some_and(|r| r.live(now));
        let len = self.mirror().by_seq.len();
        if let Err(e) = crate::quota::operator_may_add(req.kind, replaces || req.lift, len) {
            return Ok(Err(Invalid(e)));
        }
        match plan(req, now, existing.as_ref()) {
            Ok(new) => self.record(&new, now).map(Ok),
            Err(e) => Ok(Err(e)),
        }
    }

    /// A client revokes its own verified token (`/revoke`): a `jti` row within its quota,
    /// else its coalesced subject row, nothing when already covered (see [`crate::quota`]).
    /// The store lock is held from the counts to the write, so concurrent requests of one
    /// client cannot overshoot the quota. Blocking.
    pub fn client_revoke(
        &self,
        t: &crate::quota::Revoked<'_>,
        now: u64,
    ) -> Result<(crate::quota::Outcome, Option<Row>), StoreError> {
        let mut store = self.store();
        let live = |r: Option<Row>| r.filter(|r| r.live(now));
        let jti_row = live(store.get(Kind::Jti, t.jti)?);
        let subject_row = live(store.get(Kind::Subject, t.subject.as_str())?);
        let client_live = store.live_client_jtis(t.client_id, now)?;
        // Rows expired but not yet compacted still count: the bound errs on the safe side.
        let len = self.mirror().by_seq.len();
        let outcome = crate::quota::plan_client_revocation(
            t,
            jti_row.as_ref(),
            subject_row.as_ref(),
            client_live,
            len,
            now,
        );
        let Some(new) = outcome.row() else {
            return Ok((outcome, None));
        };
        let row = store.record(new)?;
        drop(store);
        self.refresh(now)?;
        Ok((outcome, Some(row)))
    }

    /// The live row of `(kind, value)` in the store. Blocking.
    pub fn get(&self, kind: Kind, value: &str, now: u64) -> Result<Option<Row>, StoreError> {
        let row = self.store().get(kind, value)?;
        Ok(row.filter(|r| r.live(now)))
    }

    /// Applies a posture verdict for `subject`: violations ban it (unless already banned).
    /// A clean report changes nothing: the report comes from the host itself, and a host an
    /// attacker owns reports whatever lifts its ban. Only an operator lifts a ban (admin API
    /// or `certbind-authz revoke --lift`). Returns whether the subject is banned. Blocking.
    pub fn posture_verdict(
        &self,
        subject: &SpiffeId,
        violations: &[&str],
        now: u64,
    ) -> Result<bool, StoreError> {
        let existing = self.get(Kind::Subject, subject.as_str(), now)?;
        let banned = existing.as_ref().is_some_and(|r| r.entry.banned);
        if violations.is_empty() || banned {
            return Ok(banned);
        }
        let req = Request {
            kind: Kind::Subject,
            value: subject.as_str().to_owned(),
            reason: Some(crate::posture::ban_reason(violations)),
            expires_at: None,
            lift: false,
        };
        if let Err(e) = self.apply_request(&req, now)? {
            tracing::error!(error = %e, "posture ban refused");
        }
        Ok(true)
    }

    /// Deletes expired rows from the store and the mirror. Blocking.
    pub fn compact(&self, now: u64) -> Result<usize, StoreError> {
        let deleted = self.store().compact(now)?;
        self.refresh(now)?;
        self.mirror
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .prune(now);
        Ok(deleted)
    }

    /// Follows the store: every [`WATCH_INTERVAL`] reads rows written by other processes,
    /// every minute compacts. Runs until the returned task is aborted.
    pub fn spawn_watcher(
        self: Arc<Self>,
        clock: crate::clock::Clock,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_compaction = tokio::time::Instant::now();
            let mut failing = false;
            loop {
                tick.tick().await;
                let compact = last_compaction.elapsed() >= COMPACT_EVERY;
                if compact {
                    last_compaction = tokio::time::Instant::now();
                }
                let this = Arc::clone(&self);
                let now = clock();
                let done = tokio::task::spawn_blocking(move || {
                    if compact {
                        this.compact(now).map(|_| ())
                    } else {
                        this.refresh(now).map(|_| ())
                    }
                })
                .await;
                // One line when the store is lost and one when it is back, not one per poll.
                match done {
                    Ok(Ok(())) if failing => {
                        failing = false;
                        tracing::info!("revocation store reachable again");
                    }
                    Ok(Ok(())) => {}
                    Ok(Err(e)) if !failing => {
                        failing = true;
                        tracing::error!(error = %e, "revocation store poll failed");
                    }
                    Ok(Err(_)) => {}
                    Err(e) => tracing::error!(error = %e, "revocation store poll panicked"),
                }
            }
        })
    }

    /// A receiver of the latest `seq`, for long-polls.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// The latest `seq` known.
    pub fn latest(&self) -> u64 {
        self.mirror().latest
    }

    /// The feed answer for a subscriber at `since`, or `None` when there is nothing new yet.
    /// A snapshot when there is no `since` (a sidecar's first poll), when `since` is 0 and
    /// there are entries, behind the compaction point, or ahead of us (our store was
    /// replaced); a delta of the live rows above `since` when there is news.
    pub fn answer(&self, since: Option<u64>, now: u64) -> Option<FeedAnswer> {
        Self::answer_from(&self.mirror(), since, now)
    }

    /// [`Self::answer`] serialized, shared with every subscriber asking the same at the same
    /// second.
    pub fn answer_body(&self, since: Option<u64>, now: u64) -> Option<FeedBody> {
        let m = self.mirror();
        let key = (since, m.latest, m.compacted_through, now);
        let mut memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, body)) = memo.as_ref().filter(|(k, _)| *k == key) {
            return Some(body.clone());
        }
        let answer = Self::answer_from(&m, since, now)?;
        let body = FeedBody {
            json: serde_json::to_vec(&answer).ok()?.into(),
            snapshot: answer.snapshot,
            entries: answer.revocations.len(),
        };
        *memo = Some((key, body.clone()));
        Some(body)
    }

    fn answer_from(m: &Mirror, since: Option<u64>, now: u64) -> Option<FeedAnswer> {
        let snapshot = match since {
            None => true,
            Some(s) => (s == 0 && m.latest > 0) || s < m.compacted_through || s > m.latest,
        };
        let from = match since {
            _ if snapshot => 0,
            Some(s) if s < m.latest => s,
            _ => return None,
        };
        let revocations = m
            .by_seq
            .range(from.saturating_add(1)..)
            .map(|(_, row)| row)
            .filter(|row| row.live(now))
            .map(Row::to_feed)
            .collect();
        Some(FeedAnswer {
            seq: m.latest,
            snapshot,
            revocations,
        })
    }

    /// An empty delta at the latest `seq` (the long-poll timed out with no news).
    pub fn nothing_new(&self) -> FeedAnswer {
        FeedAnswer {
            seq: self.latest(),
            snapshot: false,
            revocations: Vec::new(),
        }
    }

    /// Whether a token with these facts is revoked (the filter's check).
    pub fn is_revoked(&self, p: &Presented<'_>, now: u64) -> Option<Kind> {
        self.mirror().set.is_revoked(p, now)
    }

    /// Whether `/token` must refuse this client: its subject is banned or the certificate it
    /// presents is revoked.
    pub fn refuses_issuance(
        &self,
        subject: &SpiffeId,
        cert: &CertThumbprint,
        now: u64,
    ) -> Option<Kind> {
        let m = self.mirror();
        if m.live_row(Kind::Cert, &cert.to_cnf(), now).is_some() {
            return Some(Kind::Cert);
        }
        if m.live_row(Kind::Subject, subject.as_str(), now)
            .is_some_and(|r| r.entry.banned)
        {
            return Some(Kind::Subject);
        }
        None
    }
}

#[cfg(test)]
mod tests;
