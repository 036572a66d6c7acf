//! The DPoP replay cache every worker VM shares: proof `jti`s kept in a fixed set of
//! shared-data slots, each changed only by compare-and-swap, so a proof replayed to another
//! worker is caught. Pure: the host's shared data comes in through [`SharedStore`].
//!
//! Why slots and not one key per `jti`: Envoy's shared data never forgets a key and creates
//! a missing key unconditionally (a CAS only guards keys that exist), so per-`jti` keys would
//! grow without bound and two workers could both "create" the same `jti`. A fixed number of
//! slots bounds the memory, and [`SharedReplayCache::prepare`] creates them all when a VM is
//! configured, before it serves a request, so every later update is a real CAS.

use crate::dpop::{DpopError, VerifiedProof};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Debug;

/// Prefix of the slot keys in shared data.
pub const SLOT_KEY_PREFIX: &str = "certbind.dpop.replay.v1";
/// Most slots: each one is a shared-data entry.
const MAX_SLOTS: usize = 1024;
/// Live entries one slot is meant to hold on average; a slot may hold twice that, so uneven
/// hashing does not refuse proofs long before `capacity` is reached.
const ENTRIES_PER_SLOT: usize = 64;
/// Lost CAS races tolerated for one proof before it is refused (fail closed).
const MAX_CAS_ATTEMPTS: usize = 16;

/// Why a shared-data write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Another writer changed the entry since it was read.
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

/// An in-memory [`SharedStore`] with Envoy's semantics: the default of a VM without host
/// shared data (native builds, unit tests), where it catches replays within that VM only.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
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

/// The shape of the shared replay cache: how many slots, how many entries each may hold.
/// Each entry is `<replay_until_s> <id>` with `id` the first 128 bits of SHA-256(`jti`)
/// in base64url, so any `jti` costs the same 34 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedReplayCache {
    slots: usize,
    per_slot: usize,
}

impl SharedReplayCache {
    /// A cache meant for `capacity` live proofs across all VMs (at most 2 × `capacity`
    /// entries are kept: see [`ENTRIES_PER_SLOT`]).
    pub fn new(capacity: usize) -> Self {
        let slots = (capacity / ENTRIES_PER_SLOT).clamp(1, MAX_SLOTS);
        let per_slot = capacity.div_ceil(slots).max(1).saturating_mul(2);
        Self { slots, per_slot }
    }

    fn slot_key(&self, slot: usize) -> String {
        format!("{SLOT_KEY_PREFIX}:{}:{slot}", self.slots)
    }

    /// Creates every slot that does not exist yet, empty. Call when a VM is configured,
    /// before its first request (see the module documentation for why).
    pub fn prepare(&self, store: &mut dyn SharedStore) {
        for slot in 0..self.slots {
            let key = self.slot_key(slot);
            if store.get(&key).is_none() {
                let _ = store.set(&key, b"", None);
            }
        }
    }

    /// Admits `proof` once across every VM sharing `store`: records its `jti` until
    /// [`VerifiedProof::replay_until_s`], or refuses it as [`DpopError::Replayed`] (seen and
    /// still live), [`DpopError::TooOld`] (its window closed), or
    /// [`DpopError::ReplayCacheFull`] (the slot is full of live entries, the host refused
    /// the write, or the CAS kept failing): never admitted without being remembered.
    pub fn check_and_record(
        &self,
        store: &mut dyn SharedStore,
        proof: &VerifiedProof,
        now_s: u64,
    ) -> Result<(), DpopError> {
        if proof.replay_until_s() <= now_s {
            return Err(DpopError::TooOld);
        }
        let digest = Sha256::digest(proof.jti().as_bytes());
        let (id_bytes, slot_bytes) = digest.split_at(16);
        let id = URL_SAFE_NO_PAD.encode(id_bytes);
        let slot = slot_bytes
            .iter()
            .take(4)
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
            % self.slots;
        let key = self.slot_key(slot);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (value, cas) = match store.get(&key) {
                Some((value, cas)) => (value, Some(cas)),
                None => (Vec::new(), None),
            };
            let mut live = live_entries(&value, now_s);
            if live.iter().any(|(_, seen)| *seen == id) {
                return Err(DpopError::Replayed);
            }
            if live.len() >= self.per_slot {
                return Err(DpopError::ReplayCacheFull);
            }
            live.push((proof.replay_until_s(), id.as_str()));
            let encoded: String = live
                .iter()
                .map(|(until, seen)| format!("{until} {seen}\n"))
                .collect();
            match store.set(&key, encoded.as_bytes(), cas) {
                Ok(()) => return Ok(()),
                Err(StoreError::CasMismatch) => continue,
                Err(StoreError::Failed) => return Err(DpopError::ReplayCacheFull),
            }
        }
        Err(DpopError::ReplayCacheFull)
    }
}

