//! The policy model as written in YAML and its loader: unknown fields are refused, and every
//! error names the file, line and column.
//!
//! ```yaml
//! rules:
//!   - id: consumer-orders-read          # unique; named in every answer it decides
//!     effect: allow                     # allow | deny (deny wins; nothing matching = deny)
//!     subjects: [spiffe://certbind.test/ns/demo/sa/consumer]   # or .../sa/* or .../ns/**
//!     audiences: [spiffe://certbind.test/ns/demo/sa/orders]    # same pattern language
//!     methods: [GET]                    # case-sensitive, upper case; "*" = any method
//!     paths: [/orders, /orders/*]       # exact, "*" = one segment, final "**" = one or more
//!     scopes: [orders:read]             # all required (allow rules only)
//!     ttl_s: 30                         # how long the filter may cache the allow (default 30)
//!     conditions:                       # optional, all must hold
//!       source_cidrs: [127.0.0.0/8, "::1/128"]
//!       time_windows: [{days: [mon, tue, wed, thu, fri], start: "08:00", end: "18:00"}]
//!       max_token_age_s: 300            # from the token's iat
//!       min_tls_version: TLSv1.3
//! ```

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer};

use crate::condition::{Cidr, Conditions, FromStrValue, TimeWindow, TlsVersion};
use crate::pattern::{SegmentGlob, SpiffePattern};

/// The default `ttl_s` of an allow rule.
pub const DEFAULT_TTL_S: u64 = 30;
/// The longest cache lifetime a rule may grant: a day, so a revoked permission cannot linger.
pub const MAX_TTL_S: u64 = 86_400;
/// The largest policy file accepted.
pub const MAX_POLICY_BYTES: usize = 8 * 1024 * 1024;

/// A rule's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

/// A method: an upper-case HTTP token, or `*` for any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodSpec {
    Any,
    Exact(Box<str>),
}

impl std::str::FromStr for MethodSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Self::Any);
        }
        // Methods are case-sensitive (RFC 9110 §9.1); a lower-case entry would never match a
        // real request, so it is refused as the typo it almost certainly is.
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "method `{s}` must be upper case (methods are case-sensitive) or `*`"
            ));
        }
        Ok(Self::Exact(s.into()))
    }
}

/// A scope: a non-empty OAuth scope token (RFC 6749 §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(pub Box<str>);

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if ok {
            Ok(Self(s.into()))
        } else {
            Err(format!("scope `{s}` is not a valid scope token"))
        }
    }
}

/// A rule id: `[A-Za-z0-9._:-]`, 1..=128 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleId(pub Box<str>);

impl std::str::FromStr for RuleId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
        if ok {
            Ok(Self(s.into()))
        } else {
            Err(format!(
                "rule id `{s}` must be 1..=128 characters of [A-Za-z0-9._:-]"
            ))
        }
    }
}

impl std::str::FromStr for SpiffePattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        SpiffePattern::parse(s).map_err(|e| format!("`{s}`: {e}"))
    }
}

impl std::str::FromStr for SegmentGlob {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        SegmentGlob::parse_path(s).map_err(|e| format!("path `{s}`: {e}"))
    }
}

/// A list that must not be empty (an empty `subjects` would be a rule that silently never
/// applies). Each element is parsed with `FromStr` so errors point at the element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonEmpty<T>(pub Vec<T>);

impl<'de, T: std::str::FromStr<Err = String>> Deserialize<'de> for NonEmpty<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<FromStrValue<T>>::deserialize(d)?;
        if items.is_empty() {
            return Err(serde::de::Error::custom(
                "the list is empty: a rule must name at least one entry (use a pattern for many)",
            ));
        }
        Ok(Self(items.into_iter().map(|v| v.0).collect()))
    }
}

/// The conditions block as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConditions {
    #[serde(default)]
    source_cidrs: Option<NonEmpty<Cidr>>,
    #[serde(default)]
    time_windows: Option<Vec<TimeWindow>>,
    #[serde(default)]
    max_token_age_s: Option<u64>,
    #[serde(default)]
    min_tls_version: Option<FromStrValue<TlsVersion>>,
}

