//! The demo policy's table: the decisions CONTRACT promises for the demo workloads.

use super::common::{self, req};
use super::{case, run};
use certbind_pdp::{CompiledPolicy, Reason, policy};

#[test]
fn demo_policy_gives_the_contract_decisions() {
    use Reason::*;
    let (p, bytes) = policy::load(&common::demo_policy_path()).unwrap();
    let p = CompiledPolicy::compile(p, &bytes);
    let c = |name, r, allow, id, reason| case(name, r, allow, id, reason);
    let cases = vec![
        c(
            "consumer lists orders",
            req("consumer", "GET", "/orders", "orders", &["orders:read"]),
            true,
            "consumer-orders-read",
            Allowed,
        ),
        c(
            "consumer reads an order",
            req("consumer", "GET", "/orders/1", "orders", &["orders:read"]),
            true,
            "consumer-orders-read",
            Allowed,
        ),
        c(
            "consumer creates an order",
            req("consumer", "POST", "/orders", "orders", &["orders:write"]),
            true,
            "consumer-orders-write",
            Allowed,
        ),
        c(
            "consumer reads billing",
            req(
                "consumer",
                "GET",
                "/billing/7",
                "billing",
                &["billing:read"],
            ),
            true,
            "consumer-billing-read",
            Allowed,
        ),
        c(
            "inventory reads an order",
            req("inventory", "GET", "/orders/1", "orders", &["orders:read"]),
            true,
            "inventory-orders-read",
            Allowed,
        ),
        c(
            "consumer without write scope",
            req("consumer", "POST", "/orders", "orders", &["orders:read"]),
            false,
            "consumer-orders-write",
            MissingScope,
        ),
        c(
            "consumer deletes an order",
            req(
                "consumer",
                "DELETE",
                "/orders/1",
                "orders",
                &["orders:read", "orders:write"],
            ),
            false,
            "default-deny",
            NoMatchingRule,
        ),
        c(
            "consumer posts to an order",
            req("consumer", "POST", "/orders/1", "orders", &["orders:write"]),
            false,
            "default-deny",
            NoMatchingRule,
        ),
        c(
            "consumer lists billing",
            req("consumer", "GET", "/billing", "billing", &["billing:read"]),
            false,
            "default-deny",
            NoMatchingRule,
        ),
        c(
            "inventory lists orders",
            req("inventory", "GET", "/orders", "orders", &["orders:read"]),
            false,
            "default-deny",
            NoMatchingRule,
        ),
        c(
            "inventory creates an order",
            req("inventory", "POST", "/orders", "orders", &["orders:write"]),
            false,
            "default-deny",
            NoMatchingRule,
        ),
        c(
            "inventory reads billing",
            req(
                "inventory",
                "GET",
                "/billing/7",
                "billing",
                &["billing:read"],
            ),
            false,
            "default-deny",
            NoMatchingRule,
        ),
        c(
            "inventory without scope",
            req("inventory", "GET", "/orders/1", "orders", &[]),
            false,
            "inventory-orders-read",
            MissingScope,
        ),
        c(
            "orders path at billing",
            req("consumer", "GET", "/orders/1", "billing", &["orders:read"]),
            false,
            "default-deny",
            NoMatchingRule,
        ),
        c(
            "traversal to billing",
            req(
                "consumer",
                "GET",
                "/orders/../billing/7",
                "orders",
                &["orders:read"],
            ),
            false,
            "path-guard",
            UnnormalizedPath,
        ),
        c(
            "inventory's path parameter `;` refused (a servlet upstream serves /orders/)",
            req("inventory", "GET", "/orders/;", "orders", &["orders:read"]),
            false,
            "path-guard",
            UnnormalizedPath,
        ),
        c(
            "inventory's ;jsessionid refused",
            req(
                "inventory",
                "GET",
                "/orders/;jsessionid=1",
                "orders",
                &["orders:read"],
            ),
            false,
            "path-guard",
            UnnormalizedPath,
        ),
        c(
            "inventory's encoded %3B refused",
            req(
                "inventory",
                "GET",
                "/orders/%3Bx",
                "orders",
                &["orders:read"],
            ),
            false,
            "path-guard",
            UnnormalizedPath,
        ),
    ];
    run(&p, cases);
}
