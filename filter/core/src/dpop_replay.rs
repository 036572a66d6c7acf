//! The DPoP replay cache every worker VM shares: proof `jti`s kept in a fixed set of
//! shared-data slots, each changed only by compare-and-swap, so a proof replayed to another
//! worker is caught. Pure: the host's shared data comes in through [`SharedStore`], the
//! random hash key from the glue.
//!
//! Why slots and not one key per `jti`: Envoy's shared data never forgets a key and creates
//! a missing key unconditionally (a CAS only guards keys that exist), so per-`jti` keys would
//! grow without bound and two workers could both "create" the same `jti`. A fixed number of
//! slots bounds the memory, and [`SharedReplayCache::prepare`] creates them all when a VM is
//! configured, before it serves a request, so every later update is a real CAS.
//!
//! Why a keyed hash and a share per client: the `jti` is the client's choice. With a public
//! hash a client could aim proofs at one slot and fill it, so another client's fresh proof
//! landing there was refused. The slot comes from SHA-256 over a random 32-byte key (one per
//! Envoy, in shared data so every worker agrees) and the `jti`, which a client cannot aim;
//! and each client (the token's subject, however many proof keys it holds tokens for) may
//! hold at most [`CLIENT_SHARE_DIVISOR`]⁻¹ of any slot, so one client flooding at full speed
//! fills only its own share and is refused (503 `replay_cache_full`, never `dpop_replay`: its
//! proof was never seen) while others fit. The share is the subject's, not the proof key's:
//! a workload mints as many keys as it likes, and two of them would fill a slot.

use crate::dpop::{DpopError, VerifiedProof};
use sha2::{Digest, Sha256};
use std::fmt::Debug;

// The shared-data seam, re-exported where the engine has always found it.
use crate::shared::{Change, compare_and_swap};
pub use crate::shared::{MemoryStore, SharedStore, StoreError};

/// Prefix of the slot keys in shared data (v3: fixed-size binary entries, see [`Entry`]).
pub const SLOT_KEY_PREFIX: &str = "certbind.dpop.replay.v3";
/// The shared-data key of the hash key (64 hex digits).
pub const HASH_KEY_KEY: &str = "certbind.dpop.replay.key.v1";
/// Most slots: each one is a shared-data entry.
const MAX_SLOTS: usize = 1024;
/// Live entries one slot is meant to hold on average; a slot may hold twice that, so uneven
/// hashing does not refuse proofs long before `capacity` is reached.
const ENTRIES_PER_SLOT: usize = 64;
/// One client may hold at most 1/`CLIENT_SHARE_DIVISOR` of a slot's entries: half, so one
/// flooding client never fills a slot, and one busy legitimate client still fits (S5d's 2,290
/// proofs/s from one key, 16 s each, use ~36 of 98 entries a slot on average).
pub const CLIENT_SHARE_DIVISOR: usize = 2;
/// Lost CAS races tolerated for one proof before it is refused (fail closed).
const MAX_CAS_ATTEMPTS: usize = 16;
/// A CAS no entry carries in practice: Envoy creates a missing key whatever CAS is given, but
/// refuses to overwrite an existing one whose CAS differs, so this makes "create if absent"
/// (Envoy's CAS counter would have to reach exactly this value on that very key).
const CREATE_ONLY: Option<u32> = Some(u32::MAX);

/// The shape of the shared replay cache: how many slots, how many entries each may hold and
/// how many of them one client may hold, and the hash key. A slot's value is its live
/// entries end to end, each [`ENTRY_BYTES`] long (see [`Entry`]).
#[derive(Clone)]
pub struct SharedReplayCache {
    slots: usize,
    /// `<SLOT_KEY_PREFIX>:<slots>:`, the start of every slot's key.
    slot_prefix: String,
    per_slot: usize,
    per_client: usize,
    key: [u8; 32],
    /// SHA-256 after one block of the key (the key, then zeros): each keyed hash starts here,
    /// so a `jti` of up to 51 bytes costs one compression, not two.
    keyed_start: Sha256,
}

