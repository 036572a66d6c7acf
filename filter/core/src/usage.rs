//! Usage-bound tokens (issue 22), the filter's half: where the shared counter lives
//! ([`UsageConfig`]), the one request that spends a use (`POST` `{"jti": "..."}` to the
//! authz-server's `/v1/usage/consume`) and the strict reading of its answer. The flow asks
//! for a use only for a token carrying `max_uses`, and only once every other check passed.
//!
//! ```text
//! "usage": {
//!   "cluster": "<jwks.cluster>",
//!   "authority": "<jwks.authority>",
//!   "path": "/v1/usage/consume",
//!   "timeout_ms": 1000
//! }
//! ```

use crate::reason::Reason;
use serde::Deserialize;

/// The most bytes of a counter answer the filter reads (ours are under 50).
pub const MAX_USE_ANSWER_BYTES: usize = 1024;

/// How the filter reaches the usage counter. Every field has a default, so `"usage": {}`
/// uses the JWKS cluster. Without a `usage` object a usage-bound token is refused with 503
/// `usage_unavailable`: its uses cannot be counted here.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageConfig {
    /// The Envoy cluster of the authz-server (default: `jwks.cluster`).
    #[serde(default)]
    pub cluster: Option<String>,
    /// The `:authority` of the call (default: `jwks.authority`).
    #[serde(default)]
    pub authority: Option<String>,
    /// The counter's path (default `/v1/usage/consume`).
    #[serde(default = "default_path")]
    pub path: String,
    /// Timeout of one call, milliseconds (default 1000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_path() -> String {
    "/v1/usage/consume".to_owned()
}
fn default_timeout_ms() -> u64 {
    1000
}

/// The body that spends one use of the token `jti` (a verified claim: printable ASCII).
pub fn consume_body(jti: &str) -> String {
    serde_json::json!({ "jti": jti }).to_string()
}

/// What the counter said about a use that was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseAnswer {
    /// One use spent; `remaining` are left.
    Consumed { remaining: u32 },
    /// Every use was spent already.
    Exhausted,
    /// The counter knows no usage-bound token of that `jti`: it was never issued as one, or
    /// its row is gone. Nothing can be counted, so nothing is admitted.
    Unknown,
}

