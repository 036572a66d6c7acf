//! Rows that report what `Context::prepare` measured (a race, floods, credentials that ended):
//! their request is data like any row's, their `how` carries the measurement, and a
//! measurement outside its bounds turns the expectation into one no answer meets, so the row
//! fails.

use super::{Kit, Spec, Want, control, row};
use crate::attacks::Attack;
use crate::attacks::model::{Caller::*, Expect, Probe, edge_probe};

/// The measured rows, in the order they run.
pub(super) fn rows(kit: &Kit<'_>) -> Vec<Attack> {
    vec![
        usage_race(kit),
        dpop_token_after_cert_revoked(kit),
        revocation_flood(kit),
        session_after_cert_expired(kit),
        replay_cache_flood(kit),
    ]
}

/// Never met: a measurement out of bounds fails its row.
fn unmet() -> Expect {
    Expect::Deny(Vec::new())
}

fn build(spec: &Spec, kit: &Kit<'_>, how: Option<String>, expect: Expect) -> Attack {
    spec.attack(how.unwrap_or_default(), expect, (spec.probe)(kit))
}

const USAGE_RACE: Spec = row(
    "usage-token-race",
    "Race: many parallel uses of one usage-bound token",
    "",
    Want::Deny(&[(401, "usage_exhausted")]),
    |k| {
        let race = k.ctx.usage_race.as_ref().map_err(Clone::clone)?;
        k.get_order(Consumer, &race.token)
    },
);

/// The race ran in `prepare`; exactly `max_uses` admitted is the row's first condition, one
/// more use refused its second.
fn usage_race(kit: &Kit<'_>) -> Attack {
    let race = kit.ctx.usage_race.as_ref().ok();
    let how = race.map(|r| {
        format!(
            "{} parallel GET /orders/1 with one {}-use token: certbind admitted {}, refused {} as usage_exhausted; then one more use",
            r.attempts, r.max_uses, r.admitted, r.exhausted
        )
    });
    let expect = match race {
        Some(r) if r.admitted != r.max_uses as usize => unmet(),
        _ => USAGE_RACE.want.expect(),
    };
    build(&USAGE_RACE, kit, how, expect)
}

const CERT_REVOKED: Spec = row(
    "dpop-token-after-cert-revoked",
    "DPoP token (and its proof key) used after the certificate that obtained it was revoked",
    "",
    Want::Deny(&[(401, "revoked")]),
    |k| {
        let r = k.ctx.revoked_cert_dpop.as_ref().map_err(Clone::clone)?;
        let request =
            crate::hardening::fresh_edge_get(&k.ctx.target.edge_origin, &r.key, &r.token)?;
        Ok(edge_probe(request, &r.token))
    },
);

/// Revoking ran in `prepare`, on a second consumer certificate of its own, so no other row
/// loses its credentials.
fn dpop_token_after_cert_revoked(kit: &Kit<'_>) -> Attack {
    let how = kit.ctx.revoked_cert_dpop.as_ref().ok().map(|r| {
        format!(
            "consumer (second certificate) got a DPoP token, used it (200); operator revoked that certificate; edge refused the token after {}; no client cert + the token + a fresh proof by its key, GET /orders/1",
            r.refused_after
                .map_or("more than 10 s".to_owned(), |d| format!("{} ms", d.as_millis()))
        )
    });
    build(&CERT_REVOKED, kit, how, CERT_REVOKED.want.expect())
}

const REVOCATION_FLOOD: Spec = row(
    "revocation-flood",
    "Revocation flood: one workload revokes its own fresh tokens to grow the list until sidecars fail",
    "",
    Want::Deny(&[(401, "revoked")]),
    |k| {
        let flood = k.ctx.revocation_flood.as_ref().map_err(Clone::clone)?;
        k.get_order(Inventory, &flood.token)
    },
);

