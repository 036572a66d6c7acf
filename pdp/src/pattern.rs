//! Path and SPIFFE ID patterns (`*` = one segment, trailing `**` = one or more) and the
//! normalisation guard every requested path passes before any rule is consulted.

use std::fmt;

/// One pattern segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    /// `*`: exactly one non-empty segment.
    One,
}

/// A `/`-separated glob. Literal segments compare case-sensitively and byte for byte;
/// `*` matches one non-empty segment; a final `**` matches one or more non-empty segments
/// (so `/orders/**` does not match `/orders` itself: list both when both are meant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentGlob {
    /// The pattern as written, for messages.
    text: Box<str>,
    /// `Some` when the pattern has no wildcard: matching is then one string comparison.
    exact: Option<Box<str>>,
    segments: Vec<Segment>,
    tail_any: bool,
}

impl SegmentGlob {
    /// Parses the part after the leading `/` (`rest` of `/orders/*` is `orders/*`).
    /// `allow_trailing_slash`: paths may end in `/` (an empty last literal), SPIFFE IDs may not.
    fn parse_rest(text: &str, rest: &str, allow_trailing_slash: bool) -> Result<Self, String> {
        let parts: Vec<&str> = rest.split('/').collect();
        let last = parts.len().saturating_sub(1);
        let mut segments = Vec::with_capacity(parts.len());
        let mut tail_any = false;
        for (i, part) in parts.iter().enumerate() {
            match *part {
                "" if i == last && allow_trailing_slash => {
                    segments.push(Segment::Literal("".into()));
                }
                "" => return Err("empty segment (`//` or a trailing `/`)".into()),
                "." | ".." => return Err("dot segment".into()),
                "*" => segments.push(Segment::One),
                "**" if i == last => tail_any = true,
                "**" => return Err("`**` is only allowed as the last segment".into()),
                p if p.contains('*') => {
                    return Err("`*` must be a whole segment (`/a/*`), not part of one".into());
                }
                p => {
                    if !is_normalized_segment(p) {
                        return Err(format!(
                            "segment `{p}` is not normalised (encoded `/`, `\\`, `.`, `%`, control or space characters)"
                        ));
                    }
                    segments.push(Segment::Literal(p.into()));
                }
            }
        }
        let exact = (!tail_any && !segments.contains(&Segment::One)).then(|| text.into());
        Ok(Self {
            text: text.into(),
            exact,
            segments,
            tail_any,
        })
    }

    /// A path pattern: starts with `/`.
    pub fn parse_path(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err("a path pattern starts with `/`".into());
        };
        Self::parse_rest(text, rest, true)
    }

    /// Matches the part after the leading `/` of a path known to start with `/`.
    fn matches_rest(&self, rest: &str) -> bool {
        let mut parts = rest.split('/');
        for segment in &self.segments {
            let Some(part) = parts.next() else {
                return false;
            };
            let ok = match segment {
                Segment::Literal(lit) => **lit == *part,
                Segment::One => !part.is_empty(),
            };
            if !ok {
                return false;
            }
        }
        if self.tail_any {
            let mut any = false;
            for part in parts {
                if part.is_empty() {
                    return false;
                }
                any = true;
            }
            any
        } else {
            parts.next().is_none()
        }
    }

    /// Whether a (normalised) path matches.
    pub fn matches_path(&self, path: &str) -> bool {
        if let Some(exact) = &self.exact {
            return **exact == *path;
        }
        match path.strip_prefix('/') {
            Some(rest) => self.matches_rest(rest),
            None => false,
        }
    }

    pub fn is_exact(&self) -> bool {
        self.exact.is_some()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for SegmentGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A SPIFFE ID or a pattern over the path of SPIFFE IDs within ONE trust domain:
/// `spiffe://certbind.test/ns/demo/sa/*`. The trust domain is never a wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffePattern {
    /// `spiffe://<domain>` with the scheme, for a cheap prefix test.
    prefix: Box<str>,
    path: SegmentGlob,
}

const SPIFFE_SCHEME: &str = "spiffe://";

