//! Rows about credentials: the positive controls, real tokens used by the wrong caller or for
//! the wrong thing, missing and garbage tokens, forgeries, and the insider's one-claim checks.

use super::{Spec, Want, control, row};
use crate::attacks::model::{Caller::*, Service, probe};
use crate::client::Request;
use crate::forge::{self, spiffe_id};
use serde_json::json;

pub(super) const ROWS: &[Spec] = &[
    // ------------------------------------------------------------ positive controls
    control(
        "control-consumer-reads-order",
        "Control: consumer reads an order",
        "consumer cert + its orders:read token, GET /orders/1",
        "consumer",
        |k| k.get_order(Consumer, k.read()),
    ),
    control(
        "control-consumer-creates-order",
        "Control: consumer creates an order",
        "consumer cert + its orders:write token, POST /orders",
        "consumer",
        |k| {
            let request = Request::post("/orders").json(&json!({"item": "demo"}));
            k.orders(Consumer, request.bearer(&k.ctx.consumer_write.access_token))
        },
    ),
    control(
        "control-consumer-reads-billing",
        "Control: consumer reads a billing record",
        "consumer cert + its billing:read token, GET /billing/1",
        "consumer",
        |k| {
            let request = Request::get("/billing/1").bearer(&k.ctx.consumer_billing.access_token);
            Ok(probe(Service::Billing, Consumer, request))
        },
    ),
    control(
        "control-inventory-reads-order",
        "Control: inventory reads an order with its own token",
        "inventory cert + its orders:read token, GET /orders/1",
        "inventory",
        |k| k.get_order(Inventory, k.inventory_read()),
    ),
    // ----------------------------------------------------- stolen tokens, stolen identity
    row(
        "stolen-token-from-inventory",
        "Stolen token replayed from the compromised inventory host",
        "inventory cert + consumer's orders:read token, GET /orders/1",
        Want::Deny(&[(401, "binding_mismatch")]),
        |k| k.get_order(Inventory, k.read()),
    ),
    row(
        "stolen-token-no-cert",
        "Stolen token replayed without a client certificate",
        "no client cert + consumer's token, GET /orders/1",
        Want::TlsRefused,
        |k| k.get_order(NoCert, k.read()),
    ),
    row(
        "self-signed-cert",
        "Self-signed cert claiming consumer + stolen token",
        "self-signed cert (URI SAN consumer) + consumer's token, GET /orders/1",
        Want::TlsRefused,
        |k| k.get_order(SelfSigned, k.read()),
    ),
    row(
        "forged-xfcc",
        "Forged x-forwarded-client-cert naming consumer's cert",
        "inventory cert + consumer's token + x-forwarded-client-cert: Hash=<consumer>;URI=<consumer>",
        Want::Deny(&[(401, "binding_mismatch")]),
        |k| {
            let xfcc = format!("Hash={};URI={}", k.ctx.consumer_cnf, spiffe_id("consumer"));
            let request = Request::get("/orders/1").bearer(k.read());
            k.orders(Inventory, request.header("x-forwarded-client-cert", &xfcc))
        },
    ),
    row(
        "token-for-billing-at-orders",
        "A token issued for billing used at orders",
        "consumer cert + its billing:read token (aud billing), GET /orders/1",
        Want::Deny(&[(401, "wrong_audience")]),
        |k| k.get_order(Consumer, &k.ctx.consumer_billing.access_token),
    ),
    row(
        "scope-escalation",
        "Scope escalation: write with a read-only token",
        "consumer cert + its orders:read token, POST /orders",
        Want::Deny(&[(403, "policy_denied")]),
        |k| {
            let request = Request::post("/orders").json(&json!({"item": "x"}));
            k.orders(Consumer, request.bearer(k.read()))
        },
    ),
    row(
        "inventory-lists-orders",
        "Inventory lists all orders (outside its policy)",
        "inventory cert + its own orders:read token, GET /orders",
        Want::Deny(&[(403, "policy_denied")]),
        |k| {
            k.orders(
                Inventory,
                Request::get("/orders").bearer(k.inventory_read()),
            )
        },
    ),
    // ------------------------------------------------------------------- no/garbage token
    row(
        "no-token",
        "No token at all",
        "consumer cert, no Authorization header, GET /orders/1",
        Want::Deny(&[(401, "missing_token")]),
        |k| k.orders(Consumer, Request::get("/orders/1")),
    ),
    row(
        "token-in-query",
        "Token in the URL query (?access_token=)",
        "consumer cert, GET /orders/1?access_token=<consumer's token>",
        Want::Deny(&[(401, "missing_token")]),
        |k| {
            let path = format!("/orders/1?access_token={}", k.read());
            k.orders(Consumer, Request::get(&path))
        },
    ),
    row(
        "garbage-token",
        "Garbage bearer token",
        "consumer cert + `Bearer not.a.jwt`",
        Want::Deny(&[(401, "malformed_token")]),
        |k| k.get_order(Consumer, "not.a.jwt"),
    ),
    // ------------------------------------------------------------------------ forgeries
    row(
        "alg-none",
        "alg: none (unsigned token)",
        "consumer cert + consumer's claims, header alg none, empty signature",
        Want::Deny(&[(401, "unsupported_alg")]),
        |k| k.forged(&|c| Ok(forge::alg_none(k.kid(), c))),
    ),
    row(
        "hs256-key-confusion",
        "HS256 key confusion (HMAC keyed with the public key)",
        "consumer cert + consumer's claims, alg HS256, secret = JWKS key as PEM",
        Want::Deny(&[(401, "unsupported_alg")]),
        |k| k.forged(&|c| Ok(forge::hs256(k.kid(), c, k.ctx.real_public_pem.as_bytes()))),
    ),
    row(
        "psychic-signature",
        "Psychic signature (r = s = 0, CVE-2022-21449)",
        "consumer cert + consumer's claims, ES256 with the real kid, signature all zeros",
        Want::Deny(&[(401, "bad_signature")]),
        |k| k.forged(&|c| Ok(forge::psychic(k.kid(), c))),
    ),
    row(
        "attacker-key-real-kid",
        "Attacker's own P-256 key under the real kid",
        "consumer cert + consumer's claims signed by the attacker, kid = real kid",
        Want::Deny(&[(401, "bad_signature")]),
        |k| {
            k.forged(&|c| {
                let key = k.ctx.attacker.clone().with_kid(k.kid());
                Ok(forge::es256(&forge::header(k.kid()), c, &key))
            })
        },
    ),
    row(
        "jwk-header-injection",
        "jwk header injection (attacker's key embedded)",
        "consumer cert + consumer's claims signed by the attacker, header jwk = attacker key, real kid",
        Want::Deny(&[(401, "bad_signature")]),
        |k| {
            k.forged(&|c| {
                forge::jwk_injection(k.kid(), c, &k.ctx.attacker).map_err(|e| e.to_string())
            })
        },
    ),
    row(
        "jku-header-injection",
        "jku header injection (attacker's JWKS URL)",
        "consumer cert + claims signed by the attacker, jku = https://attacker.example/jwks.json",
        Want::Deny(&[(401, "unknown_kid")]),
        |k| {
            let jku = "https://attacker.example/jwks.json";
            k.forged(&|c| Ok(forge::jku_injection(jku, c, &k.ctx.attacker)))
        },
    ),
    row(
        "unknown-kid",
        "Unknown kid",
        "consumer cert + claims signed by the attacker under a kid the JWKS lacks",
        Want::Deny(&[(401, "unknown_kid")]),
        |k| {
            k.forged(&|c| {
                let key = k.ctx.attacker.clone().with_kid("attacker-kid-1");
                Ok(forge::es256(&forge::header(key.kid()), c, &key))
            })
        },
    ),
    row(
        "oversized-token",
        "Oversized token (16 KiB)",
        "consumer cert + a 16 KiB ES256 token",
        Want::Deny(&[(401, "malformed_token")]),
        |k| k.forged(&|c| Ok(forge::oversized(c, &k.ctx.attacker, 16 * 1024))),
    ),
    // -------------------------------------------------------- insider: one claim check each
    row(
        "expired",
        "Expired token (insider with the signing key)",
        "consumer cert + real-key token with exp 10 min ago",
        Want::Deny(&[(401, "expired")]),
        |k| {
            let edit = |c: &mut serde_json::Value| {
                let now = forge::now();
                c["iat"] = json!(now - 900);
                c["nbf"] = json!(now - 900);
                c["exp"] = json!(now - 600);
            };
            k.insider(&edit, Consumer)
        },
    )
    .insider(),
    row(
        "not-yet-valid",
        "Not-yet-valid token (insider with the signing key)",
        "consumer cert + real-key token with nbf in 10 min",
        Want::Deny(&[(401, "not_yet_valid")]),
        |k| {
            let edit = |c: &mut serde_json::Value| {
                let now = forge::now();
                c["nbf"] = json!(now + 600);
                c["exp"] = json!(now + 900);
            };
            k.insider(&edit, Consumer)
        },
    )
    .insider(),
    row(
        "wrong-issuer",
        "Wrong issuer (insider with the signing key)",
        "consumer cert + real-key token with iss https://attacker.example",
        Want::Deny(&[(401, "wrong_issuer")]),
        |k| k.insider(&|c| c["iss"] = json!("https://attacker.example"), Consumer),
    )
    .insider(),
    row(
        "wrong-type",
        "typ JWT, not at+jwt (insider with the signing key)",
        "consumer cert + real-key token whose header says typ JWT",
        Want::Deny(&[(401, "wrong_type")]),
        |k| {
            let key = k.insider_key()?;
            let header = json!({"alg": "ES256", "typ": "JWT", "kid": key.kid()});
            k.get_order(Consumer, &forge::es256(&header, k.claims()?, key))
        },
    )
    .insider(),
    row(
        "missing-cnf",
        "Token without cnf (insider with the signing key)",
        "consumer cert + real-key token with no cnf claim",
        Want::Deny(&[(401, "binding_missing")]),
        |k| {
            let edit = |c: &mut serde_json::Value| {
                if let Some(map) = c.as_object_mut() {
                    map.remove("cnf");
                }
            };
            k.insider(&edit, Consumer)
        },
    )
    .insider(),
    row(
        "cnf-of-other-cert",
        "cnf of another cert (insider with the signing key)",
        "consumer cert + real-key token bound to inventory's certificate",
        Want::Deny(&[(401, "binding_mismatch")]),
        |k| {
            k.insider(
                &|c| c["cnf"] = json!({"x5t#S256": k.ctx.inventory_cnf}),
                Consumer,
            )
        },
    )
    .insider(),
    row(
        "sub-of-other-workload",
        "sub of another workload (insider with the signing key)",
        "inventory cert + real-key token, sub consumer, cnf = inventory's cert",
        Want::Deny(&[(401, "subject_mismatch")]),
        |k| {
            k.insider(
                &|c| c["cnf"] = json!({"x5t#S256": k.ctx.inventory_cnf}),
                Inventory,
            )
        },
    )
    .insider(),
    row(
        "duplicated-claims",
        "Duplicated sub claims (insider with the signing key)",
        "consumer cert + real-key token whose JSON says sub twice (inventory, then consumer)",
        Want::Deny(&[(401, "malformed_token")]),
        |k| {
            let key = k.insider_key()?;
            let text = forge::duplicate_claim(k.claims()?, "sub", &json!(spiffe_id("inventory")))
                .map_err(|e| e.to_string())?;
            let token = forge::es256_raw(&forge::header(key.kid()).to_string(), &text, key);
            k.get_order(Consumer, &token)
        },
    )
    .insider(),
];
