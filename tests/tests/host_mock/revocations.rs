//! The revocation feed with several worker VMs: one VM follows the feed (a lease in shared
//! data), the others adopt the set it publishes; a lapsed lease is taken over; a silent
//! leader makes every VM stale together.

use super::crypto::fuel_profile;
use super::scenario::{Answer, Endpoint, Sidecar};
use serde_json::json;
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
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
        let token = sidecar
            .token(&pki.consumer)
            .jti(&format!("ok-{vm}"))
            .build();
        sidecar.request(&pki.consumer, &token).on_vm(vm).admitted();
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
        let token = sidecar
            .token(&pki.consumer)
            .jti(&format!("ok-{vm}"))
            .build();
        sidecar.request(&pki.consumer, &token).on_vm(vm).admitted();
    }
    assert_eq!(pollers(&sidecar).len(), 1);
    sidecar.assert_healthy();
}

#[test]
fn news_reaches_a_follower_with_traffic_before_its_next_tick() {
    let mut sidecar = two_vms();
    let pki = sidecar.pki.clone();
    let other = 1 - pollers(&sidecar)[0];
    // Without ticks the follower learns only on its requests' path (at most every 5 ms).
    sidecar.stop_ticks(other);
    sidecar.answer_pending(Endpoint::Revocations, Answer::json(200, delta(2, "stolen")));
    sidecar.advance(ms(5));
    let stolen = sidecar.token(&pki.consumer).jti("stolen").build();
    sidecar
        .request(&pki.consumer, &stolen)
        .on_vm(other)
        .answers(401, "revoked");
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
    let pki = sidecar.pki.clone();
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
    let meanwhile = sidecar.token(&pki.consumer).jti("meanwhile").build();
    sidecar
        .request(&pki.consumer, &meanwhile)
        .on_vm(other)
        .admitted();
    let late = r#"{"seq":2,"snapshot":true,"revocations":[{"seq":2,"kind":"jti","value":"late","expires_at":null}]}"#;
    sidecar.answer_pending(Endpoint::Revocations, Answer::json(200, late));
    let late = sidecar.token(&pki.consumer).jti("late").build();
    sidecar
        .request(&pki.consumer, &late)
        .on_vm(other)
        .answers(401, "revoked");
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

/// A full revocation set costs each VM's linear memory what the set holds plus the peak of
/// reading it (Wasm memory never shrinks): with 50,000 entries the two VMs (one follows the
/// feed, the other adopts the set it publishes) grew to 21.5 and 19.2 MiB, against 42.3 and
/// 47.7 MiB when the answer was read as a `Value` tree, a delta cloned the set and the
/// snapshot for shared data cloned every entry into a buffer grown by doubling. The snapshot
/// and the delta after it cost each VM 697 and 748 million Wasm instructions (1,064 and 1,226
/// million before): every change is still a whole read of the set by every other VM. Every VM
/// still enforces the set and the delta that fills it.
#[test]
fn a_full_revocation_set_stays_within_its_memory_budget() {
    const BUDGET: usize = 26 << 20;
    const WORK: u64 = 850_000_000;
    let mut sidecar = Sidecar::builder()
        .vms(2)
        .config(|c| c["revocation"] = json!({}))
        .start();
    let pki = sidecar.pki.clone();
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
    sidecar.answer_pending(
        Endpoint::Revocations,
        Answer::json(200, delta(n as u64 + 1, "later")),
    );
    sidecar.advance(ms(2_000));
    let work: Vec<u64> = sidecar
        .vms
        .iter_mut()
        .map(|vm| fuel_profile(&vm.host_mut().fuel_marks.take().unwrap_or_default()).0)
        .collect();
    eprintln!("Wasm instructions for the snapshot and the delta, by VM: {work:?}");
    assert!(
        work.iter().all(|w| *w <= WORK),
        "{work:?} Wasm instructions (budget {WORK} a VM)"
    );
    for vm in [0, 1] {
        for jti in ["stolen", "later"] {
            let revoked = sidecar.token(&pki.consumer).jti(jti).build();
            sidecar
                .request(&pki.consumer, &revoked)
                .on_vm(vm)
                .answers(401, "revoked");
        }
        let ok = sidecar
            .token(&pki.consumer)
            .jti(&format!("ok-{vm}"))
            .build();
        sidecar.request(&pki.consumer, &ok).on_vm(vm).admitted();
        let bytes = sidecar.vms[vm].memory_bytes();
        eprintln!("VM {vm}: linear memory {bytes} bytes");
        assert!(
            bytes <= BUDGET,
            "VM {vm}: {bytes} bytes of linear memory after a full set (budget {BUDGET})"
        );
    }
    sidecar.assert_healthy();
}
