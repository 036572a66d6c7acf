//! The attack catalogue: each row is what an attacker does, how it is sent, and what certbind
//! must answer (CONTRACT §4); [`run`] sends it to the bearer-token baseline and to the certbind
//! sidecar and judges the certbind answer. Positive controls prove the system still works.
//! The DPoP rows go to the orders edge listener (no client certificate, DPoP-bound tokens
//! only); their baseline call carries the same token as a plain bearer token, which is what a
//! bearer-only check does with a stolen DPoP token.
//!
//! The parts: `model` (target, rows, expectations), `context` (what is gathered before the
//! table runs), `catalogue` (the rows as data), `answer` (answers, verdicts, finished rows);
//! this file sends the rows.

mod answer;
mod catalogue;
mod context;
mod model;

pub use answer::{Answer, Row, Verdict, judge};
pub use catalogue::catalogue;
pub use context::{Context, SetupError};
pub use model::{Attack, Caller, Expect, Probe, Service, Show, Target, short_id};

use crate::client::{HttpsClient, Request};
use crate::control::outage;
use std::net::SocketAddr;

/// Sends one probe to one address with one client.
async fn send(client: &HttpsClient, addr: SocketAddr, request: &Request) -> Answer {
    match client.send(addr, request).await {
        Ok(response) => Answer::from_response(&response),
        Err(e) => Answer::from_error(e),
    }
}

/// Why a row aimed at the authz-server has no baseline answer.
const NO_BASELINE_AUTHZ: &str = "n/a: the bearer-only baseline has no authorization server, so no \
     introspection endpoint to ask (certbind's own answered active=true with scope, audience and \
     client to any workload before issue 16)";

/// Runs one row: the baseline call (anonymous, as from anywhere) and the certbind call (with the
/// caller's certificate), with a dependency down around both when the row asks for it.
pub async fn run_one(ctx: &Context, attack: Attack) -> Row {
    let (baseline, certbind) = match &attack.probe {
        Err(why) => (Answer::NotRun(why.clone()), Answer::NotRun(why.clone())),
        Ok(p) => {
            let guard = match p
                .outage
                .map(|which| outage(ctx.target.control.as_ref(), which))
            {
                Some(Err(e)) => {
                    let why = format!("could not take it down: {e}");
                    return finish(attack, Answer::NotRun(why.clone()), Answer::NotRun(why));
                }
                Some(Ok(guard)) => Some(guard),
                None => None,
            };
            let baseline_request = p.baseline_request.as_ref().unwrap_or(&p.request);
            let baseline = match ctx.baseline(p.service) {
                Some(addr) => send(&ctx.anonymous, addr, baseline_request).await,
                None => Answer::NotRun(NO_BASELINE_AUTHZ.into()),
            };
            let client = p.client.as_ref().unwrap_or_else(|| ctx.client(p.caller));
            let certbind = send(client, ctx.sidecar(p.service), &p.request).await;
            drop(guard);
            (baseline, certbind)
        }
    };
    finish(attack, baseline, certbind)
}

fn finish(attack: Attack, baseline: Answer, certbind: Answer) -> Row {
    let verdict = judge(&attack, &baseline, &certbind);
    Row {
        attack,
        baseline,
        certbind,
        verdict,
    }
}

/// Runs the whole catalogue in order, calling `each` as every row finishes.
pub async fn run(ctx: &Context, mut each: impl FnMut(&Row)) -> Vec<Row> {
    let mut rows = Vec::new();
    for attack in catalogue(ctx) {
        let row = run_one(ctx, attack).await;
        each(&row);
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests;
