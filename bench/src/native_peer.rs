//! S3b, the best equal-function peer a user can assemble from Envoy's native filters: cached
//! `jwt_authn` with `payload_in_metadata` and the four identity headers, then a Lua filter
//! binding the token to the connection (`cnf.x5t#S256` against the peer certificate's SHA-256,
//! `sub` against its URI SAN), then `rbac` on the certificate's principal. Binding and least
//! privilege without Wasm; no revocation, DPoP, PDP or decision cache.

/// jwt_authn's `claim_to_headers`: the four headers certbind sets on an allowed request, so S3,
/// S3u and S3b forward what S5 forwards.
pub const CLAIM_HEADERS: &str = r#"                  claim_to_headers:
                  - { header_name: x-certbind-subject, claim_name: sub }
                  - { header_name: x-certbind-client-id, claim_name: client_id }
                  - { header_name: x-certbind-scope, claim_name: scope }
                  - { header_name: x-certbind-jti, claim_name: jti }
"#;

/// Where jwt_authn leaves the verified payload for the Lua filter.
pub const PAYLOAD_IN_METADATA: &str = "                  payload_in_metadata: certbind_payload\n";

/// The binding check: Envoy gives the digest as lowercase hex, `cnf.x5t#S256` is the base64url
/// (unpadded) of the same 32 bytes (RFC 8705 §3.1); `sub` must be the first URI SAN.
const LUA_BINDING: &str = r#"          - name: envoy.filters.http.lua
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
              default_source_code:
                inline_string: |
                  local function refuse(handle, reason)
                    handle:respond({[":status"] = "401"}, reason)
                  end
                  function envoy_on_request(handle)
                    local meta = handle:streamInfo():dynamicMetadata():get("envoy.filters.http.jwt_authn")
                    local payload = meta and meta["certbind_payload"]
                    local ssl = handle:connection():ssl()
                    if payload == nil or ssl == nil then
                      return refuse(handle, "binding_missing")
                    end
                    local cnf = payload["cnf"]
                    local x5t = cnf and cnf["x5t#S256"]
                    if x5t == nil then
                      return refuse(handle, "binding_missing")
                    end
                    local digest = ssl:sha256PeerCertificateDigest()
                    local raw = digest:gsub("..", function(h) return string.char(tonumber(h, 16)) end)
                    local b64 = handle:base64Escape(raw):gsub("+", "-"):gsub("/", "_"):gsub("=", "")
                    if b64 ~= x5t then
                      return refuse(handle, "binding_mismatch")
                    end
                    local sans = ssl:uriSanPeerCertificate()
                    if sans == nil or sans[1] ~= payload["sub"] then
                      return refuse(handle, "subject_mismatch")
                    end
                  end"#;

/// Least privilege on the certificate's principal: only the consumer reaches `/orders`.
const RBAC: &str = r#"          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: ALLOW
                policies:
                  consumer-reads-orders:
                    permissions:
                    - url_path: { path: { prefix: /orders } }
                    principals:
                    - authenticated: { principal_name: { exact: "spiffe://certbind.test/ns/demo/sa/consumer" } }"#;

/// The filters after S3b's jwt_authn.
pub fn binding_filters() -> String {
    format!("{LUA_BINDING}\n{RBAC}")
}
