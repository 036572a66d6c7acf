//! One revocation feed follower per Envoy. Every worker VM keeps its own revocation set, so a
//! request is checked without a host call, but only one VM at a time — the leader — long-polls
//! the authz-server's feed. It publishes the set in Envoy's shared data and the other VMs adopt
//! it on their root tick. Pure: the lease rule, the shared values and their encodings; the
//! plugin does the shared-data I/O.
//!
//! Shared data (one store per Envoy `vm_id`; keys scoped by the feed's cluster and path):
//! - `lease` = `<holder>:<until_ms>`: the VM that follows the feed, renewed by its root tick.
//!   When it lapses (the VM was torn down or is stuck) the next VM to tick takes over, so the
//!   feed is followed again within [`LEASE_MS`] plus one tick.
//! - `state` = `<holder>.<generation>:<last_ok_ms>`: which published set is current and when
//!   the feed last answered well. Rewritten on every good answer: it is the heartbeat the
//!   other VMs judge staleness by, so a dead leader makes every VM stale together (and fail
//!   closed) rather than some of them silently trusting an old set.
//! - `set`: the whole set at one generation of the leader's (the base), as `<holder>.<n>`, a
//!   newline and a feed snapshot's JSON. Rewritten once [`DELTA_SLOTS`] deltas went out, when
//!   the leader takes over, or when a change cannot go out as a delta: writing 50,000
//!   entries out costs the leader ~200 million Wasm instructions (a snapshot answer goes out
//!   as it came).
//! - `delta.<n>` (a ring of [`DELTA_SLOTS`] slots): the feed's delta that made generation `n`
//!   out of `n - 1`, as `<holder>.<n> <since>`, a newline and the answer's JSON, `since` being
//!   the `seq` it was asked from. A follower a few generations behind applies these, at the
//!   cost of what changed, instead of re-reading the whole set (~350 million instructions for
//!   50,000 entries); one further behind reads the base and the deltas after it. A delta goes
//!   only onto a set at its very `seq`, so it never skips news the follower lacks.

mod ring;

pub use ring::{
    CatchUpError, CaughtUp, DELTA_SLOTS, Delta, FeedCopy, Installed, MAX_DELTA_BYTES, Publisher,
    SharedCopy,
};

use crate::shared::{Change, SharedStore, compare_and_swap};

/// How long a lease holds without renewal. The leader renews on every root tick (at most a
/// second apart), so only a VM that is gone or stuck for seconds loses it.
pub const LEASE_MS: u64 = 3_000;

/// The shared-data keys of one feed (cluster + path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub lease: String,
    pub state: String,
    pub set: String,
    delta: String,
}

impl Keys {
    /// `v2`: the base and the deltas carry their version. A module of another format (while
    /// a listener's module is replaced, both run) follows the feed on its own keys.
    pub fn new(cluster: &str, path: &str) -> Self {
        let scope = format!("{cluster}{path}");
        Self {
            lease: format!("certbind.revocation.lease.v2:{scope}"),
            state: format!("certbind.revocation.state.v2:{scope}"),
            set: format!("certbind.revocation.set.v2:{scope}"),
            delta: format!("certbind.revocation.delta.v2:{scope}:"),
        }
    }

    /// The ring slot that holds the delta to `generation`.
    pub fn delta(&self, generation: u64) -> String {
        format!("{}{}", self.delta, generation % DELTA_SLOTS)
    }
}

/// Who follows the feed, until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub holder: u64,
    pub until_ms: u64,
}

impl Lease {
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let (holder, until) = std::str::from_utf8(bytes).ok()?.split_once(':')?;
        Some(Self {
            holder: number(holder)?,
            until_ms: number(until)?,
        })
    }

    pub fn encode(&self) -> String {
        format!("{}:{}", self.holder, self.until_ms)
    }

    /// The lease VM `me` writes at `now_ms` to hold or take the feed, if it may: an absent,
    /// unreadable, lapsed or own lease is (re)taken; a live lease of another VM is not.
    pub fn claim(current: Option<Self>, me: u64, now_ms: u64) -> Option<Self> {
        match current {
            Some(l) if l.holder != me && now_ms < l.until_ms => None,
            _ => Some(Self {
                holder: me,
                until_ms: now_ms.saturating_add(LEASE_MS),
            }),
        }
    }

    /// Whether `me` holds this lease at `now_ms`.
    pub fn held_by(&self, me: u64, now_ms: u64) -> bool {
        self.holder == me && now_ms < self.until_ms
    }
}

