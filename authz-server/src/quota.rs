//! How far the revocation list may grow, and what a client's own revocation (`/revoke`,
//! RFC 7009) becomes when it would grow it too far. Pure: the revocation service gathers the
//! rows and counts under its store lock and records what this plans.
//!
//! The bound the server guarantees, whatever clients do:
//! - a client holds at most [`CLIENT_JTI_QUOTA`] live `jti` rows of its own, and clients
//!   together at most [`LIST_CAP`] rows in the list;
//! - past either, the token is still revoked — by coalescing: the client's `subject` row
//!   revokes every token of the client issued at or before the token's `iat` (sidecars and
//!   `/introspect` enforce it like any subject row), so one row per client replaces the rest;
//! - a token already covered (its `jti` row, or a subject row reaching its `iat`) writes
//!   nothing, so a flood of `/revoke` writes at most one row per client per second (`iat` has
//!   second resolution), and each row leaves when the last token it covers has expired;
//! - operators add new `jti` rows only below [`LIST_CAP`] and any new row only below
//!   [`HARD_CAP`].
//!
//! So the live list stays below [`HARD_CAP`] plus one coalesced row per registered client
//! (at most [`crate::clients::MAX_CLIENTS`]): 49,096, under the filter's own limit
//! (`certbind_core::revocation::MAX_REVOCATIONS`, 50,000), checked when this compiles.

use crate::store::{NewRevocation, Row};
use certbind_core::binding::SpiffeId;
use certbind_core::revocation::Kind;

/// The longest token lifetime the server can be configured with (`serve --token-ttl`).
pub const MAX_TOKEN_TTL: u64 = 300;
/// Kept beyond the last covered token's expiry: sidecars accept `exp` with some clock skew
/// (30 s by default), so the row must outlive that.
pub const CLOCK_SKEW_MARGIN: u64 = 60;
/// Live `jti` rows one client may hold through `/revoke`.
pub const CLIENT_JTI_QUOTA: u64 = 64;
/// Rows in the list past which clients' revocations coalesce and operators add no `jti` row.
pub const LIST_CAP: usize = 40_000;
/// Rows in the list past which operators add no new row at all (replacing one still works).
pub const HARD_CAP: usize = 45_000;
// The server's bound stays under what the filter takes, or this does not compile.
const _: () = assert!(
    LIST_CAP < HARD_CAP
        && HARD_CAP + crate::clients::MAX_CLIENTS < certbind_core::revocation::MAX_REVOCATIONS
);

/// The reason of a coalesced row.
pub const COALESCED_REASON: &str = "client_request_coalesced";

/// The verified token a client asked to revoke.
#[derive(Debug, Clone, Copy)]
pub struct Revoked<'a> {
    pub client_id: &'a str,
    pub subject: &'a SpiffeId,
    pub jti: &'a str,
    pub iat: u64,
    pub exp: u64,
}

/// What happens to a client's revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Already covered by a live row: nothing to write.
    AlreadyRevoked,
    /// A `jti` row within the client's quota.
    Jti(NewRevocation),
    /// Over quota or list cap: the client's subject row, raised to cover this token.
    Coalesced(NewRevocation),
}

impl Outcome {
    /// The row to record, if any.
    pub fn row(&self) -> Option<&NewRevocation> {
        match self {
            Self::AlreadyRevoked => None,
            Self::Jti(r) | Self::Coalesced(r) => Some(r),
        }
    }

    /// The request log's word for it.
    pub fn detail(&self) -> &'static str {
        match self {
            Self::AlreadyRevoked => "already_revoked",
            Self::Jti(_) => "revoked",
            Self::Coalesced(_) => "revoked_coalesced",
        }
    }
}

/// Plans a client's revocation of `t` at `now`, given the token's live `jti` row, the
/// subject's live row, how many live `jti` rows the client holds and how many rows the list
/// holds.
pub fn plan_client_revocation(
    t: &Revoked<'_>,
    jti_row: Option<&Row>,
    subject_row: Option<&Row>,
    client_live: u64,
    list_len: usize,
    now: u64,
) -> Outcome {
    let covers = |r: &Row| r.entry.not_before_iat.is_some_and(|until| t.iat <= until);
    if jti_row.is_some() || subject_row.is_some_and(covers) {
        return Outcome::AlreadyRevoked;
    }
    if client_live < CLIENT_JTI_QUOTA && list_len < LIST_CAP {
        return Outcome::Jti(NewRevocation {
            kind: Kind::Jti,
            value: t.jti.to_owned(),
            reason: "client_request".to_owned(),
            revoked_at: now,
            not_before_iat: None,
            expires_at: Some(t.exp.saturating_add(CLOCK_SKEW_MARGIN)),
            banned: false,
            client_id: Some(t.client_id.to_owned()),
        });
    }
    // Every token of the client issued up to this one's `iat`; it ends when the last of them
    // can have expired. A ban in force stays a ban (same reason, same end or later).
    let until = subject_row
        .and_then(|r| r.entry.not_before_iat)
        .map_or(t.iat, |held| held.max(t.iat));
    let last_token_gone = until
        .saturating_add(MAX_TOKEN_TTL)
        .saturating_add(CLOCK_SKEW_MARGIN);
    let ban = subject_row.filter(|r| r.entry.banned);
    Outcome::Coalesced(NewRevocation {
        kind: Kind::Subject,
        value: t.subject.as_str().to_owned(),
        reason: ban.map_or_else(|| COALESCED_REASON.to_owned(), |r| r.entry.reason.clone()),
        revoked_at: ban.map_or(now, |r| r.entry.revoked_at),
        not_before_iat: Some(until),
        expires_at: match ban {
            Some(r) => r.entry.expires_at.map(|e| e.max(last_token_gone)),
            None => Some(last_token_gone),
        },
        banned: ban.is_some(),
        client_id: None,
    })
}

