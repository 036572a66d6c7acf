//! The rule-kind table: every rule kind and condition, each admitting and refusing.

use super::common::{id, req};
use super::{MON_NOON, SAT_NOON, case, compiled, run, with};
use certbind_pdp::Reason;

pub(crate) const TABLE_POLICY: &str = r#"
rules:
  - id: orders-read
    effect: allow
    subjects: [spiffe://certbind.test/ns/demo/sa/consumer]
    audiences: [spiffe://certbind.test/ns/demo/sa/orders]
    methods: [GET]
    paths: [/orders, /orders/*]
    scopes: [orders:read]
    ttl_s: 45
  - id: reports-deep
    effect: allow
    subjects: [spiffe://certbind.test/ns/demo/sa/reporter]
    audiences: [spiffe://certbind.test/ns/demo/sa/orders]
    methods: [GET, HEAD]
    paths: [/reports/**]
    scopes: [reports:read, orders:read]
  - id: any-workload-health
    effect: allow
    subjects: [spiffe://certbind.test/ns/demo/sa/*]
    audiences: [spiffe://certbind.test/ns/**]
    methods: ["*"]
    paths: [/health]
  - id: deny-admin
    effect: deny
    subjects: [spiffe://certbind.test/ns/**]
    audiences: [spiffe://certbind.test/ns/demo/sa/orders]
    methods: ["*"]
    paths: [/orders/admin, /health]
  - id: admin-allow-shadowed
    effect: allow
    subjects: [spiffe://certbind.test/ns/demo/sa/consumer]
    audiences: [spiffe://certbind.test/ns/demo/sa/orders]
    methods: [GET]
    paths: [/orders/admin]
  - id: net-only
    effect: allow
    subjects: [spiffe://certbind.test/ns/demo/sa/netuser]
    audiences: [spiffe://certbind.test/ns/demo/sa/orders]
    methods: [GET]
    paths: [/net]
    conditions:
      source_cidrs: [10.0.0.0/8, "fd00::/8"]
  - id: office-hours
    effect: allow
    subjects: [spiffe://certbind.test/ns/demo/sa/timeuser]
    audiences: [spiffe://certbind.test/ns/demo/sa/orders]
    methods: [GET]
    paths: [/time]
    conditions:
      time_windows: [{days: [mon, tue, wed, thu, fri], start: "08:00", end: "18:00"}]
  - id: fresh-token
    effect: allow
    subjects: [spiffe://certbind.test/ns/demo/sa/ageuser]
    audiences: [spiffe://certbind.test/ns/demo/sa/orders]
    methods: [GET]
    paths: [/age]
    conditions:
      max_token_age_s: 300
  - id: tls13
    effect: allow
    subjects: [spiffe://certbind.test/ns/demo/sa/tlsuser]
    audiences: [spiffe://certbind.test/ns/demo/sa/orders]
    methods: [GET]
    paths: [/tls]
    conditions:
      min_tls_version: TLSv1.3
  - id: deny-untrusted-net
    effect: deny
    subjects: [spiffe://certbind.test/ns/demo/sa/roamer]
    audiences: [spiffe://certbind.test/ns/demo/sa/orders]
    methods: [GET]
    paths: [/roam]
    conditions:
      source_cidrs: [192.0.2.0/24]
  - id: roam-allow
    effect: allow
    subjects: [spiffe://certbind.test/ns/demo/sa/roamer]
    audiences: [spiffe://certbind.test/ns/demo/sa/orders]
    methods: [GET]
    paths: [/roam]
  - id: slash
    effect: allow
    subjects: [spiffe://certbind.test/ns/demo/sa/consumer]
    audiences: [spiffe://certbind.test/ns/demo/sa/billing]
    methods: [GET]
    paths: [/dir/]
"#;

#[test]
fn every_rule_kind_and_condition_admits_and_refuses_as_specified() {
    use Reason::*;
    let p = compiled(TABLE_POLICY);
    let c = |name, r, allow, id, reason| case(name, r, allow, id, reason);
    let get =
        |subject: &str, path: &str, scopes: &[&str]| req(subject, "GET", path, "orders", scopes);
    let cases = vec![
        // exact and one-segment paths
        c(
            "exact path admits",
            get("consumer", "/orders", &["orders:read"]),
            true,
            "orders-read",
            Allowed,
        ),
        c(
            "one-segment glob admits",
            get("consumer", "/orders/42", &["orders:read"]),
            true,
            "orders-read",
            Allowed,
        ),
        c(
            "one-segment glob refuses two segments",
            get("consumer", "/orders/42/x", &["orders:read"]),
            false,
            "default-deny",
            NoMatchingRule,
        ),
        c(
            "trailing slash is not the exact path",
            get("consumer", "/orders/", &["orders:read"]),
            false,
            "default-deny",
            NoMatchingRule,
        ),
        c(
            "trailing-slash pattern admits trailing slash",
            req("consumer", "GET", "/dir/", "billing", &[]),
            true,
            "slash",
            Allowed,
        ),
        c(
            "trailing-slash pattern refuses without slash",
            req("consumer", "GET", "/dir", "billing", &[]),
            false,
            "default-deny",
            NoMatchingRule,
        ),
        c(
            "paths are case-sensitive",
            get("consumer", "/Orders", &["orders:read"]),
            false,
            "default-deny",
            NoMatchingRule,
        ),
        c(
            "prefix is not a segment",
            get("consumer", "/ordersx", &["orders:read"]),
            false,
            "default-deny",
            NoMatchingRule,
        ),
        // methods
        c(
            "method case matters",
            req("consumer", "get", "/orders", "orders", &["orders:read"]),
            false,
            "default-deny",
            NoMatchingRule,
        ),
        c(
            "other method refused",
            req("consumer", "POST", "/orders", "orders", &["orders:read"]),
            false,
            "default-deny",
            NoMatchingRule,
        ),
        c(
            "second listed method admits",
            req(
                "reporter",
                "HEAD",
                "/reports/a",
                "orders",
                &["reports:read", "orders:read"],
            ),
            true,
            "reports-deep",
            Allowed,
        ),
        c(
            "any-method rule admits any method",
            req("consumer", "DELETE", "/health", "billing", &[]),
            true,
            "any-workload-health",
            Allowed,
        ),
        // subjects and audiences
        c(
            "other subject refused",
            get("inventory", "/orders", &["orders:read"]),
            false,
            "default-deny",
            NoMatchingRule,
        ),
        c(
            "wrong audience refused",
            req("consumer", "GET", "/orders", "billing", &["orders:read"]),
            false,
            "default-deny",
            NoMatchingRule,
        ),
        c(
            "subject pattern admits any workload",
            req("inventory", "GET", "/health", "billing", &[]),
            true,
            "any-workload-health",
            Allowed,
        ),
        c(
            "audience pattern admits an audience no rule names",
            req("inventory", "GET", "/health", "ledger", &[]),
            true,
            "any-workload-health",
            Allowed,
        ),
        c(
            "subject pattern refuses another trust domain",
            with(req("inventory", "GET", "/health", "billing", &[]), |r| {
                r.subject = "spiffe://evil.test/ns/demo/sa/inventory".into()
            }),
            false,
            "default-deny",
            NoMatchingRule,
        ),
        c(
            "subject pattern refuses deeper paths",
            with(req("inventory", "GET", "/health", "billing", &[]), |r| {
                r.subject = id("inventory/x")
            }),
            false,
            "default-deny",
            NoMatchingRule,
        ),
        c(
            "non-SPIFFE subject refused",
            with(get("consumer", "/orders", &["orders:read"]), |r| {
                r.subject = "consumer".into()
            }),
            false,
            "subject-guard",
            InvalidSubject,
        ),
        // any-depth glob and all scopes required
        c(
            "any-depth glob admits deep path",
            req(
                "reporter",
                "GET",
                "/reports/2026/11/x",
                "orders",
                &["orders:read", "reports:read"],
            ),
            true,
            "reports-deep",
            Allowed,
        ),
        c(
            "any-depth glob refuses the bare prefix",
            req(
                "reporter",
                "GET",
                "/reports",
                "orders",
                &["orders:read", "reports:read"],
            ),
            false,
            "default-deny",
            NoMatchingRule,
        ),
        c(
            "all scopes are required",
            req("reporter", "GET", "/reports/a", "orders", &["reports:read"]),
            false,
            "reports-deep",
            MissingScope,
        ),
        c(
            "no scopes at all",
            get("consumer", "/orders", &[]),
            false,
            "orders-read",
            MissingScope,
        ),
        c(
            "a similar scope is not the scope",
            get("consumer", "/orders", &["orders:write", "orders:readx"]),
            false,
            "orders-read",
            MissingScope,
        ),
        // deny wins
        c(
            "deny wins over a matching allow",
            get("consumer", "/orders/admin", &["orders:read"]),
            false,
            "deny-admin",
            DeniedByRule,
        ),
        c(
            "deny wins over the pattern allow",
            req("inventory", "GET", "/health", "orders", &[]),
            false,
            "deny-admin",
            DeniedByRule,
        ),
        c(
            "deny with a condition applies when it holds",
            with(get("roamer", "/roam", &[]), |r| {
                r.context.source_ip = Some("192.0.2.7".into())
            }),
            false,
            "deny-untrusted-net",
            DeniedByRule,
        ),
        c(
            "deny with a condition stays out when it does not hold",
            with(get("roamer", "/roam", &[]), |r| {
                r.context.source_ip = Some("10.1.1.1".into())
            }),
            true,
            "roam-allow",
            Allowed,
        ),
        c(
            "deny applies when the fact is absent (fail closed)",
            get("roamer", "/roam", &[]),
            false,
            "deny-untrusted-net",
            DeniedByRule,
        ),
        // source CIDRs
        c(
            "cidr admits inside",
            with(get("netuser", "/net", &[]), |r| {
                r.context.source_ip = Some("10.2.3.4".into())
            }),
            true,
            "net-only",
            Allowed,
        ),
        c(
            "cidr admits address:port",
            with(get("netuser", "/net", &[]), |r| {
                r.context.source_ip = Some("10.2.3.4:55000".into())
            }),
            true,
            "net-only",
            Allowed,
        ),
        c(
            "cidr admits IPv6 inside",
            with(get("netuser", "/net", &[]), |r| {
                r.context.source_ip = Some("fd00::1".into())
            }),
            true,
            "net-only",
            Allowed,
        ),
        c(
            "cidr refuses outside",
            with(get("netuser", "/net", &[]), |r| {
                r.context.source_ip = Some("11.0.0.1".into())
            }),
            false,
            "net-only",
            SourceIpNotAllowed,
        ),
        c(
            "cidr refuses absent source",
            get("netuser", "/net", &[]),
            false,
            "net-only",
            SourceIpNotAllowed,
        ),
        c(
            "cidr refuses garbage source",
            with(get("netuser", "/net", &[]), |r| {
                r.context.source_ip = Some("ten".into())
            }),
            false,
            "net-only",
            SourceIpNotAllowed,
        ),
        // time windows
        c(
            "window admits inside",
            get("timeuser", "/time", &[]),
            true,
            "office-hours",
            Allowed,
        ),
        c(
            "window refuses the wrong day",
            get("timeuser", "/time", &[]),
            false,
            "office-hours",
            OutsideTimeWindow,
        ),
        c(
            "window refuses after the end",
            get("timeuser", "/time", &[]),
            false,
            "office-hours",
            OutsideTimeWindow,
        ),
        // token age
        c(
            "age admits a fresh token",
            with(get("ageuser", "/age", &[]), |r| {
                r.context.iat = Some(MON_NOON - 299)
            }),
            true,
            "fresh-token",
            Allowed,
        ),
        c(
            "age refuses an old token",
            with(get("ageuser", "/age", &[]), |r| {
                r.context.iat = Some(MON_NOON - 301)
            }),
            false,
            "fresh-token",
            TokenTooOld,
        ),
        c(
            "age refuses an absent iat",
            get("ageuser", "/age", &[]),
            false,
            "fresh-token",
            TokenTooOld,
        ),
        c(
            "age refuses an iat far in the future",
            with(get("ageuser", "/age", &[]), |r| {
                r.context.iat = Some(MON_NOON + 3600)
            }),
            false,
            "fresh-token",
            TokenTooOld,
        ),
        // TLS version
        c(
            "tls admits 1.3",
            with(get("tlsuser", "/tls", &[]), |r| {
                r.context.tls_version = Some("TLSv1.3".into())
            }),
            true,
            "tls13",
            Allowed,
        ),
        c(
            "tls refuses 1.2",
            with(get("tlsuser", "/tls", &[]), |r| {
                r.context.tls_version = Some("TLSv1.2".into())
            }),
            false,
            "tls13",
            TlsVersionTooLow,
        ),
        c(
            "tls refuses unknown spelling",
            with(get("tlsuser", "/tls", &[]), |r| {
                r.context.tls_version = Some("tls1.3".into())
            }),
            false,
            "tls13",
            TlsVersionTooLow,
        ),
        c(
            "tls refuses absent version",
            get("tlsuser", "/tls", &[]),
            false,
            "tls13",
            TlsVersionTooLow,
        ),
        // unnormalised paths never reach rules
        c(
            "dot-dot refused",
            get("consumer", "/orders/../billing/1", &["orders:read"]),
            false,
            "path-guard",
            UnnormalizedPath,
        ),
        c(
            "dot refused",
            get("consumer", "/orders/./1", &["orders:read"]),
            false,
            "path-guard",
            UnnormalizedPath,
        ),
        c(
            "double slash refused",
            get("consumer", "//orders", &["orders:read"]),
            false,
            "path-guard",
            UnnormalizedPath,
        ),
        c(
            "encoded slash refused",
            get("consumer", "/orders/1%2fx", &["orders:read"]),
            false,
            "path-guard",
            UnnormalizedPath,
        ),
        c(
            "encoded slash upper refused",
            get("consumer", "/orders/1%2Fx", &["orders:read"]),
            false,
            "path-guard",
            UnnormalizedPath,
        ),
        c(
            "encoded backslash refused",
            get("consumer", "/orders/1%5cx", &["orders:read"]),
            false,
            "path-guard",
            UnnormalizedPath,
        ),
        c(
            "encoded dots refused",
            get("consumer", "/orders/%2e%2e", &["orders:read"]),
            false,
            "path-guard",
            UnnormalizedPath,
        ),
        c(
            "encoded unreserved character refused (deny-rule bypass)",
            get("consumer", "/orders/%61dmin", &["orders:read"]),
            false,
            "path-guard",
            UnnormalizedPath,
        ),
        c(
            "double encoding refused",
            get("consumer", "/orders/%252f", &["orders:read"]),
            false,
            "path-guard",
            UnnormalizedPath,
        ),
        c(
            "query refused",
            get("consumer", "/orders?x=1", &["orders:read"]),
            false,
            "path-guard",
            UnnormalizedPath,
        ),
        c(
            "relative path refused",
            get("consumer", "orders", &["orders:read"]),
            false,
            "path-guard",
            UnnormalizedPath,
        ),
        c(
            "empty path refused",
            get("consumer", "", &["orders:read"]),
            false,
            "path-guard",
            UnnormalizedPath,
        ),
    ];
    let mut cases = cases;
    for c in cases.iter_mut() {
        match c.name {
            "window refuses the wrong day" => c.now = SAT_NOON,
            "window refuses after the end" => c.now = MON_NOON + 6 * 3600, // 18:00 is exclusive
            _ => {}
        }
    }
    run(&p, cases);
}