impl UseAnswer {
    /// For the log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Consumed { .. } => "consumed",
            Self::Exhausted => "exhausted",
            Self::Unknown => "unknown",
        }
    }

    /// Admitted (`Ok`) or the reason to refuse.
    pub fn verdict(self) -> Result<(), Reason> {
        match self {
            Self::Consumed { .. } => Ok(()),
            Self::Exhausted | Self::Unknown => Err(Reason::UsageExhausted),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnswer {
    outcome: String,
    #[serde(default)]
    remaining: Option<u32>,
}

/// Reads the counter's answer (`status` `None`: timeout or failed call). Anything but a 200
/// with exactly one of the three documented bodies is `usage_unavailable`: a use that cannot
/// be confirmed is never granted.
pub fn read_use_answer(status: Option<u32>, body: &[u8]) -> Result<UseAnswer, Reason> {
    if status != Some(200) || body.len() > MAX_USE_ANSWER_BYTES {
        return Err(Reason::UsageUnavailable);
    }
    let raw: RawAnswer =
        crate::json::from_slice_strict(body).map_err(|_| Reason::UsageUnavailable)?;
    match (raw.outcome.as_str(), raw.remaining) {
        ("consumed", Some(remaining)) => Ok(UseAnswer::Consumed { remaining }),
        ("exhausted", None) => Ok(UseAnswer::Exhausted),
        ("unknown", None) => Ok(UseAnswer::Unknown),
        _ => Err(Reason::UsageUnavailable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_documented_answer() {
        assert_eq!(
            read_use_answer(Some(200), br#"{"outcome":"consumed","remaining":3}"#),
            Ok(UseAnswer::Consumed { remaining: 3 })
        );
        assert_eq!(
            read_use_answer(Some(200), br#"{"outcome": "exhausted"}"#),
            Ok(UseAnswer::Exhausted)
        );
        assert_eq!(
            read_use_answer(Some(200), br#"{"outcome":"unknown"}"#),
            Ok(UseAnswer::Unknown)
        );
        assert_eq!(UseAnswer::Consumed { remaining: 0 }.verdict(), Ok(()));
        assert_eq!(UseAnswer::Exhausted.verdict(), Err(Reason::UsageExhausted));
        assert_eq!(UseAnswer::Unknown.verdict(), Err(Reason::UsageExhausted));
    }

    #[test]
    fn anything_else_is_unavailable() {
        let ok = br#"{"outcome":"consumed","remaining":3}"#;
        for (status, body) in [
            (None, &ok[..]),
            (Some(500), ok),
            (Some(503), ok),
            (Some(403), ok),
            (Some(201), ok),
            (Some(200), b""),
            (Some(200), b"garbage"),
            (Some(200), br#"{"outcome":"consumed"}"#),
            (Some(200), br#"{"outcome":"consumed","remaining":-1}"#),
            (Some(200), br#"{"outcome":"consumed","remaining":1.5}"#),
            (Some(200), br#"{"outcome":"exhausted","remaining":0}"#),
            (Some(200), br#"{"outcome":"granted","remaining":1}"#),
            (
                Some(200),
                br#"{"outcome":"consumed","remaining":1,"extra":1}"#,
            ),
            (
                Some(200),
                br#"{"outcome":"consumed","outcome":"consumed","remaining":1}"#,
            ),
            (Some(200), br#"[]"#),
        ] {
            assert_eq!(
                read_use_answer(status, body),
                Err(Reason::UsageUnavailable),
                "{status:?} {}",
                String::from_utf8_lossy(body)
            );
        }
        let long = format!(
            r#"{{"outcome":"consumed","remaining":1{}}}"#,
            " ".repeat(MAX_USE_ANSWER_BYTES)
        );
        assert_eq!(
            read_use_answer(Some(200), long.as_bytes()),
            Err(Reason::UsageUnavailable)
        );
    }

    #[test]
    fn the_counter_defaults_to_the_jwks_cluster_and_refuses_unusable_settings() {
        use crate::config::FilterConfig;
        use crate::config::tests::MINIMAL;
        let with = |usage: &str| {
            let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
            v["usage"] = serde_json::from_str(usage).unwrap();
            FilterConfig::from_json(v.to_string().as_bytes())
        };
        let plain = FilterConfig::from_json(MINIMAL.as_bytes()).unwrap();
        assert_eq!((&plain.usage, plain.usage_target()), (&None, None));
        let c = with("{}").unwrap();
        let u = c.usage.clone().unwrap();
        assert_eq!((u.path.as_str(), u.timeout_ms), ("/v1/usage/consume", 1000));
        assert_eq!(c.usage_target(), Some(("authz_server", "127.0.0.1:9443")));
        let c = with(r#"{"cluster": "counter", "authority": "a:1", "timeout_ms": 50}"#).unwrap();
        assert_eq!(c.usage_target(), Some(("counter", "a:1")));
        for bad in [
            r#"{"path": "v1/usage"}"#,
            r#"{"path": "/v1/usage?x=1"}"#,
            r#"{"cluster": ""}"#,
            r#"{"authority": "a\u0001"}"#,
            r#"{"timeout_ms": 0}"#,
            r#"{"timeout_ms": 60001}"#,
            r#"{"extra": 1}"#,
        ] {
            assert!(with(bad).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn the_body_names_only_the_jti() {
        assert_eq!(consume_body("a\"b"), r#"{"jti":"a\"b"}"#);
    }

    mod flow {
        use crate::binding::CertThumbprint;
        use crate::flow::tests::{PDP_ALLOW, World, allowed, bearer_of, denied, facts, world_with};
        use crate::flow::{Flow, Step};
        use crate::reason::Reason;
        use crate::token::tests::{NOW, claims, header, sign};
        use serde_json::{Value, json};

        const NOW_MS: u64 = NOW * 1000;
        const CONSUMED: &[u8] = br#"{"outcome":"consumed","remaining":1}"#;

        fn counted() -> World {
            world_with(|c| c["usage"] = json!({}))
        }

        fn token(w: &World, max_uses: Option<Value>) -> String {
            let mut c = claims();
            c["cnf"] = json!({"x5t#S256": CertThumbprint::from_der(&w.consumer.0).to_cnf()});
            if let Some(n) = max_uses {
                c["max_uses"] = n;
            }
            sign(&header(), &c)
        }

        /// Starts a request with `token`; answers the PDP with an allow if it is asked.
        fn through_pdp(w: &mut World, token: &str) -> (Flow, Step) {
            let f = facts(&w.consumer, bearer_of(token));
            let (mut flow, step) = Flow::start(&mut w.engine, f, NOW_MS);
            let step = match step {
                Step::AskPdp { .. } => flow
                    .pdp_answered(&mut w.engine, Some(200), PDP_ALLOW, NOW_MS)
                    .unwrap(),
                other => other,
            };
            (flow, step)
        }

        #[test]
        fn an_ordinary_token_never_asks_the_counter() {
            let mut w = counted();
            let t = token(&w, None);
            for _ in 0..2 {
                let (flow, step) = through_pdp(&mut w, &t);
                allowed(step);
                assert_eq!(flow.usage(), None);
            }
        }

        #[test]
        fn a_usage_bound_token_spends_one_use_after_the_pdp_allows_then_passes() {
            let mut w = counted();
            let t = token(&w, Some(json!(2)));
            let (mut flow, step) = through_pdp(&mut w, &t);
            let Step::ConsumeUse { body, timeout_ms } = step else {
                panic!("expected a use to be spent, got {step:?}")
            };
            assert_eq!(body, r#"{"jti":"j-1"}"#);
            assert_eq!(timeout_ms, 1000);
            let allow = allowed(flow.usage_answered(&w.engine, Some(200), CONSUMED).unwrap());
            assert!(
                allow
                    .headers
                    .iter()
                    .any(|(n, v)| *n == "x-certbind-jti" && &**v == "j-1")
            );
            assert_eq!(
                flow.usage(),
                Some(super::super::UseAnswer::Consumed { remaining: 1 })
            );
            // A late or repeated answer finds nothing to do.
            assert_eq!(flow.usage_answered(&w.engine, Some(200), CONSUMED), None);
        }

        #[test]
        fn cached_token_and_decision_still_spend_a_use_and_exhaustion_refuses() {
            let mut w = counted();
            let t = token(&w, Some(json!(1)));
            let (mut flow, step) = through_pdp(&mut w, &t);
            assert!(matches!(step, Step::ConsumeUse { .. }), "{step:?}");
            allowed(flow.usage_answered(&w.engine, Some(200), CONSUMED).unwrap());
            // The same request again: token and decision come from the caches, the count does not.
            let f = facts(&w.consumer, bearer_of(&t));
            let (mut flow, step) = Flow::start(&mut w.engine, f, NOW_MS + 1);
            assert!(flow.token_cache_hit() && flow.decision_cache_hit());
            assert!(matches!(step, Step::ConsumeUse { .. }), "{step:?}");
            let step = flow
                .usage_answered(&w.engine, Some(200), br#"{"outcome":"exhausted"}"#)
                .unwrap();
            let Step::Deny(d) = step else {
                panic!("expected a denial, got {step:?}")
            };
            assert_eq!((d.reason, d.status), (Reason::UsageExhausted, 401));
            assert!(
                d.body.contains(r#""reason":"usage_exhausted""#),
                "{}",
                d.body
            );
            assert!(d.body.contains(r#""error":"invalid_token""#), "{}", d.body);
        }

        #[test]
        fn every_answer_of_the_counter_maps_to_its_reason() {
            let cases: [(Option<u32>, &[u8], Reason); 6] = [
                (
                    Some(200),
                    br#"{"outcome":"unknown"}"#,
                    Reason::UsageExhausted,
                ),
                (
                    Some(200),
                    br#"{"outcome":"exhausted"}"#,
                    Reason::UsageExhausted,
                ),
                (None, b"", Reason::UsageUnavailable),
                (Some(503), CONSUMED, Reason::UsageUnavailable),
                (Some(500), b"", Reason::UsageUnavailable),
                (Some(200), b"{\"outcome\":", Reason::UsageUnavailable),
            ];
            for (status, body, reason) in cases {
                let mut w = counted();
                let t = token(&w, Some(json!(5)));
                let (mut flow, step) = through_pdp(&mut w, &t);
                assert!(matches!(step, Step::ConsumeUse { .. }), "{step:?}");
                let step = flow.usage_answered(&w.engine, status, body).unwrap();
                assert_eq!(denied(step), reason, "{status:?}");
            }
        }

        #[test]
        fn a_request_refused_for_another_reason_spends_nothing() {
            let mut w = counted();
            let t = token(&w, Some(json!(5)));
            // The PDP denies: the answer is the denial, no use is asked for.
            let f = facts(&w.consumer, bearer_of(&t));
            let (mut flow, _) = Flow::start(&mut w.engine, f, NOW_MS);
            let deny = br#"{"allow":false,"policy_id":"p","reason":"no","ttl_s":0}"#;
            let step = flow
                .pdp_answered(&mut w.engine, Some(200), deny, NOW_MS)
                .unwrap();
            assert_eq!(denied(step), Reason::PolicyDenied);
            // The token on another workload's connection: binding fails before anything else.
            let inventory =
                crate::binding::bind_tests::cert(&["spiffe://certbind.test/ns/demo/sa/inventory"]);
            let f = facts(&inventory, bearer_of(&t));
            let (_, step) = Flow::start(&mut w.engine, f, NOW_MS);
            assert_eq!(denied(step), Reason::BindingMismatch);
        }

        #[test]
        fn without_a_counter_configured_a_usage_bound_token_is_unavailable() {
            let mut w = world_with(|_| {});
            let t = token(&w, Some(json!(5)));
            let (_, step) = through_pdp(&mut w, &t);
            let Step::Deny(d) = step else {
                panic!("expected a denial, got {step:?}")
            };
            assert_eq!((d.reason, d.status), (Reason::UsageUnavailable, 503));
        }

        #[test]
        fn a_max_uses_claim_that_is_not_a_positive_whole_number_is_malformed() {
            for bad in [
                json!(0),
                json!(-1),
                json!(1.5),
                json!("3"),
                json!(4_294_967_296_u64),
            ] {
                let mut w = counted();
                let t = token(&w, Some(bad.clone()));
                let (_, step) = through_pdp(&mut w, &t);
                assert_eq!(denied(step), Reason::MalformedToken, "{bad}");
            }
        }
    }
}
