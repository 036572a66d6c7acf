//! URI normalisation (RFC 3986 §6.2.2–6.2.3) and the request's `htu`.

use super::*;

#[test]
fn normalises_uris_per_rfc3986() {
    let cases = [
        ("https://A.Example:443/x?q#f", "https://a.example/x"),
        ("HTTP://a.example:80", "http://a.example/"),
        ("http://a.example:", "http://a.example/"),
        ("https://a.example:0443/", "https://a.example/"),
        (
            "https://a.example:8443/a/b/../../c/./d/..",
            "https://a.example:8443/c/",
        ),
        (
            "https://a.example/%7e%2f%2F%41",
            "https://a.example/~%2F%2FA",
        ),
        ("https://[::1]:8445/x", "https://[::1]:8445/x"),
        (
            "https://127.0.0.1:9443/token",
            "https://127.0.0.1:9443/token",
        ),
        ("https://a.example/a//b", "https://a.example/a//b"),
        ("https://a.example:08445/x", "https://a.example:8445/x"),
        ("http://a.example:1/", "http://a.example:1/"),
        ("http://a.example:65535", "http://a.example:65535/"),
        ("https://a.example/.", "https://a.example/"),
        ("https://a.example/a/..", "https://a.example/"),
        ("https://a.example/.a/b./..c", "https://a.example/.a/b./..c"),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize_htu(raw).as_deref(), Some(want), "{raw}");
    }
}

#[test]
fn refuses_uris_that_cannot_be_normalised() {
    for raw in [
        "ftp://a.example/",
        "https:/a.example/",
        "https://",
        "https://u:p@a.example/",
        "https://a example/",
        "https://a.example/a b",
        "https://a.example/é",
        "https://a.example/%zz",
        "https://a.example/%4",
        "https://a.example:99999/",
        "https://a.example:x/",
        "https://[::1/",
        "https://[]/",
    ] {
        assert_eq!(normalize_htu(raw), None, "{raw}");
    }
    assert_eq!(
        normalize_htu(&format!("https://a/{}", "x".repeat(MAX_HTU_LEN))),
        None
    );
}

#[test]
fn request_htu_joins_origin_and_path_without_the_query() {
    assert_eq!(
        request_htu("https://Orders.Example:8445/", "/orders/42?x=1").as_deref(),
        Some("https://orders.example:8445/orders/42")
    );
    assert_eq!(request_htu("https://a.example", "*"), None);
    assert_eq!(request_htu("https://a.example", "http://b.example/"), None);
}

#[test]
fn a_uri_is_normal_exactly_when_normalising_leaves_it_as_it_is() {
    for normal in [
        "https://a.example/",
        "https://a.example:8443/orders/1",
        "http://127.0.0.1:1/x",
        "https://a.example/a//b/%2F~-._!$&'()*+,;=:@",
        "https://a.example/.a/b./..c",
    ] {
        assert!(is_normal_htu(normal), "{normal}");
        assert_eq!(normalize_htu(normal).as_deref(), Some(normal));
    }
    for not in [
        "https://A.example/",
        "HTTPS://a.example/",
        "https://a.example",
        "https://a.example:/x",
        "https://a.example:443/x",
        "http://a.example:80/x",
        "https://a.example:08443/x",
        "https://a.example/x?q",
        "https://a.example/x#f",
        "https://a.example/%7e",
        "https://a.example/%2f",
        "https://a.example/./x",
        "https://a.example/x/..",
        "https://[::1]/x",
        "https://a.example/a b",
        "ftp://a.example/",
    ] {
        assert!(!is_normal_htu(not), "{not}");
    }
}

/// The fast path may only ever say yes where normalisation returns the text unchanged: checked
/// over many strings built from the characters that matter (a fixed seed, so it repeats).
#[test]
fn is_normal_htu_never_claims_more_than_normalisation_says() {
    const PARTS: [&str; 28] = [
        "https://", "http://", "HTTPS://", "a", "A", ".", "..", "/", ":", ":443", ":80", ":8443",
        ":0", ":0443", "%", "%2F", "%2f", "%7E", "%41", "?q", "#f", "[::1]", "@", " ", "~", "-",
        "é", "9",
    ];
    let mut next = crate::test_rng::draws(0x2545_f491_4f6c_dd1d);
    let mut agreed = 0;
    for _ in 0..200_000 {
        // Mostly a real scheme first, so that many strings get past it.
        let scheme = PARTS[[0, 1, 2, next(PARTS.len())][next(4)]];
        let len = next(9);
        let uri: String = std::iter::once(scheme)
            .chain((0..len).map(|_| PARTS[next(PARTS.len())]))
            .collect();
        let normal = normalize_htu(&uri);
        if is_normal_htu(&uri) {
            assert_eq!(normal.as_deref(), Some(uri.as_str()), "{uri}");
            agreed += 1;
        }
        // Every normal form the slow path builds (IPv6 literals and port 0 aside) is
        // recognised, so the fast path is taken where it can be.
        if let Some(n) = normal.filter(|n| !n.contains('[') && !n.contains(":0")) {
            assert!(is_normal_htu(&n), "{uri} -> {n}");
        }
    }
    assert!(
        agreed > 100,
        "the generator rarely builds a normal URI: {agreed}"
    );
}

#[test]
fn the_request_htu_is_the_same_through_the_fast_path_and_the_slow_one() {
    for (origin, path) in [
        ("https://a.example:8443", "/orders/1?x=1#f"),
        ("https://A.Example:443", "/orders/1"),
        ("https://a.example", "/a/../b/%7e"),
        ("https://a.example", "/a#b?c"),
    ] {
        assert_eq!(
            request_htu(origin, path),
            normalize_htu(&format!("{origin}{path}")),
            "{origin}{path}"
        );
    }
    // A query that makes the whole URI too long is refused as before, though `htu` drops it.
    let long = format!("/x?{}", "q".repeat(MAX_HTU_LEN));
    assert_eq!(request_htu("https://a.example", &long), None);
    assert_eq!(normalize_htu(&format!("https://a.example{long}")), None);
}
