#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/ from third-party vectors and the project's own examples, so the
seeds are reproducible: Wycheproof (vendored in filter/core/tests/corpora/wycheproof), RFC
examples transcribed in certbind-core's tests, the filter config example of config.rs, the
demo policy. Run from anywhere: python3 fuzz/seed.py"""

import base64
import hashlib
import json
import pathlib
import re
import shutil
import subprocess
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
WYCHEPROOF = ROOT / "filter/core/tests/corpora/wycheproof"
SEEDS = ROOT / "fuzz/seeds"

# Transcribed RFC examples (also in certbind-core's unit tests).
RFC7515_A3_JWS = (
    "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
)
RFC9449_PROOF = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19"
    ".eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ"
    ".2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg"
)
RFC7515_JWKS = {"keys": [{"kty": "EC", "crv": "P-256", "kid": "a3",
                          "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                          "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}


def write(target, items):
    out = SEEDS / target
    out.mkdir(parents=True, exist_ok=True)
    for item in items:
        data = item if isinstance(item, bytes) else item.encode()
        (out / hashlib.sha1(data).hexdigest()).write_bytes(data)
    return len(list(out.iterdir()))


def wycheproof(name):
    return json.loads((WYCHEPROOF / name).read_text())


def public(jwks):
    keys = [{k: v for k, v in key.items() if k not in ("d", "k", "p", "q", "dp", "dq", "qi")}
            for key in jwks.get("keys", [])]
    return {"keys": keys}


def workload_certificate():
    """A self-signed P-256 certificate with a SPIFFE URI SAN, as PEM and DER (openssl)."""
    with tempfile.TemporaryDirectory() as d:
        key, pem, der = (pathlib.Path(d) / n for n in ("k.pem", "c.pem", "c.der"))
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", str(key), "-out", str(pem), "-days", "1", "-subj", "/CN=consumer",
                        "-addext", "subjectAltName=URI:spiffe://certbind.test/ns/demo/sa/consumer"],
                       check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-in", str(pem), "-outform", "DER", "-out", str(der)],
                       check=True, capture_output=True)
        return [pem.read_text(), der.read_bytes()]


def doc_block(path, fence):
    """The first ``` block of kind `fence` in a file's //! doc comment."""
    text = "\n".join(l[4:] if l.startswith("//! ") else l[3:] for l in
                     (ROOT / path).read_text().splitlines() if l.startswith("//!"))
    m = re.search(r"```" + fence + r"\n(.*?)```", text, re.S)
    return m.group(1) if m else ""


def revocation_feed_seeds():
    """Feed answers (filter/core/src/revocation.rs): the documented one, a snapshot of every
    kind, an empty delta, and near misses (a duplicate member, an entry as an array)."""
    thumb = "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg0"
    snapshot = {"seq": 3, "snapshot": True, "revocations": [
        {"seq": 1, "kind": "cert", "value": thumb, "expires_at": None},
        {"seq": 2, "kind": "jti", "value": "AAECAwQFBgcICQoLDA0ODw", "not_before_iat": None,
         "expires_at": 1700000360},
        {"seq": 3, "kind": "subject", "value": "spiffe://certbind.test/ns/demo/sa/inventory",
         "not_before_iat": 1700000000, "expires_at": None}]}
    return [
        doc_block("filter/core/src/revocation.rs", "json"),
        json.dumps(snapshot),
        '{"seq":7,"snapshot":false,"revocations":[]}',
        '{"seq":2,"snapshot":false,"revocations":[{"seq":2,"kind":"jti","value":"a","value":"b","expires_at":null}]}',
        '{"seq":2,"snapshot":false,"revocations":[[2,"jti","b",null,null]]}',
    ]


def issued_token_seeds():
    """Claims as the authz-server issues them (CONTRACT §3), the field-cut text form the target
    also reads, and tokens for its verifier side."""
    thumbprint = "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg0"
    claims = {"iss": "https://authz.certbind.test", "sub": "spiffe://certbind.test/ns/demo/sa/consumer",
              "client_id": "consumer", "aud": "spiffe://certbind.test/ns/demo/sa/orders",
              "scope": "orders:read", "iat": 1700000000, "nbf": 1700000000, "exp": 1700000300,
              "jti": "AAECAwQFBgcICQoLDA0ODw", "cnf": {"x5t#S256": thumbprint},
              "client_x5t#S256": thumbprint}
    dpop = dict(claims, cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"})
    usage = dict(claims, max_uses=3)
    control = dict(claims, client_id="a\r\nx-certbind-subject: admin")
    dead = dict(claims, nbf=1700000300)
    fields = "\n".join([claims["iss"], claims["sub"], "consumer", claims["aud"], "orders:read", "j-1", thumbprint])
    header = '{"alg":"ES256","typ":"at+jwt","kid":"issuer"}'
    unsigned = ".".join(base64.urlsafe_b64encode(p.encode()).decode().rstrip("=")
                        for p in (header, json.dumps(claims), "x" * 64))
    return [json.dumps(c, separators=(",", ":")) for c in (claims, dpop, usage, control, dead)] + [
        fields, "\x01" + fields + "\n" + dpop["cnf"]["jkt"], unsigned, RFC7515_A3_JWS]


def main():
    if SEEDS.exists():
        shutil.rmtree(SEEDS)
    jws_file = wycheproof("json_web_signature_test.json")
    jwk_file = wycheproof("json_web_key_test.json")
    jws = [t["jws"] if isinstance(t["jws"], str) else json.dumps(t["jws"])
           for g in jws_file["testGroups"] for t in g["tests"]]
    es256 = [t["jws"] for g in jws_file["testGroups"] for t in g["tests"]
             if isinstance(t["jws"], str) and t["jws"].startswith("eyJhbGciOiJFUzI1Ni")]
    counts = {}
    counts["access_token"] = write("access_token", jws[:40] + [RFC7515_A3_JWS, "Bearer " + RFC7515_A3_JWS])
    counts["issued_token"] = write("issued_token", issued_token_seeds())
    jwks = [json.dumps(public(g["private"])) for g in jws_file["testGroups"] + jwk_file["testGroups"]]
    counts["jwks"] = write("jwks", jwks[:40] + [json.dumps(RFC7515_JWKS), '{"keys":[]}'])
    counts["binding"] = write("binding", [
        "spiffe://certbind.test/ns/demo/sa/consumer", "spiffe://certbind.test/ns/demo/sa/orders",
        "spiffe://other.test/a", "http://certbind.test/ns/x",
        hashlib.sha256(b"certificate").hexdigest(), hashlib.sha256(b"certificate").hexdigest().upper(),
        # RFC 8705 §3.1's value (its printed spelling; certbind refuses its non-zero padding bits)
        "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2", "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg0",
        *workload_certificate(),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        bytes.fromhex("3082010a0282010100"),
    ])
    counts["dpop_proof"] = write("dpop_proof", es256 + [RFC9449_PROOF])
    counts["filter_config"] = write("filter_config", [
        doc_block("filter/core/src/config.rs", "json"),
        '{"issuer":"https://127.0.0.1:9443","audience":"spiffe://certbind.test/ns/demo/sa/orders",'
        '"trust_domain":"certbind.test","jwks":{"cluster":"a","authority":"127.0.0.1:9443"},'
        '"pdp":{"cluster":"p","authority":"127.0.0.1:9191"},"binding":"dpop",'
        '"dpop":{"public_origin":"https://127.0.0.1:8445"}}',
    ])
    policies = [p.read_text() for p in sorted((ROOT / "pdp").rglob("*.yaml"))]
    counts["pdp_policy"] = write("pdp_policy", policies)
    request = {"subject": "spiffe://certbind.test/ns/demo/sa/consumer", "client_id": "consumer",
               "action": "GET", "resource": "/orders/1",
               "audience": "spiffe://certbind.test/ns/demo/sa/orders", "scopes": ["orders:read"],
               "context": {"source_ip": "127.0.0.1", "iat": 1700000000, "jti": "j",
                           "tls_version": "TLSv1.3"}}
    denied = dict(request, action="DELETE", scopes=[])
    counts["pdp_decision"] = write("pdp_decision", [json.dumps(request), json.dumps(denied)])
    counts["revocation_feed"] = write("revocation_feed", revocation_feed_seeds())
    for target, n in counts.items():
        print(f"{target}: {n} seeds")


if __name__ == "__main__":
    main()
