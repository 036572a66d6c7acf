//! Every call a worker VM has dispatched and not yet seen answered, in one table keyed by the
//! host's call token, with a variant per kind: an answer is routed by looking its token up
//! here once, so no part of the glue asks another "is this call yours?". Pure bookkeeping:
//! the glue dispatches and delivers.

use crate::decision::MAX_DECISION_BYTES;
use crate::flow::{Deny, Engine, Flow, Step};
use crate::reason::Reason;
use crate::usage::MAX_USE_ANSWER_BYTES;
use std::collections::HashMap;

/// What a dispatched call was for. `receiver` is the SDK context the host delivers the answer
/// to (the context whose callback dispatched it); `ctx` the request the answer moves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// A JWKS fetch holding the shared fetch lease.
    Jwks { receiver: u32 },
    /// The revocation feed's long poll (the root's; at most one at a time).
    FeedPoll,
    /// The PDP's decision for request `ctx`.
    Pdp { ctx: u32, receiver: u32 },
    /// The usage counter's answer for request `ctx`.
    Usage { ctx: u32, receiver: u32 },
}

/// The calls in flight, by token.
#[derive(Debug, Default)]
pub struct PendingCalls {
    calls: HashMap<u32, Call>,
}

/// What forgetting a context left behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// A JWKS fetch would have answered to the context: its lease must be freed so another
    /// context can fetch, and the requests waiting for keys woken.
    pub orphaned_jwks_fetch: bool,
}

impl PendingCalls {
    pub fn insert(&mut self, token: u32, call: Call) {
        self.calls.insert(token, call);
    }

    /// Takes the call `token` answers: `None` for a late answer to a forgotten call, or a
    /// repeated callback (it is then ignored).
    pub fn take(&mut self, token: u32) -> Option<Call> {
        self.calls.remove(&token)
    }

    /// Whether the feed's poll is in flight.
    pub fn feed_polling(&self) -> bool {
        self.calls.values().any(|c| *c == Call::FeedPoll)
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Context `ctx` went away: its calls, and calls whose answer it would have received,
    /// are forgotten (the host delivers nothing to a context that is gone).
    pub fn forget_context(&mut self, ctx: u32) -> Forgotten {
        let mut forgotten = Forgotten::default();
        self.calls.retain(|_, call| match *call {
            Call::Pdp { ctx: c, receiver } | Call::Usage { ctx: c, receiver } => {
                c != ctx && receiver != ctx
            }
            Call::Jwks { receiver } => {
                forgotten.orphaned_jwks_fetch |= receiver == ctx;
                receiver != ctx
            }
            Call::FeedPoll => true,
        });
        forgotten
    }
}

/// A request's own call, the flow waits on it by token: the PDP's decision or the usage
/// counter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowCall {
    Pdp,
    Usage,
}

impl FlowCall {
    /// The largest answer body read; a larger one is no answer.
    pub fn max_answer_bytes(self) -> usize {
        match self {
            Self::Pdp => MAX_DECISION_BYTES,
            Self::Usage => MAX_USE_ANSWER_BYTES,
        }
    }

    /// The reason a request is refused for when this call cannot be made at all.
    pub fn unavailable(self) -> Reason {
        match self {
            Self::Pdp => Reason::PdpUnavailable,
            Self::Usage => Reason::UsageUnavailable,
        }
    }

    /// Hands the call's answer to `flow` (`status` `None`: timed out or failed); `None` when
    /// the flow was not waiting for it.
    pub fn answer(
        self,
        flow: &mut Flow,
        engine: &mut Engine,
        status: Option<u32>,
        body: &[u8],
        now_ms: u64,
    ) -> Option<Step> {
        match self {
            Self::Pdp => flow.pdp_answered(engine, status, body, now_ms),
            Self::Usage => flow.usage_answered(engine, status, body),
        }
    }