impl PartialEq for SharedReplayCache {
    // `keyed_start` follows from `key`.
    fn eq(&self, other: &Self) -> bool {
        (self.slots, self.per_slot, self.per_client, self.key)
            == (other.slots, other.per_slot, other.per_client, other.key)
    }
}

impl Eq for SharedReplayCache {}

/// The tag a client's entries carry in a slot: 64 bits of the keyed hash of its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTag(u64);

impl Debug for SharedReplayCache {
    // The hash key stays out of logs: knowing it, a client could aim at a slot again.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedReplayCache")
            .field("slots", &self.slots)
            .field("per_slot", &self.per_slot)
            .field("per_client", &self.per_client)
            .finish_non_exhaustive()
    }
}

impl SharedReplayCache {
    /// A cache meant for `capacity` live proofs across all VMs (at most 2 × `capacity`
    /// entries are kept: see [`ENTRIES_PER_SLOT`]). Its hash key is all zeros until
    /// [`SharedReplayCache::prepare`] installs the shared random one.
    pub fn new(capacity: usize) -> Self {
        let slots = (capacity / ENTRIES_PER_SLOT).clamp(1, MAX_SLOTS);
        let per_slot = capacity.div_ceil(slots).max(1).saturating_mul(2);
        Self {
            slots,
            slot_prefix: format!("{SLOT_KEY_PREFIX}:{slots}:"),
            per_slot,
            per_client: (per_slot / CLIENT_SHARE_DIVISOR).max(1),
            key: [0; 32],
            keyed_start: keyed_start(&[0; 32]),
        }
    }

    /// `<SLOT_KEY_PREFIX>:<slots>:<slot>`, without the formatting machinery (~1,700 Wasm
    /// instructions a proof).
    fn slot_key(&self, slot: usize) -> String {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        let mut rest = slot;
        loop {
            start -= 1;
            if let Some(d) = digits.get_mut(start) {
                *d = b'0' + (rest % 10) as u8;
            }
            rest /= 10;
            if rest == 0 || start == 0 {
                break;
            }
        }
        let mut key = String::with_capacity(self.slot_prefix.len() + digits.len() - start);
        key.push_str(&self.slot_prefix);
        key.extend(digits.iter().skip(start).map(|d| char::from(*d)));
        key
    }

    /// Adopts the hash key every VM sharing `store` uses (the first VM's `candidate`, a fresh
    /// random value from the host), and creates every slot that does not exist yet, empty.
    /// Call when a VM is configured, before its first request (see the module documentation).
    /// If the store cannot hold the key, this VM keeps `candidate`: its replays are still
    /// caught, only not across VMs that disagree.
    pub fn prepare(&mut self, store: &mut dyn SharedStore, candidate: [u8; 32]) {
        let _ = store.set(HASH_KEY_KEY, hex_encode(&candidate).as_bytes(), CREATE_ONLY);
        self.key = store
            .get(HASH_KEY_KEY)
            .and_then(|(value, _)| hex_decode_32(&value))
            .unwrap_or(candidate);
        self.keyed_start = keyed_start(&self.key);
        for slot in 0..self.slots {
            let _ = store.set(&self.slot_key(slot), b"", CREATE_ONLY);
        }
    }

    /// The tag `client` is counted under in a slot: a keyed hash, so a slot's value names no
    /// workload. The same for every proof of one client: the flow keeps it with the token.
    pub fn client_tag(&self, client: &str) -> ClientTag {
        let digest = self.keyed(b"client\0", client);
        ClientTag(u64::from_le_bytes(*digest.first_chunk().unwrap_or(&[0; 8])))
    }

    /// SHA-256 over one block of the hash key, a domain label and `value`.
    fn keyed(&self, label: &[u8], value: &str) -> [u8; 32] {
        let mut h = self.keyed_start.clone();
        h.update(label);
        h.update(value.as_bytes());
        h.finalize().into()
    }