/// Whether an operator may add a row of `kind` to a list of `list_len` rows; replacing an
/// existing key never grows the list and is always allowed. `Err`: why not (safe to send).
pub fn operator_may_add(kind: Kind, replaces: bool, list_len: usize) -> Result<(), &'static str> {
    if replaces {
        return Ok(());
    }
    if list_len >= HARD_CAP {
        return Err("the revocation list is full; wait for entries to expire");
    }
    if kind == Kind::Jti && list_len >= LIST_CAP {
        return Err("the revocation list is near its bound: revoke the token's subject instead");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSUMER: &str = "spiffe://certbind.test/ns/demo/sa/consumer";

    fn sub() -> SpiffeId {
        SpiffeId::parse(CONSUMER).unwrap()
    }

    fn token<'a>(sub: &'a SpiffeId, jti: &'a str, iat: u64) -> Revoked<'a> {
        Revoked {
            client_id: "consumer",
            subject: sub,
            jti,
            iat,
            exp: iat + 300,
        }
    }

    fn subject_row(nbi: u64, banned: bool, exp: Option<u64>) -> Row {
        Row {
            seq: 9,
            entry: NewRevocation {
                kind: Kind::Subject,
                value: CONSUMER.into(),
                reason: if banned { "operator" } else { COALESCED_REASON }.into(),
                revoked_at: 500,
                not_before_iat: Some(nbi),
                expires_at: exp,
                banned,
                client_id: None,
            },
        }
    }

    #[test]
    fn within_quota_a_token_gets_its_own_jti_row_until_its_exp_plus_margin() {
        let s = sub();
        let t = token(&s, "j1", 1000);
        let Outcome::Jti(row) = plan_client_revocation(&t, None, None, 63, 39_999, 1001) else {
            panic!("expected a jti row");
        };
        assert_eq!(row.value, "j1");
        assert_eq!(row.expires_at, Some(1300 + CLOCK_SKEW_MARGIN));
        assert_eq!(row.client_id.as_deref(), Some("consumer"));
    }

    #[test]
    fn over_quota_or_cap_the_token_is_still_revoked_by_one_subject_row() {
        let s = sub();
        let t = token(&s, "j65", 1000);
        for (live, len) in [(64, 10), (0, LIST_CAP)] {
            let Outcome::Coalesced(row) = plan_client_revocation(&t, None, None, live, len, 1001)
            else {
                panic!("expected coalescing at {live}/{len}");
            };
            assert_eq!(row.kind, Kind::Subject);
            assert_eq!(row.value, CONSUMER);
            assert_eq!(row.not_before_iat, Some(1000));
            assert_eq!(
                row.expires_at,
                Some(1000 + MAX_TOKEN_TTL + CLOCK_SKEW_MARGIN)
            );
            assert!(!row.banned);
        }
        // The bound only rises: an older token never lowers it.
        let held = subject_row(1200, false, Some(1560));
        let Outcome::Coalesced(row) =
            plan_client_revocation(&token(&s, "late", 1300), None, Some(&held), 64, 10, 1301)
        else {
            panic!("expected coalescing");
        };
        assert_eq!(row.not_before_iat, Some(1300));
    }

    #[test]
    fn a_covered_token_writes_nothing() {
        let s = sub();
        let jti_row = Row {
            seq: 1,
            entry: NewRevocation {
                kind: Kind::Jti,
                value: "j1".into(),
                reason: "client_request".into(),
                revoked_at: 1000,
                not_before_iat: None,
                expires_at: Some(1360),
                banned: false,
                client_id: Some("consumer".into()),
            },
        };
        let t = token(&s, "j1", 1000);
        assert_eq!(
            plan_client_revocation(&t, Some(&jti_row), None, 64, 10, 1001),
            Outcome::AlreadyRevoked
        );
        let held = subject_row(1000, false, Some(1360));
        assert_eq!(
            plan_client_revocation(&token(&s, "j2", 999), None, Some(&held), 64, 10, 1001),
            Outcome::AlreadyRevoked
        );
        // A newer token than the bound is not covered.
        assert!(matches!(
            plan_client_revocation(&token(&s, "j3", 1001), None, Some(&held), 64, 10, 1001),
            Outcome::Coalesced(_)
        ));
    }

    #[test]
    fn coalescing_into_a_ban_keeps_the_ban_its_reason_and_its_end() {
        let s = sub();
        let ban = subject_row(900, true, None);
        let Outcome::Coalesced(row) =
            plan_client_revocation(&token(&s, "j", 1000), None, Some(&ban), 64, 10, 1001)
        else {
            panic!("expected coalescing");
        };
        assert!(row.banned);
        assert_eq!(row.reason, "operator");
        assert_eq!(row.expires_at, None);
        assert_eq!(row.revoked_at, 500);
        assert_eq!(row.not_before_iat, Some(1000));
    }

    #[test]
    fn operators_add_rows_below_the_caps_and_always_replace() {
        assert!(operator_may_add(Kind::Jti, false, LIST_CAP - 1).is_ok());
        assert!(operator_may_add(Kind::Jti, false, LIST_CAP).is_err());
        assert!(operator_may_add(Kind::Subject, false, LIST_CAP).is_ok());
        assert!(operator_may_add(Kind::Cert, false, HARD_CAP).is_err());
        assert!(operator_may_add(Kind::Cert, true, HARD_CAP + 5).is_ok());
    }
}