/// Renews or takes the lease in `store` for VM `me`; true when `me` holds it now. One CAS
/// attempt: a VM that loses the race simply does not lead this tick.
pub fn hold_lease(store: &mut dyn SharedStore, keys: &Keys, me: u64, now_ms: u64) -> bool {
    if store.get(&keys.lease).is_none() {
        // Envoy compares no CAS on a key it does not hold, so two VMs starting together
        // would both win; create a lapsed lease first and claim that.
        let _ = store.set(&keys.lease, b"0:0", None);
    }
    compare_and_swap(store, &keys.lease, 1, |value| {
        match Lease::claim(value.and_then(Lease::parse), me, now_ms) {
            Some(lease) => Change::Write(lease.encode().into_bytes(), true),
            None => Change::Keep(false),
        }
    })
    .unwrap_or(false)
}

/// Whether `me` holds the lease in `store` at `now_ms` (read only).
pub fn lease_held(store: &mut dyn SharedStore, keys: &Keys, me: u64, now_ms: u64) -> bool {
    store
        .get(&keys.lease)
        .and_then(|(value, _)| Lease::parse(&value))
        .is_some_and(|l| l.held_by(me, now_ms))
}

/// Which published set: the leader that wrote it and its count of writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    pub holder: u64,
    pub generation: u64,
}

/// The `state` value: the current set's version and when the feed last answered well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub version: Version,
    pub last_ok_ms: u64,
}

impl Published {
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let (version, last_ok) = std::str::from_utf8(bytes).ok()?.split_once(':')?;
        let (holder, generation) = version.split_once('.')?;
        Some(Self {
            version: Version {
                holder: number(holder)?,
                generation: number(generation)?,
            },
            last_ok_ms: number(last_ok)?,
        })
    }

    pub fn encode(&self) -> String {
        format!(
            "{}.{}:{}",
            self.version.holder, self.version.generation, self.last_ok_ms
        )
    }
}

/// What a follower does on its tick, given the version it adopted last and what is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Nothing published yet, or nothing new.
    Nothing,
    /// Same set, newer sign of life: only the staleness clock moves.
    Heard { last_ok_ms: u64 },
    /// Another set: read `set` and adopt it.
    Adopt(Published),
}

impl Follow {
    /// `failed` is the version this VM last failed to catch up with: it is not retried (the
    /// next one will be), and its heartbeats do not count, so a VM whose set stays behind
    /// what the leader says goes stale and fails closed.
    pub fn decide(
        adopted: Option<Version>,
        failed: Option<Version>,
        heard_ms: Option<u64>,
        now: Option<Published>,
    ) -> Self {
        match now {
            None => Self::Nothing,
            Some(p) if failed == Some(p.version) => Self::Nothing,
            Some(p) if adopted != Some(p.version) => Self::Adopt(p),
            Some(p) if heard_ms.is_none_or(|h| h < p.last_ok_ms) => Self::Heard {
                last_ok_ms: p.last_ok_ms,
            },
            Some(_) => Self::Nothing,
        }
    }
}

