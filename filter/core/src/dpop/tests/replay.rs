//! The in-VM replay cache: one admission per `jti` within its window, bounded, no eviction.

use super::*;

fn proof_with_jti(jti: &str, iat: u64) -> VerifiedProof {
    let mut c = claims();
    c["jti"] = jti.into();
    c["iat"] = iat.into();
    let mut e = expect();
    e.now_s = iat;
    verify_proof(&sign(&header(), &c), &e).unwrap()
}

#[test]
fn replay_cache_refuses_a_jti_seen_within_its_window() {
    let mut cache = ReplayCache::new(8);
    let p = proof_with_jti("a", NOW);
    assert_eq!(cache.check_and_record(&p, NOW), Ok(()));
    assert_eq!(
        cache.check_and_record(&p, NOW + 30),
        Err(DpopError::Replayed)
    );
    // Another proof with the same jti (another key or claims) is a replay too.
    let q = proof_with_jti("a", NOW + 1);
    assert_eq!(
        cache.check_and_record(&q, NOW + 1),
        Err(DpopError::Replayed)
    );
}

#[test]
fn replay_cache_admits_distinct_jtis() {
    let mut cache = ReplayCache::new(8);
    for jti in ["a", "b", "c"] {
        assert_eq!(
            cache.check_and_record(&proof_with_jti(jti, NOW), NOW),
            Ok(())
        );
    }
    assert_eq!(cache.len(), 3);
}

#[test]
fn replay_cache_forgets_a_jti_only_once_its_proof_is_out_of_the_window() {
    let mut cache = ReplayCache::new(8);
    let p = proof_with_jti("a", NOW);
    cache.check_and_record(&p, NOW).unwrap();
    let last = p.replay_until_s() - 1;
    // The proof is still acceptable at `last`, so it is still remembered.
    assert!(
        verify_proof(
            &sign(&header(), &{
                let mut c = claims();
                c["jti"] = "a".into();
                c["iat"] = NOW.into();
                c
            }),
            &ProofCheck {
                now_s: last,
                ..expect()
            }
        )
        .is_ok()
    );
    assert_eq!(cache.check_and_record(&p, last), Err(DpopError::Replayed));
    assert_eq!(cache.len(), 1);
    // From `replay_until_s` the entry is purged, and the proof itself is too old.
    assert_eq!(
        cache.check_and_record(&p, p.replay_until_s()),
        Err(DpopError::TooOld)
    );
    assert!(cache.is_empty());
}

#[test]
fn replay_cache_refuses_new_proofs_when_full_of_live_entries() {
    let mut cache = ReplayCache::new(2);
    cache
        .check_and_record(&proof_with_jti("a", NOW), NOW)
        .unwrap();
    cache
        .check_and_record(&proof_with_jti("b", NOW), NOW)
        .unwrap();
    let c = proof_with_jti("c", NOW);
    assert_eq!(
        cache.check_and_record(&c, NOW),
        Err(DpopError::ReplayCacheFull)
    );
    // Nothing live was evicted to make room.
    let a = proof_with_jti("a", NOW);
    assert_eq!(cache.check_and_record(&a, NOW), Err(DpopError::Replayed));
    assert_eq!(cache.len(), 2);
}

#[test]
fn replay_cache_makes_room_as_entries_expire() {
    let mut cache = ReplayCache::new(2);
    let a = proof_with_jti("a", NOW);
    cache.check_and_record(&a, NOW).unwrap();
    cache
        .check_and_record(&proof_with_jti("b", NOW + 10), NOW + 10)
        .unwrap();
    let later = a.replay_until_s();
    let c = proof_with_jti("c", later);
    assert_eq!(cache.check_and_record(&c, later), Ok(()));
    assert_eq!(cache.len(), 2);
}

#[test]
fn replay_cache_of_capacity_zero_refuses_every_proof() {
    let mut cache = ReplayCache::new(0);
    assert_eq!(
        cache.check_and_record(&proof_with_jti("a", NOW), NOW),
        Err(DpopError::ReplayCacheFull)
    );
}
