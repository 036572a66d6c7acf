//! Revocation through `app(state)` without sockets: RFC 7009 `/revoke` (own token, another
//! client's token, unknown tokens), the operator-only admin API, `/introspect` and `/token`
//! honouring revocations, and the long-poll feed (immediate answer, wake-up, snapshot).
//! Posture reports, which ban through the same store, are in `posture.rs`.
// Helpers here run only inside tests: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::http::StatusCode;
use certbind_authz::app::AppState;
use certbind_core::binding::CertThumbprint;
use certbind_core::revocation::{FeedAnswer, Kind, RevocationSet, parse_feed};
use common::{Answer, FORM, ORDERS, Pki, active, admin, call, enc, state, token_body, token_for};
use std::sync::Arc;
use std::time::{Duration, Instant};

const INVENTORY: &str = "spiffe://certbind.test/ns/demo/sa/inventory";
const CONSUMER: &str = "spiffe://certbind.test/ns/demo/sa/consumer";

async fn revoke(st: &AppState, der: Option<&[u8]>, token: &str) -> Answer {
    call(
        st,
        "POST",
        "/revoke",
        der,
        Some(FORM),
        format!("token={}&token_type_hint=access_token", enc(token)),
    )
    .await
}

/// A feed poll: `None` is a sidecar's first poll (no `since`).
async fn feed(st: &AppState, der: Option<&[u8]>, since: Option<u64>) -> Answer {
    let path = match since {
        None => "/v1/revocations".to_owned(),
        Some(n) => format!("/v1/revocations?since={n}"),
    };
    call(st, "GET", &path, der, None, String::new()).await
}

fn feed_answer(a: &Answer) -> FeedAnswer {
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    // The sidecar's own parser accepts what the server sends.
    parse_feed(&a.body).unwrap()
}

fn jti_of(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

fn quick(mut st: AppState) -> AppState {
    st.feed_wait = Duration::from_millis(300);
    st
}

#[tokio::test]
async fn a_client_revokes_its_own_token_and_introspection_reports_it_inactive() {
    let pki = Pki::new();
    let (_s, st) = state();
    let consumer = pki.der("consumer");
    let token = token_for(&st, &consumer).await;
    let other = token_for(&st, &consumer).await;
    assert!(active(&st, &pki, &token).await);
    let a = revoke(&st, Some(&consumer), &token).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert!(!active(&st, &pki, &token).await);
    // Only that token: the client's other token stays active.
    assert!(active(&st, &pki, &other).await);
    let f = feed_answer(&feed(&st, Some(&pki.der("envoy")), None).await);
    assert_eq!(f.revocations.len(), 1);
    assert_eq!(f.revocations[0].kind, Kind::Jti);
    assert_eq!(f.revocations[0].value, jti_of(&token));
    assert!(f.revocations[0].expires_at.is_some());
}

#[tokio::test]
async fn a_client_flooding_revoke_cannot_grow_the_list_past_its_quota_yet_every_token_dies() {
    use certbind_authz::quota::CLIENT_JTI_QUOTA;
    let pki = Pki::new();
    let (_s, mut st) = state();
    let now = (st.clock)();
    st.clock = Arc::new(move || now);
    let consumer = pki.der("consumer");
    let inventory_token = token_for(&st, &pki.der("inventory")).await;
    let n = usize::try_from(CLIENT_JTI_QUOTA).unwrap() + 40;
    let mut tokens = Vec::new();
    for _ in 0..n {
        tokens.push(token_for(&st, &consumer).await);
    }
    for t in &tokens {
        let a = revoke(&st, Some(&consumer), t).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    }
    // Every revoked token is refused, the quota's worth by jti, the rest by one subject row.
    for t in &tokens {
        assert!(!active(&st, &pki, t).await);
    }
    let f = feed_answer(&feed(&st, Some(&pki.der("envoy")), None).await);
    let jtis = f.revocations.iter().filter(|r| r.kind == Kind::Jti).count();
    let subjects: Vec<_> = f
        .revocations
        .iter()
        .filter(|r| r.kind == Kind::Subject)
        .collect();
    assert_eq!(jtis, usize::try_from(CLIENT_JTI_QUOTA).unwrap());
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].value, CONSUMER);
    assert_eq!(subjects[0].not_before_iat, Some(now));
    // Revoking the same tokens again writes nothing: the flood does not even wake sidecars.
    let latest = st.revocations.latest();
    for t in tokens.iter().rev().take(10) {
        revoke(&st, Some(&consumer), t).await;
    }
    assert_eq!(st.revocations.latest(), latest);
    // Issuance goes on: the client is not banned, and a token issued later is live.
    let mut later = st.clone();
    later.clock = Arc::new(move || now + 1);
    let fresh = token_for(&later, &consumer).await;
    assert!(active(&later, &pki, &fresh).await);
    // Another client is untouched.
    assert!(active(&st, &pki, &inventory_token).await);
}

