//! The feed's wire format (the module above documents it): its types, which the authz-server
//! serializes, and their checks. An answer is read in one streaming pass, as strictly as
//! `json::from_slice_strict` reads other documents (objects only, no duplicate or unknown
//! member) but without a `Value` tree in between: as a tree, a full snapshot (50,000 entries)
//! was most of the 42–48 MiB a worker VM's linear memory grew to, which Wasm never gives back.
//! Entries past [`MAX_REVOCATIONS`] are counted, not kept.

use super::{MAX_FEED_BYTES, MAX_JTI_LEN, MAX_REVOCATIONS};
use crate::binding::{CertThumbprint, SpiffeId};
use crate::json::Key;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revocation {
    pub seq: u64,
    pub kind: Kind,
    pub value: String,
    /// `subject` only: tokens with `iat` ≤ this are revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_iat: Option<u64>,
    /// When the entry may be dropped; `None` (JSON `null`) keeps it until replaced. Required
    /// on the wire (an explicit `null`), so a truncated entry is never read as "forever".
    pub expires_at: Option<u64>,
}

/// One feed answer, exactly as on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

impl FeedError {
    /// Whether the follower must drop its `since` and ask for a snapshot: the answer cannot
    /// be applied to the set held (out of sequence, older than it, or a delta with no set),
    /// so asking again from the same `seq` would fail the same way. Other errors are a bad
    /// answer of the moment and are retried as they were.
    pub fn forces_resync(&self) -> bool {
        matches!(
            self,
            Self::WentBackwards | Self::Sequence | Self::NoSnapshot
        )
    }
}

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
    let Read { answer, listed } = read(body).map_err(FeedError::Shape)?;
    if listed > MAX_REVOCATIONS {
        return Err(FeedError::TooMany(listed));
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

/// A feed answer and how many entries it listed (all of them, kept or not).
struct Read {
    answer: FeedAnswer,
    listed: usize,
}

/// Reads one feed answer from `body`, nothing after it.
fn read(body: &[u8]) -> Result<Read, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let read = deserializer
        .deserialize_map(AnswerVisitor)
        .map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    Ok(read)
}

/// Keeps a member's value in `slot`, refusing a member seen before.
fn once<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
    match slot.replace(value) {
        Some(_) => Err(E::duplicate_field(name)),
        None => Ok(()),
    }
}

struct AnswerVisitor;

impl<'de> Visitor<'de> for AnswerVisitor {
    type Value = Read;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a feed answer object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Read, A::Error> {
        let (mut seq, mut snapshot, mut entries) = (None, None, None);
        while let Some(Key(key)) = map.next_key()? {
            match key.as_ref() {
                "seq" => once(&mut seq, "seq", map.next_value::<u64>()?)?,
                "snapshot" => once(&mut snapshot, "snapshot", map.next_value::<bool>()?)?,
                "revocations" => once(&mut entries, "revocations", map.next_value_seed(Entries)?)?,
                other => return Err(de::Error::unknown_field(other, ANSWER_FIELDS)),
            }
        }
        let missing = |name| de::Error::missing_field(name);
        let (revocations, listed) = entries.ok_or_else(|| missing("revocations"))?;
        Ok(Read {
            answer: FeedAnswer {
                seq: seq.ok_or_else(|| missing("seq"))?,
                snapshot: snapshot.ok_or_else(|| missing("snapshot"))?,
                revocations,
            },
            listed,
        })
    }
}

const ANSWER_FIELDS: &[&str] = &["seq", "snapshot", "revocations"];
const ENTRY_FIELDS: &[&str] = &["seq", "kind", "value", "not_before_iat", "expires_at"];

/// The `revocations` array: entries kept up to [`MAX_REVOCATIONS`], the rest only counted.
struct Entries;

impl<'de> DeserializeSeed<'de> for Entries {
    type Value = (Vec<Revocation>, usize);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Entries {
    type Value = (Vec<Revocation>, usize);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of revocation entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut kept = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_REVOCATIONS));
        let mut listed = 0usize;
        loop {
            let more = if kept.len() < MAX_REVOCATIONS {
                seq.next_element_seed(Entry)?.map(|r| kept.push(r))
            } else {
                seq.next_element::<IgnoredAny>()?.map(drop)
            };
            if more.is_none() {
                return Ok((kept, listed));
            }
            listed += 1;
        }
    }
}

/// One entry, from an object only.
struct Entry;

impl<'de> DeserializeSeed<'de> for Entry {
    type Value = Revocation;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Revocation, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Entry {
    type Value = Revocation;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a revocation entry object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Revocation, A::Error> {
        let (mut seq, mut kind, mut value) = (None, None, None);
        // `not_before_iat` may be absent or null; `expires_at` must be there, null or not.
        let (mut not_before_iat, mut expires_at): (Option<Option<u64>>, Option<Option<u64>>) =
            (None, None);
        while let Some(Key(key)) = map.next_key()? {
            match key.as_ref() {
                "seq" => once(&mut seq, "seq", map.next_value::<u64>()?)?,
                "kind" => {
                    let Key(name) = map.next_value()?;
                    let parsed = Kind::parse(&name).ok_or_else(|| {
                        de::Error::unknown_variant(&name, &["jti", "subject", "cert"])
                    })?;
                    once(&mut kind, "kind", parsed)?;
                }
                "value" => once(&mut value, "value", map.next_value::<String>()?)?,
                "not_before_iat" => once(&mut not_before_iat, "not_before_iat", map.next_value()?)?,
                "expires_at" => once(&mut expires_at, "expires_at", map.next_value()?)?,
                other => return Err(de::Error::unknown_field(other, ENTRY_FIELDS)),
            }
        }
        let missing = |name| de::Error::missing_field(name);
        Ok(Revocation {
            seq: seq.ok_or_else(|| missing("seq"))?,
            kind: kind.ok_or_else(|| missing("kind"))?,
            value: value.ok_or_else(|| missing("value"))?,
            not_before_iat: not_before_iat.flatten(),
            expires_at: expires_at.ok_or_else(|| missing("expires_at"))?,
        })
    }
}
