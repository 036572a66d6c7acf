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

mod wire;

pub use wire::{FeedAnswer, FeedError, Kind, Revocation, parse_feed, valid_value};

use crate::binding::{CertThumbprint, SpiffeId};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// Largest feed answer accepted (a snapshot of [`MAX_REVOCATIONS`] short entries fits).
pub const MAX_FEED_BYTES: usize = 8 * 1024 * 1024;
/// Most entries one answer, or the set, may hold; more is refused as garbage.
pub const MAX_REVOCATIONS: usize = 50_000;
/// The feed's path on the authz-server.
pub const FEED_PATH: &str = "/v1/revocations";
/// Longest `jti` accepted (ours are 22 characters).
pub const MAX_JTI_LEN: usize = 256;

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

/// How often (seconds) a delta also drops every expired entry: a sweep costs what the set
/// holds (~2.5 million Wasm instructions for 50,000 entries), a delta only what it lists.
/// Expired entries revoke nothing meanwhile.
const PRUNE_EVERY_S: u64 = 60;

/// The revocations a sidecar knows, by kind and key. Built empty, then fed feed answers.
#[derive(Debug, Clone, Default)]
pub struct RevocationSet {
    /// The newest `seq` applied: the `since` of the next poll; `None` until a snapshot.
    seq: Option<u64>,
    jtis: HashMap<String, Held>,
    subjects: HashMap<String, Held>,
    certs: HashMap<[u8; 32], Held>,
    /// When (Unix seconds) a delta next sweeps out expired entries.
    next_prune: u64,
}

/// Two sets are equal when they hold the same entries at the same `seq`, whenever they swept.
impl PartialEq for RevocationSet {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
            && self.jtis == other.jtis
            && self.subjects == other.subjects
            && self.certs == other.certs
    }
}

