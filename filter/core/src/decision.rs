//! PDP wire types (CONTRACT §5), shared by the filter that asks and the PDP that answers.

use crate::cache::{BytesKey, ExpiringCache, KeyBytes};
use crate::json::from_slice_strict;
use crate::reason::Reason;
use crate::token::split_scopes;
use serde::{Deserialize, Serialize};

/// What the filter asks the PDP: who (subject, client), does what (action = HTTP method)
/// to what (resource = normalised path) at which service (audience), holding which scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub subject: String,
    pub client_id: String,
    pub action: String,
    pub resource: String,
    pub audience: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub context: DecisionContext,
}

/// Facts about the request that conditions may use. Absent facts never satisfy a condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// The token's `iat` (seconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// e.g. "TLSv1.3", as Envoy reports `connection.tls_version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
}

/// The PDP's answer. `reason` is machine-readable (`missing_scope` lets the filter answer
/// `insufficient_scope`); `ttl_s` bounds how long the filter may cache an allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub allow: bool,
    pub policy_id: String,
    pub reason: String,
    pub ttl_s: u64,
    #[serde(default)]
    pub policy_version: String,
}

/// The PDP's `reason` when only scopes were lacking.
pub const REASON_MISSING_SCOPE: &str = "missing_scope";

/// The OPA data API shape: `POST /v1/data/certbind/allow` with `{"input": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpaInput {
    pub input: DecisionRequest,
}

/// The OPA data API answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpaResult {
    pub result: bool,
}

/// Largest PDP answer read.
pub const MAX_DECISION_BYTES: usize = 16 * 1024;

/// The PDP's answer as the filter acts on it: an allow, or the reason to deny. A timeout,
/// a status other than 200, an oversized or unparseable body are all `PdpUnavailable`.
pub fn read_decision(status: Option<u32>, body: &[u8]) -> Result<Decision, Reason> {
    if status != Some(200) || body.is_empty() || body.len() > MAX_DECISION_BYTES {
        return Err(Reason::PdpUnavailable);
    }
    let decision: Decision = from_slice_strict(body).map_err(|_| Reason::PdpUnavailable)?;
    if decision.allow {
        Ok(decision)
    } else if decision.reason == REASON_MISSING_SCOPE {
        Err(Reason::InsufficientScope)
    } else {
        Err(Reason::PolicyDenied)
    }
}

/// One PDP question, borrowed from the verified token and the request: both the decision
/// cache's key and the wire body are built from it, so the key covers every field the PDP
/// decides on, and a cache hit serialises nothing and hashes no JSON. The one field the key
/// leaves out is `jti` (sent for the PDP's audit only): a decision is about who does what
/// where, not which of a client's tokens; one token is stopped by revocation, checked on every
/// request before the cache. Keyed by `jti`, every renewed token would cost a PDP call and
/// one client minting tokens could fill the cache. A PDP whose answer did depend on `jti`
/// answers `ttl_s: 0` (nothing cached).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Question<'a> {
    pub subject: &'a str,
    pub client_id: &'a str,
    pub action: &'a str,
    pub resource: &'a str,
    pub audience: &'a str,
    /// The token's `scope` claim as issued (space separated); the body lists its first
    /// [`MAX_SCOPES`] scopes, the key the whole claim.
    pub scope: &'a str,
    pub source_ip: Option<&'a str>,
    pub iat: Option<u64>,
    pub jti: Option<&'a str>,
    pub tls_version: Option<&'a str>,
}

impl Question<'_> {
    /// The cache key: every field but `jti`, length-prefixed (so no two questions that may
    /// be decided differently share a key).
    pub fn key(&self) -> DecisionKey {
        let texts = [
            Some(self.subject),
            Some(self.client_id),
            Some(self.action),
            Some(self.resource),
            Some(self.audience),
            Some(self.scope),
            self.source_ip,
            self.tls_version,
        ];
        let len: usize = texts.iter().flatten().map(|t| t.len() + 9).sum::<usize>() + 16;
        let mut key = Vec::with_capacity(len);
        for text in texts {
            match text {
                Some(t) => {
                    key.push(1);
                    key.extend_from_slice(&(t.len() as u64).to_le_bytes());
                    key.extend_from_slice(t.as_bytes());
                }
                None => key.push(0),
            }
        }
        match self.iat {
            Some(iat) => {
                key.push(1);
                key.extend_from_slice(&iat.to_le_bytes());
            }
            None => key.push(0),
        }
        DecisionKey(key)
    }

    /// The question as the PDP's wire type.
    pub fn request(&self) -> DecisionRequest {
        DecisionRequest {
            subject: self.subject.to_owned(),
            client_id: self.client_id.to_owned(),
            action: self.action.to_owned(),
            resource: self.resource.to_owned(),
            audience: self.audience.to_owned(),
            scopes: split_scopes(self.scope).map(str::to_owned).collect(),
            context: DecisionContext {
                source_ip: self.source_ip.map(str::to_owned),
                iat: self.iat,
                jti: self.jti.map(str::to_owned),
                tls_version: self.tls_version.map(str::to_owned),
            },
        }
    }
}