impl<'de> Deserialize<'de> for Conditions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawConditions::deserialize(d)?;
        if raw.time_windows.as_ref().is_some_and(Vec::is_empty) {
            return Err(serde::de::Error::custom(
                "`time_windows` is empty: omit it, or name at least one window",
            ));
        }
        if raw.max_token_age_s == Some(0) {
            return Err(serde::de::Error::custom(
                "`max_token_age_s` must be at least 1",
            ));
        }
        Ok(Self {
            source_cidrs: raw.source_cidrs.map(|c| c.0),
            time_windows: raw.time_windows,
            max_token_age_s: raw.max_token_age_s,
            min_tls_version: raw.min_tls_version.map(|v| v.0),
        })
    }
}

/// One rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: FromStrValue<RuleId>,
    effect: Effect,
    subjects: NonEmpty<SpiffePattern>,
    audiences: NonEmpty<SpiffePattern>,
    methods: NonEmpty<MethodSpec>,
    paths: NonEmpty<SegmentGlob>,
    #[serde(default)]
    scopes: Option<Vec<FromStrValue<Scope>>>,
    #[serde(default)]
    ttl_s: Option<u64>,
    #[serde(default)]
    conditions: Option<Conditions>,
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: RuleId,
    pub effect: Effect,
    pub subjects: Vec<SpiffePattern>,
    pub audiences: Vec<SpiffePattern>,
    pub methods: Vec<MethodSpec>,
    pub paths: Vec<SegmentGlob>,
    pub scopes: Vec<Scope>,
    /// 0 for deny rules.
    pub ttl_s: u64,
    pub conditions: Conditions,
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw = RawRule::deserialize(d)?;
        let id = raw.id.0;
        if raw.effect == Effect::Deny {
            // A deny that depended on holding scopes, or that were cached, would be surprising.
            if raw.scopes.is_some() {
                return Err(D::Error::custom(format!(
                    "rule `{}`: `scopes` only applies to allow rules",
                    id.0
                )));
            }
            if raw.ttl_s.is_some() {
                return Err(D::Error::custom(format!(
                    "rule `{}`: `ttl_s` only applies to allow rules",
                    id.0
                )));
            }
        }
        let ttl_s = match raw.effect {
            Effect::Deny => 0,
            Effect::Allow => raw.ttl_s.unwrap_or(DEFAULT_TTL_S),
        };
        if ttl_s > MAX_TTL_S {
            return Err(D::Error::custom(format!(
                "rule `{}`: `ttl_s` {ttl_s} exceeds {MAX_TTL_S}",
                id.0
            )));
        }
        Ok(Self {
            id,
            effect: raw.effect,
            subjects: raw.subjects.0,
            audiences: raw.audiences.0,
            methods: raw.methods.0,
            paths: raw.paths.0,
            scopes: raw
                .scopes
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.0)
                .collect(),
            ttl_s,
            conditions: raw.conditions.unwrap_or_default(),
        })
    }
}

/// The whole file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    rules: Vec<Rule>,
}

/// A validated policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

/// Why a policy file was refused. Displays as `file:line:column: message` (or `file: message`
/// when the problem has no position, such as an unreadable file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for PolicyError {}

/// Parses and validates a policy document. `file` names it in errors.
pub fn parse(source: &str, file: &str) -> Result<Policy, PolicyError> {
    let err = |position, message: String| PolicyError {
        file: file.to_owned(),
        position,
        message,
    };
    if source.len() > MAX_POLICY_BYTES {
        return Err(err(None, format!("larger than {MAX_POLICY_BYTES} bytes")));
    }
    let raw: RawPolicy = serde_yaml::from_str(source).map_err(|e| {
        let position = e.location().map(|l| (l.line(), l.column()));
        // serde_yaml appends " at line L column C" itself; the prefix already says it.
        let mut message = e.to_string();
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        err(position, message)
    })?;
    let mut seen = HashSet::new();
    for rule in &raw.rules {
        if !seen.insert(rule.id.clone()) {
            let position = locate_duplicate_id(source, &rule.id.0);
            return Err(err(position, format!("duplicate rule id `{}`", rule.id.0)));
        }
    }
    Ok(Policy { rules: raw.rules })
}

