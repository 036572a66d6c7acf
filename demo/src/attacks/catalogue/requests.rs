//! Rows about requests: spoofed identity headers and path tricks, the DPoP edge listener
//! (RFC 9449), dependencies taken down, revoked and spent tokens, and what introspection tells.

use super::{Spec, Want, control, row};
use crate::attacks::model::{Caller::*, Service, Show, dpop_request, edge_probe, probe};
use crate::client::Request;
use crate::control::Dependency;
use crate::forge::{self, spiffe_id};

pub(super) const ROWS: &[Spec] = &[
    // ------------------------------------------------------------- headers and paths
    row(
        "spoofed-certbind-headers-denied",
        "Spoofed x-certbind-* headers to borrow consumer's rights",
        "inventory cert + own token + x-certbind-subject: consumer, x-certbind-scope: orders:write, GET /orders",
        Want::Deny(&[(403, "policy_denied")]),
        |k| {
            let request = Request::get("/orders")
                .bearer(k.inventory_read())
                .header("x-certbind-subject", &spiffe_id("consumer"))
                .header("x-certbind-scope", "orders:read orders:write");
            k.orders(Inventory, request)
        },
    ),
    row(
        "spoofed-certbind-headers-stripped",
        "Spoofed x-certbind-subject on an allowed call",
        "inventory cert + own token + x-certbind-subject: consumer, GET /orders/1",
        Want::Admit("inventory"),
        |k| {
            let request = Request::get("/orders/1")
                .bearer(k.inventory_read())
                .header("x-certbind-subject", &spiffe_id("consumer"));
            k.orders(Inventory, request)
        },
    )
    .showing(Show::Subject),
    row(
        "path-traversal",
        "Path traversal out of /orders/*",
        "inventory cert + own token, GET /orders/1/../../admin",
        Want::Deny(&[(403, "policy_denied")]),
        |k| {
            k.orders(
                Inventory,
                Request::get("/orders/1/../../admin").bearer(k.inventory_read()),
            )
        },
    )
    .showing(Show::Path),
    row(
        "double-slash",
        "Double slash to dodge the path match",
        "inventory cert + own token, GET //orders",
        Want::Deny(&[(403, "policy_denied")]),
        |k| {
            k.orders(
                Inventory,
                Request::get("//orders").bearer(k.inventory_read()),
            )
        },
    )
    .showing(Show::Path),
    row(
        "encoded-slash",
        "Encoded slash (%2F) to dodge the path match",
        "inventory cert + own token, GET /orders%2F..%2Fadmin",
        Want::Rejected(400),
        |k| {
            k.orders(
                Inventory,
                Request::get("/orders%2F..%2Fadmin").bearer(k.inventory_read()),
            )
        },
    )
    .showing(Show::Path),
    // ------------------------------------------------ DPoP edge listener (RFC 9449)
    control(
        "control-dpop-consumer-reads-order",
        "Control: consumer reads an order at the DPoP edge",
        "no client cert + its DPoP-bound orders:read token + a fresh proof, GET /orders/1",
        "consumer",
        |k| {
            k.edge(&|token, _| {
                let proof = k.proof_for(token, "GET", "/orders/1", &|_| {})?;
                Ok(dpop_request("/orders/1", token, &[proof]))
            })
        },
    ),
    row(
        "dpop-replayed-proof",
        "DPoP: captured request (token + proof) replayed",
        "the consumer's edge request, already served once, sent again as is",
        Want::Deny(&[(401, "dpop_replay")]),
        |k| {
            let request = k.ctx.dpop_captured.clone()?;
            let token = &k.ctx.dpop_read.as_ref().map_err(Clone::clone)?.access_token;
            Ok(edge_probe(request, token))
        },
    ),
    row(
        "dpop-proof-other-method",
        "DPoP: proof made for another method",
        "DPoP token + a proof with htm POST, GET /orders/1",
        Want::Deny(&[(401, "dpop_invalid")]),
        |k| {
            k.edge(&|token, _| {
                let proof = k.proof_for(token, "POST", "/orders/1", &|_| {})?;
                Ok(dpop_request("/orders/1", token, &[proof]))
            })
        },
    ),
    row(
        "dpop-proof-other-url",
        "DPoP: proof made for another URL",
        "DPoP token + a proof with htu …/orders/2, GET /orders/1",
        Want::Deny(&[(401, "dpop_invalid")]),
        |k| {
            k.edge(&|token, _| {
                let proof = k.proof_for(token, "GET", "/orders/2", &|_| {})?;
                Ok(dpop_request("/orders/1", token, &[proof]))
            })
        },
    ),
    row(
        "dpop-proof-without-ath",
        "DPoP: proof without ath (not tied to the token)",
        "DPoP token + a proof with no ath claim, GET /orders/1",
        Want::Deny(&[(401, "dpop_invalid")]),
        |k| {
            k.edge(&|token, _| {
                let proof = k.proof_for(token, "GET", "/orders/1", &|c| {
                    if let Some(map) = c.as_object_mut() {
                        map.remove("ath");
                    }
                })?;
                Ok(dpop_request("/orders/1", token, &[proof]))
            })
        },
    ),
    row(
        "dpop-proof-ath-of-other-token",
        "DPoP: proof whose ath is another token's",
        "DPoP orders:read token + a proof with the ath of the consumer's orders:write token",
        Want::Deny(&[(401, "dpop_invalid")]),
        |k| {
            k.edge(&|token, other| {
                let other_ath = certbind_core::dpop::access_token_hash(other);
                let proof = k.proof_for(token, "GET", "/orders/1", &|c| {
                    c["ath"] = other_ath.clone().into();
                })?;
                Ok(dpop_request("/orders/1", token, &[proof]))
            })
        },
    ),
    row(
        "dpop-proof-other-key",
        "DPoP: stolen token, proof signed by the thief's key",
        "DPoP token + a valid-looking proof signed by the attacker's key (not cnf.jkt)",
        Want::Deny(&[(401, "dpop_invalid")]),
        |k| k.edge(&|token, _| Ok(dpop_request("/orders/1", token, &[k.thief_proof(token)?]))),
    ),
    row(
        "dpop-proof-stale-iat",
        "DPoP: stale proof (iat 5 min ago)",
        "DPoP token + a proof with iat 300 s in the past, GET /orders/1",
        Want::Deny(&[(401, "dpop_invalid")]),
        |k| {
            k.edge(&|token, _| {
                let proof = k.proof_for(token, "GET", "/orders/1", &|c| {
                    c["iat"] = (forge::now() - 300).into();
                })?;
                Ok(dpop_request("/orders/1", token, &[proof]))
            })
        },
    ),
    row(
        "dpop-token-as-bearer",
        "DPoP: DPoP-bound token sent as a bearer token",
        "Authorization: Bearer <DPoP token>, no proof, GET /orders/1",
        Want::Deny(&[(401, "dpop_invalid")]),
        |k| k.edge(&|token, _| Ok(Request::get("/orders/1").bearer(token))),
    ),
    row(
        "dpop-two-proofs",
        "DPoP: two DPoP headers",
        "DPoP token + two valid proofs in two DPoP headers, GET /orders/1",
        Want::Deny(&[(401, "dpop_invalid")]),
        |k| {
            k.edge(&|token, _| {
                let a = k.proof_for(token, "GET", "/orders/1", &|_| {})?;
                let b = k.proof_for(token, "GET", "/orders/1", &|_| {})?;
                Ok(dpop_request("/orders/1", token, &[a, b]))
            })
        },
    ),
    row(
        "dpop-proof-private-key",
        "DPoP: proof whose jwk carries the private key",
        "DPoP token + a proof whose header jwk includes d, GET /orders/1",
        Want::Deny(&[(401, "dpop_invalid")]),
        |k| {
            k.edge(&|token, _| {
                let key = &k.ctx.dpop_key;
                let mut header = crate::dpop::header(key).map_err(|e| e.to_string())?;
                header["jwk"]["d"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE".into();
                let htu = crate::dpop::htu(&k.ctx.target.edge_origin, "/orders/1");
                let claims =
                    crate::dpop::claims("GET", &htu, Some(token)).map_err(|e| e.to_string())?;
                let proof = forge::es256(&header, &claims, key);
                Ok(dpop_request("/orders/1", token, &[proof]))
            })
        },
    ),
    row(
        "dpop-mtls-token-at-edge",
        "Stolen certificate-bound token at the DPoP edge",
        "no client cert + consumer's mTLS-bound token + a proof by the thief's key",
        Want::Deny(&[(401, "binding_mismatch")]),
        |k| {
            let request = dpop_request("/orders/1", k.read(), &[k.thief_proof(k.read())?]);
            Ok(edge_probe(request, k.read()))
        },
    ),
    // ------------------------------------------------------- failures of dependencies
    row(
        "pdp-down",
        "PDP down: must fail closed",
        "PDP down (SIGSTOP); consumer cert + valid token, GET /orders/<new id> (no cached decision)",
        Want::Deny(&[(503, "pdp_unavailable")]),
        |k| {
            let request = Request::get(&k.unique("/orders/pdp-down-")).bearer(k.read());
            k.down(Dependency::Pdp, probe(Service::Orders, Consumer, request))
        },
    ),
    control(
        "control-jwks-down-cached",
        "Control: JWKS down after start, cached keys still serve",
        "authz-server down (SIGSTOP); consumer cert + valid token, GET /orders/<new id>",
        "consumer",
        |k| {
            let request = Request::get(&k.unique("/orders/jwks-down-")).bearer(k.read());
            k.down(Dependency::Authz, probe(Service::Orders, Consumer, request))
        },
    ),
    row(
        "jwks-down-unknown-kid",
        "JWKS down after start: unknown kid still refused",
        "authz-server down (SIGSTOP); consumer cert + attacker-signed token with an unknown kid",
        // With the JWKS cached the kid is simply unknown; if the filter counts the failed
        // refetch instead, it refuses as unavailable. Both fail closed.
        Want::Deny(&[(401, "unknown_kid"), (503, "jwks_unavailable")]),
        |k| {
            let forged = k.forged(&|c| {
                let key = k.ctx.attacker.clone().with_kid("attacker-kid-2");
                Ok(forge::es256(&forge::header(key.kid()), c, &key))
            })?;
            k.down(Dependency::Authz, forged)
        },
    ),
    row(
        "revoked-token-replayed",
        "A leaked token its owner has revoked (RFC 7009), replayed with its owner's certificate",
        "consumer revoked the token at POST /revoke after using it once; consumer cert + the revoked token, GET /orders/1",
        Want::Deny(&[(401, "revoked")]),
        |k| k.get_order(Consumer, &k.ctx.revoked.clone()?),
    ),
    row(
        "revoked-token-high-s-twin",
        "The revoked token with its signature's s replaced by n - s (a second valid signature)",
        "consumer cert + the revoked token's high-S twin: different bytes, same jti, GET /orders/1",
        // Refused as revoked (the revocation is keyed on the jti, never on token bytes);
        // a verifier that refuses high-S signatures outright would also be right.
        Want::Deny(&[(401, "revoked"), (401, "bad_signature")]),
        |k| {
            let revoked = k.ctx.revoked.clone()?;
            let twin = forge::high_s_twin(&revoked).map_err(|e| e.to_string())?;
            k.get_order(Consumer, &twin)
        },
    ),
    // ------------------------------------------------------------ request shape (issue 16)
    row(
        "path-parameter",
        "Path parameter (;) to dodge the path match: Java upstreams strip `;...`",
        "inventory cert + own orders:read token, GET /orders/;jsessionid=1 (policy: /orders/*)",
        Want::Rejected(400),
        |k| {
            k.orders(
                Inventory,
                Request::get("/orders/;jsessionid=1").bearer(k.inventory_read()),
            )
        },
    )
    .showing(Show::Path),
    row(
        "underscore-identity-header",
        "Underscore twin of the identity header (x_certbind_subject: CGI/WSGI/Rack/PHP read it as X-Certbind-Subject)",
        "inventory cert + own token + `x_certbind_subject: …/sa/consumer`, GET /orders/1",
        Want::Rejected(400),
        |k| {
            let request = Request::get("/orders/1")
                .bearer(k.inventory_read())
                .header("x_certbind_subject", &spiffe_id("consumer"));
            k.orders(Inventory, request)
        },
    ),
    // ------------------------------------------------------- usage-bound tokens (issue 22)
    row(
        "usage-token-replayed-after-spent",
        "A captured usage-bound token (max_uses=2) replayed after its owner spent both uses",
        "consumer used the token twice; consumer cert + the same token, GET /orders/1",
        Want::Deny(&[(401, "usage_exhausted")]),
        |k| k.get_order(Consumer, &k.ctx.usage_spent.clone()?),
    ),
];

/// The last row, after the measured ones.
pub(super) const INFORMATION: &[Spec] = &[
    // -------------------------------------------------- information (issue 16)
    row(
        "introspect-other-clients-token",
        "Introspection as an oracle: inventory asks about consumer's live token (RFC 7662 §4)",
        "inventory cert, POST /introspect token=<consumer's live orders:read token> at the authz-server",
        Want::Inactive,
        |k| {
            let form = [("token", k.read()), ("token_type_hint", "access_token")];
            Ok(probe(Service::Authz, Inventory, Request::post("/introspect").form(&form)))
        },
    )
    .showing(Show::Active),
];
