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
