//! A bounded map whose entries carry an expiry: the verified-token, decision and peer caches.
//! When full, the oldest insertion is evicted (FIFO, a cheap stand-in for LRU); an expired
//! entry is never returned. Keys are hashed with foldhash: every warm request hashes its
//! whole token (hundreds of bytes), which SipHash made one of the dearest steps in Wasm. Each
//! cache is seeded from std's random keys (WASI `random_get` in the filter; foldhash's own
//! seed comes from addresses and the clock, which Wasm does not randomise). What is inserted
//! (verified tokens, decision questions, connection ids, certificate thumbprints, DPoP keys
//! that signed a valid proof) is not bytes a caller can pick to collide under a seed it never
//! sees, and every cache is bounded.

mod bytes_key;

pub use bytes_key::{BytesKey, KeyBytes, same_bytes};
use foldhash::SharedSeed;
use foldhash::fast::SeedableRandomState;
use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, RandomState};

#[derive(Debug, Clone)]
pub struct ExpiringCache<K, V> {
    capacity: usize,
    entries: HashMap<K, (V, u64), SeedableRandomState>,
    order: VecDeque<K>,
}

impl<K: Eq + Hash + Clone, V> ExpiringCache<K, V> {
    /// A cache of at most `capacity` entries; 0 disables it.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::with_hasher(SeedableRandomState::with_seed(
                RandomState::new().hash_one(0u8),
                SharedSeed::global_random(),
            )),
            order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for `key` if it has not expired at `now` (entries expire at their instant).
    /// `key` may be a borrowed form (`&str` for `Rc<str>` keys), so a lookup allocates nothing.
    pub fn get<Q>(&mut self, key: &Q, now: u64) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let expired = self
            .entries
            .get(key)
            .is_some_and(|(_, until)| now >= *until);
        if expired {
            self.entries.remove(key);
            return None;
        }
        self.entries.get(key).map(|(value, _)| value)
    }

    /// Stores `value` until `expires_at` (exclusive). Nothing is stored if already expired.
    /// `f` of the entry for `key` if it has not expired at `now`: one hash lookup on a hit,
    /// where [`Self::get`] makes two (it cannot hand out a borrow and remove an expired entry
    /// in one lookup). The warm path's caches are probed through this.
    pub fn probe<Q, R>(&mut self, key: &Q, now: u64, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.entries.get(key) {
            Some((value, until)) if now < *until => return Some(f(value)),
            Some(_) => {}
            None => return None,
        }
        self.entries.remove(key);
        None
    }

    pub fn insert(&mut self, key: K, value: V, expires_at: u64, now: u64) {
        if self.capacity == 0 || expires_at <= now {
            return;
        }
        if let Some(slot) = self.entries.get_mut(&key) {
            *slot = (value, expires_at);
            return;
        }
        while self.entries.len() >= self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
        self.entries.insert(key.clone(), (value, expires_at));
        self.order.push_back(key);
        // Keys removed on expiry stay in `order`; compact so it stays bounded too.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
    }

    pub fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_an_entry_until_it_expires() {
        let mut c = ExpiringCache::new(4);
        c.insert(1, "a", 100, 0);
        assert_eq!(c.get(&1, 99), Some(&"a"));
        assert_eq!(c.get(&1, 100), None);
        assert!(c.is_empty());
    }

    #[test]
    fn probes_an_entry_until_it_expires_then_forgets_it() {
        let mut c = ExpiringCache::new(4);
        c.insert(1, "a", 100, 0);
        assert_eq!(c.probe(&1, 99, |v| *v), Some("a"));
        assert_eq!(c.probe(&2, 99, |v| *v), None);
        assert_eq!(c.probe(&1, 100, |v| *v), None);
        assert!(c.is_empty());
    }

    #[test]
    fn never_stores_an_already_expired_entry() {
        let mut c = ExpiringCache::new(4);
        c.insert(1, "a", 10, 10);
        assert!(c.is_empty());
    }

    #[test]
    fn stays_within_its_capacity_evicting_the_oldest() {
        let mut c = ExpiringCache::new(3);
        for k in 0..10 {
            c.insert(k, k, 1_000, 0);
            assert!(c.len() <= 3);
        }
        assert_eq!(c.get(&9, 0), Some(&9));
        assert_eq!(c.get(&6, 0), None);
    }

    #[test]
    fn order_stays_bounded_when_entries_expire() {
        let mut c = ExpiringCache::new(2);
        for k in 0..100u64 {
            c.insert(k, (), k + 1, k);
            let _ = c.get(&k, k + 1);
        }
        assert!(c.order.len() <= 4);
    }

    #[test]
    fn capacity_zero_disables_the_cache() {
        let mut c = ExpiringCache::new(0);
        c.insert(1, 1, 100, 0);
        assert_eq!(c.get(&1, 0), None);
    }
}
