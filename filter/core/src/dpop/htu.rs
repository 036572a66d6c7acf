//! The `htu` comparison of RFC 9449 §4.3: a request's public URI and a proof's claim, both
//! normalised per RFC 3986 §6.2.2–6.2.3 before they are compared.

use std::fmt::Write as _;

/// Longest `htu` (claim or expected) looked at.
pub const MAX_HTU_LEN: usize = 2 * 1024;

/// The `htu` for a request: the configured public origin (`https://host[:port]`) followed by
/// the request's `:path` (which may carry a query). `None` when either is unusable.
pub fn request_htu(origin: &str, path_and_query: &str) -> Option<String> {
    let origin = origin.trim_end_matches('/');
    // As long as the whole URI would be, query included, as `normalize_htu` counts it.
    if !path_and_query.starts_with('/') || origin.len() + path_and_query.len() > MAX_HTU_LEN {
        return None;
    }
    let path = path_and_query.split(['?', '#']).next().unwrap_or_default();
    let uri = format!("{origin}{path}");
    // The usual request: a normalised origin and a plain path are their own normal form.
    if is_normal_htu(&uri) {
        return Some(uri);
    }
    normalize_htu(&uri)
}

/// Whether `uri` is already what [`normalize_htu`] makes of it (then `normalize_htu(uri)` is
/// `Some(uri)`), found in one pass without building anything: this runs for every DPoP proof,
/// on the request's URI and on the proof's claim. `false` says nothing (an IPv6 literal,
/// say, is left to [`normalize_htu`]).
pub fn is_normal_htu(uri: &str) -> bool {
    let Some(rest) = uri
        .strip_prefix("https://")
        .map(|r| (r, 443))
        .or_else(|| uri.strip_prefix("http://").map(|r| (r, 80)))
    else {
        return false;
    };
    let (rest, default_port) = rest;
    let Some(slash) = rest.find('/') else {
        return false;
    };
    let (authority, path) = rest.split_at(slash);
    let (host, port) = match authority.split_once(':') {
        // An empty port is dropped by normalisation: not normal.
        Some((_, "")) => return false,
        Some(split) => split,
        None => (authority, ""),
    };
    let host_ok = !host.is_empty()
        && host.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_' | b'~')
        });
    // A port is kept only when it is not the default, written without leading zeros.
    let port_ok = port.is_empty()
        || (port.len() <= 5
            && !port.starts_with('0')
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p != default_port));
    uri.len() <= MAX_HTU_LEN && host_ok && port_ok && is_normal_path(path)
}

/// Whether an absolute path is its own normal form: only characters a path holds raw, every
/// percent-encoding uppercase and of a character that must stay encoded, no dot segments
/// (and so no query or fragment either).
fn is_normal_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = |j: usize| {
                bytes
                    .get(j)
                    .filter(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c))
                    .and_then(|c| char::from(*c).to_digit(16))
            };
            match (hex(i + 1), hex(i + 2)) {
                (Some(hi), Some(lo)) if !is_unreserved((hi * 16 + lo) as u8) => i += 3,
                _ => return false,
            }
        } else if is_unreserved(b) || b"!$&'()*+,;=:@/".contains(&b) {
            i += 1;
        } else {
            return false;
        }
    }
    path.starts_with('/') && !path.split('/').any(|s| s == "." || s == "..")
}

/// An http(s) URI as RFC 9449 §4.3 compares it: query and fragment dropped; RFC 3986 §6.2.2
/// syntax-based normalisation (scheme and host lowercase, percent-encodings uppercase,
/// unreserved characters decoded, dot segments removed) and §6.2.3 scheme-based
/// normalisation (default port and an empty port removed, empty path is `/`). `None` for
/// anything else: other schemes, userinfo, characters a URI cannot hold, bad escapes.
pub fn normalize_htu(uri: &str) -> Option<String> {
    if uri.len() > MAX_HTU_LEN {
        return None;
    }
    let uri = uri.split('#').next().unwrap_or_default();
    let uri = uri.split('?').next().unwrap_or_default();
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = split_authority(authority)?;
    let path = remove_dot_segments(normalize_percent(path)?);
    // One buffer, no intermediate strings: this runs for every DPoP proof.
    let mut out = String::with_capacity(scheme.len() + 3 + host.len() + 6 + path.len());
    out.push_str(&scheme);
    out.push_str("://");
    out.push_str(&host);
    if let Some(port) = port.filter(|p| *p != default_port) {
        // Writing to a String cannot fail.
        let _ = write!(out, ":{port}");
    }
    out.push_str(&path);
    Some(out)
}

/// Host (lowercase) and port of an authority; refuses userinfo and odd characters.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, after) = authority.split_at(end + 1);
        let literal_ok = host.get(1..host.len() - 1).is_some_and(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        });
        if !literal_ok {
            return None;
        }
        match after {
            "" => (host, ""),
            _ => (host, after.strip_prefix(':')?),
        }
    } else {
        let (host, port) = authority.rsplit_once(':').unwrap_or((authority, ""));
        let reg_name_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        if !reg_name_ok {
            return None;
        }
        (host, port)
    };
    let port = match port {
        "" => None,
        p if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        _ => return None,
    };
    Some((host.to_ascii_lowercase(), port))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encodings of unreserved characters decoded, the others uppercased; any character a
/// path may not hold raw (RFC 3986 `pchar` and `/`) refuses the whole URI.
fn normalize_percent(path: &str) -> Option<String> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let hex_val = |b: u8| (b as char).to_digit(16).and_then(|v| u8::try_from(v).ok());
    let mut out = String::with_capacity(path.len());
    let mut bytes = path.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hi = bytes.next().and_then(hex_val)?;
                let lo = bytes.next().and_then(hex_val)?;
                let v = (hi << 4) | lo;
                if is_unreserved(v) {
                    out.push(char::from(v));
                } else {
                    out.push('%');
                    out.push(char::from(*HEX.get(usize::from(hi))?));
                    out.push(char::from(*HEX.get(usize::from(lo))?));
                }
            }
            b if is_unreserved(b) || b"!$&'()*+,;=:@/".contains(&b) => out.push(char::from(b)),
            _ => return None,
        }
    }
    Some(out)
}

/// RFC 3986 §5.2.4 for an absolute path (or the empty one, which becomes `/`).
fn remove_dot_segments(path: String) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    if !path.split('/').any(|s| s == "." || s == "..") {
        return path;
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "." => {}
            ".." => {
                kept.pop();
            }
            s => {
                kept.push(s);
                continue;
            }
        }
        // A trailing `.` or `..` leaves the path ending in `/`.
        if last {
            kept.push("");
        }
    }
    if kept.is_empty() {
        return "/".to_owned();
    }
    format!("/{}", kept.join("/"))
}
