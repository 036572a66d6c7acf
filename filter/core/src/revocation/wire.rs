//! The feed answer read in one streaming pass, as strictly as `json::from_slice_strict` reads
//! other documents (objects only, no duplicate or unknown member) but without a `Value` tree in
//! between: a full snapshot (50,000 entries) as a tree took ~50 MB of a worker VM's linear
//! memory, which Wasm never gives back. Entries past [`MAX_REVOCATIONS`] are counted, not kept.

use super::{FeedAnswer, Kind, MAX_REVOCATIONS, Revocation};
use crate::json::Key;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// A feed answer and how many entries it listed (all of them, kept or not).
pub(super) struct Read {
    pub answer: FeedAnswer,
    pub listed: usize,
}

/// Reads one feed answer from `body`, nothing after it.
pub(super) fn read(body: &[u8]) -> Result<Read, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let read = deserializer
        .deserialize_map(AnswerVisitor)
        .map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    Ok(read)
}

/// Refuses a member seen before; `slot` is where it goes.
fn first<T, E: de::Error>(slot: &Option<T>, name: &'static str) -> Result<(), E> {
    match slot {
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
                "seq" => {
                    first(&seq, "seq")?;
                    seq = Some(map.next_value::<u64>()?);
                }
                "snapshot" => {
                    first(&snapshot, "snapshot")?;
                    snapshot = Some(map.next_value::<bool>()?);
                }
                "revocations" => {
                    first(&entries, "revocations")?;
                    entries = Some(map.next_value_seed(Entries)?);
                }
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
                "seq" => {
                    first(&seq, "seq")?;
                    seq = Some(map.next_value::<u64>()?);
                }
                "kind" => {
                    first(&kind, "kind")?;
                    let Key(name) = map.next_value()?;
                    kind = Some(Kind::parse(&name).ok_or_else(|| {
                        de::Error::unknown_variant(&name, &["jti", "subject", "cert"])
                    })?);
                }
                "value" => {
                    first(&value, "value")?;
                    value = Some(map.next_value::<String>()?);
                }
                "not_before_iat" => {
                    first(&not_before_iat, "not_before_iat")?;
                    not_before_iat = Some(map.next_value()?);
                }
                "expires_at" => {
                    first(&expires_at, "expires_at")?;
                    expires_at = Some(map.next_value()?);
                }
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