    /// The step after the host refused to dispatch the call (no such cluster, circuit breaker
    /// open): the flow hears it as a failed call, and a flow with nothing to say is refused
    /// as [`FlowCall::unavailable`] — never let through.
    pub fn undispatched(self, flow: &mut Flow, engine: &mut Engine, now_ms: u64) -> Step {
        self.answer(flow, engine, None, b"", now_ms)
            .unwrap_or_else(|| Step::Deny(Deny::new(self.unavailable(), "certbind", "")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FilterConfig;
    use crate::flow::RequestFacts;

    const CONFIG: &str = r#"{
        "issuer": "https://127.0.0.1:9443",
        "audience": "spiffe://certbind.test/ns/demo/sa/orders",
        "trust_domain": "certbind.test",
        "jwks": {"cluster": "authz_server", "authority": "127.0.0.1:9443"},
        "pdp": {"cluster": "pdp", "authority": "127.0.0.1:9191"}
    }"#;

    #[test]
    fn an_undispatched_call_the_flow_did_not_wait_for_is_refused_as_unavailable() {
        let mut engine = Engine::new(FilterConfig::from_json(CONFIG.as_bytes()).unwrap());
        for (call, reason, max) in [
            (FlowCall::Pdp, Reason::PdpUnavailable, MAX_DECISION_BYTES),
            (
                FlowCall::Usage,
                Reason::UsageUnavailable,
                MAX_USE_ANSWER_BYTES,
            ),
        ] {
            // No token: the flow is decided at once and waits for no call.
            let (mut flow, _) = Flow::start(&mut engine, RequestFacts::default(), 0);
            match call.undispatched(&mut flow, &mut engine, 0) {
                Step::Deny(deny) => assert_eq!(deny.reason, reason),
                _ => panic!("{call:?} let through"),
            }
            assert_eq!(call.unavailable(), reason);
            assert_eq!(call.max_answer_bytes(), max);
        }
    }

    #[test]
    fn an_answer_is_routed_once() {
        let mut p = PendingCalls::default();
        p.insert(
            7,
            Call::Pdp {
                ctx: 3,
                receiver: 3,
            },
        );
        assert_eq!(
            p.take(7),
            Some(Call::Pdp {
                ctx: 3,
                receiver: 3
            })
        );
        assert_eq!(p.take(7), None, "a repeated callback finds nothing");
        assert!(p.is_empty());
    }

    #[test]
    fn the_feed_poll_is_one_entry_among_the_others() {
        let mut p = PendingCalls::default();
        assert!(!p.feed_polling());
        p.insert(1, Call::Jwks { receiver: 1 });
        p.insert(2, Call::FeedPoll);
        assert!(p.feed_polling());
        assert_eq!(p.take(2), Some(Call::FeedPoll));
        assert!(!p.feed_polling());
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn forgetting_a_request_drops_its_calls_and_those_it_would_receive() {
        let mut p = PendingCalls::default();
        p.insert(
            1,
            Call::Pdp {
                ctx: 5,
                receiver: 5,
            },
        );
        // Request 6's PDP call dispatched from request 5's callback: answered to 5.
        p.insert(
            2,
            Call::Pdp {
                ctx: 6,
                receiver: 5,
            },
        );
        p.insert(
            3,
            Call::Usage {
                ctx: 5,
                receiver: 1,
            },
        );
        p.insert(
            4,
            Call::Usage {
                ctx: 6,
                receiver: 6,
            },
        );
        p.insert(5, Call::FeedPoll);
        assert_eq!(p.forget_context(5), Forgotten::default());
        assert_eq!(
            p.take(4),
            Some(Call::Usage {
                ctx: 6,
                receiver: 6
            })
        );
        assert_eq!(p.take(5), Some(Call::FeedPoll));
        assert!(p.is_empty());
    }

    #[test]
    fn forgetting_a_jwks_fetchers_context_reports_the_orphaned_fetch() {
        let mut p = PendingCalls::default();
        p.insert(1, Call::Jwks { receiver: 5 });
        assert_eq!(
            p.forget_context(6),
            Forgotten {
                orphaned_jwks_fetch: false
            }
        );
        assert_eq!(
            p.forget_context(5),
            Forgotten {
                orphaned_jwks_fetch: true
            }
        );
        assert!(p.is_empty());
    }
}
