//! Posture reports through `app(state)` without sockets: a non-compliant report bans the
//! subject through the revocation store until an operator lifts it, and the watchdog bans
//! required subjects whose reports stop.
// Helpers here run only inside tests: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::http::StatusCode;
use certbind_authz::app::AppState;
use common::{Answer, FORM, JSON, ORDERS, Pki, active, admin, call, state, token_body, token_for};
use std::sync::Arc;
use std::time::{Duration, Instant};

const INVENTORY: &str = "spiffe://certbind.test/ns/demo/sa/inventory";

fn with_posture(mut st: AppState, yaml: &str) -> AppState {
    st.posture = Some(Arc::new(
        certbind_authz::posture::Policy::from_yaml(yaml).unwrap(),
    ));
    st
}

const POSTURE: &str =
    "rules: {require_firewall: true, forbid_blocked_processes: true, max_os_patch_age_days: 30}\n";

async fn report(st: &AppState, der: Option<&[u8]>, body: serde_json::Value) -> Answer {
    call(st, "POST", "/v1/posture", der, Some(JSON), body.to_string()).await
}

fn facts(firewall: bool) -> serde_json::Value {
    serde_json::json!({"firewall": firewall, "blocked_processes": [], "os_patch_age_days": 3})
}

#[tokio::test]
async fn a_non_compliant_posture_report_bans_the_subject_until_an_operator_lifts_it() {
    let pki = Pki::new();
    let (_s, st) = state();
    let st = with_posture(st, POSTURE);
    let inventory = pki.der("inventory");
    let old = token_for(&st, &inventory).await;
    let a = report(&st, Some(&inventory), facts(true)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(
        a.json,
        serde_json::json!({"compliant": true, "violations": [], "banned": false})
    );
    assert!(active(&st, &pki, &old).await);

    let a = report(&st, Some(&inventory), facts(false)).await;
    assert_eq!(a.json["compliant"], false);
    assert_eq!(a.json["violations"], serde_json::json!(["firewall_off"]));
    assert_eq!(a.json["banned"], true);
    assert!(!active(&st, &pki, &old).await);
    let t = call(
        &st,
        "POST",
        "/token",
        Some(&inventory),
        Some(FORM),
        token_body(ORDERS, ""),
    )
    .await;
    assert_eq!(t.status, StatusCode::UNAUTHORIZED);
    // The consumer is unaffected.
    token_for(&st, &pki.der("consumer")).await;

    let mut later = st.clone();
    let now = (st.clock)();
    later.clock = Arc::new(move || now + 2);
    // The host's own clean report does not lift its ban (a compromised host lies).
    let a = report(&later, Some(&inventory), facts(true)).await;
    assert_eq!(a.json["compliant"], true, "{}", a.json);
    assert_eq!(a.json["banned"], true, "{}", a.json);
    let t = call(
        &later,
        "POST",
        "/token",
        Some(&inventory),
        Some(FORM),
        token_body(ORDERS, ""),
    )
    .await;
    assert_eq!(t.status, StatusCode::UNAUTHORIZED);
    // Nor can the workload lift it through the admin API.
    let a = admin(
        &later,
        Some(&inventory),
        serde_json::json!({"kind": "subject", "value": INVENTORY, "lift": true}),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.json);
    // The operator lifts it.
    let a = admin(
        &later,
        Some(&pki.der("operator")),
        serde_json::json!({"kind": "subject", "value": INVENTORY, "lift": true}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    let a = report(&later, Some(&inventory), facts(true)).await;
    assert_eq!(a.json["banned"], false, "{}", a.json);
    let fresh = token_for(&later, &inventory).await;
    assert!(active(&later, &pki, &fresh).await);
    assert!(!active(&later, &pki, &old).await);
}

#[tokio::test]
async fn a_compliant_report_never_lifts_an_operators_ban() {
    let pki = Pki::new();
    let (_s, st) = state();
    let st = with_posture(st, POSTURE);
    let a = admin(
        &st,
        Some(&pki.der("operator")),
        serde_json::json!({"kind": "subject", "value": INVENTORY}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = report(&st, Some(&pki.der("inventory")), facts(true)).await;
    assert_eq!(a.json["compliant"], true);
    assert_eq!(a.json["banned"], true);
    let t = call(
        &st,
        "POST",
        "/token",
        Some(&pki.der("inventory")),
        Some(FORM),
        token_body(ORDERS, ""),
    )
    .await;
    assert_eq!(t.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn posture_reports_need_a_client_certificate_a_policy_and_exact_facts() {
    let pki = Pki::new();
    let (_s, st) = state();
    let inventory = pki.der("inventory");
    assert_eq!(
        report(&st, Some(&inventory), facts(true)).await.status,
        StatusCode::NOT_FOUND
    );
    let st = with_posture(st, POSTURE);
    assert_eq!(
        report(&st, None, facts(true)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        report(&st, Some(&pki.der("envoy")), facts(true))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    for bad in [
        serde_json::json!({"firewall": true}),
        serde_json::json!({"firewall": "yes", "blocked_processes": [], "os_patch_age_days": 3}),
        serde_json::json!({"firewall": true, "blocked_processes": [], "os_patch_age_days": -1}),
        serde_json::json!({"firewall": true, "blocked_processes": [], "os_patch_age_days": 3, "extra": 1}),
    ] {
        let a = report(&st, Some(&inventory), bad.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(st.revocations.latest(), 0);
}

#[tokio::test]
async fn a_required_subject_that_stops_reporting_is_banned() {
    let pki = Pki::new();
    let (_s, mut st) = state();
    let yaml = format!("{POSTURE}report_interval_s: 5\nrequired: [{INVENTORY}]\n");
    st = with_posture(st, &yaml);
    let now = (st.clock)();
    st.posture_reports = Arc::new(certbind_authz::posture::Reports::new(now));
    st.clock = Arc::new(move || now + 6);
    let watchdog = certbind_authz::revoke::spawn_posture_watchdog(st.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while st.revocations.latest() == 0 {
        assert!(
            Instant::now() < deadline,
            "no ban for a silent required subject"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watchdog.abort();
    let t = call(
        &st,
        "POST",
        "/token",
        Some(&pki.der("inventory")),
        Some(FORM),
        token_body(ORDERS, ""),
    )
    .await;
    assert_eq!(t.status, StatusCode::UNAUTHORIZED);
    token_for(&st, &pki.der("consumer")).await;
    // Reporting again (clean) does not lift the watchdog's ban either.
    let a = report(&st, Some(&pki.der("inventory")), facts(true)).await;
    assert_eq!(a.json["banned"], true, "{}", a.json);
}
