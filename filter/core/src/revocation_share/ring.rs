//! The published set (a base) and the ring of deltas after it (see the parent module): what
//! the leader writes after a change, and how a VM's copy of the set catches up with what it
//! published. Pure apart from the [`SharedStore`] it is handed.

use super::{Follow, Keys, Published, Version, number};
use crate::revocation::FeedError;
use crate::revocation_guard::RevocationGuard;
use crate::shared::SharedStore;
use std::cell::RefCell;
use std::fmt;
use std::ops::RangeInclusive;
use std::rc::Rc;

/// How many of a leader's newest deltas stay published, and how many changes the base may lag
/// behind: a follower further behind reads the base and the deltas after it. The leader
/// writes the whole set out once per this many changes (~200 million Wasm instructions for
/// 50,000 entries), so under churn a larger ring costs it less.
pub const DELTA_SLOTS: u64 = 64;

/// Largest delta published (~700 entries); a larger change goes out as a new base, so the
/// ring holds at most 4 MiB of the host's memory.
pub const MAX_DELTA_BYTES: usize = 64 * 1024;

/// The feed answer the leader just installed, as it can go out to the other VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed<'a> {
    /// A snapshot: its own JSON is the new base (no need to write the set out again).
    Snapshot(&'a [u8]),
    Delta(Delta<'a>),
}

/// A published delta: the `seq` it applies to and the feed answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delta<'a> {
    pub since: u64,
    pub answer: &'a [u8],
}

/// `<holder>.<generation>[ <since>]`, a newline, then the JSON.
fn encode(to: Version, since: Option<u64>, json: &[u8]) -> Vec<u8> {
    let head = match since {
        Some(since) => format!("{}.{} {since}\n", to.holder, to.generation),
        None => format!("{}.{}\n", to.holder, to.generation),
    };
    let mut out = Vec::with_capacity(head.len() + json.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(json);
    out
}

/// The version, the `since` (deltas) and the JSON of a published value.
fn decode(value: &[u8]) -> Option<(Version, Option<u64>, &[u8])> {
    let newline = value.iter().position(|b| *b == b'\n')?;
    let (head, rest) = value.split_at_checked(newline)?;
    let head = std::str::from_utf8(head).ok()?;
    let (version, since) = match head.split_once(' ') {
        Some((version, since)) => (version, Some(number(since)?)),
        None => (head, None),
    };
    let (holder, generation) = version.split_once('.')?;
    let version = Version {
        holder: number(holder)?,
        generation: number(generation)?,
    };
    Some((version, since, rest.get(1..)?))
}

/// A `delta.<n>` value; `None` when the answer is too large to publish as one.
pub fn encode_delta(to: Version, delta: Delta<'_>) -> Option<Vec<u8>> {
    (delta.answer.len() <= MAX_DELTA_BYTES).then(|| encode(to, Some(delta.since), delta.answer))
}

/// The delta in a `delta.<n>` value, if it is the one that leads to `to` (a slot may still
/// hold an older delta of the ring, or another leader's).
fn delta_to(value: &[u8], to: Version) -> Option<Delta<'_>> {
    match decode(value)? {
        (found, Some(since), answer) if found == to => Some(Delta { since, answer }),
        _ => None,
    }
}

/// The generations whose deltas take a follower from `adopted` to `target`, when the ring
/// can: the same leader, ahead by at most [`DELTA_SLOTS`]. `None`: read the base.
fn delta_chain(adopted: Option<Version>, target: Version) -> Option<RangeInclusive<u64>> {
    let from = adopted.filter(|a| a.holder == target.holder)?.generation;
    let behind = target.generation.checked_sub(from)?;
    (1..=DELTA_SLOTS)
        .contains(&behind)
        .then(|| from + 1..=target.generation)
}

/// What the leader has published while it holds the lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publisher {
    /// Versions published (this leader's generation counter; never reset, so a leader that
    /// takes the lease back does not repeat a version).
    generation: u64,
    /// The `seq` of the newest version published since this VM took the lease.
    published_seq: Option<u64>,
    /// The generation of the base in `set`.
    base: Option<u64>,
}

impl Publisher {
    /// The lease changed hands: the next publication is a new base.
    pub fn reset(&mut self) {
        self.published_seq = None;
        self.base = None;
    }

    /// Publishes what the leader `holder` knows after a good feed answer at `now_ms` (the
    /// answer, if it just installed one): a new version when the set's `seq` moved, then the
    /// heartbeat. A change goes out as a delta when it applies onto the version published
    /// last, and also as a new base unless a follower reading the old base still finds every
    /// delta after it; a snapshot answer is its own new base, any other base is the set
    /// written out (~200 million Wasm instructions for 50,000 entries). False when the host
    /// refused a write: no new version is announced then, and the next answer tries again
    /// (meanwhile every follower goes stale together).
    pub fn publish(
        &mut self,
        store: &mut dyn SharedStore,
        keys: &Keys,
        holder: u64,
        copy: &mut FeedCopy,
        installed: Option<Installed<'_>>,
        now_ms: u64,
    ) -> bool {
        let seq = copy.guard.set().since();
        if seq.is_none() {
            return false;
        }
        if self.published_seq != seq {
            let to = Version {
                holder,
                generation: self.generation.saturating_add(1),
            };
            let onto_last = match installed {
                Some(Installed::Delta(d)) if Some(d.since) == self.published_seq => Some(d),
                _ => None,
            };
            let base_in_reach = self.base.is_some_and(|b| to.generation - b <= DELTA_SLOTS);
            // A delta even when the base is rewritten too: followers near the top skip the base.
            let delta_written = onto_last
                .and_then(|d| encode_delta(to, d))
                .is_some_and(|value| store.set(&keys.delta(to.generation), &value, None).is_ok());
            if !(delta_written && base_in_reach) {
                let written = match installed {
                    Some(Installed::Snapshot(answer)) => encode(to, None, answer),
                    _ => match copy.guard.snapshot_json() {
                        Some(json) => encode(to, None, &json),
                        None => return false,
                    },
                };
                if store.set(&keys.set, &written, None).is_err() {
                    return false;
                }
                self.base = Some(to.generation);
            }
            self.generation = to.generation;
            self.published_seq = seq;
            // The leader's copy is the version it published (its VM's other root contexts
            // share it and must not catch up with it again).
            copy.adopted = Some(to);
            copy.failed = None;
        }
        let state = Published {
            version: Version {
                holder,
                generation: self.generation,
            },
            last_ok_ms: now_ms,
        };
        store
            .set(&keys.state, state.encode().as_bytes(), None)
            .is_ok()
    }
}