/// A decision cache key ([`Question::key`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DecisionKey(Vec<u8>);

/// A PDP request in its wire form, with its cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRequest {
    pub body: String,
    pub key: DecisionKey,
}

impl EncodedRequest {
    pub fn new(question: &Question<'_>) -> Self {
        // Serializing plain strings and numbers cannot fail; an empty body would be refused
        // by the PDP, never mistaken for an allow.
        let body = serde_json::to_string(&question.request()).unwrap_or_default();
        Self {
            body,
            key: question.key(),
        }
    }
}

/// Allows of the PDP, cached until min(`ttl_s`, the token's `exp`). Denials are never cached.
#[derive(Debug, Clone)]
pub struct DecisionCache {
    allows: ExpiringCache<BytesKey, String>,
}

impl DecisionCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            allows: ExpiringCache::new(capacity),
        }
    }

    /// The policy id of a cached allow for exactly this question, if still valid at `now_ms`.
    pub fn get(&mut self, key: &DecisionKey, now_ms: u64) -> Option<&str> {
        self.allows
            .get::<dyn KeyBytes>(&key.0.as_slice(), now_ms)
            .map(String::as_str)
    }

    /// Whether a cached allow answers exactly this question at `now_ms` (one lookup).
    pub fn allows(&mut self, key: &DecisionKey, now_ms: u64) -> bool {
        self.allows
            .probe::<dyn KeyBytes, _>(&key.0.as_slice(), now_ms, |_| ())
            .is_some()
    }

    /// Remembers an allow for `ttl_s`, never past `token_exp_s`.
    pub fn remember(
        &mut self,
        request: &EncodedRequest,
        decision: &Decision,
        token_exp_s: u64,
        now_ms: u64,
    ) {
        if !decision.allow {
            return;
        }
        let until = now_ms
            .saturating_add(decision.ttl_s.saturating_mul(1000))
            .min(token_exp_s.saturating_mul(1000));
        self.allows.insert(
            BytesKey::new(&request.key.0),
            decision.policy_id.clone(),
            until,
            now_ms,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_and_refuses_unknown_fields() {
        let json = r#"{"subject":"spiffe://certbind.test/ns/demo/sa/consumer","client_id":"consumer",
            "action":"GET","resource":"/orders/1","audience":"spiffe://certbind.test/ns/demo/sa/orders",
            "scopes":["orders:read"],"context":{"iat":1,"tls_version":"TLSv1.3"}}"#;
        let req: DecisionRequest = serde_json::from_str(json).unwrap();
        assert_eq!(req.context.iat, Some(1));
        let again: DecisionRequest =
            serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
        assert_eq!(again, req);
        let extra = json.replace("\"action\"", "\"admin\":true,\"action\"");
        assert!(serde_json::from_str::<DecisionRequest>(&extra).is_err());
    }

    fn request() -> DecisionRequest {
        DecisionRequest {
            subject: "spiffe://certbind.test/ns/demo/sa/consumer".into(),
            client_id: "consumer".into(),
            action: "GET".into(),
            resource: "/orders/1".into(),
            audience: "spiffe://certbind.test/ns/demo/sa/orders".into(),
            scopes: vec!["orders:read".into()],
            context: DecisionContext {
                source_ip: Some("127.0.0.1".into()),
                iat: Some(1),
                jti: Some("j".into()),
                tls_version: Some("TLSv1.3".into()),
            },
        }
    }

    fn question() -> Question<'static> {
        Question {
            subject: "spiffe://certbind.test/ns/demo/sa/consumer",
            client_id: "consumer",
            action: "GET",
            resource: "/orders/1",
            audience: "spiffe://certbind.test/ns/demo/sa/orders",
            scope: "orders:read",
            source_ip: Some("127.0.0.1"),
            iat: Some(1),
            jti: Some("j"),
            tls_version: Some("TLSv1.3"),
        }
    }

    #[test]
    fn a_question_becomes_the_wire_request() {
        assert_eq!(question().request(), request());
        let q = Question {
            scope: " a  b ",
            ..question()
        };
        assert_eq!(q.request().scopes, ["a", "b"]);
        let body = EncodedRequest::new(&question()).body;
        let again: DecisionRequest = serde_json::from_str(&body).unwrap();
        assert_eq!(again, request());
    }

    fn allow(ttl_s: u64) -> Decision {
        Decision {
            allow: true,
            policy_id: "p".into(),
            reason: "ok".into(),
            ttl_s,
            policy_version: String::new(),
        }
    }

    #[test]
    fn admits_a_pdp_allow() {
        let body = br#"{"allow":true,"policy_id":"orders-read","reason":"matched","ttl_s":60}"#;
        assert_eq!(
            read_decision(Some(200), body).unwrap().policy_id,
            "orders-read"
        );
    }

    #[test]
    fn refuses_on_a_pdp_deny() {
        let deny = br#"{"allow":false,"policy_id":"default","reason":"no_rule","ttl_s":0}"#;
        assert_eq!(read_decision(Some(200), deny), Err(Reason::PolicyDenied));
        let scope = br#"{"allow":false,"policy_id":"p","reason":"missing_scope","ttl_s":0}"#;
        assert_eq!(
            read_decision(Some(200), scope),
            Err(Reason::InsufficientScope)
        );
    }

    #[test]
    fn refuses_when_the_pdp_is_unavailable_or_answers_garbage() {
        let ok = br#"{"allow":true,"policy_id":"p","reason":"r","ttl_s":1}"#;
        for (status, body) in [
            (None, &ok[..]),
            (Some(500), &ok[..]),
            (Some(204), &ok[..]),
            (Some(200), &b""[..]),
            (Some(200), &b"<html>"[..]),
            (
                Some(200),
                &br#"{"allow":"yes","policy_id":"p","reason":"r","ttl_s":1}"#[..],
            ),
            (
                Some(200),
                &br#"{"allow":false,"allow":true,"policy_id":"p","reason":"r","ttl_s":1}"#[..],
            ),
            (Some(200), &br#"{"allow":true}"#[..]),
        ] {
            assert_eq!(
                read_decision(status, body),
                Err(Reason::PdpUnavailable),
                "{status:?}"
            );
        }
        let big = format!(
            r#"{{"allow":true,"policy_id":"{}","reason":"r","ttl_s":1}}"#,
            "p".repeat(MAX_DECISION_BYTES)
        );
        assert_eq!(
            read_decision(Some(200), big.as_bytes()),
            Err(Reason::PdpUnavailable)
        );
    }

    #[test]
    fn caches_an_allow_until_its_ttl() {
        let mut cache = DecisionCache::new(8);
        let req = EncodedRequest::new(&question());
        cache.remember(&req, &allow(10), 1_000_000, 0);
        assert_eq!(cache.get(&req.key, 9_999), Some("p"));
        assert_eq!(cache.get(&req.key, 10_000), None);
    }

    #[test]
    fn a_cached_allow_never_outlives_the_token() {
        let mut cache = DecisionCache::new(8);
        let req = EncodedRequest::new(&question());
        cache.remember(&req, &allow(600), 5, 0);
        assert_eq!(cache.get(&req.key, 4_999), Some("p"));
        assert_eq!(cache.get(&req.key, 5_000), None);
    }

    #[test]
    fn never_caches_a_denial_or_a_zero_ttl() {
        let mut cache = DecisionCache::new(8);
        let req = EncodedRequest::new(&question());
        let mut deny = allow(60);
        deny.allow = false;
        cache.remember(&req, &deny, 1_000, 0);
        cache.remember(&req, &allow(0), 1_000, 0);
        assert_eq!(cache.get(&req.key, 0), None);
    }

    #[test]
    fn the_cache_key_covers_every_field_of_the_request() {
        let base = question();
        let key = base.key();
        let variants = [
            Question {
                subject: "spiffe://certbind.test/ns/demo/sa/consumerx",
                ..base
            },
            Question {
                client_id: "consumerx",
                ..base
            },
            Question {
                action: "POST",
                ..base
            },
            Question {
                resource: "/orders/1x",
                ..base
            },
            Question {
                audience: "spiffe://certbind.test/ns/demo/sa/ordersx",
                ..base
            },
            Question {
                scope: "orders:read orders:write",
                ..base
            },
            Question {
                source_ip: Some("10.0.0.1"),
                ..base
            },
            Question {
                source_ip: None,
                ..base
            },
            Question {
                iat: Some(2),
                ..base
            },
            Question { iat: None, ..base },
            Question {
                tls_version: None,
                ..base
            },
            // Moving bytes between neighbouring fields changes the key too.
            Question {
                client_id: "consume",
                action: "rGET",
                ..base
            },
        ];
        for v in variants {
            assert_ne!(v.key(), key, "{v:?}");
        }
        assert_eq!(question().key(), key);
    }

    #[test]
    fn another_token_of_the_same_question_shares_the_decision() {
        let base = question();
        for jti in [Some("k"), None] {
            assert_eq!(Question { jti, ..base }.key(), base.key());
        }
    }
}
