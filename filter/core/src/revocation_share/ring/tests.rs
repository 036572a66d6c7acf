use super::*;
use crate::config::RevocationConfig;
use crate::shared::MemoryStore;
use crate::shared::tests::Refusing;

const LEADER: u64 = 7;

fn keys() -> Keys {
    Keys::new("authz", "/v1/revocations")
}

fn guard() -> RevocationGuard {
    let config: RevocationConfig = serde_json::from_str("{}").unwrap();
    RevocationGuard::new(config)
}

fn entry(seq: u64) -> String {
    format!(r#"{{"seq":{seq},"kind":"jti","value":"jti-{seq}","expires_at":null}}"#)
}

fn snapshot(seq: u64) -> String {
    let entries: Vec<String> = (1..=seq).map(entry).collect();
    format!(
        r#"{{"seq":{seq},"snapshot":true,"revocations":[{}]}}"#,
        entries.join(",")
    )
}

fn delta(seq: u64) -> String {
    format!(
        r#"{{"seq":{seq},"snapshot":false,"revocations":[{}]}}"#,
        entry(seq)
    )
}

/// A leader following the feed and publishing into one store.
struct Leader {
    copy: FeedCopy,
    publisher: Publisher,
    store: MemoryStore,
}

impl Leader {
    fn new() -> Self {
        let mut leader = Self {
            copy: FeedCopy::new(guard()),
            publisher: Publisher::default(),
            store: MemoryStore::default(),
        };
        leader.answer(&snapshot(1));
        leader
    }

    /// One feed answer, installed and published as the plugin does.
    fn answer(&mut self, body: &str) {
        let since = self.copy.guard().set().since();
        let is_delta = self
            .copy
            .guard_mut()
            .install(body.as_bytes(), 1_000)
            .unwrap();
        let installed = match since.filter(|_| is_delta) {
            Some(since) => Installed::Delta(Delta {
                since,
                answer: body.as_bytes(),
            }),
            None => Installed::Snapshot(body.as_bytes()),
        };
        assert!(self.publisher.publish(
            &mut self.store,
            &keys(),
            LEADER,
            &mut self.copy,
            Some(installed),
            1_000
        ));
    }

    fn state(&mut self) -> Published {
        let (value, _) = self.store.get(&keys().state).unwrap();
        Published::parse(&value).unwrap()
    }

    fn base(&mut self) -> Version {
        let (value, _) = self.store.get(&keys().set).unwrap();
        decode(&value).unwrap().0
    }
}

/// Another VM's copy.
struct Follower(FeedCopy);

impl Follower {
    fn new() -> Self {
        Self(FeedCopy::new(guard()))
    }

    fn catch_up(&mut self, leader: &mut Leader) -> Result<CaughtUp, CatchUpError> {
        let target = leader.state();
        self.0.catch_up(&mut leader.store, &keys(), target, 1_000)
    }

    fn holds_what(&self, leader: &Leader) -> bool {
        self.0.guard().set() == leader.copy.guard().set()
    }
}

#[test]
fn published_values_round_trip_and_garbage_is_not_read() {
    let to = Version {
        holder: 7,
        generation: 18,
    };
    let answer = br#"{"seq":5,"snapshot":false,"revocations":[]}"#;
    let d = Delta { since: 4, answer };
    let value = encode_delta(to, d).unwrap();
    assert_eq!(delta_to(&value, to), Some(d));
    for other in [(7, 2), (8, 18)] {
        let other = Version {
            holder: other.0,
            generation: other.1,
        };
        assert_eq!(delta_to(&value, other), None, "{other:?}");
    }
    // A base is no delta, even of the same version.
    assert_eq!(delta_to(&encode(to, None, answer), to), None);
    assert_eq!(
        decode(&encode(to, None, answer)),
        Some((to, None, &answer[..]))
    );
    for bad in [
        &b""[..],
        b"7.18 4",
        b"7:18 4\n{}",
        b"x.18 4\n{}",
        b"7.18.1 4\n{}",
        b"7.18 -4\n{}",
        b"7.18  4\n{}",
        b"7.18 4 5\n{}",
        b"\xff.18\n{}",
    ] {
        assert_eq!(decode(bad), None, "{bad:?}");
    }
    let big = vec![b' '; MAX_DELTA_BYTES + 1];
    assert!(
        encode_delta(
            to,
            Delta {
                since: 4,
                answer: &big
            }
        )
        .is_none()
    );
    let fits = &big[..MAX_DELTA_BYTES];
    assert!(
        encode_delta(
            to,
            Delta {
                since: 4,
                answer: fits
            }
        )
        .is_some()
    );
}

#[test]
fn deltas_are_taken_only_from_the_same_leader_and_not_too_far_behind() {
    let v = |holder, generation| Version { holder, generation };
    assert_eq!(delta_chain(Some(v(1, 3)), v(1, 4)), Some(4..=4));
    assert_eq!(
        delta_chain(Some(v(1, 3)), v(1, 3 + DELTA_SLOTS)),
        Some(4..=3 + DELTA_SLOTS)
    );
    for (adopted, target) in [
        (None, v(1, 1)),
        (Some(v(1, 3)), v(1, 4 + DELTA_SLOTS)),
        (Some(v(2, 3)), v(1, 4)),
        (Some(v(1, 3)), v(1, 3)),
        (Some(v(1, 5)), v(1, 4)),
    ] {
        assert_eq!(delta_chain(adopted, target), None, "{adopted:?} {target:?}");
    }
    let k = keys();
    let slots: std::collections::HashSet<String> =
        (4..4 + DELTA_SLOTS).map(|g| k.delta(g)).collect();
    assert_eq!(slots.len() as u64, DELTA_SLOTS);
    assert_eq!(k.delta(4), k.delta(4 + DELTA_SLOTS));
}

#[test]
fn a_follower_starts_from_the_base_then_takes_each_change_as_its_delta() {
    let mut leader = Leader::new();
    let mut follower = Follower::new();
    assert_eq!(follower.catch_up(&mut leader), Ok(CaughtUp::Base));
    assert!(follower.holds_what(&leader));
    assert!(follower.0.guard().is_synced());
    leader.answer(&delta(2));
    assert_eq!(follower.catch_up(&mut leader), Ok(CaughtUp::Deltas));
    // A burst of changes between two reads: every delta of it, in order.
    for seq in 3..=5 {
        leader.answer(&delta(seq));
    }
    assert_eq!(follower.catch_up(&mut leader), Ok(CaughtUp::Deltas));
    assert!(follower.holds_what(&leader));
    let published = leader.state().version;
    assert_eq!(follower.0.adopted, Some(published));
    assert_eq!(
        leader.copy.adopted,
        Some(published),
        "the leader's copy is at the version it published"
    );
    assert_eq!(leader.base().generation, 1, "the base was written once");
    // An empty delta (a heartbeat) is no new version.
    let before = leader.state().version;
    leader.answer(r#"{"seq":5,"snapshot":false,"revocations":[]}"#);
    assert_eq!(leader.state().version, before);
}

#[test]
fn the_base_is_rewritten_before_the_ring_would_lose_a_delta_after_it() {
    let mut leader = Leader::new();
    let mut near = Follower::new();
    let mut far = Follower::new();
    near.catch_up(&mut leader).unwrap();
    far.catch_up(&mut leader).unwrap();
    for seq in 2..=1 + DELTA_SLOTS {
        leader.answer(&delta(seq));
        assert_eq!(near.catch_up(&mut leader), Ok(CaughtUp::Deltas));
    }
    assert_eq!(leader.base().generation, 1);
    // One more change and the base at generation 1 would need a delta the ring overwrote.
    leader.answer(&delta(2 + DELTA_SLOTS));
    assert_eq!(leader.base().generation, 2 + DELTA_SLOTS);
    assert_eq!(near.catch_up(&mut leader), Ok(CaughtUp::Deltas));
    for seq in 3 + DELTA_SLOTS..=6 + DELTA_SLOTS {
        leader.answer(&delta(seq));
    }
    // 21 changes behind: the base and the four deltas after it.
    assert_eq!(far.catch_up(&mut leader), Ok(CaughtUp::Base));
    assert_eq!(far.0.adopted, Some(leader.state().version));
    assert!(far.holds_what(&leader));
    assert_eq!(near.catch_up(&mut leader), Ok(CaughtUp::Deltas));
    assert!(near.holds_what(&leader));
}

#[test]
fn a_change_that_cannot_go_out_as_a_delta_is_a_new_base() {
    let mut leader = Leader::new();
    let mut follower = Follower::new();
    follower.catch_up(&mut leader).unwrap();
    // A snapshot answer: it goes out as it came.
    leader.answer(&snapshot(3));
    assert_eq!(leader.base().generation, 2);
    let (value, _) = leader.store.get(&keys().set).unwrap();
    assert_eq!(decode(&value).unwrap().2, snapshot(3).as_bytes());
    assert_eq!(follower.catch_up(&mut leader), Ok(CaughtUp::Base));
    // A delta too large for the ring.
    let padded = delta(4).replace(
        "\"seq\":4,",
        &format!("\"seq\":4,{}", " ".repeat(MAX_DELTA_BYTES)),
    );
    leader.answer(&padded);
    assert_eq!(leader.base().generation, 3);
    assert_eq!(follower.catch_up(&mut leader), Ok(CaughtUp::Base));
    // After the lease changed hands: whatever the answer, a new base first.
    leader.publisher.reset();
    leader.answer(&delta(5));
    assert_eq!(leader.base().generation, 4);
    assert_eq!(follower.catch_up(&mut leader), Ok(CaughtUp::Base));
    assert!(follower.holds_what(&leader));
}

#[test]
fn a_delta_that_does_not_start_where_the_follower_stands_is_never_applied() {
    let mut leader = Leader::new();
    let mut follower = Follower::new();
    follower.catch_up(&mut leader).unwrap();
    leader.answer(&delta(2));
    // The slot is rewritten: same version, but asked from seq 0 and revoking something else.
    let to = leader.state().version;
    let forged = encode_delta(
        to,
        Delta {
            since: 0,
            answer: delta(2).replace("jti-2", "decoy").as_bytes(),
        },
    )
    .unwrap();
    leader
        .store
        .set(&keys().delta(to.generation), &forged, None)
        .unwrap();
    // The delta is refused, so the follower reads the base (generation 1), which leads to the
    // same forged delta: nothing is applied past what it can prove, and it is not caught up.
    let err = follower.catch_up(&mut leader).unwrap_err();
    assert_eq!(err, CatchUpError::Refused(FeedError::Sequence));
    assert_eq!(follower.0.adopted.map(|v| v.generation), Some(1));
    assert_eq!(follower.0.guard().set().since(), Some(1));
    // Not retried, and the leader's heartbeats no longer count for it.
    assert_eq!(follower.0.failed, Some(to));
    assert_eq!(follower.0.follow(Some(leader.state())), Follow::Nothing);
}

#[test]
fn a_version_whose_values_moved_on_is_missing_and_the_follower_keeps_what_it_reached() {
    let mut leader = Leader::new();
    let mut follower = Follower::new();
    follower.catch_up(&mut leader).unwrap();
    leader.answer(&delta(2));
    let target = leader.state();
    // The leader moves on while the follower reads: a new base, and the old slot rewritten.
    leader.answer(&snapshot(3));
    leader.publisher.reset();
    for seq in 4..=3 + DELTA_SLOTS {
        leader.answer(&delta(seq));
    }
    let heard = follower.0.guard().last_ok_ms();
    let gone = follower.0.catch_up(
        &mut leader.store,
        &keys(),
        Published {
            last_ok_ms: 9_999,
            ..target
        },
        1_000,
    );
    assert_eq!(gone, Err(CatchUpError::Missing));
    assert_eq!(follower.0.guard().last_ok_ms(), heard);
    // The newest version is there.
    assert_eq!(follower.catch_up(&mut leader), Ok(CaughtUp::Base));
    assert!(follower.holds_what(&leader));
}

#[test]
fn a_refused_write_announces_no_new_version() {
    let mut leader = Leader::new();
    let before = leader.state();
    let mut copy = FeedCopy::new(guard());
    copy.guard_mut()
        .install(snapshot(4).as_bytes(), 2_000)
        .unwrap();
    let mut publisher = leader.publisher.clone();
    assert!(!publisher.publish(&mut Refusing, &keys(), LEADER, &mut copy, None, 2_000));
    assert_eq!(publisher, leader.publisher);
    assert_eq!(copy.adopted, None);
    assert_eq!(leader.state(), before);
    // Nothing to publish before a snapshot.
    let mut empty = FeedCopy::new(guard());
    assert!(!Publisher::default().publish(&mut leader.store, &keys(), LEADER, &mut empty, None, 1));
}

/// A leader and three followers through 3,000 random steps: changes as deltas (some naming
/// keys already held), deltas too large for the ring, snapshots, heartbeats, the lease
/// changing hands, and followers reading at random moments (one of them seldom). Whenever a follower catches up
/// with a version, its set is the one the leader had when it published that version, and it
/// never fails: no delta is skipped or applied twice, and the base is always in reach.
#[test]
fn followers_reading_at_random_moments_always_hold_what_the_leader_published() {
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let entry = |seq: u64, jti: u64| {
        format!(r#"{{"seq":{seq},"kind":"jti","value":"jti-{jti}","expires_at":null}}"#)
    };
    let mut leader = Leader::new();
    let mut followers: Vec<Follower> = (0..3).map(|_| Follower::new()).collect();
    // What the feed holds: jti -> the seq of its newest entry (`Leader::new` sent seq 1).
    let mut feed = std::collections::BTreeMap::from([(1, 1)]);
    let mut history = std::collections::HashMap::new();
    let mut seq = 1;
    let (mut by_deltas, mut by_base) = (0, 0);
    for _ in 0..3_000 {
        history.insert(leader.state().version, leader.copy.guard().set().clone());
        match next(20) {
            0..=11 => {
                let mut entries = Vec::new();
                for _ in 0..=next(3) {
                    seq += 1;
                    // Now and then a key already held again (the later entry replaces it).
                    let jti = if next(4) == 0 { 1 + next(seq - 1) } else { seq };
                    feed.insert(jti, seq);
                    entries.push(entry(seq, jti));
                }
                let pad = if next(40) == 0 {
                    " ".repeat(MAX_DELTA_BYTES)
                } else {
                    String::new()
                };
                leader.answer(&format!(
                    r#"{{"seq":{seq},"snapshot":false,{pad}"revocations":[{}]}}"#,
                    entries.join(",")
                ));
            }
            12 => leader.answer(&format!(
                r#"{{"seq":{seq},"snapshot":false,"revocations":[]}}"#
            )),
            13 if next(3) == 0 => {
                seq += 1;
                feed.insert(seq, seq);
                let mut all: Vec<(u64, u64)> = feed.iter().map(|(j, s)| (*s, *j)).collect();
                all.sort_unstable();
                let all: Vec<String> = all.into_iter().map(|(s, j)| entry(s, j)).collect();
                leader.answer(&format!(
                    r#"{{"seq":{seq},"snapshot":true,"revocations":[{}]}}"#,
                    all.join(",")
                ));
            }
            13 => leader.publisher.reset(),
            _ => {
                let i = next(3) as usize;
                // The third follower reads seldom, so it falls further behind than the ring.
                if i == 2 && next(12) != 0 {
                    continue;
                }
                let target = leader.state();
                if followers[i].0.follow(Some(target)) == Follow::Adopt(target) {
                    match followers[i].catch_up(&mut leader) {
                        Ok(CaughtUp::Deltas) => by_deltas += 1,
                        Ok(CaughtUp::Base) => by_base += 1,
                        Err(e) => panic!("follower {i} to {target:?}: {e}"),
                    }
                    assert!(
                        Some(followers[i].0.guard().set()) == history.get(&target.version),
                        "follower {i} at {target:?}"
                    );
                }
            }
        }
    }
    eprintln!("caught up {by_deltas} times by deltas, {by_base} times by a base");
    assert!(
        by_deltas > 100 && by_base > 30,
        "{by_deltas} by deltas, {by_base} by a base"
    );
}