/// The line and column of the second `id: <id>` in the source (serde gives no positions for a
/// check across rules, so the text is searched).
fn locate_duplicate_id(source: &str, id: &str) -> Option<(usize, usize)> {
    let mut hits = source.lines().enumerate().filter_map(|(n, line)| {
        let trimmed = line.trim_start().trim_start_matches("- ").trim_start();
        let value = trimmed.strip_prefix("id:")?.trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        (value == id).then(|| (n + 1, line.len() - trimmed.len() + 1))
    });
    hits.nth(1)
}

/// Reads and parses a policy file.
pub fn load(path: &Path) -> Result<(Policy, Vec<u8>), PolicyError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| PolicyError {
        file: name.clone(),
        position: None,
        message: format!("cannot read: {e}"),
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| PolicyError {
        file: name.clone(),
        position: None,
        message: "not UTF-8".into(),
    })?;
    let policy = parse(text, &name)?;
    Ok((policy, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(src: &str) -> PolicyError {
        parse(src, "p.yaml").unwrap_err()
    }

    const GOOD: &str = "rules:
  - id: r1
    effect: allow
    subjects: [spiffe://certbind.test/ns/demo/sa/consumer]
    audiences: [spiffe://certbind.test/ns/demo/sa/orders]
    methods: [GET]
    paths: [/orders]
    scopes: [orders:read]
";

    #[test]
    fn parses_a_minimal_rule_with_defaults() {
        let p = parse(GOOD, "p.yaml").unwrap();
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.rules[0].ttl_s, DEFAULT_TTL_S);
        assert!(p.rules[0].conditions.is_empty());
    }

    #[test]
    fn refuses_unknown_fields_with_file_line_and_column() {
        let e = error_of(&GOOD.replace("    scopes:", "    admin: true\n    scopes:"));
        assert_eq!(e.position.map(|p| p.0), Some(8), "{e}");
        assert!(e.to_string().starts_with("p.yaml:8:"), "{e}");
        assert!(e.message.contains("admin"), "{e}");
    }

    #[test]
    fn points_at_the_bad_value_itself() {
        let e = error_of(&GOOD.replace("[GET]", "[GET, get]"));
        assert_eq!(e.position, Some((6, 20)), "{e}");
        let e = error_of(&GOOD.replace("[/orders]", "[/orders/../x]"));
        assert_eq!(e.position.map(|p| p.0), Some(7), "{e}");
        let e = error_of(&format!(
            "{GOOD}    conditions:\n      source_cidrs: [10.0.0.1/8]\n"
        ));
        assert_eq!(e.position.map(|p| p.0), Some(10), "{e}");
    }

    #[test]
    fn refuses_semantic_mistakes() {
        for (bad, why) in [
            (
                GOOD.replace("[orders:read]", "[orders:read]\n    ttl_s: 100000"),
                "ttl",
            ),
            (GOOD.replace("allow", "deny"), "scopes on deny"),
            (GOOD.replace("[GET]", "[]"), "empty methods"),
            (GOOD.replace("effect: allow", "effect: permit"), "effect"),
            (GOOD.replace("id: r1", "id: 'r 1'"), "id"),
            (GOOD.replace("[orders:read]", "[\"orders read\"]"), "scope"),
            (
                format!("{GOOD}    conditions:\n      max_token_age_s: 0\n"),
                "age",
            ),
            (
                format!(
                    "{GOOD}    conditions:\n      time_windows: [{{start: '18:00', end: '08:00'}}]\n"
                ),
                "window",
            ),
            (
                format!("{GOOD}    conditions:\n      min_tls_version: TLSv1.0\n"),
                "tls",
            ),
            ("rules: {}".to_owned(), "shape"),
            ("rules: [".to_owned(), "syntax"),
            (String::new(), "empty"),
        ] {
            let e = parse(&bad, "p.yaml");
            assert!(e.is_err(), "{why}: accepted");
        }
    }

    #[test]
    fn refuses_duplicate_ids_naming_the_second() {
        let src = format!("{GOOD}{}", GOOD.trim_start_matches("rules:\n"));
        let e = error_of(&src);
        assert_eq!(e.position, Some((9, 5)), "{e}");
        assert!(e.message.contains("duplicate"), "{e}");
    }
}
