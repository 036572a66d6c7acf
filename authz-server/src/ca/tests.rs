//! Unit tests of the internal CA (ca/): profiles, lifetimes, keeping and replacing files.
use super::*;
use crate::x509::not_after;
use std::os::unix::fs::PermissionsExt;

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[test]
fn workload_names_must_be_one_spiffe_path_segment() {
    assert_eq!(
        workload_id("consumer").unwrap().as_str(),
        "spiffe://certbind.test/ns/demo/sa/consumer"
    );
    for bad in ["", "a/b", "..", ".", "a b", "ü", "x?y"] {
        assert!(workload_id(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn init_writes_a_verifiable_leaf_per_workload_with_private_keys() {
    let dir = tempfile::tempdir().unwrap();
    let report = init(dir.path(), &["consumer", "orders"], 1, false, now()).unwrap();
    assert_eq!(report.ca, Outcome::Created);
    let ca = read_cert_der(&dir.path().join("ca.crt")).unwrap();
    for name in ["consumer", "orders"] {
        let leaf = read_cert_der(&dir.path().join(format!("{name}.crt"))).unwrap();
        assert!(ca_verifies_leaf(&ca, &leaf, now()));
        assert_eq!(
            SpiffeId::from_cert_der(&leaf).unwrap(),
            workload_id(name).unwrap()
        );
        let mode = std::fs::metadata(dir.path().join(format!("{name}.key")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn a_leaf_from_another_ca_does_not_verify() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    init(a.path(), &["consumer"], 1, false, now()).unwrap();
    init(b.path(), &["consumer"], 1, false, now()).unwrap();
    let ca_a = read_cert_der(&a.path().join("ca.crt")).unwrap();
    let leaf_b = read_cert_der(&b.path().join("consumer.crt")).unwrap();
    assert!(!ca_verifies_leaf(&ca_a, &leaf_b, now()));
}

#[test]
fn leaves_expire_after_the_requested_days_and_never_outlive_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let t = now();
    init(dir.path(), &["consumer"], 1, false, t).unwrap();
    let ca = read_cert_der(&dir.path().join("ca.crt")).unwrap();
    let leaf = read_cert_der(&dir.path().join("consumer.crt")).unwrap();
    assert!(ca_verifies_leaf(&ca, &leaf, t + time::Duration::hours(23)));
    assert!(!ca_verifies_leaf(&ca, &leaf, t + time::Duration::hours(25)));
    // Asking for 30 days from a 1-day CA still yields a leaf that ends with the CA.
    issue(dir.path(), "extra", 30, t).unwrap();
    let extra = read_cert_der(&dir.path().join("extra.crt")).unwrap();
    let cert = Certificate::from_der(&extra).unwrap();
    let ca_cert = Certificate::from_der(&ca).unwrap();
    assert!(not_after(&cert).unwrap() <= not_after(&ca_cert).unwrap());
}

#[test]
fn issue_refuses_bad_names_days_and_a_missing_ca() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        issue(dir.path(), "x", 1, now()),
        Err(CaError::NoCa(_))
    ));
    init(dir.path(), &[], 1, false, now()).unwrap();
    assert!(matches!(
        issue(dir.path(), "../x", 1, now()),
        Err(CaError::BadName(_))
    ));
    assert!(matches!(
        issue(dir.path(), "x", 0, now()),
        Err(CaError::BadDays)
    ));
    assert!(issue(dir.path(), "x", 1, now()).is_ok());
}

#[test]
fn init_replaces_a_leaf_whose_key_no_longer_matches() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &["consumer", "orders"], 1, false, now()).unwrap();
    std::fs::copy(
        dir.path().join("orders.key"),
        dir.path().join("consumer.key"),
    )
    .unwrap();
    let report = init(dir.path(), &["consumer", "orders"], 1, false, now()).unwrap();
    assert_eq!(report.ca, Outcome::Kept);
    assert_eq!(
        report.leaves,
        vec![
            ("consumer".to_owned(), Outcome::Created),
            ("orders".to_owned(), Outcome::Kept)
        ]
    );
}

#[test]
fn a_leaf_posing_as_the_ca_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &["consumer"], 1, false, now()).unwrap();
    std::fs::copy(dir.path().join("consumer.crt"), dir.path().join("ca.crt")).unwrap();
    std::fs::copy(dir.path().join("consumer.key"), dir.path().join("ca.key")).unwrap();
    let report = init(dir.path(), &["consumer"], 1, false, now()).unwrap();
    assert_eq!(report.ca, Outcome::Created);
}

