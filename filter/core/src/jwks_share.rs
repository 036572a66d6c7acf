//! The JWKS as every worker VM of an Envoy shares it, over the shared-data seam: the last
//! good set (so one fetch serves every VM) and the fetch record (single flight across VMs,
//! the unknown-`kid` rate limit, the failure backoff), changed only by compare-and-swap.
//! Also the one rule of what a request does when it asked for a fetch.

use crate::jwks::{
    FetchKind, FetchRecord, FetchStart, JwksPolicy, decode_shared_set, encode_shared_set,
};
use crate::shared::{Change, SharedStore, compare_and_swap};

/// Lost races tolerated when ending a fetch (the record must not keep a dead lease).
const END_ATTEMPTS: usize = 4;

/// One VM's view of the shared JWKS of one endpoint (cluster + path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksShare {
    set_key: String,
    fetch_key: String,
    /// CAS of the shared set this VM installed last.
    installed: Option<u32>,
}

impl JwksShare {
    pub fn new(cluster: &str, path: &str) -> Self {
        let scope = format!("{cluster}{path}");
        Self {
            set_key: format!("certbind.jwks.v1:{scope}"),
            fetch_key: format!("certbind.jwks.fetch.v1:{scope}"),
            installed: None,
        }
    }

    /// The shared set, `(fetched_at_ms, body)`, when another VM (or this one) stored one this
    /// VM has not looked at yet; the caller installs it. A copy that does not decode is looked
    /// at only once.
    pub fn newer_set(&mut self, store: &mut dyn SharedStore) -> Option<(u64, Vec<u8>)> {
        let (value, cas) = store.get(&self.set_key)?;
        if self.installed == Some(cas) {
            return None;
        }
        self.installed = Some(cas);
        decode_shared_set(&value).map(|(at, body)| (at, body.to_vec()))
    }

    /// Stores a good set this VM fetched at `fetched_at_ms`, for the other VMs.
    pub fn publish_set(&mut self, store: &mut dyn SharedStore, fetched_at_ms: u64, body: &[u8]) {
        let _ = store.set(&self.set_key, &encode_shared_set(fetched_at_ms, body), None);
        self.installed = store.get(&self.set_key).map(|(_, cas)| cas);
    }

    /// Whether this VM may fetch now, taking the shared lease if so (`due`: the cache's
    /// `needs_refresh(now)`, for a scheduled fetch). One CAS attempt: a VM that loses the race
    /// finds another's fetch in flight.
    pub fn begin_fetch(
        &self,
        store: &mut dyn SharedStore,
        kind: FetchKind,
        due: bool,
        policy: &JwksPolicy,
        now_ms: u64,
    ) -> FetchStart {
        let started = compare_and_swap(store, &self.fetch_key, 1, |value| {
            let mut record = FetchRecord::decode(value.unwrap_or_default());
            match record.begin(kind, due, policy, now_ms) {
                FetchStart::Begun => Change::Write(record.encode().into_bytes(), FetchStart::Begun),
                other => Change::Keep(other),
            }
        });
        started.unwrap_or(FetchStart::InFlight)
    }

    /// This VM's fetch ended (`ok`: a good set was installed): frees the lease and counts
    /// the failure streak.
    pub fn end_fetch(&self, store: &mut dyn SharedStore, ok: bool, now_ms: u64) {
        self.change_record(store, |r| r.finish(ok, now_ms));
    }

    /// This VM's fetch lost its receiver before the answer: frees the lease, counts nothing.
    pub fn abandon_fetch(&self, store: &mut dyn SharedStore) {
        self.change_record(store, FetchRecord::abandon);
    }

    /// The shared fetch record as it stands (for tests and diagnostics).
    pub fn record(&self, store: &mut dyn SharedStore) -> FetchRecord {
        store
            .get(&self.fetch_key)
            .map(|(value, _)| FetchRecord::decode(&value))
            .unwrap_or_default()
    }

    fn change_record(&self, store: &mut dyn SharedStore, change: impl Fn(&mut FetchRecord)) {
        let _ = compare_and_swap(store, &self.fetch_key, END_ATTEMPTS, |value| {
            let mut record = FetchRecord::decode(value.unwrap_or_default());
            change(&mut record);
            Change::Write(record.encode().into_bytes(), ())
        });
    }
}

/// What a request that asked for a fetch does once the fetch was asked for: wait for keys,
/// or be decided now with the keys at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFetch {
    /// Pause until keys arrive (or the flow's deadline).
    Wait,
    /// Resume the flow now: a refetch for an unknown `kid` was refused (rate limit or
    /// backoff), so no new keys are coming and the token is refused as `unknown_kid` at once
    /// rather than after a wait for nothing.
    DecideNow,
}