    /// Admits `proof` once across every VM sharing `store`: records its `jti` until
    /// [`VerifiedProof::replay_until_s`], or refuses it as [`DpopError::Replayed`] (seen and
    /// still live), [`DpopError::TooOld`] (its window closed), [`DpopError::ClientShareFull`]
    /// (the client whose [`Self::client_tag`] is `client_tag` holds its share of the slot
    /// already, with any number of proof keys) or [`DpopError::ReplayCacheFull`] (the slot is
    /// full of live entries, the host refused the write, or the CAS kept failing): never
    /// admitted without being remembered.
    pub fn check_and_record(
        &self,
        store: &mut dyn SharedStore,
        proof: &VerifiedProof,
        client_tag: &ClientTag,
        now_s: u64,
    ) -> Result<(), DpopError> {
        let until = proof.replay_until_s();
        if until <= now_s {
            return Err(DpopError::TooOld);
        }
        let digest = self.keyed(b"jti\0", proof.jti());
        let (id, rest) = digest.split_first_chunk::<16>().unwrap_or((&[0; 16], &[]));
        let slot = rest
            .iter()
            .take(4)
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
            % self.slots;
        let new = Entry {
            until,
            id: u128::from_le_bytes(*id),
            client: client_tag.0,
        };
        let answer = compare_and_swap(store, &self.slot_key(slot), MAX_CAS_ATTEMPTS, |value| {
            let value = value.unwrap_or_default();
            // The live entries go back as the bytes they were read from, copied a run of
            // consecutive live ones at a time, then the new one.
            let mut kept = Vec::with_capacity(value.len() + ENTRY_BYTES);
            let (mut live, mut clients, mut run, mut at) = (0, 0, 0..0, 0);
            while let Some(bytes) = value.get(at..at + ENTRY_BYTES) {
                let entry = Entry::from_bytes(bytes);
                at += ENTRY_BYTES;
                if entry.until <= now_s {
                    kept.extend_from_slice(value.get(run).unwrap_or_default());
                    run = at..at;
                } else if entry.id == new.id {
                    return Change::Keep(Err(DpopError::Replayed));
                } else {
                    live += 1;
                    clients += usize::from(entry.client == new.client);
                    run.end = at;
                }
            }
            kept.extend_from_slice(value.get(run).unwrap_or_default());
            if clients >= self.per_client {
                return Change::Keep(Err(DpopError::ClientShareFull));
            }
            if live >= self.per_slot {
                return Change::Keep(Err(DpopError::ReplayCacheFull));
            }
            kept.extend_from_slice(&new.to_bytes());
            Change::Write(kept, Ok(()))
        });
        // The host refused the write or the CAS kept failing: not remembered, not admitted.
        answer.unwrap_or(Err(DpopError::ReplayCacheFull))
    }
}

/// The SHA-256 state after the first block: `key`, then zeros.
fn keyed_start(key: &[u8; 32]) -> Sha256 {
    let mut h = Sha256::new();
    h.update(key);
    h.update([0u8; 32]);
    h
}

/// One remembered proof in a slot, stored as [`ENTRY_BYTES`] bytes, each field little-endian:
/// the first second it may be forgotten, the first 128 bits of the keyed hash of its `jti`,
/// and its client's tag. Fixed-size binary read as whole words, so a busy slot (S5d's ~75
/// entries) is scanned in place without parsing: as text lines the scan had cost ~2,300 Wasm
/// instructions an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    until: u64,
    id: u128,
    client: u64,
}

const ENTRY_BYTES: usize = 8 + 16 + 8;

impl Entry {
    fn to_bytes(self) -> [u8; ENTRY_BYTES] {
        let mut out = [0; ENTRY_BYTES];
        let (until, rest) = out.split_at_mut(8);
        let (id, client) = rest.split_at_mut(16);
        until.copy_from_slice(&self.until.to_le_bytes());
        id.copy_from_slice(&self.id.to_le_bytes());
        client.copy_from_slice(&self.client.to_le_bytes());
        out
    }

