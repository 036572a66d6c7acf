//! The revocation feed with several worker VMs: one VM follows the feed (a lease in shared
//! data), the others adopt the set it publishes; a lapsed lease is taken over; a silent
//! leader makes every VM stale together.

use super::crypto::fuel_profile;
use super::scenario::{Answer, Endpoint, Request, Sidecar};
use serde_json::json;
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The consumer's request with a token whose `jti` is `jti`, on VM `vm` and its plugin
/// configuration (root context) `root`.
fn with_jti<'a>(sidecar: &'a mut Sidecar, vm: usize, root: u32, jti: &str) -> Request<'a> {
    let pki = sidecar.pki.clone();
    let token = sidecar.token(&pki.consumer).jti(jti).build();
    sidecar
        .request(&pki.consumer, &token)
        .on_vm(vm)
        .on_root(root)
}

const EMPTY_SNAPSHOT: &str = r#"{"seq":1,"snapshot":true,"revocations":[]}"#;

fn delta(seq: u64, jti: &str) -> String {
    format!(
        r#"{{"seq":{seq},"snapshot":false,"revocations":[{{"seq":{seq},"kind":"jti","value":"{jti}","expires_at":null}}]}}"#
    )
}

/// Two worker VMs following a feed whose first snapshot is empty; the long-poll after it
/// stays open until the test answers it.
fn two_vms() -> Sidecar {
    let mut sidecar = Sidecar::builder()
        .vms(2)
        .config(|c| c["revocation"] = json!({}))
        .start();
    sidecar.answer_pending(Endpoint::Revocations, Answer::json(200, EMPTY_SNAPSHOT));
    sidecar.advance(ms(200));
    sidecar
}

/// The VMs that polled the feed, in call order, deduplicated.
fn pollers(sidecar: &Sidecar) -> Vec<usize> {
    let mut vms: Vec<usize> = sidecar
        .calls_for(Endpoint::Revocations)
        .iter()
        .map(|d| d.vm)
        .collect();
    vms.dedup();
    vms
}

#[test]
fn one_worker_vm_follows_the_feed_and_the_other_enforces_what_it_publishes() {
    let mut sidecar = two_vms();
    let pki = sidecar.pki.clone();
    sidecar.advance(ms(5_000));
    let polls = sidecar.calls_for(Endpoint::Revocations).len();
    assert_eq!(polls, 2, "a snapshot and one open long-poll, for both VMs");
    assert_eq!(pollers(&sidecar).len(), 1, "one VM polls");
    assert_eq!(sidecar.pending_calls(Endpoint::Revocations), 1);
    for vm in [0, 1] {
        with_jti(&mut sidecar, vm, 1, &format!("ok-{vm}")).admitted();
    }
    // News on the long-poll reaches the VM that does not poll on its next tick (100 ms).
    sidecar.answer_pending(Endpoint::Revocations, Answer::json(200, delta(2, "stolen")));
    sidecar.advance(ms(100));
    let stolen = sidecar.token(&pki.consumer).jti("stolen").build();
    for vm in [0, 1] {
        sidecar
            .request(&pki.consumer, &stolen)
            .on_vm(vm)
            .answers(401, "revoked");
        with_jti(&mut sidecar, vm, 1, &format!("ok-{vm}")).admitted();
    }
    assert_eq!(pollers(&sidecar).len(), 1);
    sidecar.assert_healthy();
}

#[test]
fn news_reaches_a_follower_with_traffic_before_its_next_tick() {
    let mut sidecar = two_vms();
    let other = 1 - pollers(&sidecar)[0];
    // Without ticks the follower learns only on its requests' path (at most every 5 ms).
    sidecar.stop_ticks(other);
    sidecar.answer_pending(Endpoint::Revocations, Answer::json(200, delta(2, "stolen")));
    sidecar.advance(ms(5));
    with_jti(&mut sidecar, other, 1, "stolen").answers(401, "revoked");
    sidecar.assert_healthy();
}