/// The flood ran in `prepare`; the list growing by at most the quota plus one coalesced row
/// and the other workload served throughout are the row's first conditions, the flooder's own
/// last token refused its second.
fn revocation_flood(kit: &Kit<'_>) -> Attack {
    let flood = kit.ctx.revocation_flood.as_ref().ok();
    let how = flood.map(|f| {
        format!(
            "inventory revoked {} fresh tokens of its own at POST /revoke in {:.1} s: revocation list {} -> {} rows; consumer then served {}/{}; inventory cert + its last revoked token, GET /orders/1",
            f.revoked, f.secs, f.list_before, f.list_after, f.others_admitted, f.others_sent
        )
    });
    let expect = match flood {
        // An unbounded list or a starved workload fails the row.
        Some(f) if f.list_after > f.list_before + 65 || f.others_admitted != f.others_sent => {
            unmet()
        }
        _ => REVOCATION_FLOOD.want.expect(),
    };
    build(&REVOCATION_FLOOD, kit, how, expect)
}

const SESSION_AFTER_CERT_EXPIRED: Spec = row(
    "session-resumption-after-cert-expired",
    "Certificate expired: keep access through a resumed TLS session (tickets outlived it)",
    "",
    // The sidecar offers no session to resume, so the full handshake meets the expired
    // certificate; where resumption is on, the filter answers 401 certificate_expired
    // (tests/tests/hardening_e2e.rs).
    Want::TlsRefused,
    |k| {
        let e = k.ctx.expiring.as_ref().map_err(Clone::clone)?;
        Ok(Probe {
            client: Some(e.client.clone()),
            ..k.get_order(Consumer, &e.token)?
        })
    },
);

fn session_after_cert_expired(kit: &Kit<'_>) -> Attack {
    let how = kit.ctx.expiring.as_ref().ok().map(|e| {
        format!(
            "consumer on a {} s certificate got a token and was admitted (200); after notAfter the same client (resumes any session it was offered) + that token, GET /orders/1",
            e.lifetime.as_secs()
        )
    });
    let spec = &SESSION_AFTER_CERT_EXPIRED;
    build(spec, kit, how, spec.want.expect())
}

const REPLAY_CACHE_FLOOD: Spec = control(
    "dpop-replay-cache-flood",
    "Control under attack: one client floods the edge's DPoP replay cache; another client's fresh proof is still admitted",
    "",
    "consumer",
    |k| {
        k.ctx.replay_flood.as_ref().map_err(Clone::clone)?;
        let victim = &k.ctx.dpop_read.as_ref().map_err(Clone::clone)?.access_token;
        let origin = &k.ctx.target.edge_origin;
        let request = crate::hardening::fresh_edge_get(origin, &k.ctx.dpop_key, victim)?;
        Ok(edge_probe(request, victim))
    },
);

/// The flood ran in `prepare`: inventory filled its share (503 replay_cache_full, never
/// dpop_replay) and consumer's fresh proofs were all admitted; then one more.
fn replay_cache_flood(kit: &Kit<'_>) -> Attack {
    let measured = match (&kit.ctx.replay_flood, &kit.ctx.dpop_read) {
        (Ok(f), Ok(_)) => Some(f),
        _ => None,
    };
    let how = measured.map(|f| {
        format!(
            "inventory sent {} fresh DPoP proofs with two proof keys of its own to the edge in {:.1} s ({} admitted, {} refused 503 replay_cache_full, {} dpop_replay, {} other); then consumer's fresh proofs: {}/{} admitted; no client cert + consumer's DPoP token + a fresh proof, GET /orders/1",
            f.sent, f.secs, f.admitted, f.full, f.replay, f.other, f.victim_admitted, f.victim_sent
        )
    });
    let expect = match measured {
        // Never seen upstream: a flood that never filled its share, or a victim refused,
        // fails the row.
        Some(f) if !(f.full > 0 && f.replay == 0 && f.victim_admitted == f.victim_sent) => {
            Expect::Allow {
                subject: "(the flood's conditions failed)".to_owned(),
            }
        }
        _ => REPLAY_CACHE_FLOOD.want.expect(),
    };
    build(&REPLAY_CACHE_FLOOD, kit, how, expect)
}