    /// `bytes` is one whole entry (a slot's value read in [`ENTRY_BYTES`] chunks; a trailing
    /// partial one is never read: only this module writes slots, whole entries at a time).
    fn from_bytes(bytes: &[u8]) -> Self {
        let (until, rest) = bytes.split_first_chunk::<8>().unwrap_or((&[0; 8], &[]));
        let (id, rest) = rest.split_first_chunk::<16>().unwrap_or((&[0; 16], &[]));
        let client = rest.first_chunk::<8>().unwrap_or(&[0; 8]);
        Self {
            until: u64::from_le_bytes(*until),
            id: u128::from_le_bytes(*id),
            client: u64::from_le_bytes(*client),
        }
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 64 lowercase hex digits → 32 bytes; anything else `None`.
fn hex_decode_32(text: &[u8]) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let digit = |c: u8| {
            char::from(c)
                .to_digit(16)
                .and_then(|d| u8::try_from(d).ok())
        };
        *byte = digit(*pair.first()?)? << 4 | digit(*pair.get(1)?)?;
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::binding::ec_p256_jwk_thumbprint;
    use crate::dpop::{ProofCheck, ProofWindow, access_token_hash, verify_proof};
    use crate::shared::tests::Refusing;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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
        proof_by(0x11, jti, iat)
    }

    /// The hash key the tests' first VM draws.
    const KEY_A: [u8; 32] = [0xa5; 32];

    fn prepared(capacity: usize, store: &mut dyn SharedStore) -> SharedReplayCache {
        let mut cache = SharedReplayCache::new(capacity);
        cache.prepare(store, KEY_A);
        cache
    }

    /// A proof signed by the key of `seed` (`0x11`: the one of [`proof_with_jti`]).
    fn proof_by(seed: u8, jti: &str, iat: u64) -> VerifiedProof {
        let claims = json!({
            "jti": jti, "htm": "GET", "htu": HTU, "iat": iat, "ath": access_token_hash(TOKEN),
        });
        let key = proof_key(seed);
        let proof = sign_proof(&key, &proof_header(&key), &claims);
        let ath = access_token_hash(TOKEN);
        let check = ProofCheck {
            method: "GET",
            htu: HTU,
            now_s: iat,
            window: ProofWindow {
                max_age_s: 60,
                clock_skew_s: 5,
            },
            ath: Some(&ath),
            jkt: None,
            nonces: &[],
        };
        verify_proof(&proof, &check).unwrap()
    }

    /// Records `p` for the client its proof key stands for (one key per client here).
    fn record(
        cache: &SharedReplayCache,
        store: &mut dyn SharedStore,
        p: &VerifiedProof,
        now: u64,
    ) -> Result<(), DpopError> {
        cache.check_and_record(store, p, &cache.client_tag(p.jkt()), now)
    }

    #[test]
    fn slot_keys_are_the_prefix_the_slot_count_and_the_slot_in_decimal() {
        let cache = SharedReplayCache::new(16_384);
        for slot in [0, 7, 10, 99, 255, 1023, usize::MAX] {
            assert_eq!(
                cache.slot_key(slot),
                format!("{SLOT_KEY_PREFIX}:{}:{slot}", cache.slots)
            );
        }
    }

    /// Two worker VMs: two caches over one store.
    #[test]
    fn refuses_a_proof_replayed_to_another_vm() {
        let mut store = MemoryStore::default();
        let vm1 = prepared(1024, &mut store);
        let mut vm2 = SharedReplayCache::new(1024);
        vm2.prepare(&mut store, [0x5a; 32]);
        assert_eq!(vm2, vm1, "the second VM adopts the first VM's hash key");
        let p = proof_with_jti("a", NOW);
        assert_eq!(record(&vm1, &mut store, &p, NOW), Ok(()));
        assert_eq!(
            record(&vm2, &mut store, &p, NOW + 1),
            Err(DpopError::Replayed)
        );
        assert_eq!(
            record(&vm1, &mut store, &p, NOW + 2),
            Err(DpopError::Replayed)
        );
    }

    #[test]
    fn admits_distinct_proofs() {
        let mut store = MemoryStore::default();
        let cache = prepared(1024, &mut store);
        for i in 0..200 {
            let p = proof_with_jti(&format!("jti-{i}"), NOW);
            assert_eq!(record(&cache, &mut store, &p, NOW), Ok(()), "{i}");
        }
    }