#[tokio::test]
async fn another_clients_token_is_answered_200_and_not_revoked() {
    let pki = Pki::new();
    let (_s, st) = state();
    let token = token_for(&st, &pki.der("consumer")).await;
    let a = revoke(&st, Some(&pki.der("inventory")), &token).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(active(&st, &pki, &token).await);
    assert_eq!(st.revocations.latest(), 0);
}

#[tokio::test]
async fn unknown_or_invalid_tokens_are_answered_200_without_effect() {
    let pki = Pki::new();
    let (_s, st) = state();
    let consumer = pki.der("consumer");
    for bad in ["x.y.z", "garbage", &"a".repeat(9000)] {
        let a = revoke(&st, Some(&consumer), bad).await;
        assert_eq!(a.status, StatusCode::OK, "{bad}");
    }
    assert_eq!(st.revocations.latest(), 0);
}

#[tokio::test]
async fn revoke_requires_a_registered_client_and_a_token() {
    let pki = Pki::new();
    let (_s, st) = state();
    let token = token_for(&st, &pki.der("consumer")).await;
    let a = revoke(&st, None, &token).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json["error"], "invalid_client");
    // envoy is a workload of our CA but not an OAuth client.
    let a = revoke(&st, Some(&pki.der("envoy")), &token).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = call(
        &st,
        "POST",
        "/revoke",
        Some(&pki.der("consumer")),
        Some(FORM),
        "token_type_hint=access_token",
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json["error"], "invalid_request");
    assert!(active(&st, &pki, &token).await);
}

#[tokio::test]
async fn only_an_operator_may_use_the_admin_api() {
    let pki = Pki::new();
    let (_s, st) = state();
    let body =
        serde_json::json!({"kind": "subject", "value": INVENTORY, "reason": "host compromised"});
    for name in ["consumer", "inventory", "envoy", "authz"] {
        let a = admin(&st, Some(&pki.der(name)), body.clone()).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{name}");
        assert_eq!(a.json["error"], "access_denied");
    }
    let a = admin(&st, None, body.clone()).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(st.revocations.latest(), 0);
    let a = admin(&st, Some(&pki.der("operator")), body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["seq"], 1);
    assert_eq!(a.json["kind"], "subject");
    assert_eq!(a.json["banned"], true);
    assert_eq!(a.json["reason"], "host compromised");
}

