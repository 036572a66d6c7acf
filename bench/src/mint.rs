//! Real access tokens from the authz-server (`POST /token`, authenticated by the consumer's
//! client certificate), many over one keep-alive mTLS connection, and its JWKS.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;

/// What every benchmark request asks for: the consumer reading one order.
pub const CLIENT: &str = "consumer";
pub const AUDIENCE: &str = "spiffe://certbind.test/ns/demo/sa/orders";
pub const SCOPE: &str = "orders:read";
pub const PATH: &str = "/orders/1";

/// `n` fresh tokens for the consumer towards orders (each with its own `jti`).
pub fn tokens(authz: SocketAddr, tls: Arc<ClientConfig>, n: usize) -> Result<Vec<String>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(authz)
            .await
            .map_err(|e| format!("authz-server {authz}: {e}"))?;
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("authz-server TLS: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let form = format!(
            "grant_type=client_credentials&audience={}&scope={}",
            AUDIENCE.replace(':', "%3A").replace('/', "%2F"),
            SCOPE.replace(':', "%3A")
        );
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let request = hyper::Request::post("/token")
                .header("host", "localhost")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(form.clone())))
                .map_err(|e| e.to_string())?;
            let (status, body) = crate::load::exchange(&mut sender, request)
                .await
                .map_err(|e| format!("POST /token: {e}"))?;
            if status != 200 {
                return Err(format!(
                    "authz-server refused a token: {status} {}",
                    String::from_utf8_lossy(&body)
                ));
            }
            let json: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| format!("token response: {e}"))?;
            let token = json
                .get("access_token")
                .and_then(|t| t.as_str())
                .ok_or("token response without access_token")?;
            out.push(token.to_owned());
        }
        Ok(out)
    })
}

/// The authz-server's JWKS document (inlined into `jwt_authn`'s `local_jwks`).
pub fn jwks(authz: SocketAddr, pki_dir: &std::path::Path) -> Result<String, String> {
    let client = certbind_tests::TlsClient::for_workload(pki_dir, Some(CLIENT))
        .and_then(|c| c.expecting("authz"))
        .map_err(|e| e.to_string())?;
    let response = client
        .send(
            authz,
            &certbind_tests::Request::get("/.well-known/jwks.json"),
        )
        .map_err(|e| e.to_string())?;
    if response.status != 200 {
        return Err(format!("JWKS: status {}", response.status));
    }
    // Compact JSON: one line, no quotes that YAML would need escaped.
    let json = response.json().map_err(|e| e.to_string())?;
    Ok(json.to_string())
}

/// A DPoP-bound token (RFC 9449 §5, `cnf.jkt` of `key`) for the consumer towards orders: the
/// token request carries a proof for `<issuer>/token`, the issuer being `https://<authz>`.
pub fn dpop_token(
    authz: SocketAddr,
    pki_dir: &std::path::Path,
    key: &certbind_tests::tokens::EcKey,
) -> Result<String, String> {
    let client = certbind_tests::TlsClient::for_workload(pki_dir, Some(CLIENT))
        .and_then(|c| c.expecting("authz"))
        .map_err(|e| e.to_string())?;
    let token_url = format!("https://{authz}/token");
    let proof = certbind_tests::tokens::dpop_proof(key, "POST", &token_url, None)
        .map_err(|e| e.to_string())?;
    let request = certbind_tests::Request::post("/token")
        .form(&[
            ("grant_type", "client_credentials"),
            ("audience", AUDIENCE),
            ("scope", SCOPE),
        ])
        .header("dpop", &proof);
    let response = client.send(authz, &request).map_err(|e| e.to_string())?;
    match (response.status, response.json_str("token_type").as_deref()) {
        (200, Some("DPoP")) => response
            .json_str("access_token")
            .ok_or_else(|| "token response without access_token".to_owned()),
        (status, _) => Err(format!(
            "authz-server refused a DPoP-bound token: {status} {}",
            response.text()
        )),
    }
}

/// `n` single-use proofs of `key` for `GET <htu>` with `token`
/// (each its own `jti`, `iat` now): minted before a run so the generator only sends them,
/// on every core (a run of S5d on a fast machine needs ~50,000).
pub fn dpop_proofs(
    key: &certbind_tests::tokens::EcKey,
    token: &str,
    htu: &str,
    n: usize,
) -> Result<Vec<String>, String> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let share = n.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..n)
            .step_by(share)
            .map(|start| {
                let count = share.min(n - start);
                scope.spawn(move || {
                    (0..count)
                        .map(|_| {
                            certbind_tests::tokens::dpop_proof(key, "GET", htu, Some(token))
                                .map_err(|e| e.to_string())
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut proofs = Vec::with_capacity(n);
        for worker in workers {
            proofs.extend(worker.join().map_err(|_| "a proof minter panicked")??);
        }
        Ok(proofs)
    })
}

/// S2v's `verify_signature` arguments, as hex: `token`'s signing input (so the host hashes as
/// many bytes as for a fresh token) signed by a key of the benchmark's own, encoded exactly as
/// certbind encodes a token's (`certbind_core::host_es256`). Checked here before use.
pub fn verify_floor_arguments(token: &str) -> Result<String, String> {
    use certbind_core::host_es256::{encode_arguments, p1363_to_der, spki_der};
    let (signing_input, _) = token
        .rsplit_once('.')
        .ok_or("a token without a signature")?;
    let key = certbind_tests::tokens::EcKey::generate().map_err(|e| e.to_string())?;
    let jwk = key.public_jwk().map_err(|e| e.to_string())?;
    let public = match (jwk["x"].as_str(), jwk["y"].as_str()) {
        (Some(x), Some(y)) => certbind_core::jwk::ec_p256_key(x, y),
        _ => None,
    }
    .ok_or("the generated key has no P-256 coordinates")?;
    let signature = key.sign(signing_input.as_bytes());
    if certbind_core::token::es256_verify(&public, signing_input.as_bytes(), &signature).is_err() {
        return Err("the floor's own signature does not verify".into());
    }
    let der = p1363_to_der(&signature).ok_or("the floor's signature is out of range")?;
    let arguments = encode_arguments(&spki_der(&public), &der, signing_input.as_bytes());
    Ok(arguments.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn mints_exactly_n_proofs_each_with_its_own_jti_across_the_minting_threads() {
        let key = certbind_tests::tokens::EcKey::generate().unwrap();
        for n in [0, 1, 7] {
            let proofs = dpop_proofs(&key, "a.b.c", "https://127.0.0.1:1/x", n).unwrap();
            assert_eq!(proofs.len(), n);
            let distinct: HashSet<&String> = proofs.iter().collect();
            assert_eq!(distinct.len(), n, "a proof minted twice");
        }
    }
}