    #[test]
    fn forgets_a_jti_once_its_window_closed() {
        let mut store = MemoryStore::default();
        let cache = prepared(1, &mut store);
        let p = proof_with_jti("a", NOW);
        record(&cache, &mut store, &p, NOW).unwrap();
        assert_eq!(
            record(&cache, &mut store, &p, p.replay_until_s() - 1),
            Err(DpopError::Replayed)
        );
        assert_eq!(
            record(&cache, &mut store, &p, p.replay_until_s()),
            Err(DpopError::TooOld)
        );
        // Its entry no longer takes room: later proofs fit in the one-slot cache.
        let later = proof_with_jti("b", p.replay_until_s());
        let other = proof_by(0x22, "c", p.replay_until_s());
        assert_eq!(
            record(&cache, &mut store, &later, p.replay_until_s()),
            Ok(())
        );
        assert_eq!(
            record(&cache, &mut store, &other, p.replay_until_s()),
            Ok(())
        );
    }

    #[test]
    fn refuses_new_proofs_when_a_slot_is_full_of_live_entries_but_never_as_a_replay() {
        let mut store = MemoryStore::default();
        let cache = prepared(1, &mut store);
        assert_eq!((cache.slots, cache.per_slot, cache.per_client), (1, 2, 1));
        for (seed, jti) in [(0x11, "a"), (0x22, "b")] {
            record(&cache, &mut store, &proof_by(seed, jti, NOW), NOW).unwrap();
        }
        assert_eq!(
            record(&cache, &mut store, &proof_by(0x33, "c", NOW), NOW),
            Err(DpopError::ReplayCacheFull)
        );
        assert_eq!(
            DpopError::ReplayCacheFull.reason(),
            crate::reason::Reason::ReplayCacheFull
        );
        assert_eq!(
            record(&cache, &mut store, &proof_with_jti("a", NOW), NOW),
            Err(DpopError::Replayed)
        );
    }

    #[test]
    fn one_flooding_client_fills_only_its_share_whatever_its_keys_and_others_pass() {
        let mut store = MemoryStore::default();
        let cache = prepared(1024, &mut store);
        assert_eq!(
            (cache.slots, cache.per_slot, cache.per_client),
            (16, 128, 64)
        );
        let mut admitted = 0;
        // One workload floods with two proof keys (two DPoP-bound tokens of its own).
        for i in 0..4_000 {
            let p = proof_by([0x11, 0x33][i % 2], &format!("f{i}"), NOW);
            match cache.check_and_record(&mut store, &p, &cache.client_tag("inventory"), NOW) {
                Ok(()) => admitted += 1,
                Err(e) => assert_eq!(e, DpopError::ClientShareFull, "flood proof {i}"),
            }
        }
        // Every slot holds exactly the flooder's share, no more.
        assert_eq!(admitted, 16 * 64);
        // Another client's fresh proofs all fit (200 spread over 16 slots stay below its share).
        for i in 0..200 {
            let p = proof_by(0x22, &format!("v{i}"), NOW);
            assert_eq!(
                cache.check_and_record(&mut store, &p, &cache.client_tag("consumer"), NOW),
                Ok(()),
                "victim {i}"
            );
        }
    }

    #[test]
    fn jtis_aimed_at_one_slot_under_one_key_spread_under_another() {
        let slot_of = |cache: &SharedReplayCache, jti: &str| {
            let d = cache.keyed(b"jti\0", jti);
            d.get(16..20)
                .unwrap()
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
                % cache.slots
        };
        let mut a = SharedReplayCache::new(1024);
        a.prepare(&mut MemoryStore::default(), KEY_A);
        let mut b = SharedReplayCache::new(1024);
        b.prepare(&mut MemoryStore::default(), [0x5a; 32]);
        // An attacker who knew key A could aim 64 jtis at slot 0 ...
        let aimed: Vec<String> = (0..)
            .map(|i| format!("aim-{i}"))
            .filter(|jti| slot_of(&a, jti) == 0)
            .take(64)
            .collect();
        // ... but under the key it cannot know they land where chance puts them (~4 in 0).
        let still_there = aimed.iter().filter(|jti| slot_of(&b, jti) == 0).count();
        assert!(still_there < 16, "{still_there} of 64 still in slot 0");
    }

