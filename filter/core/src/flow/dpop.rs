//! The DPoP half of a DPoP listener's checks, after the token verified.

use super::engine::{DpopMemo, Engine};
use super::request::RequestFacts;
use crate::binding::{BoundToken, SpiffeId, bind_dpop, dpop_jkt};
use crate::dpop::{
    DpopError, ProofCheck, access_token_hash, request_htu, verify_proof_by_host, verify_proof_with,
};
use crate::reason::Reason;
use crate::token::{AuthScheme, VerifiedToken, authorization_token};
use std::rc::Rc;

/// The DPoP half of a DPoP listener's checks, after the token verified (CONTRACT §4 order):
/// the token's `cnf` (`binding_*`), then the `DPoP` scheme and exactly one proof, the proof
/// itself against this request and the token (`verify_proof`: method, URL, `iat`, `ath`,
/// `jkt`), the subject, and last the shared replay cache, so only a proof that passed every
/// other check uses up its `jti`. Errors carry the failed check's name for the log. `ath`:
/// the token's `ath`, computed here only if no earlier proof with this token did.
pub(super) fn check_dpop(
    engine: &mut Engine,
    facts: &RequestFacts,
    (scheme, memo): (AuthScheme, &DpopMemo),
    token: Rc<VerifiedToken>,
    now_s: u64,
) -> Result<BoundToken, (Reason, Option<&'static str>)> {
    let invalid = |detail: &'static str| (Reason::DpopInvalid, Some(detail));
    let jkt = dpop_jkt(&token).map_err(|reason| (reason, None))?;
    // A DPoP-bound token sent as `Bearer`: RFC 9449 §7.1 wants the `DPoP` scheme, so a
    // stolen DPoP token cannot pass a check that skips the proof.
    if scheme != AuthScheme::Dpop {
        return Err(invalid("bearer_scheme"));
    }
    let [proof] = facts.dpop.as_slice() else {
        return Err(invalid(if facts.dpop.is_empty() {
            "no_proof"
        } else {
            "many_proofs"
        }));
    };
    let (Some(dpop), Some(replay)) = (engine.config.dpop.as_ref(), engine.replay.as_ref()) else {
        return Err(invalid("not_configured"));
    };
    let htu = request_htu(&dpop.public_origin, &facts.path).ok_or(invalid("bad_request_uri"))?;
    // The token verified from this very header, so the memo (keyed with it in the token
    // cache) is its hash; the header is read again only by the first proof.
    let ath = memo.ath.get_or_init(|| {
        let token = facts
            .authorization
            .as_deref()
            .and_then(|a| authorization_token(a).ok())
            .map_or("", |(_, t)| t);
        access_token_hash(token)
    });
    let check = ProofCheck {
        method: &facts.method,
        htu: &htu,
        now_s,
        window: dpop.window(),
        ath: Some(ath),
        jkt: Some(jkt),
        nonces: &[],
    };
    let failed = |e: DpopError| (e.reason(), Some(e.as_str()));
    let proof = match engine.signatures.as_deref() {
        Some(host) => verify_proof_by_host(proof, &check, Some(&mut engine.proof_keys), host),
        None => verify_proof_with(proof, &check, Some(&mut engine.proof_keys)),
    }
    .map_err(failed)?;
    let subject = memo
        .subject
        .get_or_init(|| SpiffeId::parse(token.subject()).ok());
    let bound = bind_dpop(token, &proof, subject.as_ref(), &engine.config.trust_domain)
        .map_err(|reason| (reason, None))?;
    let client = memo
        .client_tag
        .get_or_init(|| replay.client_tag(bound.subject().as_str()));
    replay
        .check_and_record(engine.replay_store.as_mut(), &proof, client, now_s)
        .map_err(failed)?;
    Ok(bound)
}