#[test]
fn a_request_on_the_other_vm_waits_for_the_first_published_set() {
    let mut sidecar = Sidecar::builder()
        .vms(2)
        .config(|c| c["revocation"] = json!({}))
        .start();
    let pki = sidecar.pki.clone();
    let leader = pollers(&sidecar)[0];
    let token = sidecar.token(&pki.consumer).build();
    let mut ex = sidecar
        .request(&pki.consumer, &token)
        .on_vm(1 - leader)
        .send();
    sidecar.verdict(&mut ex).stays_paused();
    sidecar.answer_pending(Endpoint::Revocations, Answer::json(200, EMPTY_SNAPSHOT));
    sidecar.advance(ms(100));
    sidecar.verdict(&mut ex).admitted();
    sidecar.assert_healthy();
}

#[test]
fn a_lapsed_lease_is_taken_over_with_a_snapshot_while_the_adopted_set_holds() {
    let mut sidecar = two_vms();
    let leader = pollers(&sidecar)[0];
    let other = 1 - leader;
    sidecar.stop_ticks(leader);
    sidecar.advance(ms(3_500));
    let calls = sidecar.calls_for(Endpoint::Revocations);
    let taken = calls.last().expect("a poll");
    assert_eq!(taken.vm, other, "the other VM took the feed over");
    assert_eq!(
        taken.call.headers.get_str(":path").as_deref(),
        Some("/v1/revocations"),
        "a snapshot (answered at once), not a long-poll that would delay the heartbeat"
    );
    // Until it arrives the set already adopted is enforced.
    with_jti(&mut sidecar, other, 1, "meanwhile").admitted();
    let late = r#"{"seq":2,"snapshot":true,"revocations":[{"seq":2,"kind":"jti","value":"late","expires_at":null}]}"#;
    sidecar.answer_pending(Endpoint::Revocations, Answer::json(200, late));
    with_jti(&mut sidecar, other, 1, "late").answers(401, "revoked");
    let next = sidecar.calls_for(Endpoint::Revocations);
    assert_eq!(
        next.last()
            .and_then(|d| d.call.headers.get_str(":path"))
            .as_deref(),
        Some("/v1/revocations?since=2"),
        "then it long-polls from the snapshot's seq"
    );
    sidecar.assert_healthy();
}