impl SpiffePattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix(SPIFFE_SCHEME) else {
            return Err("a SPIFFE ID pattern starts with `spiffe://<trust domain>/`".into());
        };
        let Some(slash) = rest.find('/') else {
            return Err("a SPIFFE ID pattern needs a path after the trust domain".into());
        };
        let (domain, path) = rest.split_at(slash);
        if domain.contains('*') {
            return Err("the trust domain cannot be a wildcard".into());
        }
        let path = SegmentGlob::parse_rest(text, path.get(1..).unwrap_or_default(), false)?;
        if path.is_exact() {
            // A concrete ID must be a valid SPIFFE ID, or it could never match a peer.
            certbind_core::binding::SpiffeId::parse(text).map_err(|e| e.to_string())?;
        } else {
            // Validate the trust domain and literal segments as the SPIFFE spec would.
            let probe = path_probe(&path);
            let probe_id = format!("{SPIFFE_SCHEME}{domain}{probe}");
            certbind_core::binding::SpiffeId::parse(&probe_id).map_err(|e| e.to_string())?;
        }
        Ok(Self {
            prefix: format!("{SPIFFE_SCHEME}{domain}").into(),
            path,
        })
    }

    /// Whether a SPIFFE ID (already validated) matches.
    pub fn matches(&self, id: &str) -> bool {
        if let Some(exact) = &self.path.exact {
            return **exact == *id;
        }
        match id.strip_prefix(&*self.prefix) {
            Some(path) => match path.strip_prefix('/') {
                Some(rest) => self.path.matches_rest(rest),
                None => false,
            },
            None => false,
        }
    }

    /// The concrete ID when the pattern has no wildcard.
    pub fn exact(&self) -> Option<&str> {
        self.path.exact.as_deref()
    }

    pub fn as_str(&self) -> &str {
        self.path.as_str()
    }
}

/// A concrete path standing in for a glob, used only to validate literal segments.
fn path_probe(glob: &SegmentGlob) -> String {
    let mut out = String::new();
    for segment in &glob.segments {
        out.push('/');
        match segment {
            Segment::Literal(lit) => out.push_str(lit),
            Segment::One => out.push('x'),
        }
    }
    if glob.tail_any {
        out.push_str("/x");
    }
    out
}

/// Whether a percent-encoded byte makes a path ambiguous: an encoded `/` or `\\` (a second
/// path separator), `%` (double encoding), a control character, or an unreserved character
/// (RFC 3986 §2.3: ALPHA, DIGIT, `-`, `.`, `_`, `~`). A normalised path never encodes the
/// latter (§6.2.2.2), and the upstream would decode `/orders/%61dmin` to a path a deny rule
/// on `/orders/admin` never saw.
fn is_ambiguous_encoding(byte: u8) -> bool {
    matches!(byte, b'/' | b'\\' | b'%' | b';' | 0x00..=0x1f | 0x7f)
        || byte.is_ascii_alphanumeric()
        || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A segment as it may appear in a normalised path: no backslash, no ambiguous or malformed
/// percent-encoding, no control characters or spaces, no `?`/`#`, and no `;` (plain or
/// encoded): servlet containers and others strip `;…` path parameters, so `/orders/;x`
/// would serve `/orders/` to a caller a rule admitted for `/orders/*`.
fn is_normalized_segment(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\\' | b'?' | b'#' | b';' => return false,
            b if b <= b' ' || b == 0x7f => return false,
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return false; // a truncated or non-hex escape
                };
                if is_ambiguous_encoding(hi * 16 + lo) {
                    return false;
                }
            }
            _ => {}
        }
    }
    true
}

