//! Strict JSON for untrusted input: duplicate object keys are refused at every depth
//! (serde_json keeps the last one silently, which lets two parsers disagree on one token).

mod objects_only;

use objects_only::ObjectsOnly;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::fmt;

/// Why strict parsing failed. Only logged, never echoed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError(pub String);

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JsonError {}

/// Parses `bytes` as one JSON object, refusing duplicate keys, then deserializes it into `T`.
/// Every document read here is an object, and so is every struct in it: serde's derive would
/// also fill a struct from an array of its fields in order, which no peer sends and no reader
/// should accept (see `objects_only`).
pub fn from_slice_strict<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    let StrictValue(value) = serde_json::from_slice(bytes).map_err(|e| JsonError(e.to_string()))?;
    if !value.is_object() {
        return Err(JsonError("not a JSON object".into()));
    }
    from_value(value)
}

/// A value already read strictly (a member of a [`from_slice_strict`] document), deserialized
/// into `T` with the same rule: every struct in it from an object only.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, JsonError> {
    T::deserialize(ObjectsOnly(value)).map_err(|e| JsonError(e.to_string()))
}

/// The members `names` of the JSON object `bytes` (each `None` when absent), in one pass: no
/// tree of the whole object and no second pass into a struct. Every member, named or not, is
/// held to the same rule as [`from_slice_strict`] (no duplicate key at any depth), and
/// anything but one object is refused.
pub fn strict_members<const N: usize>(
    bytes: &[u8],
    names: [&str; N],
) -> Result<[Option<Value>; N], JsonError> {
    let error = |e: serde_json::Error| JsonError(e.to_string());
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let members = deserializer
        .deserialize_map(Members { names })
        .map_err(error)?;
    deserializer.end().map_err(error)?;
    Ok(members)
}

/// A member as serde's derive reads an `Option<_>` field: absent and `null` are both `None`.
pub fn present(member: Option<Value>) -> Option<Value> {
    member.filter(|value| !value.is_null())
}

/// A string value, anything else refused.
pub fn string(value: Value) -> Result<String, JsonError> {
    match value {
        Value::String(s) => Ok(s),
        _ => Err(JsonError("not a string".into())),
    }
}

/// A member as serde's derive reads an `Option<String>` field: absent or `null` is `None`, a
/// string is itself, anything else is refused.
pub fn optional_string(member: Option<Value>) -> Result<Option<String>, JsonError> {
    present(member).map(string).transpose()
}

/// A member as serde's derive reads an `Option<Number>` field, likewise.
pub fn optional_number(member: Option<Value>) -> Result<Option<Number>, JsonError> {
    match present(member) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(Some(n)),
        Some(_) => Err(JsonError("not a number".into())),
    }
}

struct Members<'n, const N: usize> {
    names: [&'n str; N],
}

impl<'de, const N: usize> Visitor<'de> for Members<'_, N> {
    type Value = [Option<Value>; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object without duplicate keys")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found: [Option<Value>; N] = std::array::from_fn(|_| None);
        // Keys of members not asked for, kept only to refuse their duplicates.
        let mut others = std::collections::BTreeSet::new();
        while let Some(Key(key)) = map.next_key()? {
            let StrictValue(value) = map.next_value()?;
            let slot = self
                .names
                .iter()
                .position(|name| *name == key)
                .and_then(|i| found.get_mut(i));
            let duplicate = match slot {
                Some(slot) => slot.replace(value).is_some(),
                None if others.contains(&key) => true,
                None => {
                    others.insert(key);
                    continue;
                }
            };
            if duplicate {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
        }
        Ok(found)
    }
}

/// A member's key, borrowed from the input unless it had escapes to undo.
pub(crate) struct Key<'de>(pub(crate) Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }
}

