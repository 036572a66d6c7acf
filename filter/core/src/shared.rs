//! Envoy's shared data as the core sees it: one key-value store for every worker VM of a
//! `vm_id`, each value with a CAS number. The plugin implements [`SharedStore`] over
//! proxy-wasm; [`MemoryStore`] has the same semantics for native builds and tests.
//! [`compare_and_swap`] is the one read-change-write loop every shared record uses (the
//! DPoP replay slots, the JWKS fetch record, the revocation lease).

use std::collections::HashMap;
use std::fmt::Debug;

/// Why a shared-data write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Another writer changed the entry since it was read (or kept winning every retry).
    CasMismatch,
    /// The host refused the write.
    Failed,
}

/// Envoy's shared data as proxy-wasm exposes it: a value and a CAS number per key, a write
/// that succeeds only if the CAS still matches (`None`: unconditionally).
pub trait SharedStore: Debug {
    /// The value and CAS of `key`, or `None` when the key does not exist.
    fn get(&mut self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes `value` if `key`'s CAS is still `cas` (`None`: whatever it is, or creates it).
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// An in-memory [`SharedStore`] with Envoy's semantics: a missing key is created whatever
/// CAS is given, an existing one is overwritten only if the CAS matches.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

impl MemoryStore {
    /// How many keys exist.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl SharedStore for MemoryStore {
    fn get(&mut self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.entries.get(key).cloned()
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        let next = self.next_cas;
        match self.entries.get_mut(key) {
            Some(entry) if cas.is_some_and(|c| c != entry.1) => Err(StoreError::CasMismatch),
            Some(entry) => {
                *entry = (value.to_vec(), next);
                Ok(())
            }
            None => {
                self.entries.insert(key.to_owned(), (value.to_vec(), next));
                Ok(())
            }
        }
    }
}

/// What a change makes of a key's current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<T> {
    /// Write this value (only if nobody wrote since it was read), then answer `T`.
    Write(Vec<u8>, T),
    /// Leave the key as it is and answer `T` at once.
    Keep(T),
}

/// Reads `key`, lets `change` decide from its value (`None`: the key does not exist) and
/// writes the result with the CAS it was read with; a lost race reads again, at most
/// `attempts` times in all. Gives up with [`StoreError::CasMismatch`] when every attempt lost,
/// or [`StoreError::Failed`] when the host refused the write.
pub fn compare_and_swap<T>(
    store: &mut dyn SharedStore,
    key: &str,
    attempts: usize,
    mut change: impl FnMut(Option<&[u8]>) -> Change<T>,
) -> Result<T, StoreError> {
    for _ in 0..attempts {
        let (value, cas) = match store.get(key) {
            Some((value, cas)) => (Some(value), Some(cas)),
            None => (None, None),
        };
        match change(value.as_deref()) {
            Change::Keep(answer) => return Ok(answer),
            Change::Write(next, answer) => match store.set(key, &next, cas) {
                Ok(()) => return Ok(answer),
                Err(StoreError::CasMismatch) => continue,
                Err(StoreError::Failed) => return Err(StoreError::Failed),
            },
        }
    }
    Err(StoreError::CasMismatch)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A store whose next `races` writes each lose to another VM writing `rival` first.
    #[derive(Debug, Default)]
    pub(crate) struct Racing {
        pub(crate) inner: MemoryStore,
        pub(crate) races: usize,
        pub(crate) rival: Vec<u8>,
    }

    impl SharedStore for Racing {
        fn get(&mut self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.inner.get(key)
        }
        fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            if self.races > 0 {
                self.races -= 1;
                let rival = self.rival.clone();
                self.inner.set(key, &rival, None)?;
            }
            self.inner.set(key, value, cas)
        }
    }

    /// A host whose shared data refuses every write.
    #[derive(Debug)]
    pub(crate) struct Refusing;

    impl SharedStore for Refusing {
        fn get(&mut self, _: &str) -> Option<(Vec<u8>, u32)> {
            None
        }
        fn set(&mut self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), StoreError> {
            Err(StoreError::Failed)
        }
    }

    fn append(byte: u8) -> impl FnMut(Option<&[u8]>) -> Change<usize> {
        move |value| {
            let mut next = value.unwrap_or_default().to_vec();
            next.push(byte);
            let len = next.len();
            Change::Write(next, len)
        }
    }

    #[test]
    fn a_memory_store_creates_missing_keys_and_guards_existing_ones_by_cas() {
        let mut s = MemoryStore::default();
        assert!(s.is_empty());
        s.set("k", b"a", Some(99)).unwrap();
        let (value, cas) = s.get("k").unwrap();
        assert_eq!(value, b"a");
        assert_eq!(
            s.set("k", b"b", Some(cas + 1)),
            Err(StoreError::CasMismatch)
        );
        s.set("k", b"b", Some(cas)).unwrap();
        assert_eq!(s.get("k").unwrap().0, b"b");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_change_sees_no_value_for_a_missing_key_and_writes_it() {
        let mut s = MemoryStore::default();
        assert_eq!(compare_and_swap(&mut s, "k", 1, append(b'x')), Ok(1));
        assert_eq!(compare_and_swap(&mut s, "k", 1, append(b'y')), Ok(2));
        assert_eq!(s.get("k").unwrap().0, b"xy");
    }

    #[test]
    fn keeping_the_value_writes_nothing() {
        let mut s = Refusing;
        assert_eq!(
            compare_and_swap(&mut s, "k", 3, |v| Change::Keep(v.is_none())),
            Ok(true)
        );
    }

    #[test]
    fn a_lost_race_is_retried_on_the_winners_value() {
        let mut s = Racing {
            races: 2,
            rival: b"r".to_vec(),
            ..Racing::default()
        };
        // An existing key: a missing one is created whatever the CAS.
        s.inner.set("k", b"", None).unwrap();
        assert_eq!(compare_and_swap(&mut s, "k", 3, append(b'x')), Ok(2));
        assert_eq!(s.get("k").unwrap().0, b"rx");
    }

    #[test]
    fn gives_up_when_every_attempt_loses_or_the_host_refuses() {
        let mut s = Racing {
            races: usize::MAX,
            rival: b"r".to_vec(),
            ..Racing::default()
        };
        s.inner.set("k", b"", None).unwrap();
        assert_eq!(
            compare_and_swap(&mut s, "k", 4, append(b'x')),
            Err(StoreError::CasMismatch)
        );
        assert_eq!(s.get("k").unwrap().0, b"r");
        assert_eq!(
            compare_and_swap(&mut Refusing, "k", 4, append(b'x')),
            Err(StoreError::Failed)
        );
    }
}