/// The entries of a slot value still live at `now_s` (an entry is live while
/// `now_s < until`). Lines that do not parse are dropped: only this module writes slots.
fn live_entries(value: &[u8], now_s: u64) -> Vec<(u64, &str)> {
    let Ok(text) = std::str::from_utf8(value) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let (until, id) = line.split_once(' ')?;
            let until: u64 = until.parse().ok()?;
            (until > now_s && !id.is_empty()).then_some((until, id))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::binding::ec_p256_jwk_thumbprint;
    use crate::dpop::{ProofCheck, ProofWindow, access_token_hash, verify_proof};
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{Signature, SigningKey};
    use serde_json::{Value, json};

    pub(crate) const NOW: u64 = 1_800_000_000;
    const HTU: &str = "https://orders.example:8445/orders/42";
    const TOKEN: &str = "a.b.c";

    /// The caller's proof key (another one: `[0x22; 32]`).
    pub(crate) fn proof_key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    pub(crate) fn public_jwk(key: &SigningKey) -> Value {
        let point = key.verifying_key().to_sec1_point(false);
        json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        })
    }

    pub(crate) fn jkt_of(key: &SigningKey) -> String {
        let jwk = public_jwk(key);
        ec_p256_jwk_thumbprint(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap())
    }

    /// A compact proof: `header` and `claims` signed by `key`.
    pub(crate) fn sign_proof(key: &SigningKey, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig: Signature = key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    pub(crate) fn proof_header(key: &SigningKey) -> Value {
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(key)})
    }

    pub(crate) fn proof_with_jti(jti: &str, iat: u64) -> VerifiedProof {
        let claims = json!({
            "jti": jti, "htm": "GET", "htu": HTU, "iat": iat, "ath": access_token_hash(TOKEN),
        });
        let proof = sign_proof(&proof_key(0x11), &proof_header(&proof_key(0x11)), &claims);
        let check = ProofCheck {
            method: "GET",
            htu: HTU,
            now_s: iat,
            window: ProofWindow {
                max_age_s: 60,
                clock_skew_s: 5,
            },
            access_token: Some(TOKEN),
            jkt: None,
            nonces: &[],
        };
        verify_proof(&proof, &check).unwrap()
    }

    /// Two worker VMs: two caches over one store.
    #[test]
    fn refuses_a_proof_replayed_to_another_vm() {
        let mut store = MemoryStore::default();
        let vm1 = SharedReplayCache::new(1024);
        let vm2 = SharedReplayCache::new(1024);
        vm1.prepare(&mut store);
        vm2.prepare(&mut store);
        let p = proof_with_jti("a", NOW);
        assert_eq!(vm1.check_and_record(&mut store, &p, NOW), Ok(()));
        assert_eq!(
            vm2.check_and_record(&mut store, &p, NOW + 1),
            Err(DpopError::Replayed)
        );
        assert_eq!(
            vm1.check_and_record(&mut store, &p, NOW + 2),
            Err(DpopError::Replayed)
        );
    }

    #[test]
    fn admits_distinct_proofs() {
        let mut store = MemoryStore::default();
        let cache = SharedReplayCache::new(1024);
        cache.prepare(&mut store);
        for i in 0..200 {
            let p = proof_with_jti(&format!("jti-{i}"), NOW);
            assert_eq!(cache.check_and_record(&mut store, &p, NOW), Ok(()), "{i}");
        }
    }

    #[test]
    fn forgets_a_jti_once_its_window_closed() {
        let mut store = MemoryStore::default();
        let cache = SharedReplayCache::new(1);
        let p = proof_with_jti("a", NOW);
        cache.check_and_record(&mut store, &p, NOW).unwrap();
        assert_eq!(
            cache.check_and_record(&mut store, &p, p.replay_until_s() - 1),
            Err(DpopError::Replayed)
        );
        assert_eq!(
            cache.check_and_record(&mut store, &p, p.replay_until_s()),
            Err(DpopError::TooOld)
        );
        // Its entry no longer takes room: a later proof fits in the one-slot cache.
        let later = proof_with_jti("b", p.replay_until_s());
        let other = proof_with_jti("c", p.replay_until_s());
        assert_eq!(
            cache.check_and_record(&mut store, &later, p.replay_until_s()),
            Ok(())
        );
        assert_eq!(
            cache.check_and_record(&mut store, &other, p.replay_until_s()),
            Ok(())
        );
    }

    #[test]
    fn refuses_new_proofs_when_a_slot_is_full_of_live_entries() {
        let mut store = MemoryStore::default();
        let cache = SharedReplayCache::new(1);
        assert_eq!((cache.slots, cache.per_slot), (1, 2));
        for jti in ["a", "b"] {
            cache
                .check_and_record(&mut store, &proof_with_jti(jti, NOW), NOW)
                .unwrap();
        }
        assert_eq!(
            cache.check_and_record(&mut store, &proof_with_jti("c", NOW), NOW),
            Err(DpopError::ReplayCacheFull)
        );
        assert_eq!(
            cache.check_and_record(&mut store, &proof_with_jti("a", NOW), NOW),
            Err(DpopError::Replayed)
        );
    }

    /// A store whose first writes lose a CAS race to another VM recording the same `jti`.
    #[derive(Debug, Default)]
    struct Racing {
        inner: MemoryStore,
        races: usize,
        rival: Option<VerifiedProof>,
    }

    impl SharedStore for Racing {
        fn get(&mut self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.inner.get(key)
        }
        fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            if self.races > 0 {
                self.races -= 1;
                if let Some(rival) = self.rival.take() {
                    // The other VM wins the race with the very same proof.
                    SharedReplayCache::new(1024)
                        .check_and_record(&mut self.inner, &rival, NOW)
                        .unwrap();
                } else {
                    let (v, _) = self.inner.get(key).unwrap_or_default();
                    self.inner.set(key, &v, None).unwrap();
                }
            }
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn a_lost_cas_race_with_the_same_proof_is_a_replay() {
        let p = proof_with_jti("a", NOW);
        let mut store = Racing {
            races: 1,
            rival: Some(p.clone()),
            ..Racing::default()
        };
        let cache = SharedReplayCache::new(1024);
        cache.prepare(&mut store.inner);
        assert_eq!(
            cache.check_and_record(&mut store, &p, NOW),
            Err(DpopError::Replayed)
        );
    }

    #[test]
    fn retries_a_lost_cas_race_and_refuses_when_it_never_wins() {
        let cache = SharedReplayCache::new(1024);
        let mut store = Racing {
            races: 3,
            ..Racing::default()
        };
        cache.prepare(&mut store.inner);
        let p = proof_with_jti("a", NOW);
        assert_eq!(cache.check_and_record(&mut store, &p, NOW), Ok(()));
        let mut store = Racing {
            races: usize::MAX,
            ..Racing::default()
        };
        cache.prepare(&mut store.inner);
        assert_eq!(
            cache.check_and_record(&mut store, &p, NOW),
            Err(DpopError::ReplayCacheFull)
        );
    }

    #[test]
    fn prepare_creates_every_slot_once_and_keeps_existing_ones() {
        let mut store = MemoryStore::default();
        let cache = SharedReplayCache::new(16_384);
        assert_eq!((cache.slots, cache.per_slot), (256, 128));
        cache.prepare(&mut store);
        assert_eq!(store.entries.len(), 256);
        let p = proof_with_jti("a", NOW);
        cache.check_and_record(&mut store, &p, NOW).unwrap();
        cache.prepare(&mut store);
        assert_eq!(
            cache.check_and_record(&mut store, &p, NOW),
            Err(DpopError::Replayed)
        );
    }

    #[test]
    fn ignores_garbage_in_a_slot() {
        assert_eq!(live_entries(b"\xff\xfe", 0), Vec::new());
        assert_eq!(
            live_entries(b"x y\n10\n5 gone\n20 live\n", 10),
            vec![(20, "live")]
        );
    }
}