/// A decimal `u64` with no sign, space or leading `+`.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::MemoryStore;
    use crate::shared::tests::{Racing, Refusing};

    fn keys() -> Keys {
        Keys::new("authz", "/v1/revocations")
    }

    #[test]
    fn of_two_vms_contending_for_a_new_lease_only_one_holds_it() {
        let mut store = MemoryStore::default();
        assert!(hold_lease(&mut store, &keys(), 1, 1_000));
        assert!(!hold_lease(&mut store, &keys(), 2, 1_000));
        assert!(lease_held(&mut store, &keys(), 1, 1_000));
        assert!(!lease_held(&mut store, &keys(), 2, 1_000));
        // The holder renews; the other still may not take it.
        assert!(hold_lease(&mut store, &keys(), 1, 3_000));
        assert!(!hold_lease(&mut store, &keys(), 2, 3_000 + LEASE_MS - 1));
    }

    #[test]
    fn a_lapsed_lease_is_taken_over_and_its_old_holder_knows() {
        let mut store = MemoryStore::default();
        assert!(hold_lease(&mut store, &keys(), 1, 1_000));
        let lapsed = 1_000 + LEASE_MS;
        assert!(!lease_held(&mut store, &keys(), 1, lapsed));
        assert!(hold_lease(&mut store, &keys(), 2, lapsed));
        assert!(!hold_lease(&mut store, &keys(), 1, lapsed));
        assert!(lease_held(&mut store, &keys(), 2, lapsed));
    }

    #[test]
    fn a_vm_that_loses_the_cas_race_does_not_lead() {
        let rival = Lease {
            holder: 9,
            until_ms: 10_000,
        };
        let mut store = Racing {
            races: 1,
            rival: rival.encode().into_bytes(),
            ..Racing::default()
        };
        store.inner.set(&keys().lease, b"0:0", None).unwrap();
        assert!(!hold_lease(&mut store, &keys(), 1, 1_000));
        assert!(lease_held(&mut store, &keys(), 9, 1_000));
        assert!(!hold_lease(&mut Refusing, &keys(), 1, 1_000));
    }

    #[test]
    fn garbage_in_the_lease_is_a_lapsed_lease() {
        let mut store = MemoryStore::default();
        store.set(&keys().lease, b"garbage", None).unwrap();
        assert!(!lease_held(&mut store, &keys(), 1, 0));
        assert!(hold_lease(&mut store, &keys(), 1, 0));
    }

    #[test]
    fn a_lease_round_trips_and_refuses_garbage() {
        let l = Lease {
            holder: 17,
            until_ms: 1_700_000_000_123,
        };
        assert_eq!(Lease::parse(l.encode().as_bytes()), Some(l));
        for bad in [
            &b""[..],
            b"17",
            b"17:",
            b":5",
            b"-1:5",
            b"+1:5",
            b"1 :5",
            b"1:5:6",
            b"\xff:1",
            b"99999999999999999999:1",
        ] {
            assert_eq!(Lease::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_one_vm_holds_a_live_lease_and_a_lapsed_one_is_taken_over() {
        assert_eq!(
            Lease::claim(None, 1, 1_000),
            Some(Lease {
                holder: 1,
                until_ms: 1_000 + LEASE_MS
            })
        );
        let held = Lease {
            holder: 1,
            until_ms: 4_000,
        };
        // Another VM may not take a live lease; the holder renews it.
        assert_eq!(Lease::claim(Some(held), 2, 3_999), None);
        assert_eq!(
            Lease::claim(Some(held), 1, 3_999).map(|l| l.until_ms),
            Some(3_999 + LEASE_MS)
        );
        // Lapsed: the first VM to tick takes it.
        assert_eq!(
            Lease::claim(Some(held), 2, 4_000).map(|l| l.holder),
            Some(2)
        );
        assert!(held.held_by(1, 3_999));
        assert!(!held.held_by(1, 4_000));
        assert!(!held.held_by(2, 3_999));
    }

    #[test]
    fn published_state_round_trips_and_refuses_garbage() {
        let p = Published {
            version: Version {
                holder: 9,
                generation: 3,
            },
            last_ok_ms: 55,
        };
        assert_eq!(p.encode(), "9.3:55");
        assert_eq!(Published::parse(b"9.3:55"), Some(p));
        for bad in [
            &b"9:55"[..],
            b"9.3",
            b"9.:55",
            b".3:55",
            b"9.3:x",
            b"9.3.1:5",
        ] {
            assert_eq!(Published::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_follower_adopts_a_new_version_and_otherwise_only_hears_a_newer_heartbeat() {
        let v1 = Version {
            holder: 1,
            generation: 1,
        };
        let at = |version, last_ok_ms| Published {
            version,
            last_ok_ms,
        };
        assert_eq!(Follow::decide(None, None, None, None), Follow::Nothing);
        assert_eq!(
            Follow::decide(None, None, None, Some(at(v1, 10))),
            Follow::Adopt(at(v1, 10))
        );
        assert_eq!(
            Follow::decide(Some(v1), None, Some(10), Some(at(v1, 10))),
            Follow::Nothing
        );
        assert_eq!(
            Follow::decide(Some(v1), None, Some(10), Some(at(v1, 25))),
            Follow::Heard { last_ok_ms: 25 }
        );
        // A new leader's first set is adopted even though its generation starts low again.
        let v2 = Version {
            holder: 2,
            generation: 1,
        };
        assert_eq!(
            Follow::decide(Some(v1), None, Some(25), Some(at(v2, 26))),
            Follow::Adopt(at(v2, 26))
        );
        // A version this VM failed to catch up with: neither retried nor heard.
        for heard in [None, Some(10)] {
            assert_eq!(
                Follow::decide(Some(v1), Some(v2), heard, Some(at(v2, 30))),
                Follow::Nothing
            );
        }
        assert_eq!(
            Follow::decide(Some(v1), Some(v1), Some(10), Some(at(v2, 30))),
            Follow::Adopt(at(v2, 30))
        );
    }

    #[test]
    fn keys_are_scoped_by_feed() {
        let k = Keys::new("certbind_authz", "/v1/revocations");
        assert_eq!(
            k.lease,
            "certbind.revocation.lease.v2:certbind_authz/v1/revocations"
        );
        assert_ne!(k.lease, Keys::new("other", "/v1/revocations").lease);
        assert_ne!(k.state, k.set);
    }
}