    #[test]
    fn keeps_its_own_key_when_the_host_cannot_store_one_and_refuses_unrecorded_proofs() {
        let mut cache = SharedReplayCache::new(1024);
        cache.prepare(&mut Refusing, [0x42; 32]);
        assert_eq!(cache.key, [0x42; 32]);
        assert_eq!(
            record(&cache, &mut Refusing, &proof_with_jti("a", NOW), NOW),
            Err(DpopError::ReplayCacheFull)
        );
    }

    #[test]
    fn a_garbled_shared_key_is_not_used() {
        let mut store = MemoryStore::default();
        store.set(HASH_KEY_KEY, b"not hex", None).unwrap();
        let mut cache = SharedReplayCache::new(1024);
        cache.prepare(&mut store, [0x42; 32]);
        assert_eq!(cache.key, [0x42; 32]);
        assert_eq!(hex_decode_32(hex_encode(&KEY_A).as_bytes()), Some(KEY_A));
        assert_eq!(hex_decode_32(&[b'g'; 64]), None);
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
                    let other = prepared(1024, &mut self.inner);
                    let tag = other.client_tag(rival.jkt());
                    other
                        .check_and_record(&mut self.inner, &rival, &tag, NOW)
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
        let cache = prepared(1024, &mut store.inner);
        assert_eq!(
            record(&cache, &mut store, &p, NOW),
            Err(DpopError::Replayed)
        );
    }

    #[test]
    fn retries_a_lost_cas_race_and_refuses_when_it_never_wins() {
        let mut store = Racing {
            races: 3,
            ..Racing::default()
        };
        let cache = prepared(1024, &mut store.inner);
        let p = proof_with_jti("a", NOW);
        assert_eq!(record(&cache, &mut store, &p, NOW), Ok(()));
        let mut store = Racing {
            races: usize::MAX,
            ..Racing::default()
        };
        let cache = prepared(1024, &mut store.inner);
        assert_eq!(
            record(&cache, &mut store, &p, NOW),
            Err(DpopError::ReplayCacheFull)
        );
    }

    #[test]
    fn prepare_creates_every_slot_once_and_keeps_existing_ones() {
        let mut store = MemoryStore::default();
        let mut cache = prepared(16_384, &mut store);
        assert_eq!((cache.slots, cache.per_slot), (256, 128));
        assert_eq!(store.len(), 256 + 1);
        let p = proof_with_jti("a", NOW);
        record(&cache, &mut store, &p, NOW).unwrap();
        cache.prepare(&mut store, [0x5a; 32]);
        assert_eq!(cache.key, KEY_A);
        assert_eq!(
            record(&cache, &mut store, &p, NOW),
            Err(DpopError::Replayed)
        );
    }

    #[test]
    fn an_entry_reads_back_as_written() {
        let e = Entry {
            until: 0x0102_0304_0506_0708,
            id: u128::MAX - 5,
            client: 0xc3,
        };
        let bytes = e.to_bytes();
        assert_eq!(bytes.get(..8), Some(&[8, 7, 6, 5, 4, 3, 2, 1][..]));
        assert_eq!(Entry::from_bytes(&bytes), e);
    }

    #[test]
    fn a_slot_keeps_its_live_entries_in_order_and_drops_expired_and_partial_ones() {
        let mut store = MemoryStore::default();
        let cache = prepared(2, &mut store);
        let key = cache.slot_key(0);
        let entry = |until, id| Entry {
            until,
            id,
            client: 9,
        };
        let (first, second) = (entry(NOW + 100, 1).to_bytes(), entry(NOW + 1, 3).to_bytes());
        let mut value = first.to_vec();
        value.extend_from_slice(&entry(NOW, 2).to_bytes());
        value.extend_from_slice(&second);
        value.extend_from_slice(b"partial");
        store.set(&key, &value, None).unwrap();
        record(&cache, &mut store, &proof_with_jti("a", NOW), NOW).unwrap();
        let (after, _) = store.get(&key).unwrap();
        assert_eq!(after.len(), 3 * ENTRY_BYTES);
        assert_eq!(after.get(..ENTRY_BYTES), Some(&first[..]));
        assert_eq!(after.get(ENTRY_BYTES..2 * ENTRY_BYTES), Some(&second[..]));
    }
}