impl AfterFetch {
    pub fn of(kind: FetchKind, start: FetchStart) -> Self {
        match (kind, start) {
            (FetchKind::UnknownKid, FetchStart::NotNow) => Self::DecideNow,
            _ => Self::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::MemoryStore;
    use crate::shared::tests::{Racing, Refusing};

    const POLICY: JwksPolicy = JwksPolicy {
        refresh_ms: 300_000,
        min_refetch_ms: 30_000,
        max_stale_ms: 3_600_000,
        fetch_timeout_ms: 2_000,
    };

    fn share() -> JwksShare {
        JwksShare::new("authz", "/jwks.json")
    }

    fn begin(s: &JwksShare, store: &mut dyn SharedStore, kind: FetchKind, now: u64) -> FetchStart {
        s.begin_fetch(store, kind, true, &POLICY, now)
    }

    #[test]
    fn of_two_vms_asking_together_only_one_fetches() {
        let mut store = MemoryStore::default();
        let (a, b) = (share(), share());
        assert_eq!(
            begin(&a, &mut store, FetchKind::Scheduled, 0),
            FetchStart::Begun
        );
        assert_eq!(
            begin(&b, &mut store, FetchKind::Scheduled, 10),
            FetchStart::InFlight
        );
        assert_eq!(
            begin(&b, &mut store, FetchKind::UnknownKid, 10),
            FetchStart::InFlight
        );
        a.end_fetch(&mut store, true, 100);
        assert_eq!(a.record(&mut store).failures(), 0);
        // Nothing due now: the cache says so.
        assert_eq!(
            b.begin_fetch(&mut store, FetchKind::Scheduled, false, &POLICY, 200),
            FetchStart::NotNow
        );
    }

    #[test]
    fn a_lease_whose_fetcher_vanished_expires_after_the_timeout() {
        let mut store = MemoryStore::default();
        let (a, b) = (share(), share());
        assert_eq!(
            begin(&a, &mut store, FetchKind::Scheduled, 0),
            FetchStart::Begun
        );
        let lease = POLICY.fetch_timeout_ms + 1_000;
        assert_eq!(
            begin(&b, &mut store, FetchKind::Scheduled, lease - 1),
            FetchStart::InFlight
        );
        assert_eq!(
            begin(&b, &mut store, FetchKind::Scheduled, lease),
            FetchStart::Begun
        );
    }

    #[test]
    fn an_abandoned_fetch_frees_the_lease_without_a_failure() {
        let mut store = MemoryStore::default();
        let (a, b) = (share(), share());
        assert_eq!(
            begin(&a, &mut store, FetchKind::Scheduled, 0),
            FetchStart::Begun
        );
        a.abandon_fetch(&mut store);
        assert_eq!(a.record(&mut store).failures(), 0);
        assert_eq!(
            begin(&b, &mut store, FetchKind::UnknownKid, 1),
            FetchStart::Begun
        );
    }

    #[test]
    fn failures_are_shared_and_back_off_every_vm() {
        let mut store = MemoryStore::default();
        let (a, b) = (share(), share());
        assert_eq!(
            begin(&a, &mut store, FetchKind::Scheduled, 0),
            FetchStart::Begun
        );
        a.end_fetch(&mut store, false, 10);
        assert_eq!(b.record(&mut store).failures(), 1);
        assert_eq!(
            begin(&b, &mut store, FetchKind::Scheduled, 500),
            FetchStart::NotNow
        );
        assert_eq!(
            begin(&b, &mut store, FetchKind::Scheduled, 1_010),
            FetchStart::Begun
        );
    }

    #[test]
    fn a_lost_cas_race_to_begin_is_another_fetch_in_flight() {
        let s = share();
        let mut store = Racing {
            races: 1,
            rival: b"garbage".to_vec(),
            ..Racing::default()
        };
        store.inner.set(&s.fetch_key, b"", None).unwrap();
        assert_eq!(
            begin(&s, &mut store, FetchKind::Scheduled, 0),
            FetchStart::InFlight
        );
        assert_eq!(
            begin(&share(), &mut Refusing, FetchKind::Scheduled, 0),
            FetchStart::InFlight
        );
    }

    #[test]
    fn ending_a_fetch_retries_lost_races_so_the_lease_is_freed() {
        let mut store = Racing::default();
        let s = share();
        assert_eq!(
            begin(&s, &mut store.inner, FetchKind::Scheduled, 0),
            FetchStart::Begun
        );
        let held = store.inner.get(&s.fetch_key).unwrap().0;
        store.races = 3;
        store.rival = held;
        s.end_fetch(&mut store, false, 10);
        assert_eq!(s.record(&mut store).failures(), 1);
        assert_eq!(
            begin(&s, &mut store, FetchKind::UnknownKid, 20),
            FetchStart::Begun
        );
    }

    #[test]
    fn a_published_set_reaches_the_other_vm_once() {
        let mut store = MemoryStore::default();
        let (mut a, mut b) = (share(), share());
        assert_eq!(b.newer_set(&mut store), None);
        a.publish_set(&mut store, 1_234, b"{\"keys\":[]}");
        assert_eq!(a.newer_set(&mut store), None, "its own copy is not news");
        assert_eq!(
            b.newer_set(&mut store),
            Some((1_234, b"{\"keys\":[]}".to_vec()))
        );
        assert_eq!(b.newer_set(&mut store), None);
        store.set(&a.set_key, b"no header", None).unwrap();
        assert_eq!(b.newer_set(&mut store), None);
        assert_eq!(b.installed, store.get(&a.set_key).map(|(_, cas)| cas));
    }

    #[test]
    fn only_a_refused_unknown_kid_refetch_decides_at_once() {
        use FetchKind::{Scheduled, UnknownKid};
        use FetchStart::{Begun, InFlight, NotNow};
        assert_eq!(AfterFetch::of(UnknownKid, NotNow), AfterFetch::DecideNow);
        for (kind, start) in [
            (UnknownKid, Begun),
            (UnknownKid, InFlight),
            (Scheduled, NotNow),
            (Scheduled, Begun),
            (Scheduled, InFlight),
        ] {
            assert_eq!(
                AfterFetch::of(kind, start),
                AfterFetch::Wait,
                "{kind:?} {start:?}"
            );
        }
    }
}