/// How a follower caught up with a published version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaughtUp {
    /// By the deltas after the version it held.
    Deltas,
    /// By reading the base (and the deltas after it).
    Base,
}

/// Why a follower could not catch up; its set stays where it got to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatchUpError {
    /// What the state announced is not (or no longer) there: the leader moved on while this
    /// VM read, or could not write it.
    Missing,
    /// The base or a delta was refused.
    Refused(FeedError),
}

impl fmt::Display for CatchUpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("the published set or a delta after it is missing"),
            Self::Refused(e) => write!(f, "refused: {e}"),
        }
    }
}

/// A VM's copy of one feed's set and the published version it holds. The root contexts of a
/// VM that follow the same feed with the same settings share one (`Rc`): one set per VM,
/// however many plugin configurations the sidecar has.
#[derive(Debug)]
pub struct FeedCopy {
    guard: RevocationGuard,
    /// The version of the published set this copy holds.
    adopted: Option<Version>,
    /// The version this copy last failed to catch up with (see [`Follow::decide`]).
    failed: Option<Version>,
}

/// A [`FeedCopy`] as the root contexts of a VM share it.
pub type SharedCopy = Rc<RefCell<FeedCopy>>;

impl FeedCopy {
    pub fn new(guard: RevocationGuard) -> Self {
        Self {
            guard,
            adopted: None,
            failed: None,
        }
    }

    pub fn shared(guard: RevocationGuard) -> SharedCopy {
        Rc::new(RefCell::new(Self::new(guard)))
    }

    pub fn guard(&self) -> &RevocationGuard {
        &self.guard
    }

    pub fn guard_mut(&mut self) -> &mut RevocationGuard {
        &mut self.guard
    }

    /// What to do about the state the leader published (`None`: nothing published yet).
    pub fn follow(&self, published: Option<Published>) -> Follow {
        Follow::decide(
            self.adopted,
            self.failed,
            self.guard.last_ok_ms(),
            published,
        )
    }

    /// Brings the copy to `target`: by the deltas after the version it holds when the ring
    /// has them all, else by the base and the deltas after it. Every version reached is
    /// noted; only a complete catch-up counts as hearing the feed at the target's
    /// `last_ok_ms`, and a failed one is not retried (see [`Follow::decide`]).
    pub fn catch_up(
        &mut self,
        store: &mut dyn SharedStore,
        keys: &Keys,
        target: Published,
        now_ms: u64,
    ) -> Result<CaughtUp, CatchUpError> {
        let caught = self.try_catch_up(store, keys, target, now_ms);
        match caught {
            Ok(_) => self.guard.caught_up(target.last_ok_ms),
            Err(_) => self.failed = Some(target.version),
        }
        caught
    }

    fn try_catch_up(
        &mut self,
        store: &mut dyn SharedStore,
        keys: &Keys,
        target: Published,
        now_ms: u64,
    ) -> Result<CaughtUp, CatchUpError> {
        let holder = target.version.holder;
        if let Some(chain) = delta_chain(self.adopted, target.version)
            && self
                .apply_deltas(store, keys, holder, chain, now_ms)
                .is_ok()
        {
            return Ok(CaughtUp::Deltas);
        }
        let value = store.get(&keys.set).map(|(value, _)| value);
        let (base, _, json) = value
            .as_deref()
            .and_then(decode)
            .filter(|(base, since, _)| {
                since.is_none()
                    && base.holder == holder
                    && base.generation <= target.version.generation
            })
            .ok_or(CatchUpError::Missing)?;
        self.guard
            .adopt(json, now_ms)
            .map_err(CatchUpError::Refused)?;
        self.adopted = Some(base);
        let chain = base.generation + 1..=target.version.generation;
        self.apply_deltas(store, keys, holder, chain, now_ms)?;
        Ok(CaughtUp::Base)
    }

    /// Applies the published deltas of `chain` in order, noting each version reached.
    fn apply_deltas(
        &mut self,
        store: &mut dyn SharedStore,
        keys: &Keys,
        holder: u64,
        chain: RangeInclusive<u64>,
        now_ms: u64,
    ) -> Result<(), CatchUpError> {
        for generation in chain {
            let to = Version { holder, generation };
            let value = store
                .get(&keys.delta(generation))
                .map(|(value, _)| value)
                .ok_or(CatchUpError::Missing)?;
            let delta = delta_to(&value, to).ok_or(CatchUpError::Missing)?;
            self.guard
                .adopt_delta(delta.since, delta.answer, now_ms)
                .map_err(CatchUpError::Refused)?;
            self.adopted = Some(to);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