#[tokio::test]
async fn the_admin_api_refuses_malformed_requests() {
    let pki = Pki::new();
    let (_s, st) = state();
    let op = pki.der("operator");
    for body in [
        serde_json::json!({"kind": "key", "value": "x"}),
        serde_json::json!({"kind": "subject", "value": "inventory"}),
        serde_json::json!({"kind": "cert", "value": "abcd"}),
        serde_json::json!({"kind": "jti", "value": ""}),
        serde_json::json!({"kind": "jti", "value": "a", "extra": 1}),
        serde_json::json!({"kind": "jti"}),
        serde_json::json!({"kind": "jti", "value": "a", "lift": true}),
        serde_json::json!({"kind": "subject", "value": INVENTORY, "lift": true}),
        serde_json::json!({"kind": "cert", "value": "ab".repeat(32), "expires_at": 1}),
    ] {
        let a = admin(&st, Some(&op), body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(a.json["error"], "invalid_request");
    }
    let a = call(
        &st,
        "POST",
        "/v1/admin/revocations",
        Some(&op),
        Some(FORM),
        "kind=jti&value=a",
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(st.revocations.latest(), 0);
}

#[tokio::test]
async fn a_revoked_subject_loses_its_tokens_and_gets_no_new_ones_until_lifted() {
    let pki = Pki::new();
    let (_s, st) = state();
    let inventory = pki.der("inventory");
    let consumer = pki.der("consumer");
    let old = token_for(&st, &inventory).await;
    let unaffected = token_for(&st, &consumer).await;
    let op = pki.der("operator");
    let a = admin(
        &st,
        Some(&op),
        serde_json::json!({"kind": "subject", "value": INVENTORY}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert!(!active(&st, &pki, &old).await);
    assert!(active(&st, &pki, &unaffected).await);
    let a = call(
        &st,
        "POST",
        "/token",
        Some(&inventory),
        Some(FORM),
        token_body(ORDERS, ""),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.json);
    assert_eq!(a.json["error"], "invalid_client");
    token_for(&st, &consumer).await;
    // Lifted: new tokens again, the old one stays revoked.
    let lift = serde_json::json!({"kind": "subject", "value": INVENTORY, "lift": true});
    let a = admin(&st, Some(&op), lift).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["banned"], false);
    assert!(!active(&st, &pki, &old).await);
    // A token issued in the same second as the revocation is still covered (iat ≤ time),
    // so move the clock on before checking that new tokens are good again.
    let mut later = st.clone();
    let now = (st.clock)();
    later.clock = Arc::new(move || now + 2);
    let fresh = token_for(&later, &inventory).await;
    assert!(active(&later, &pki, &fresh).await);
    assert!(!active(&later, &pki, &old).await);
}

#[tokio::test]
async fn a_revoked_certificate_loses_its_tokens_and_gets_no_new_ones() {
    let pki = Pki::new();
    let (_s, st) = state();
    let consumer = pki.der("consumer");
    let token = token_for(&st, &consumer).await;
    let other = token_for(&st, &pki.der("inventory")).await;
    let thumb = CertThumbprint::from_der(&consumer);
    // Envoy's hex digest form is accepted and stored canonically.
    let hex: String = thumb
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let a = admin(
        &st,
        Some(&pki.der("operator")),
        serde_json::json!({"kind": "cert", "value": hex, "reason": "key leaked"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["value"], thumb.to_cnf());
    assert!(!active(&st, &pki, &token).await);
    assert!(active(&st, &pki, &other).await);
    let a = call(
        &st,
        "POST",
        "/token",
        Some(&consumer),
        Some(FORM),
        token_body(ORDERS, ""),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.json);
}

#[tokio::test]
async fn an_operator_jti_revocation_is_reported_inactive() {
    let pki = Pki::new();
    let (_s, st) = state();
    let token = token_for(&st, &pki.der("consumer")).await;
    let a = admin(
        &st,
        Some(&pki.der("operator")),
        serde_json::json!({"kind": "jti", "value": jti_of(&token)}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert!(!active(&st, &pki, &token).await);
}

#[tokio::test]
async fn only_sidecar_identities_may_follow_the_feed_and_the_query_is_strict() {
    let pki = Pki::new();
    let (_s, st) = state();
    let st = quick(st);
    for name in ["consumer", "operator", "inventory"] {
        let a = feed(&st, Some(&pki.der(name)), None).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{name}");
    }
    assert_eq!(feed(&st, None, None).await.status, StatusCode::UNAUTHORIZED);
    for q in ["?", "?since=", "?since=x", "?since=1&since=2", "?from=0"] {
        let a = call(
            &st,
            "GET",
            &format!("/v1/revocations{q}"),
            Some(&pki.der("envoy")),
            None,
            String::new(),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{q}");
    }
}

#[tokio::test]
async fn the_feed_answers_at_once_with_news_and_a_snapshot_for_since_zero() {
    let pki = Pki::new();
    let (_s, st) = state();
    let st = quick(st);
    let envoy = pki.der("envoy");
    let op = pki.der("operator");
    // Nothing yet: a first poll is still answered at once (an empty snapshot).
    let started = Instant::now();
    let f = feed_answer(&feed(&st, Some(&envoy), None).await);
    assert!(started.elapsed() < Duration::from_millis(200));
    assert!(f.snapshot && f.revocations.is_empty() && f.seq == 0);
    for value in ["a", "b", "c"] {
        let a = admin(
            &st,
            Some(&op),
            serde_json::json!({"kind": "jti", "value": value}),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
    }
    let started = Instant::now();
    let delta = feed_answer(&feed(&st, Some(&envoy), Some(1)).await);
    assert!(started.elapsed() < Duration::from_millis(200));
    assert!(!delta.snapshot);
    assert_eq!(delta.seq, 3);
    let values: Vec<&str> = delta.revocations.iter().map(|r| r.value.as_str()).collect();
    assert_eq!(values, ["b", "c"]);
    for first in [None, Some(0)] {
        let snap = feed_answer(&feed(&st, Some(&envoy), first).await);
        assert!(snap.snapshot);
        assert_eq!(snap.revocations.len(), 3);
    }
    let snap = feed_answer(&feed(&st, Some(&envoy), None).await);
    // A `since` ahead of the server (its store was replaced) gets a snapshot too.
    assert!(feed_answer(&feed(&st, Some(&envoy), Some(99)).await).snapshot);
    // The sidecar's set follows: snapshot then delta.
    let mut set = RevocationSet::new();
    set.apply(snap, 0).unwrap();
    assert_eq!(set.since(), Some(3));
}

#[tokio::test]
async fn an_idle_long_poll_answers_an_empty_delta_after_the_wait() {
    let pki = Pki::new();
    let (_s, st) = state();
    let st = quick(st);
    let started = Instant::now();
    let f = feed_answer(&feed(&st, Some(&pki.der("envoy")), None).await);
    assert_eq!(f.seq, 0);
    let a = feed(&st, Some(&pki.der("envoy")), Some(f.seq)).await;
    let waited = started.elapsed();
    let f = feed_answer(&a);
    assert!(!f.snapshot && f.revocations.is_empty() && f.seq == 0);
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
}

#[tokio::test]
async fn a_long_poll_wakes_within_a_second_of_a_new_revocation() {
    let pki = Pki::new();
    let (_s, mut st) = state();
    st.feed_wait = Duration::from_secs(20);
    let envoy = pki.der("envoy");
    let op = pki.der("operator");
    // One earlier revocation, so subscribers wait at since=1 and receive a delta.
    let a = admin(
        &st,
        Some(&op),
        serde_json::json!({"kind": "jti", "value": "earlier"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let polls: Vec<_> = (0..50)
        .map(|_| {
            let st = st.clone();
            let envoy = envoy.clone();
            tokio::spawn(async move {
                let a = feed(&st, Some(&envoy), None).await;
                let since = feed_answer(&a).seq;
                let a = feed(&st, Some(&envoy), Some(since)).await;
                (Instant::now(), feed_answer(&a))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = admin(
        &st,
        Some(&op),
        serde_json::json!({"kind": "subject", "value": CONSUMER}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let answered = Instant::now();
    for p in polls {
        let (at, f) = p.await.unwrap();
        assert!(at.duration_since(answered) < Duration::from_secs(1));
        assert!(!f.snapshot);
        assert_eq!(f.seq, 2);
        assert_eq!(f.revocations.len(), 1);
        assert_eq!(f.revocations[0].kind, Kind::Subject);
        assert_eq!(
            f.revocations[0].not_before_iat,
            a.json["not_before_iat"].as_u64()
        );
    }
}