/// Whether a requested path is normalised: starts with `/`, no empty segment except a trailing
/// `/`, no `.`/`..` segments, no encoded `/`, `\`, `%`, control or unreserved character (so
/// also no encoded dot), no query or fragment.
/// Anything else is refused (`unnormalized_path`) before rules are consulted, because the
/// upstream might resolve it to a path the rules never saw.
pub fn is_normalized_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let mut parts = rest.split('/').peekable();
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        match part {
            "" if last => {}
            "" | "." | ".." => return false,
            p if !is_normalized_segment(p) => return false,
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_star_matches_exactly_one_segment() {
        let g = SegmentGlob::parse_path("/orders/*").unwrap();
        assert!(g.matches_path("/orders/1"));
        assert!(!g.matches_path("/orders/1/x"));
        assert!(!g.matches_path("/orders"));
        assert!(!g.matches_path("/orders/"));
        assert!(!g.matches_path("/Orders/1"));
    }

    #[test]
    fn double_star_matches_one_or_more_segments() {
        let g = SegmentGlob::parse_path("/orders/**").unwrap();
        assert!(g.matches_path("/orders/1"));
        assert!(g.matches_path("/orders/1/x/y"));
        assert!(!g.matches_path("/orders"));
        assert!(!g.matches_path("/orders/1/"));
        assert!(!g.matches_path("/ordersx/1"));
    }

    #[test]
    fn middle_star_and_exact_and_root_patterns_match() {
        let g = SegmentGlob::parse_path("/a/*/c").unwrap();
        assert!(g.matches_path("/a/b/c"));
        assert!(!g.matches_path("/a/b/d"));
        let root = SegmentGlob::parse_path("/").unwrap();
        assert!(root.matches_path("/"));
        assert!(!root.matches_path("/a"));
        let slash = SegmentGlob::parse_path("/orders/").unwrap();
        assert!(slash.matches_path("/orders/"));
        assert!(!slash.matches_path("/orders"));
    }

    #[test]
    fn refuses_malformed_path_patterns() {
        for bad in [
            "orders", "/a//b", "/a/../b", "/a/./b", "/a/**/b", "/a/b*", "/a/%2f", "/a/b\\c",
            "/a b", "/a;b", "/a/;", "/a/%3b", "/a/%3B",
        ] {
            assert!(SegmentGlob::parse_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spiffe_patterns_stay_within_their_trust_domain() {
        let p = SpiffePattern::parse("spiffe://certbind.test/ns/demo/sa/*").unwrap();
        assert!(p.matches("spiffe://certbind.test/ns/demo/sa/consumer"));
        assert!(!p.matches("spiffe://certbind.test/ns/demo/sa/consumer/x"));
        assert!(!p.matches("spiffe://certbind.testx/ns/demo/sa/consumer"));
        assert!(!p.matches("spiffe://other.test/ns/demo/sa/consumer"));
        let deep = SpiffePattern::parse("spiffe://certbind.test/ns/**").unwrap();
        assert!(deep.matches("spiffe://certbind.test/ns/demo/sa/consumer"));
        assert!(!deep.matches("spiffe://certbind.test/ns"));
        let exact = SpiffePattern::parse("spiffe://certbind.test/ns/demo/sa/envoy").unwrap();
        assert_eq!(
            exact.exact(),
            Some("spiffe://certbind.test/ns/demo/sa/envoy")
        );
        assert!(!exact.matches("spiffe://certbind.test/ns/demo/sa/envoy2"));
    }

    #[test]
    fn refuses_malformed_spiffe_patterns() {
        for bad in [
            "*",
            "spiffe://*/ns/a",
            "spiffe://certbind.test",
            "spiffe://Certbind.test/ns/a",
            "spiffe://certbind.test/ns//a",
            "spiffe://certbind.test/ns/a/",
            "https://certbind.test/ns/a",
            "spiffe://certbind.test/ns/a*",
        ] {
            assert!(SpiffePattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn normalisation_guard_refuses_ambiguous_paths_and_admits_clean_ones() {
        for ok in [
            "/",
            "/orders",
            "/orders/",
            "/orders/1",
            "/orders/a%20b",
            "/a/.well-known",
            "/a%3Ab",
            "/caf%C3%A9",
        ] {
            assert!(is_normalized_path(ok), "{ok}");
        }
        for bad in [
            "",
            "orders",
            "//orders",
            "/orders//1",
            "/orders/./1",
            "/orders/..",
            "/orders/%2f..",
            "/orders%2F1",
            "/orders%5c1",
            "/orders/%2e%2e",
            "/orders%252f",
            "/a\\b",
            "/a?x=1",
            "/a#f",
            "/a%",
            "/a%2",
            "/a\tb",
            "/a%00",
            "/a%0a",
            "/orders/%61dmin",
            "/orders/%41",
            "/a%7e",
            "/a%2D",
            "/a%5F",
            "/a%zz",
        ] {
            assert!(!is_normalized_path(bad), "{bad}");
        }
    }

    #[test]
    fn path_parameters_never_pass_a_path_match() {
        for bad in [
            "/orders/;",
            "/orders/;jsessionid=1",
            "/orders/1;x=y",
            "/orders;/1",
            "/orders/%3B",
            "/orders/%3bjsessionid=1",
        ] {
            assert!(!is_normalized_path(bad), "{bad}");
        }
        // The same shapes without `;` still pass.
        for ok in [
            "/orders/1",
            "/orders/jsessionid=1",
            "/orders/1,2",
            "/orders/a:b",
        ] {
            assert!(is_normalized_path(ok), "{ok}");
        }
    }
}