#[test]
fn an_expiring_ca_is_replaced_together_with_its_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let t = now();
    init(dir.path(), &["consumer"], 1, false, t).unwrap();
    let later = t + time::Duration::days(i64::from(DEFAULT_CA_DAYS)) - time::Duration::minutes(30);
    let report = init(dir.path(), &["consumer"], 1, false, later).unwrap();
    assert_eq!(report.ca, Outcome::Created);
    assert_eq!(report.leaves[0].1, Outcome::Created);
}

#[test]
fn rotate_reissues_each_leaf_with_a_new_key_and_serial_from_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &["consumer", "orders"], 1, false, now()).unwrap();
    let ca = read_cert_der(&dir.path().join("ca.crt")).unwrap();
    let old_key = std::fs::read(dir.path().join("consumer.key")).unwrap();
    let old_serial = serial_hex(&dir.path().join("consumer.crt")).unwrap();
    let orders_before = std::fs::read(dir.path().join("orders.crt")).unwrap();
    let rotated = rotate(dir.path(), &["consumer"], 1, now()).unwrap();
    assert_eq!(rotated.len(), 1);
    let new_serial = serial_hex(&dir.path().join("consumer.crt")).unwrap();
    assert_eq!(rotated[0], ("consumer".to_owned(), new_serial.clone()));
    assert_ne!(old_serial, new_serial);
    assert_ne!(
        old_key,
        std::fs::read(dir.path().join("consumer.key")).unwrap()
    );
    let leaf = read_cert_der(&dir.path().join("consumer.crt")).unwrap();
    assert!(ca_verifies_leaf(&ca, &leaf, now()));
    assert_eq!(
        read_cert_der(&dir.path().join("ca.crt")).unwrap(),
        ca,
        "the CA stays"
    );
    // Only the named leaf changes, and the new pair matches.
    assert_eq!(
        orders_before,
        std::fs::read(dir.path().join("orders.crt")).unwrap()
    );
    let report = init(dir.path(), &["consumer", "orders"], 1, false, now()).unwrap();
    assert!(report.leaves.iter().all(|(_, o)| *o == Outcome::Kept));
}

#[test]
fn rotate_refuses_a_missing_ca_and_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        rotate(dir.path(), &["consumer"], 1, now()),
        Err(CaError::NoCa(_))
    ));
    init(dir.path(), &["consumer"], 1, false, now()).unwrap();
    assert!(matches!(
        rotate(dir.path(), &["../consumer"], 1, now()),
        Err(CaError::BadName(_))
    ));
}

#[test]
fn init_writes_an_sds_secret_per_leaf_and_for_the_ca_with_absolute_paths() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &["orders"], 1, false, now()).unwrap();
    let abs = std::fs::canonicalize(dir.path()).unwrap();
    let orders = std::fs::read_to_string(dir.path().join("sds/orders.yaml")).unwrap();
    assert!(orders.contains("name: orders\n"), "{orders}");
    assert!(
        orders.contains(&format!(
            "certificate_chain: {{ filename: \"{}/orders.crt\" }}",
            abs.display()
        )),
        "{orders}"
    );
    assert!(orders.contains(&format!(
        "private_key: {{ filename: \"{}/orders.key\" }}",
        abs.display()
    )));
    assert!(orders.contains(&format!(
        "watched_directory: {{ path: \"{}\" }}",
        abs.display()
    )));
    let ca = std::fs::read_to_string(dir.path().join("sds/ca.yaml")).unwrap();
    assert!(ca.contains("name: ca\n"), "{ca}");
    assert!(ca.contains(&format!(
        "trusted_ca: {{ filename: \"{}/ca.crt\" }}",
        abs.display()
    )));
}

#[test]
fn init_replaces_a_client_leaf_that_carries_a_server_profile() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &["consumer", "authz"], 1, false, now()).unwrap();
    // An older `pki init` gave every workload serverAuth: simulate it with authz's pair.
    let ca = LoadedCa::load(dir.path(), now()).unwrap();
    let id = workload_id("consumer").unwrap();
    let server = Profile::Server { extra_dns: vec![] };
    ca.issue_leaf(
        dir.path(),
        "consumer",
        &id,
        &server,
        time::Duration::days(1),
        now(),
    )
    .unwrap();
    let report = init(dir.path(), &["consumer", "authz"], 1, false, now()).unwrap();
    assert_eq!(
        report.leaves,
        vec![
            ("consumer".to_owned(), Outcome::Created),
            ("authz".to_owned(), Outcome::Kept)
        ]
    );
}
