//! The judging of rows and the recording of answers, without a system to attack.

use super::*;
use crate::client::Response;
use crate::forge::spiffe_id;
use serde_json::{Value, json};

fn deny(status: u16, reason: &'static str) -> Expect {
    Expect::Deny(vec![(status, reason)])
}

fn attack(control: bool, expect: Expect) -> Attack {
    Attack {
        id: "t",
        title: "t".into(),
        how: "t".into(),
        insider: false,
        control,
        expect,
        show: Show::Nothing,
        probe: Err("x".into()),
    }
}

fn http(status: u16, reason: Option<&str>, subject: Option<&str>) -> Answer {
    Answer::Http {
        status,
        reason: reason.map(str::to_owned),
        detail: None,
        upstream: subject.map(|s| json!({"path": "/p", "certbind": {"x-certbind-subject": s}})),
    }
}

#[test]
fn an_expected_refusal_is_blocked() {
    let a = attack(false, deny(401, "binding_mismatch"));
    assert_eq!(
        judge(
            &a,
            &http(200, None, None),
            &http(401, Some("binding_mismatch"), None)
        ),
        Verdict::Blocked
    );
}

#[test]
fn an_admitted_attack_fails_the_table() {
    let a = attack(false, deny(401, "binding_mismatch"));
    let v = judge(&a, &http(200, None, None), &http(200, None, Some("x")));
    assert_eq!(v, Verdict::Admitted);
    assert!(v.is_failure());
}

#[test]
fn a_refusal_for_another_reason_is_a_wrong_answer() {
    let a = attack(false, deny(401, "binding_mismatch"));
    let v = judge(
        &a,
        &http(401, None, None),
        &http(401, Some("bad_signature"), None),
    );
    assert_eq!(v, Verdict::WrongAnswer);
    assert!(v.is_failure());
    let v = judge(
        &a,
        &http(401, None, None),
        &Answer::Failed("timeout".into()),
    );
    assert_eq!(v, Verdict::WrongAnswer);
}

#[test]
fn a_tls_refusal_is_only_blocked_where_expected() {
    let a = attack(false, Expect::TlsRefused);
    assert_eq!(
        judge(
            &a,
            &http(200, None, None),
            &Answer::TlsRefused("alert".into())
        ),
        Verdict::Blocked
    );
    let b = attack(false, deny(401, "missing_token"));
    assert_eq!(
        judge(
            &b,
            &http(401, None, None),
            &Answer::TlsRefused("alert".into())
        ),
        Verdict::WrongAnswer
    );
}

#[test]
fn an_envoy_rejection_carries_no_certbind_reason() {
    let a = attack(false, Expect::Rejected { status: 400 });
    assert_eq!(
        judge(&a, &http(200, None, None), &http(400, None, None)),
        Verdict::Blocked
    );
    assert_eq!(
        judge(
            &a,
            &http(200, None, None),
            &http(400, Some("malformed_token"), None)
        ),
        Verdict::WrongAnswer
    );
}

#[test]
fn a_control_passes_only_when_both_listeners_admit_the_real_subject() {
    let subject = spiffe_id("consumer");
    let a = attack(
        true,
        Expect::Allow {
            subject: subject.clone(),
        },
    );
    assert_eq!(
        judge(&a, &http(200, None, None), &http(200, None, Some(&subject))),
        Verdict::Passed
    );
    assert_eq!(
        judge(&a, &http(401, None, None), &http(200, None, Some(&subject))),
        Verdict::ControlFailed
    );
    assert_eq!(
        judge(
            &a,
            &http(200, None, None),
            &http(403, Some("policy_denied"), None)
        ),
        Verdict::ControlFailed
    );
    assert_eq!(
        judge(
            &a,
            &http(200, None, None),
            &http(200, None, Some("spiffe://other"))
        ),
        Verdict::ControlFailed
    );
}

#[test]
fn a_spoofed_subject_reaching_the_upstream_is_admitted() {
    let a = attack(
        false,
        Expect::Allow {
            subject: spiffe_id("inventory"),
        },
    );
    let spoofed = http(200, None, Some(&spiffe_id("consumer")));
    assert_eq!(judge(&a, &spoofed, &spoofed), Verdict::Admitted);
    let clean = http(200, None, Some(&spiffe_id("inventory")));
    assert_eq!(judge(&a, &spoofed, &clean), Verdict::Blocked);
}

#[test]
fn a_row_not_run_is_neither_passed_nor_failed() {
    let a = attack(true, Expect::TlsRefused);
    let v = judge(
        &a,
        &Answer::NotRun("x".into()),
        &Answer::NotRun("needs --pdp-pid-file".into()),
    );
    assert_eq!(v, Verdict::NotRun);
    assert!(!v.is_failure());
}

#[test]
fn a_token_in_the_echoed_query_is_never_recorded() {
    let answer = Answer::from_response(&Response {
        status: 200,
        headers: vec![],
        body: json!({"path": "/orders/1?access_token=eyJsecret"})
            .to_string()
            .into_bytes(),
    });
    let recorded = answer.to_json(Show::Path).to_string();
    assert!(!recorded.contains("eyJsecret"), "{recorded}");
    assert_eq!(answer.summary(Show::Path), "200 admitted, path=/orders/1?…");
}

#[test]
fn summaries_name_status_and_reason() {
    assert_eq!(
        http(401, Some("expired"), None).summary(Show::Nothing),
        "401 expired"
    );
    assert_eq!(
        http(200, None, Some(&spiffe_id("inventory"))).summary(Show::Subject),
        "200 admitted, subject=inventory"
    );
    let baseline = Answer::from_response(&Response {
        status: 401,
        headers: vec![],
        body: b"Jwt verification fails".to_vec(),
    });
    assert_eq!(
        baseline.summary(Show::Nothing),
        "401 \"Jwt verification fails\""
    );
    assert_eq!(
        Answer::TlsRefused("x".into()).summary(Show::Nothing),
        "TLS handshake refused"
    );
}

#[test]
fn an_introspection_passes_only_when_it_tells_nothing() {
    let a = attack(false, Expect::Inactive);
    let answer = |body: Value| Answer::Http {
        status: 200,
        reason: None,
        detail: None,
        upstream: Some(body),
    };
    let na = Answer::NotRun(NO_BASELINE_AUTHZ.into());
    let told_nothing = answer(json!({"active": false}));
    assert_eq!(judge(&a, &na, &told_nothing), Verdict::Blocked);
    assert_eq!(told_nothing.summary(Show::Active), "200 active=false");
    let leaked = answer(json!({"active": true, "client_id": "consumer"}));
    assert_eq!(judge(&a, &na, &leaked), Verdict::Admitted);
    assert_eq!(
        leaked.summary(Show::Active),
        "200 active=true, client_id=consumer"
    );
    // Inactive, but with claims alongside: not the RFC 7662 §4 answer.
    let extra = answer(json!({"active": false, "scope": "orders:read"}));
    assert_eq!(judge(&a, &na, &extra), Verdict::Admitted);
    assert_eq!(judge(&a, &na, &http(401, None, None)), Verdict::WrongAnswer);
}
