//! The revocation set a sidecar follows from the authz-server's feed: strict parsing of one
//! feed answer, applying deltas and snapshots, answering "is this request revoked?", and the
//! staleness bound that makes the filter fail closed when the feed goes quiet. Pure: the plugin
//! only performs the HTTP long-poll and passes the body and the time in.
//!
//! The feed (`GET /v1/revocations?since=<seq>` on the authz-server) answers
//!
//! ```json
//! {"seq": 42, "snapshot": false,
//!  "revocations": [{"seq": 41, "kind": "jti", "value": "<jti>", "expires_at": 1700000360},
//!                  {"seq": 42, "kind": "subject", "value": "spiffe://…", "not_before_iat": 1700000000,
//!                   "expires_at": null}]}
//! ```
//!
//! - `seq` is the newest sequence number the server has; the next poll asks `since=<seq>`.
//!   The first poll has no `since` and is answered at once with a snapshot; `since=<n>` is
//!   answered at once when the server has news above `n` (a snapshot when `n` is 0 and the
//!   server has entries, or `n` is behind its compaction point or ahead of it), else after
//!   the long-poll wait with an empty delta.
//! - `snapshot: true` means the list is the whole set and replaces what the sidecar holds;
//!   `false` means the entries are news (every entry's `seq` is above the `since` asked).
//! - An entry is keyed by `(kind, value)`; a later `seq` for the same key replaces the earlier
//!   one (a lifted subject ban arrives as the same key with a finite `expires_at`).
//! - `jti`: the token with that `jti` is revoked. `cert`: every request on a connection whose
//!   client certificate has that `x5t#S256` (base64url SHA-256 of the DER) is revoked.
//!   `subject`: every token whose `sub` is that SPIFFE ID and whose `iat` ≤ `not_before_iat`.
//! - `expires_at` (Unix seconds) is when the entry stops mattering (no token it covers can
//!   still be valid) and may be dropped; `null` means it stays until replaced.

use crate::binding::{CertThumbprint, SpiffeId};
use crate::json::from_slice_strict;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

/// Largest feed answer accepted (a snapshot of [`MAX_REVOCATIONS`] short entries fits).
pub const MAX_FEED_BYTES: usize = 8 * 1024 * 1024;
/// Most entries one answer, or the set, may hold; more is refused as garbage.
pub const MAX_REVOCATIONS: usize = 50_000;
/// The feed's path on the authz-server.
pub const FEED_PATH: &str = "/v1/revocations";
/// Longest `jti` accepted (ours are 22 characters).
pub const MAX_JTI_LEN: usize = 256;

/// What a revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One token, by its `jti` claim.
    Jti,
    /// Every token issued to a SPIFFE ID up to a time.
    Subject,
    /// Every request made with one client certificate, by its `x5t#S256` thumbprint.
    Cert,
}

impl Kind {
    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jti => "jti",
            Self::Subject => "subject",
            Self::Cert => "cert",
        }
    }

    /// The kind for a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "jti" => Some(Self::Jti),
            "subject" => Some(Self::Subject),
            "cert" => Some(Self::Cert),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One feed entry, exactly as on the wire (the authz-server serializes this same type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    pub seq: u64,
    pub kind: Kind,
    pub value: String,
    /// `subject` only: tokens with `iat` ≤ this are revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_iat: Option<u64>,
    /// When the entry may be dropped; `None` (JSON `null`) keeps it until replaced. Required
    /// on the wire (an explicit `null`), so a truncated entry is never read as "forever".
    #[serde(deserialize_with = "required_nullable")]
    pub expires_at: Option<u64>,
}

/// A field that must be present but may be `null` (serde treats a bare `Option` as optional).
fn required_nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<u64>::deserialize(d)
}

/// One feed answer, exactly as on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedAnswer {
    /// The newest sequence number the server knows; the next `since`.
    pub seq: u64,
    /// The list is the whole set (replace), not news (merge).
    pub snapshot: bool,
    pub revocations: Vec<Revocation>,
}

