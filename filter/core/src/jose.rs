//! Small JOSE facts shared by every JWT this crate reads (access tokens, DPoP proofs) and by
//! configuration: NumericDate, the `typ` media-type rule, SHA-256 thumbprints in base64url, and
//! the characters a value may carry when it travels on as a header or log field. A leaf: it
//! imports nothing from the crate.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Number;

/// An RFC 7519 NumericDate as whole seconds (fractions truncated); `None` when negative or not
/// finite.
pub fn numeric_date(n: &Number) -> Option<u64> {
    if let Some(v) = n.as_u64() {
        return Some(v);
    }
    match n.as_f64() {
        // Truncation is the intent: fractions do not matter at second precision.
        Some(v) if (0.0..1.0e15).contains(&v) => Some(v as u64),
        _ => None,
    }
}

/// Whether a `typ` header names the media type `jwt_type` (e.g. `at+jwt`): RFC 7515 §4.1.9
/// makes media types case-insensitive and lets the `application/` prefix be omitted.
pub fn is_jwt_type(typ: &str, jwt_type: &str) -> bool {
    let bare = typ
        .get(..12)
        .filter(|p| p.eq_ignore_ascii_case("application/"))
        .map_or(typ, |_| typ.get(12..).unwrap_or_default());
    bare.eq_ignore_ascii_case(jwt_type)
}

/// A SHA-256 digest in base64url without padding (RFC 8705 `x5t#S256`, RFC 7638 thumbprints):
/// exactly 43 characters, checked first to bound the work on hostile input.
pub fn sha256_b64url(value: &str) -> Option<[u8; 32]> {
    if value.len() != 43 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
    <[u8; 32]>::try_from(bytes.as_slice()).ok()
}

/// Printable ASCII (space included, no control characters): safe as a header value or a log
/// field.
pub fn is_printable_ascii(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_b64url_is_exactly_one_digest() {
        let digest = [0xabu8; 32];
        let text = URL_SAFE_NO_PAD.encode(digest);
        assert_eq!(sha256_b64url(&text), Some(digest));
        assert_eq!(sha256_b64url(&text[..42]), None);
        assert_eq!(sha256_b64url(&format!("{text}A")), None);
        assert_eq!(sha256_b64url(&format!("{}=", &text[..42])), None);
        assert_eq!(sha256_b64url(&text.replace('q', "+")), None);
        // The last character carries two bits too many: not a canonical encoding.
        assert_eq!(sha256_b64url(&format!("{}t", &text[..42])), None);
    }

    #[test]
    fn numeric_dates_truncate_fractions_and_refuse_negatives() {
        let n = |s: &str| serde_json::from_str::<Number>(s).unwrap();
        assert_eq!(numeric_date(&n("1700000000")), Some(1_700_000_000));
        assert_eq!(numeric_date(&n("1700000000.9")), Some(1_700_000_000));
        assert_eq!(numeric_date(&n("-1")), None);
        assert_eq!(numeric_date(&n("1e300")), None);
    }

    #[test]
    fn typ_is_a_case_insensitive_media_type_with_optional_prefix() {
        for ok in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+Jwt",
        ] {
            assert!(is_jwt_type(ok, "at+jwt"), "{ok}");
        }
        for bad in [
            "at+jwt2",
            "application/jwt",
            "text/at+jwt",
            "",
            "application/",
        ] {
            assert!(!is_jwt_type(bad, "at+jwt"), "{bad}");
        }
    }

    #[test]
    fn printable_ascii_refuses_controls_and_non_ascii() {
        assert!(is_printable_ascii("a b~"));
        assert!(!is_printable_ascii("a\nb"));
        assert!(!is_printable_ascii("a\u{7f}"));
        assert!(!is_printable_ascii("é"));
    }
}