/// A `serde_json::Value` whose objects had no duplicate keys.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value without duplicate object keys")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        // The map itself tells whether a key came before: no second set, no key copies.
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let StrictValue(value) = map.next_value()?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_duplicate_keys_at_top_level() {
        let err = from_slice_strict::<Value>(br#"{"a":1,"a":2}"#).unwrap_err();
        assert!(err.0.contains("duplicate key"), "{err}");
    }

    #[test]
    fn refuses_duplicate_keys_when_nested() {
        assert!(from_slice_strict::<Value>(br#"{"a":[{"b":1,"b":1}]}"#).is_err());
        assert!(from_slice_strict::<Value>(br#"{"cnf":{"x":"1","x":"2"}}"#).is_err());
    }

    #[test]
    fn refuses_keys_that_are_equal_after_unescaping() {
        assert!(from_slice_strict::<Value>(br#"{"iss":1,"i\u0073s":2}"#).is_err());
    }

    #[test]
    fn refuses_a_document_that_is_not_an_object_even_where_a_struct_would_take_it() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Pair {
            a: u8,
            b: u8,
        }
        assert!(serde_json::from_slice::<Pair>(b"[1,2]").is_ok());
        for refused in [&b"[1,2]"[..], b"3", b"null", b"\"a\""] {
            assert!(from_slice_strict::<Pair>(refused).is_err());
            assert!(from_slice_strict::<Value>(refused).is_err());
        }
        assert!(from_slice_strict::<Pair>(br#"{"a":1,"b":2}"#).is_ok());
    }

    #[test]
    fn refuses_a_nested_struct_written_as_an_array() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Key {
            kty: String,
            x: Option<String>,
        }
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Set {
            keys: Vec<Key>,
            one: Option<Key>,
        }
        let read = |text: &str| from_slice_strict::<Set>(text.as_bytes());
        // What serde's derive alone takes, at each depth.
        assert!(serde_json::from_str::<Set>(r#"{"keys":[["EC","x"]]}"#).is_ok());
        assert!(serde_json::from_str::<Set>(r#"{"keys":[],"one":["EC",null]}"#).is_ok());
        for refused in [
            r#"{"keys":[["EC","x"]]}"#,
            r#"{"keys":[{"kty":"EC"},["EC"]]}"#,
            r#"{"keys":[],"one":["EC",null]}"#,
            r#"{"keys":{"kty":"EC"}}"#,
            r#"{"keys":[{"kty":["EC"]}]}"#,
            r#"{"keys":[{"kty":"EC","kty":"EC"}]}"#,
        ] {
            let err = read(refused).unwrap_err();
            assert!(!err.0.is_empty(), "{refused}");
        }
        assert!(
            read(r#"{"keys":[["EC","x"]]}"#)
                .unwrap_err()
                .0
                .contains("Key must be a JSON object")
        );
        let admitted = read(r#"{"keys":[{"kty":"EC","x":"a"},{"kty":"EC","x":null}],"one":null}"#);
        assert_eq!(
            admitted.unwrap(),
            Set {
                keys: vec![
                    Key {
                        kty: "EC".into(),
                        x: Some("a".into())
                    },
                    Key {
                        kty: "EC".into(),
                        x: None
                    },
                ],
                one: None,
            }
        );
    }

    #[test]
    fn reads_every_kind_of_field_as_serde_json_does() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        #[serde(rename_all = "lowercase")]
        enum Mode {
            Enforce,
            Shadow,
        }
        #[derive(serde::Deserialize, Debug, PartialEq)]
        #[serde(deny_unknown_fields)]
        struct All {
            n: u8,
            i: i64,
            f: f64,
            b: bool,
            mode: Mode,
            list: Vec<u32>,
            map: std::collections::BTreeMap<String, u16>,
            any: Value,
            #[serde(default)]
            absent: Option<String>,
        }
        let text = r#"{"n":7,"i":-3,"f":1.5,"b":true,"mode":"shadow","list":[1,2],
            "map":{"a":1},"any":{"x":[1,{"y":null}]}}"#;
        let strict: All = from_slice_strict(text.as_bytes()).unwrap();
        let plain: All = serde_json::from_str(text).unwrap();
        assert_eq!(strict, plain);
        for refused in [
            text.replace(r#""n":7"#, r#""n":300"#),
            text.replace(r#""mode":"shadow""#, r#""mode":"audit""#),
            text.replace(r#""list":[1,2]"#, r#""list":{"a":1}"#),
            text.replace(r#""map":{"a":1}"#, r#""map":[["a",1]]"#),
            text.replace(r#""b":true"#, r#""b":true,"extra":1"#),
        ] {
            assert!(
                from_slice_strict::<All>(refused.as_bytes()).is_err(),
                "{refused}"
            );
        }
    }

    #[test]
    fn admits_ordinary_json_unchanged() {
        let text = br#"{"a":1,"b":[true,null,"x",-2,1.5],"c":{"a":{}}}"#;
        let strict: Value = from_slice_strict(text).unwrap();
        let plain: Value = serde_json::from_slice(text).unwrap();
        assert_eq!(strict, plain);
    }

    #[test]
    fn strict_members_are_the_named_members_of_one_strict_object() {
        let [a, b, c] =
            strict_members(br#"{"b":[1,{"x":2}],"a":"1","z":{}}"#, ["a", "b", "c"]).unwrap();
        assert_eq!((a, c), (Some(Value::from("1")), None));
        assert_eq!(b, Some(serde_json::json!([1, {"x": 2}])));
        for refused in [
            &br#"{"a":1,"a":2}"#[..],
            br#"{"z":1,"z":2}"#,
            br#"{"a":1,"\u0061":2}"#,
            br#"{"z":1,"\u007a":2}"#,
            br#"{"z":{"y":1,"y":1}}"#,
            br#"{"a":[{"y":1,"y":1}]}"#,
            br#"{"a":1} x"#,
            br#"["a", 1]"#,
            br#""a""#,
            b"\xff",
            b"",
        ] {
            assert!(
                strict_members(refused, ["a"]).is_err(),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
    }

    #[test]
    fn refuses_trailing_garbage_and_non_json() {
        assert!(from_slice_strict::<Value>(br#"{"a":1} x"#).is_err());
        assert!(from_slice_strict::<Value>(b"\xff").is_err());
    }
}