/// Why a feed answer was refused. A refused answer never changes the set.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeedError {
    /// Empty, or larger than [`MAX_FEED_BYTES`].
    Size(usize),
    /// Not JSON of the feed shape (unknown or duplicate fields included).
    Shape(String),
    /// More than [`MAX_REVOCATIONS`] entries.
    TooMany(usize),
    /// An entry's `seq` is 0, above the answer's `seq`, not increasing, or (in a delta) not
    /// above the `since` already held.
    Sequence,
    /// An entry's value is not valid for its kind, or `not_before_iat` is missing on a
    /// subject / present on another kind.
    BadEntry(Kind),
    /// A delta whose `seq` is below what the set already holds: the server went backwards,
    /// so ask again without `since` for a snapshot.
    WentBackwards,
    /// A delta arrived before any snapshot.
    NoSnapshot,
}

impl fmt::Display for FeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Size(n) => write!(f, "feed answer of {n} bytes (need 1..={MAX_FEED_BYTES})"),
            Self::Shape(e) => write!(f, "feed answer is not the feed shape: {e}"),
            Self::TooMany(n) => write!(
                f,
                "feed answer lists {n} entries (at most {MAX_REVOCATIONS})"
            ),
            Self::Sequence => f.write_str("feed entries are out of sequence"),
            Self::BadEntry(k) => write!(f, "invalid {k} revocation entry"),
            Self::WentBackwards => f.write_str("feed delta is older than the set held"),
            Self::NoSnapshot => f.write_str("feed delta before any snapshot"),
        }
    }
}

impl std::error::Error for FeedError {}

/// Whether `value` is a valid revocation value of `kind`; the canonical form for `cert` is the
/// `cnf` base64url thumbprint. Shared with the authz-server so both sides agree.
pub fn valid_value(kind: Kind, value: &str) -> bool {
    match kind {
        Kind::Jti => {
            !value.is_empty()
                && value.len() <= MAX_JTI_LEN
                && value.bytes().all(|b| b.is_ascii_graphic())
        }
        Kind::Subject => SpiffeId::parse(value).is_ok(),
        Kind::Cert => CertThumbprint::from_cnf(value).is_ok(),
    }
}

/// Parses and checks one feed answer: bounded size and count, strict JSON (no unknown or
/// duplicate fields), every entry valid for its kind, entry `seq`s strictly increasing,
/// non-zero and at most the answer's `seq`.
pub fn parse_feed(body: &[u8]) -> Result<FeedAnswer, FeedError> {
    if body.is_empty() || body.len() > MAX_FEED_BYTES {
        return Err(FeedError::Size(body.len()));
    }
    let answer: FeedAnswer = from_slice_strict(body).map_err(|e| FeedError::Shape(e.0))?;
    if answer.revocations.len() > MAX_REVOCATIONS {
        return Err(FeedError::TooMany(answer.revocations.len()));
    }
    let mut previous = 0u64;
    for r in &answer.revocations {
        if r.seq == 0 || r.seq <= previous || r.seq > answer.seq {
            return Err(FeedError::Sequence);
        }
        previous = r.seq;
        let iat_ok = match r.kind {
            Kind::Subject => r.not_before_iat.is_some(),
            Kind::Jti | Kind::Cert => r.not_before_iat.is_none(),
        };
        if !iat_ok || !valid_value(r.kind, &r.value) {
            return Err(FeedError::BadEntry(r.kind));
        }
    }
    Ok(answer)
}

/// What the set keeps of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    seq: u64,
    not_before_iat: Option<u64>,
    expires_at: Option<u64>,
}

impl Held {
    fn live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|e| now < e)
    }
}

/// The facts of one request that a revocation can name.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// The token's `jti`.
    pub jti: &'a str,
    /// The token's `sub` (already bound to the connection's certificate).
    pub subject: &'a SpiffeId,
    /// The token's `iat`.
    pub iat: u64,
    /// The connection's client certificate, when there is one (none on the DPoP edge).
    pub cert: Option<&'a CertThumbprint>,
    /// The certificate the token was issued over (its `client_x5t#S256` claim), whatever the
    /// binding: revoking a certificate also revokes the DPoP tokens it obtained.
    pub issued_over: Option<&'a CertThumbprint>,
}

/// The revocations a sidecar knows, by kind and key. Built empty, then fed feed answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationSet {
    /// The newest `seq` applied: the `since` of the next poll; `None` until a snapshot.
    seq: Option<u64>,
    jtis: HashMap<String, Held>,
    subjects: HashMap<String, Held>,
    certs: HashMap<[u8; 32], Held>,
}