#[test]
fn a_silent_leader_makes_every_vm_stale_and_its_next_answer_revives_them() {
    let mut sidecar = two_vms();
    let pki = sidecar.pki.clone();
    let other = 1 - pollers(&sidecar)[0];
    let token = sidecar.token(&pki.consumer).build();
    // The long-poll hangs: no heartbeat for longer than max_staleness_s (30 s).
    sidecar.advance(ms(30_500));
    sidecar
        .request(&pki.consumer, &token)
        .on_vm(other)
        .answers(503, "revocation_unavailable");
    // The poll times out at 35 s and is retried; an empty delta is the heartbeat.
    sidecar.advance(ms(5_000));
    sidecar.answer_pending(
        Endpoint::Revocations,
        Answer::json(200, r#"{"seq":1,"snapshot":false,"revocations":[]}"#),
    );
    sidecar.advance(ms(100));
    sidecar
        .request(&pki.consumer, &token)
        .on_vm(other)
        .admitted();
    sidecar.assert_healthy();
}

/// A snapshot of `n` jti entries (22 characters, as the authz-server's), the last one `last`.
fn full_snapshot(n: usize, last: &str) -> String {
    let entry = |seq: usize, jti: &str| {
        format!(r#"{{"seq":{seq},"kind":"jti","value":"{jti}","expires_at":4000000000}}"#)
    };
    let mut entries: Vec<String> = (1..n).map(|i| entry(i, &format!("{i:0>22}"))).collect();
    entries.push(entry(n, last));
    format!(
        r#"{{"seq":{n},"snapshot":true,"revocations":[{}]}}"#,
        entries.join(",")
    )
}

/// The Wasm instructions each VM ran since the last call (marks armed on every VM).
fn work_by_vm(sidecar: &mut Sidecar) -> Vec<u64> {
    sidecar
        .vms
        .iter_mut()
        .map(|vm| {
            fuel_profile(
                &vm.host_mut()
                    .fuel_marks
                    .replace(Vec::new())
                    .unwrap_or_default(),
            )
            .0
        })
        .collect()
}

/// A full revocation set costs each VM's linear memory what the set holds plus the peak of
/// reading it (Wasm memory never shrinks): with 50,000 entries the two VMs (one follows the
/// feed, the other adopts the set it publishes) grew to 15.6 MiB each, against 42.3 and
/// 47.7 MiB when the answer was read as a `Value` tree, a delta cloned the set and the
/// snapshot for shared data cloned every entry into a buffer grown by doubling, and 21.5 and
/// 19.2 MiB while the leader wrote the set out for the others. The snapshot costs the VMs 347
/// and 342 million Wasm instructions (548 while the leader wrote it out; it now passes the
/// feed's own JSON on). One change after it costs 53 and 290 thousand: the leader publishes
/// the delta and the follower applies it, where both used to handle the whole set again (203
/// and ~350 million). Every VM still enforces the set and the delta that fills it.
#[test]
fn a_full_revocation_set_stays_within_its_memory_budget() {
    const BUDGET: usize = 18 << 20;
    const SNAPSHOT_WORK: u64 = 400_000_000;
    const CHANGE_WORK: u64 = 1_000_000;
    let mut sidecar = Sidecar::builder()
        .vms(2)
        .config(|c| c["revocation"] = json!({}))
        .start();
    let leader = pollers(&sidecar)[0];
    for vm in &mut sidecar.vms {
        vm.host_mut().fuel_marks = Some(Vec::new());
    }
    // One entry short of the most a set holds: the delta after it fills the set.
    let n = certbind_core::revocation::MAX_REVOCATIONS - 1;
    sidecar.answer_pending(
        Endpoint::Revocations,
        Answer::json(200, full_snapshot(n, "stolen")),
    );
    sidecar.advance(ms(2_000));
    let snapshot = work_by_vm(&mut sidecar);
    sidecar.answer_pending(
        Endpoint::Revocations,
        Answer::json(200, delta(n as u64 + 1, "later")),
    );
    sidecar.advance(ms(2_000));
    let change = work_by_vm(&mut sidecar);
    eprintln!(
        "Wasm instructions by VM (leader {leader}): snapshot {snapshot:?}, one change {change:?}"
    );
    assert!(
        snapshot.iter().all(|w| *w <= SNAPSHOT_WORK),
        "{snapshot:?} Wasm instructions for the snapshot (budget {SNAPSHOT_WORK} a VM)"
    );
    assert!(
        change.iter().all(|w| *w <= CHANGE_WORK),
        "{change:?} Wasm instructions for one change (budget {CHANGE_WORK} a VM)"
    );
    assert_eq!(sidecar.counter(ADOPTED_DELTA), 1);
    assert_eq!(sidecar.counter(ADOPTED_SET), 1, "the snapshot");
    for vm in [0, 1] {
        for jti in ["stolen", "later"] {
            with_jti(&mut sidecar, vm, 1, jti).answers(401, "revoked");
        }
        with_jti(&mut sidecar, vm, 1, &format!("ok-{vm}")).admitted();
        let bytes = sidecar.vms[vm].memory_bytes();
        eprintln!("VM {vm}: linear memory {bytes} bytes");
        assert!(
            bytes <= BUDGET,
            "VM {vm}: {bytes} bytes of linear memory after a full set (budget {BUDGET})"
        );
    }
    sidecar.assert_healthy();
}

const ADOPTED_DELTA: &str = "certbind.revocation.adopted_delta";
const ADOPTED_SET: &str = "certbind.revocation.adopted_set";

/// A follower that misses a burst of changes between two reads applies every delta of it, in
/// order; one that stayed away for longer than the ring of deltas covers reads the whole set
/// (the newest base, and the deltas after it).
/// Either way it then refuses every revoked token and admits others.
#[test]
fn a_follower_behind_by_a_few_changes_applies_their_deltas_and_further_behind_reads_the_set() {
    let mut sidecar = two_vms();
    let other = 1 - pollers(&sidecar)[0];
    sidecar.stop_ticks(other);
    let before = (sidecar.counter(ADOPTED_DELTA), sidecar.counter(ADOPTED_SET));
    // Three changes, each answered at once: the follower reads none of them until a request.
    for seq in 2..=4 {
        sidecar.answer_pending(
            Endpoint::Revocations,
            Answer::json(200, delta(seq, &format!("burst-{seq}"))),
        );
    }
    sidecar.advance(ms(5));
    with_jti(&mut sidecar, other, 1, "ok-1").admitted();
    assert_eq!(
        (sidecar.counter(ADOPTED_DELTA), sidecar.counter(ADOPTED_SET)),
        (before.0 + 1, before.1),
        "caught up by the three deltas, the set not read"
    );
    // More changes than the ring keeps: the whole set.
    let behind = certbind_core::revocation_share::DELTA_SLOTS + 1;
    for seq in 5..5 + behind {
        sidecar.answer_pending(
            Endpoint::Revocations,
            Answer::json(200, delta(seq, &format!("burst-{seq}"))),
        );
    }
    sidecar.advance(ms(5));
    with_jti(&mut sidecar, other, 1, "ok-2").admitted();
    assert_eq!(
        (sidecar.counter(ADOPTED_DELTA), sidecar.counter(ADOPTED_SET)),
        (before.0 + 1, before.1 + 1),
        "too far behind for the deltas: the whole set once"
    );
    for seq in [2, 4, 5, 4 + behind] {
        with_jti(&mut sidecar, other, 1, &format!("burst-{seq}")).answers(401, "revoked");
    }
    sidecar.assert_healthy();
}

/// A delta is applied only onto the set it was asked from. Here the newest slot is rewritten
/// (as a corrupt slot would be) with a delta asked from an older `seq` that names a decoy:
/// the follower applies nothing past what it can prove, and since its set stays behind what
/// the leader announced, the leader's heartbeats no longer keep it fresh: it fails closed at
/// the staleness bound. The leader's next new base heals it.
#[test]
fn a_delta_that_does_not_start_where_the_follower_stands_is_not_applied() {
    let mut sidecar = two_vms();
    let leader = pollers(&sidecar)[0];
    let other = 1 - leader;
    sidecar.stop_ticks(other);
    sidecar.answer_pending(Endpoint::Revocations, Answer::json(200, delta(2, "first")));
    sidecar.advance(ms(5));
    with_jti(&mut sidecar, other, 1, "ok-1").admitted();
    sidecar.answer_pending(Endpoint::Revocations, Answer::json(200, delta(3, "second")));
    let (slot, (value, _)) = sidecar
        .shared
        .data
        .iter_mut()
        .filter(|(k, _)| k.starts_with("certbind.revocation.delta.v2:"))
        .max_by_key(|(_, (_, cas))| *cas)
        .expect("a published delta");
    let version = String::from_utf8_lossy(value)
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    eprintln!("rewriting {slot} ({version})");
    *value = format!("{version} 1\n{}", delta(3, "decoy")).into_bytes();
    sidecar.advance(ms(5));
    with_jti(&mut sidecar, other, 1, "decoy").admitted();
    assert!(
        sidecar
            .logs()
            .iter()
            .any(|l| l.contains("published revocation set not adopted")),
        "{:#?}",
        sidecar.logs()
    );
    // The leader keeps hearing the feed; the follower, behind it, goes stale all the same.
    let heartbeat = r#"{"seq":3,"snapshot":false,"revocations":[]}"#;
    for _ in 0..2 {
        sidecar.advance(ms(16_000));
        sidecar.answer_pending(Endpoint::Revocations, Answer::json(200, heartbeat));
    }
    with_jti(&mut sidecar, other, 1, "ok-2").answers(503, "revocation_unavailable");
    with_jti(&mut sidecar, leader, 1, "ok-3").admitted();
    // The next change that is a snapshot is published as a new base: the follower catches up.
    let snapshot = r#"{"seq":4,"snapshot":true,"revocations":[{"seq":2,"kind":"jti","value":"first","expires_at":null},{"seq":3,"kind":"jti","value":"second","expires_at":null},{"seq":4,"kind":"jti","value":"third","expires_at":null}]}"#;
    sidecar.answer_pending(Endpoint::Revocations, Answer::json(200, snapshot));
    sidecar.advance(ms(5));
    with_jti(&mut sidecar, other, 1, "second").answers(401, "revoked");
    with_jti(&mut sidecar, other, 1, "ok-4").admitted();
    sidecar.assert_healthy();
}

/// The sidecar's three plugin configurations share each worker VM (one `vm_id`), and on the
/// same feed with the same settings they share one copy of the set: a full list costs a VM
/// what it costs with one configuration, the follower VM reads the set once and each change
/// once, and every configuration of every VM enforces it. Without sharing the five other
/// root contexts each read the set (and every change): the snapshot cost the two VMs 1,228
/// and 1,026 million Wasm instructions against 548 and 342 million then (347 and 343 now),
/// and the leader's VM 26.3 MiB of linear memory against 21.5 (15.6 now). When the
/// configuration that follows the feed goes away, the set stays with the others and one of
/// them takes the feed over.
#[test]
fn the_plugin_configurations_of_a_vm_share_one_revocation_set() {
    const BUDGET: usize = 18 << 20;
    let mut sidecar = Sidecar::builder()
        .vms(2)
        .plugins(3)
        .config(|c| c["revocation"] = json!({}))
        .start();
    let first = sidecar.calls_for(Endpoint::Revocations)[0];
    let (leader, leading_root) = (first.vm, first.call.from_context);
    let n = certbind_core::revocation::MAX_REVOCATIONS - 1;
    for vm in &mut sidecar.vms {
        vm.host_mut().fuel_marks = Some(Vec::new());
    }
    sidecar.answer_pending(
        Endpoint::Revocations,
        Answer::json(200, full_snapshot(n, "stolen")),
    );
    sidecar.advance(ms(2_000));
    let work = work_by_vm(&mut sidecar);
    eprintln!("Wasm instructions for the snapshot by VM (3 plugin configurations): {work:?}");
    assert!(
        work.iter().all(|w| *w <= 400_000_000),
        "{work:?}: as much as with one configuration (400 million a VM)"
    );
    for vm in &mut sidecar.vms {
        vm.host_mut().fuel_marks = None;
    }
    assert_eq!(
        (sidecar.counter(ADOPTED_SET), sidecar.counter(ADOPTED_DELTA)),
        (1, 0),
        "one read of the set: the follower VM's, for its three configurations"
    );
    sidecar.answer_pending(
        Endpoint::Revocations,
        Answer::json(200, delta(n as u64 + 1, "later")),
    );
    sidecar.advance(ms(2_000));
    assert_eq!(
        (sidecar.counter(ADOPTED_SET), sidecar.counter(ADOPTED_DELTA)),
        (1, 1)
    );
    let polls = sidecar.calls_for(Endpoint::Revocations).len();
    assert_eq!(polls, 3, "one root context of one VM polls");
    for vm in [0, 1] {
        for root in 1..=3 {
            for jti in ["stolen", "later"] {
                with_jti(&mut sidecar, vm, root, jti).answers(401, "revoked");
            }
            with_jti(&mut sidecar, vm, root, &format!("ok-{vm}-{root}")).admitted();
        }
        let bytes = sidecar.vms[vm].memory_bytes();
        eprintln!("VM {vm} (3 plugin configurations): linear memory {bytes} bytes");
        assert!(
            bytes <= BUDGET,
            "VM {vm}: {bytes} bytes of linear memory after a full set (budget {BUDGET})"
        );
    }
    // The configuration that follows the feed goes away; the set stays in force.
    sidecar.remove_root(leading_root);
    let others: Vec<u32> = (1..=3).filter(|r| *r != leading_root).collect();
    sidecar.advance(ms(3_500));
    let taken = sidecar.calls_for(Endpoint::Revocations);
    let taken = taken.last().expect("a poll");
    assert!(
        others.contains(&taken.call.from_context),
        "another configuration took it over"
    );
    eprintln!(
        "the feed moved from VM {leader} root {leading_root} to VM {} root {}",
        taken.vm, taken.call.from_context
    );
    for vm in [0, 1] {
        for root in &others {
            with_jti(&mut sidecar, vm, *root, "stolen").answers(401, "revoked");
        }
    }
    let fresh = r#"{"seq":60000,"snapshot":true,"revocations":[{"seq":60000,"kind":"jti","value":"after","expires_at":null}]}"#;
    sidecar.answer_pending(Endpoint::Revocations, Answer::json(200, fresh));
    sidecar.advance(ms(200));
    for vm in [0, 1] {
        for root in &others {
            with_jti(&mut sidecar, vm, *root, "after").answers(401, "revoked");
        }
    }
    sidecar.assert_healthy();
}