impl Eq for RevocationSet {}

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
    /// set would claim a sync it never had). Entries expired at `now` are not kept, and those
    /// that expired since are swept out every [`PRUNE_EVERY_S`]. On error the set holds the
    /// same live entries. A delta costs what it lists, not what the set holds: it is checked
    /// whole first, then merged in place.
    pub fn apply(&mut self, answer: FeedAnswer, now: u64) -> Result<(), FeedError> {
        if answer.snapshot {
            let mut fresh = Self::default();
            let count = |k| answer.revocations.iter().filter(|r| r.kind == k).count();
            fresh.jtis.reserve(count(Kind::Jti));
            fresh.subjects.reserve(count(Kind::Subject));
            fresh.certs.reserve(count(Kind::Cert));
            for r in answer.revocations {
                fresh.upsert(keyed(r)?, now);
            }
            if fresh.len() > MAX_REVOCATIONS {
                return Err(FeedError::TooMany(fresh.len()));
            }
            fresh.seq = Some(answer.seq);
            fresh.next_prune = now.saturating_add(PRUNE_EVERY_S);
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
            let entries = answer
                .revocations
                .into_iter()
                .map(keyed)
                .collect::<Result<Vec<_>, _>>()?;
            if self.len() + self.new_keys(&entries) > MAX_REVOCATIONS {
                // Expired entries still held must not crowd out live news.
                self.prune(now);
            }
            let total = self.len() + self.new_keys(&entries);
            if total > MAX_REVOCATIONS {
                return Err(FeedError::TooMany(total));
            }
            for entry in entries {
                self.upsert(entry, now);
            }
            self.seq = Some(answer.seq);
            if now >= self.next_prune {
                self.prune(now);
            }
        }
        Ok(())
    }

    /// Parses `body` and applies it: what the plugin calls with each feed answer.
    pub fn apply_body(&mut self, body: &[u8], now: u64) -> Result<(), FeedError> {
        self.apply(parse_feed(body)?, now)
    }

    fn holds(&self, key: &Keyed) -> bool {
        match key {
            Keyed::Jti(v) => self.jtis.contains_key(v),
            Keyed::Subject(v) => self.subjects.contains_key(v),
            Keyed::Cert(t) => self.certs.contains_key(t),
        }
    }

    /// How many of `entries`' keys the set does not hold yet.
    fn new_keys(&self, entries: &[(Keyed, Held)]) -> usize {
        let new: HashSet<&Keyed> = entries
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !self.holds(k))
            .collect();
        new.len()
    }

    fn upsert(&mut self, (key, held): (Keyed, Held), now: u64) {
        match key {
            Keyed::Jti(v) => upsert(&mut self.jtis, v, held, now),
            Keyed::Subject(v) => upsert(&mut self.subjects, v, held, now),
            Keyed::Cert(t) => upsert(&mut self.certs, t, held, now),
        }
    }

    /// The whole set as a feed snapshot's JSON (entries in `seq` order), e.g. for the VM that
    /// follows the feed to put in shared data and the others to load with
    /// [`Self::apply_body`]. `None` before the first snapshot. Written from borrowed entries
    /// into a buffer sized up front: a full set is megabytes, and a worker VM's linear memory
    /// keeps its peak for good.
    pub fn snapshot_json(&self) -> Option<Vec<u8>> {
        #[derive(Serialize)]
        struct Entry<'a> {
            seq: u64,
            kind: Kind,
            value: Cow<'a, str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            not_before_iat: Option<u64>,
            expires_at: Option<u64>,
        }
        #[derive(Serialize)]
        struct Snapshot<'a> {
            seq: u64,
            snapshot: bool,
            revocations: Vec<Entry<'a>>,
        }
        fn entry<'a>(kind: Kind, value: Cow<'a, str>, h: &Held) -> Entry<'a> {
            Entry {
                seq: h.seq,
                kind,
                value,
                not_before_iat: h.not_before_iat,
                expires_at: h.expires_at,
            }
        }
        let seq = self.seq?;
        let mut revocations: Vec<Entry<'_>> = Vec::with_capacity(self.len());
        revocations.extend(self.jtis.iter().map(|(v, h)| entry(Kind::Jti, v.into(), h)));
        revocations.extend(
            self.subjects
                .iter()
                .map(|(v, h)| entry(Kind::Subject, v.into(), h)),
        );
        revocations.extend(
            self.certs
                .iter()
                .map(|(t, h)| entry(Kind::Cert, URL_SAFE_NO_PAD.encode(t).into(), h)),
        );
        revocations.sort_unstable_by_key(|r| r.seq);
        // An entry's members and punctuation take under 100 bytes besides its value.
        let size = revocations
            .iter()
            .map(|r| r.value.len() + 100)
            .sum::<usize>()
            + 64;
        let mut out = Vec::with_capacity(size);
        let snapshot = Snapshot {
            seq,
            snapshot: true,
            revocations,
        };
        serde_json::to_writer(&mut out, &snapshot).ok()?;
        Some(out)
    }

    /// Drops entries whose `expires_at` has passed.
    pub fn prune(&mut self, now: u64) {
        self.jtis.retain(|_, h| h.live(now));
        self.subjects.retain(|_, h| h.live(now));
        self.certs.retain(|_, h| h.live(now));
        self.next_prune = now.saturating_add(PRUNE_EVERY_S);
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

/// Keeps the entry with the higher `seq` for a key: a later revocation of the same key wins,
/// and one already expired at `now` leaves nothing (a lifted ban).
fn upsert<K: Eq + std::hash::Hash>(map: &mut HashMap<K, Held>, key: K, held: Held, now: u64) {
    match map.get(&key) {
        Some(old) if old.seq >= held.seq => {}
        _ if held.live(now) => {
            map.insert(key, held);
        }
        _ => {
            map.remove(&key);
        }
    }
}

/// An entry's key in the set: its kind and value, a certificate's thumbprint decoded.
#[derive(PartialEq, Eq, Hash)]
enum Keyed {
    Jti(String),
    Subject(String),
    Cert([u8; 32]),
}

/// An entry as the set keeps it; a certificate value that is no thumbprint is refused.
fn keyed(r: Revocation) -> Result<(Keyed, Held), FeedError> {
    let held = Held {
        seq: r.seq,
        not_before_iat: r.not_before_iat,
        expires_at: r.expires_at,
    };
    let key = match r.kind {
        Kind::Jti => Keyed::Jti(r.value),
        Kind::Subject => Keyed::Subject(r.value),
        Kind::Cert => Keyed::Cert(
            *CertThumbprint::from_cnf(&r.value)
                .map_err(|_| FeedError::BadEntry(Kind::Cert))?
                .as_bytes(),
        ),
    };
    Ok((key, held))
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
mod tests;