impl RevocationSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// The `since` for the next poll, or `None` until a snapshot was applied: then the
    /// plugin asks without `since` and gets a snapshot at once.
    pub fn since(&self) -> Option<u64> {
        self.seq
    }

    /// The path and query of the next poll: `/v1/revocations` for the first (a snapshot at
    /// once), `/v1/revocations?since=<seq>` after (a long-poll).
    pub fn poll_path(&self) -> String {
        match self.seq {
            None => FEED_PATH.to_owned(),
            Some(seq) => format!("{FEED_PATH}?since={seq}"),
        }
    }

    /// Entries held (live or not yet pruned).
    pub fn len(&self) -> usize {
        self.jtis.len() + self.subjects.len() + self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies a parsed answer: a snapshot replaces the set, a delta merges (a later `seq` for
    /// the same key replaces the earlier entry). A delta before any snapshot is refused (the
    /// set would claim a sync it never had). Entries expired at `now` are dropped. On error
    /// the set is unchanged.
    pub fn apply(&mut self, answer: FeedAnswer, now: u64) -> Result<(), FeedError> {
        if answer.snapshot {
            let mut fresh = Self::default();
            fresh.merge(answer.revocations)?;
            fresh.seq = Some(answer.seq);
            *self = fresh;
        } else {
            let Some(held) = self.seq else {
                return Err(FeedError::NoSnapshot);
            };
            if answer.seq < held {
                return Err(FeedError::WentBackwards);
            }
            if answer.revocations.iter().any(|r| r.seq <= held) {
                return Err(FeedError::Sequence);
            }
            let mut next = self.clone();
            next.merge(answer.revocations)?;
            next.seq = Some(answer.seq);
            *self = next;
        }
        self.prune(now);
        Ok(())
    }

    /// Parses `body` and applies it: what the plugin calls with each feed answer.
    pub fn apply_body(&mut self, body: &[u8], now: u64) -> Result<(), FeedError> {
        self.apply(parse_feed(body)?, now)
    }

    fn merge(&mut self, entries: Vec<Revocation>) -> Result<(), FeedError> {
        for r in entries {
            let held = Held {
                seq: r.seq,
                not_before_iat: r.not_before_iat,
                expires_at: r.expires_at,
            };
            match r.kind {
                Kind::Jti => upsert(&mut self.jtis, r.value, held),
                Kind::Subject => upsert(&mut self.subjects, r.value, held),
                Kind::Cert => {
                    let t = CertThumbprint::from_cnf(&r.value)
                        .map_err(|_| FeedError::BadEntry(Kind::Cert))?;
                    upsert(&mut self.certs, *t.as_bytes(), held);
                }
            }
        }
        if self.len() > MAX_REVOCATIONS {
            return Err(FeedError::TooMany(self.len()));
        }
        Ok(())
    }

    /// The whole set as a feed snapshot (entries in `seq` order), e.g. for the root VM to put
    /// in shared data and the worker VMs to load with [`Self::apply_body`]. `None` before the
    /// first snapshot.
    pub fn to_snapshot(&self) -> Option<FeedAnswer> {
        let seq = self.seq?;
        let held = |kind: Kind, value: String, h: &Held| Revocation {
            seq: h.seq,
            kind,
            value,
            not_before_iat: h.not_before_iat,
            expires_at: h.expires_at,
        };
        let mut revocations: Vec<Revocation> = self
            .jtis
            .iter()
            .map(|(v, h)| held(Kind::Jti, v.clone(), h))
            .chain(
                self.subjects
                    .iter()
                    .map(|(v, h)| held(Kind::Subject, v.clone(), h)),
            )
            .chain(
                self.certs
                    .iter()
                    .map(|(t, h)| held(Kind::Cert, URL_SAFE_NO_PAD.encode(t), h)),
            )
            .collect();
        revocations.sort_by_key(|r| r.seq);
        Some(FeedAnswer {
            seq,
            snapshot: true,
            revocations,
        })
    }

    /// Drops entries whose `expires_at` has passed.
    pub fn prune(&mut self, now: u64) {
        self.jtis.retain(|_, h| h.live(now));
        self.subjects.retain(|_, h| h.live(now));
        self.certs.retain(|_, h| h.live(now));
    }

    /// Which revocation, if any, covers this request at `now`. Checked in the order
    /// certificate, subject, token, so the broadest cause is the one reported.
    pub fn is_revoked(&self, p: &Presented<'_>, now: u64) -> Option<Kind> {
        if [p.cert, p.issued_over]
            .into_iter()
            .flatten()
            .filter_map(|cert| self.certs.get(cert.as_bytes()))
            .any(|h| h.live(now))
        {
            return Some(Kind::Cert);
        }
        if self
            .subjects
            .get(p.subject.as_str())
            .is_some_and(|h| h.live(now) && h.not_before_iat.is_some_and(|until| p.iat <= until))
        {
            return Some(Kind::Subject);
        }
        if self.jtis.get(p.jti).is_some_and(|h| h.live(now)) {
            return Some(Kind::Jti);
        }
        None
    }
}

/// Keeps the entry with the higher `seq` for a key: a later revocation of the same key wins.
fn upsert<K: Eq + std::hash::Hash>(map: &mut HashMap<K, Held>, key: K, held: Held) {
    match map.get(&key) {
        Some(old) if old.seq >= held.seq => {}
        _ => {
            map.insert(key, held);
        }
    }
}

/// How fresh the sidecar's knowledge of the feed is. Never having heard from the feed counts
/// as stale: a sidecar that knows no revocations cannot claim to enforce them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Staleness {
    last_ok: Option<u64>,
}

