//! Hot reload on a real file: a valid edit applies within 2 s; an invalid edit is refused with
//! file:line:column, counted, and the previous decisions stay.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use certbind_pdp::metrics::Metrics;
use certbind_pdp::reload::{POLL_INTERVAL, ReloadOutcome};
use certbind_pdp::{PolicyStore, decide};
use common::{policy_file, req};

const V1: &str = "rules:
  - id: read-orders
    effect: allow
    subjects: [spiffe://certbind.test/ns/demo/sa/consumer]
    audiences: [spiffe://certbind.test/ns/demo/sa/orders]
    methods: [GET]
    paths: [/orders]
";

fn allowed(store: &PolicyStore, method: &str) -> bool {
    decide(
        &store.current(),
        &req("consumer", method, "/orders", "orders", &[]),
        0,
    )
    .allow
}

/// Replaces the file the way editors and config managers do: write aside, then rename.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn valid_edit_is_applied_within_two_seconds() {
    let (_dir, path) = policy_file(V1);
    let store = Arc::new(PolicyStore::open(&path).unwrap());
    let metrics = Arc::new(Metrics::default());
    let watcher = tokio::spawn(Arc::clone(&store).watch(Arc::clone(&metrics), POLL_INTERVAL));
    assert!(allowed(&store, "GET"));
    assert!(!allowed(&store, "POST"));
    let old_version = store.current().version.clone();

    replace(&path, &V1.replace("[GET]", "[GET, POST]"));
    let started = Instant::now();
    while !allowed(&store, "POST") {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "edit not applied within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(store.current().version, old_version);
    assert_eq!(metrics.reloads(), (1, 0));

    // An in-place overwrite (no rename) is picked up too.
    std::fs::write(&path, V1.replace("[GET]", "[PUT]")).unwrap();
    let started = Instant::now();
    while allowed(&store, "GET") {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "overwrite not applied within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(allowed(&store, "PUT"));
    watcher.abort();
}

#[tokio::test]
async fn invalid_edit_is_refused_with_position_and_old_decisions_stay() {
    let (_dir, path) = policy_file(V1);
    let store = Arc::new(PolicyStore::open(&path).unwrap());
    let metrics = Arc::new(Metrics::default());
    let version = store.current().version.clone();

    replace(&path, &V1.replace("[GET]", "[GET, get]"));
    let outcome = store.poll_once(&metrics);
    let ReloadOutcome::Refused(e) = outcome else {
        panic!("an invalid edit was not refused: {outcome:?}");
    };
    let message = e.to_string();
    assert!(
        message.starts_with(&format!("{}:6:20: ", path.display())),
        "{message}"
    );
    assert_eq!(metrics.reloads(), (0, 1));
    assert_eq!(store.current().version, version);
    assert!(allowed(&store, "GET"));
    assert!(!allowed(&store, "POST"));

    // The same bad content is reported and counted once, not on every poll.
    assert_eq!(store.poll_once(&metrics), ReloadOutcome::Unchanged);
    assert_eq!(metrics.reloads(), (0, 1));

    // Unknown fields and YAML syntax errors are refused too.
    replace(
        &path,
        &V1.replace("effect: allow", "effect: allow\n    priority: 1"),
    );
    assert!(
        matches!(store.poll_once(&metrics), ReloadOutcome::Refused(e) if e.position.map(|p| p.0) == Some(4))
    );
    replace(&path, "rules: [\n");
    assert!(matches!(store.poll_once(&metrics), ReloadOutcome::Refused(e) if e.position.is_some()));
    assert_eq!(metrics.reloads(), (0, 3));
    assert!(allowed(&store, "GET"));

    // A fixed file applies.
    replace(&path, &V1.replace("[GET]", "[POST]"));
    assert!(matches!(
        store.poll_once(&metrics),
        ReloadOutcome::Applied { .. }
    ));
    assert!(allowed(&store, "POST"));
    assert!(!allowed(&store, "GET"));
    assert_eq!(metrics.reloads(), (1, 3));
}

#[test]
fn a_removed_file_keeps_the_policy_and_counts_one_failure() {
    let (_dir, path) = policy_file(V1);
    let store = PolicyStore::open(&path).unwrap();
    let metrics = Metrics::default();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        store.poll_once(&metrics),
        ReloadOutcome::Refused(_)
    ));
    assert_eq!(store.poll_once(&metrics), ReloadOutcome::Unchanged);
    assert_eq!(metrics.reloads(), (0, 1));
    assert!(allowed(&store, "GET"));
    // Restoring the same content changes nothing; new content applies.
    std::fs::write(&path, V1).unwrap();
    assert_eq!(store.poll_once(&metrics), ReloadOutcome::Unchanged);
    std::fs::write(&path, V1.replace("[GET]", "[POST]")).unwrap();
    assert!(matches!(
        store.poll_once(&metrics),
        ReloadOutcome::Applied { .. }
    ));
}

#[test]
fn an_invalid_file_at_startup_is_an_error_naming_the_position() {
    let (_dir, path) = policy_file(&V1.replace("/orders]", "orders]"));
    let e = PolicyStore::open(&path).unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(7), "{e}");
    assert!(e.to_string().contains("starts with `/`"), "{e}");
}