impl Staleness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a feed answer that parsed and applied at `now` (an empty delta counts: the
    /// server said "nothing new" while the long-poll was open).
    pub fn last_ok(&mut self, now: u64) {
        self.last_ok = Some(self.last_ok.map_or(now, |t| t.max(now)));
    }

    /// When the feed last answered well, if ever.
    pub fn last_ok_at(&self) -> Option<u64> {
        self.last_ok
    }

    /// Stale when the feed never answered, or last answered more than `max_staleness`
    /// seconds before `now`. The long-poll wait must stay well below `max_staleness`.
    pub fn is_stale(&self, now: u64, max_staleness: u64) -> bool {
        match self.last_ok {
            None => true,
            Some(t) => now.saturating_sub(t) > max_staleness,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSUMER: &str = "spiffe://certbind.test/ns/demo/sa/consumer";
    const INVENTORY: &str = "spiffe://certbind.test/ns/demo/sa/inventory";

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    fn thumb(n: u8) -> CertThumbprint {
        CertThumbprint::from_der(&[n])
    }

    fn entry(seq: u64, kind: Kind, value: &str, nbi: Option<u64>, exp: Option<u64>) -> Revocation {
        Revocation {
            seq,
            kind,
            value: value.to_owned(),
            not_before_iat: nbi,
            expires_at: exp,
        }
    }

    fn body(seq: u64, snapshot: bool, entries: &[Revocation]) -> Vec<u8> {
        serde_json::to_vec(&FeedAnswer {
            seq,
            snapshot,
            revocations: entries.to_vec(),
        })
        .unwrap()
    }

    fn req<'a>(
        jti: &'a str,
        sub: &'a SpiffeId,
        iat: u64,
        cert: Option<&'a CertThumbprint>,
    ) -> Presented<'a> {
        Presented {
            jti,
            subject: sub,
            iat,
            cert,
            issued_over: None,
        }
    }

    #[test]
    fn revokes_a_jti_and_admits_other_tokens() {
        let mut set = RevocationSet::new();
        set.apply_body(
            &body(1, true, &[entry(1, Kind::Jti, "abc", None, Some(2000))]),
            1000,
        )
        .unwrap();
        let sub = id(CONSUMER);
        assert_eq!(
            set.is_revoked(&req("abc", &sub, 900, None), 1000),
            Some(Kind::Jti)
        );
        assert_eq!(set.is_revoked(&req("abd", &sub, 900, None), 1000), None);
        assert_eq!(set.since(), Some(1));
    }

    #[test]
    fn revokes_a_subject_only_for_tokens_issued_up_to_the_revocation() {
        let mut set = RevocationSet::new();
        let e = entry(3, Kind::Subject, INVENTORY, Some(1000), None);
        set.apply_body(&body(3, true, &[e]), 1000).unwrap();
        let inv = id(INVENTORY);
        let con = id(CONSUMER);
        assert_eq!(
            set.is_revoked(&req("j", &inv, 999, None), 1001),
            Some(Kind::Subject)
        );
        assert_eq!(
            set.is_revoked(&req("j", &inv, 1000, None), 1001),
            Some(Kind::Subject)
        );
        assert_eq!(set.is_revoked(&req("j", &inv, 1001, None), 1001), None);
        assert_eq!(set.is_revoked(&req("j", &con, 999, None), 1001), None);
        // No expiry: still revoked much later.
        assert_eq!(
            set.is_revoked(&req("j", &inv, 999, None), 9_999_999),
            Some(Kind::Subject)
        );
    }

    #[test]
    fn revokes_a_certificate_and_admits_other_certificates_and_no_certificate() {
        let mut set = RevocationSet::new();
        let t = thumb(1);
        set.apply_body(
            &body(1, true, &[entry(1, Kind::Cert, &t.to_cnf(), None, None)]),
            10,
        )
        .unwrap();
        let sub = id(CONSUMER);
        let other = thumb(2);
        assert_eq!(
            set.is_revoked(&req("j", &sub, 5, Some(&t)), 10),
            Some(Kind::Cert)
        );
        assert_eq!(set.is_revoked(&req("j", &sub, 5, Some(&other)), 10), None);
        assert_eq!(set.is_revoked(&req("j", &sub, 5, None), 10), None);
    }

    #[test]
    fn a_revoked_certificate_reaches_the_dpop_tokens_it_obtained() {
        let mut set = RevocationSet::new();
        let t = thumb(1);
        set.apply_body(
            &body(1, true, &[entry(1, Kind::Cert, &t.to_cnf(), None, None)]),
            10,
        )
        .unwrap();
        let sub = id(CONSUMER);
        let other = thumb(2);
        // On the DPoP edge there is no connection certificate, only the token's claim.
        let mut dpop = req("j", &sub, 5, None);
        dpop.issued_over = Some(&t);
        assert_eq!(set.is_revoked(&dpop, 10), Some(Kind::Cert));
        dpop.issued_over = Some(&other);
        assert_eq!(set.is_revoked(&dpop, 10), None);
    }

    #[test]
    fn reports_the_broadest_cause_first() {
        let mut set = RevocationSet::new();
        let t = thumb(1);
        let entries = [
            entry(1, Kind::Jti, "j", None, None),
            entry(2, Kind::Subject, CONSUMER, Some(100), None),
            entry(3, Kind::Cert, &t.to_cnf(), None, None),
        ];
        set.apply_body(&body(3, true, &entries), 10).unwrap();
        let sub = id(CONSUMER);
        assert_eq!(
            set.is_revoked(&req("j", &sub, 5, Some(&t)), 10),
            Some(Kind::Cert)
        );
        assert_eq!(
            set.is_revoked(&req("j", &sub, 5, None), 10),
            Some(Kind::Subject)
        );
        assert_eq!(
            set.is_revoked(&req("j", &sub, 500, None), 10),
            Some(Kind::Jti)
        );
    }

    #[test]
    fn an_entry_stops_revoking_at_its_expiry_and_is_pruned() {
        let mut set = RevocationSet::new();
        set.apply_body(
            &body(1, true, &[entry(1, Kind::Jti, "abc", None, Some(2000))]),
            1000,
        )
        .unwrap();
        let sub = id(CONSUMER);
        assert_eq!(
            set.is_revoked(&req("abc", &sub, 900, None), 1999),
            Some(Kind::Jti)
        );
        assert_eq!(set.is_revoked(&req("abc", &sub, 900, None), 2000), None);
        set.prune(2000);
        assert!(set.is_empty());
        // An already expired entry is not even kept.
        set.apply_body(
            &body(2, false, &[entry(2, Kind::Jti, "x", None, Some(5))]),
            1000,
        )
        .unwrap();
        assert!(set.is_empty());
        assert_eq!(set.since(), Some(2));
    }

    #[test]
    fn a_snapshot_replaces_the_set_and_a_delta_merges() {
        let mut set = RevocationSet::new();
        let sub = id(CONSUMER);
        set.apply_body(
            &body(
                2,
                true,
                &[
                    entry(1, Kind::Jti, "a", None, None),
                    entry(2, Kind::Jti, "b", None, None),
                ],
            ),
            0,
        )
        .unwrap();
        set.apply_body(&body(3, false, &[entry(3, Kind::Jti, "c", None, None)]), 0)
            .unwrap();
        assert_eq!(set.len(), 3);
        set.apply_body(&body(9, true, &[entry(9, Kind::Jti, "z", None, None)]), 0)
            .unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.is_revoked(&req("a", &sub, 0, None), 0), None);
        assert_eq!(set.is_revoked(&req("z", &sub, 0, None), 0), Some(Kind::Jti));
        assert_eq!(set.since(), Some(9));
        // An empty delta moves nothing but is accepted.
        set.apply_body(&body(9, false, &[]), 0).unwrap();
        assert_eq!(set.since(), Some(9));
        // An empty snapshot clears.
        set.apply_body(&body(10, true, &[]), 0).unwrap();
        assert!(set.is_empty());
    }

    #[test]
    fn a_later_entry_for_the_same_key_replaces_the_earlier_one() {
        let mut set = RevocationSet::new();
        let inv = id(INVENTORY);
        set.apply_body(
            &body(
                1,
                true,
                &[entry(1, Kind::Subject, INVENTORY, Some(100), None)],
            ),
            150,
        )
        .unwrap();
        // The ban is lifted at 200: old tokens stay revoked until 200 + TTL, then it is gone.
        set.apply_body(
            &body(
                2,
                false,
                &[entry(2, Kind::Subject, INVENTORY, Some(100), Some(560))],
            ),
            200,
        )
        .unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(
            set.is_revoked(&req("j", &inv, 90, None), 300),
            Some(Kind::Subject)
        );
        assert_eq!(set.is_revoked(&req("j", &inv, 90, None), 560), None);
    }

    #[test]
    fn refuses_deltas_that_go_backwards_or_repeat_old_sequence_numbers() {
        let mut set = RevocationSet::new();
        set.apply_body(&body(5, true, &[entry(5, Kind::Jti, "a", None, None)]), 0)
            .unwrap();
        let before = set.clone();
        assert_eq!(
            set.apply_body(&body(4, false, &[]), 0),
            Err(FeedError::WentBackwards)
        );
        assert_eq!(
            set.apply_body(&body(6, false, &[entry(5, Kind::Jti, "b", None, None)]), 0),
            Err(FeedError::Sequence)
        );
        assert_eq!(set, before);
        // A snapshot from a reset server (lower seq) is accepted: it is the whole truth.
        set.apply_body(&body(1, true, &[]), 0).unwrap();
        assert_eq!(set.since(), Some(1));
    }

    #[test]
    fn refuses_garbage_and_keeps_the_set() {
        let mut set = RevocationSet::new();
        set.apply_body(&body(1, true, &[entry(1, Kind::Jti, "a", None, None)]), 0)
            .unwrap();
        let before = set.clone();
        let big = vec![b' '; MAX_FEED_BYTES + 1];
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            big,
            b"not json".to_vec(),
            b"[]".to_vec(),
            br#"{"seq":2,"snapshot":false}"#.to_vec(),
            br#"{"seq":2,"snapshot":false,"revocations":[],"extra":1}"#.to_vec(),
            br#"{"seq":2,"seq":3,"snapshot":false,"revocations":[]}"#.to_vec(),
            br#"{"seq":-1,"snapshot":false,"revocations":[]}"#.to_vec(),
            br#"{"seq":2,"snapshot":"no","revocations":[]}"#.to_vec(),
            br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"key","value":"a","expires_at":null}]}"#.to_vec(),
            br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"jti","value":"a"}]}"#.to_vec(),
            br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"jti","value":"","expires_at":null}]}"#.to_vec(),
            br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"jti","value":"a b","expires_at":null}]}"#.to_vec(),
            br#"{"seq":2,"snapshot":false,"revocations":[{"seq":3,"kind":"jti","value":"a","expires_at":null}]}"#.to_vec(),
            br#"{"seq":2,"snapshot":false,"revocations":[{"seq":0,"kind":"jti","value":"a","expires_at":null}]}"#.to_vec(),
            br#"{"seq":3,"snapshot":false,"revocations":[{"seq":3,"kind":"jti","value":"a","expires_at":null},{"seq":2,"kind":"jti","value":"b","expires_at":null}]}"#.to_vec(),
            br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"jti","value":"a","not_before_iat":5,"expires_at":null}]}"#.to_vec(),
            br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"subject","value":"spiffe://certbind.test/ns/demo/sa/x","expires_at":null}]}"#.to_vec(),
            br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"subject","value":"https://x/y","not_before_iat":5,"expires_at":null}]}"#.to_vec(),
            br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"cert","value":"abcd","expires_at":null}]}"#.to_vec(),
            br#"{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"jti","value":"a","expires_at":null,"reason":"x"}]}"#.to_vec(),
        ];
        for bad in cases {
            assert!(
                set.apply_body(&bad, 0).is_err(),
                "accepted {}",
                String::from_utf8_lossy(&bad)
            );
            assert_eq!(set, before);
        }
        let too_many: Vec<Revocation> = (1..=MAX_REVOCATIONS as u64 + 1)
            .map(|i| entry(i, Kind::Jti, &format!("j{i}"), None, None))
            .collect();
        let n = too_many.len() as u64;
        assert_eq!(
            parse_feed(&body(n, true, &too_many)),
            Err(FeedError::TooMany(MAX_REVOCATIONS + 1))
        );
    }

    #[test]
    fn parses_the_documented_shape() {
        let t = thumb(7).to_cnf();
        let text = format!(
            r#"{{"seq":42,"snapshot":false,"revocations":[
              {{"seq":40,"kind":"cert","value":"{t}","expires_at":null}},
              {{"seq":41,"kind":"jti","value":"AAECAwQFBgcICQoLDA0ODw","expires_at":1700000360}},
              {{"seq":42,"kind":"subject","value":"{INVENTORY}","not_before_iat":1700000000,"expires_at":null}}]}}"#
        );
        let a = parse_feed(text.as_bytes()).unwrap();
        assert_eq!(a.seq, 42);
        assert!(!a.snapshot);
        assert_eq!(a.revocations[1].kind, Kind::Jti);
        assert_eq!(a.revocations[1].expires_at, Some(1_700_000_360));
        assert_eq!(a.revocations[2].not_before_iat, Some(1_700_000_000));
        // Serializing gives the same shape back.
        let again = parse_feed(&serde_json::to_vec(&a).unwrap()).unwrap();
        assert_eq!(again, a);
    }

    #[test]
    fn is_stale_until_the_first_answer_and_after_the_bound() {
        let mut s = Staleness::new();
        assert!(s.is_stale(0, 30));
        assert!(s.is_stale(1000, 30));
        s.last_ok(1000);
        assert_eq!(s.last_ok_at(), Some(1000));
        assert!(!s.is_stale(1000, 30));
        assert!(!s.is_stale(1030, 30));
        assert!(s.is_stale(1031, 30));
        s.last_ok(1025);
        assert!(!s.is_stale(1055, 30));
        // A clock stepping back never makes the record older.
        s.last_ok(900);
        assert_eq!(s.last_ok_at(), Some(1025));
    }

    #[test]
    fn refuses_a_delta_before_any_snapshot_and_asks_for_one_first() {
        let mut set = RevocationSet::new();
        assert_eq!(set.since(), None);
        assert_eq!(set.poll_path(), "/v1/revocations");
        assert_eq!(
            set.apply_body(&body(1, false, &[entry(1, Kind::Jti, "a", None, None)]), 0),
            Err(FeedError::NoSnapshot)
        );
        assert_eq!(set, RevocationSet::new());
        // An empty snapshot at seq 0 is a real sync: the next poll long-polls from 0.
        set.apply_body(&body(0, true, &[]), 0).unwrap();
        assert_eq!(set.since(), Some(0));
        assert_eq!(set.poll_path(), "/v1/revocations?since=0");
    }

    #[test]
    fn a_set_round_trips_through_its_snapshot_for_other_worker_vms() {
        let mut set = RevocationSet::new();
        assert_eq!(set.to_snapshot(), None);
        let t = thumb(3).to_cnf();
        let entries = [
            entry(4, Kind::Cert, &t, None, None),
            entry(5, Kind::Subject, INVENTORY, Some(100), None),
            entry(7, Kind::Jti, "j", None, Some(900)),
        ];
        set.apply_body(&body(7, true, &entries), 10).unwrap();
        let bytes = serde_json::to_vec(&set.to_snapshot().unwrap()).unwrap();
        let mut worker = RevocationSet::new();
        worker.apply_body(&bytes, 10).unwrap();
        assert_eq!(worker, set);
        assert_eq!(parse_feed(&bytes).unwrap().revocations, entries);
    }

    #[test]
    fn kinds_have_stable_wire_names() {
        for k in [Kind::Jti, Kind::Subject, Kind::Cert] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("JTI"), None);
    }
}
