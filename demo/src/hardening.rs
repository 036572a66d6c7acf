//! Multi-step hardening attacks of the attack table (issue 16), run before the table like the
//! usage-token race, so that a row's probe is only the decisive request: a DPoP-bound token
//! whose certificate was revoked, a `/revoke` flood, a flood of the edge's DPoP replay cache
//! and a certificate that expired after it was used.

use crate::authz::AuthzClient;
use crate::client::{HttpsClient, Request, read_certs};
use crate::forge::{EcKey, spiffe_id};
use certbind_core::binding::CertThumbprint;
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// A DPoP-bound token whose issuing certificate is revoked, and the proof key it is bound to:
/// the token thief also stole the proof key, so only the revocation stands in the way.
#[derive(Debug, Clone)]
pub struct RevokedCertToken {
    pub token: String,
    pub key: EcKey,
    /// How long after the operator's revocation the edge first refused the token (`None`:
    /// still admitted after 10 s; the row's probe then shows it admitted).
    pub refused_after: Option<Duration>,
}

/// Where the steps send their calls.
pub struct Endpoints<'a> {
    pub pki_dir: &'a Path,
    pub authz: SocketAddr,
    pub issuer: &'a str,
    pub edge: SocketAddr,
    pub edge_origin: &'a str,
}

/// A second consumer certificate (its own key, so its own thumbprint: revoking it touches no
/// other row), signed with the demo CA's `ca.key`, valid for `lifetime` from now (rcgen's
/// default window when `None`); and that thumbprint (`x5t#S256`).
fn second_consumer_client(
    pki_dir: &Path,
    lifetime: Option<Duration>,
) -> Result<(HttpsClient, String), String> {
    let ca_pem = pki_dir.join("ca.crt");
    let ca_certs = read_certs(&ca_pem).map_err(|e| format!("{}: {e}", ca_pem.display()))?;
    let ca_der = ca_certs
        .first()
        .ok_or_else(|| format!("{} holds no certificate", ca_pem.display()))?;
    let ca_key_path = pki_dir.join("ca.key");
    let ca_key_pem = std::fs::read_to_string(&ca_key_path)
        .map_err(|e| format!("needs the CA key {} ({e})", ca_key_path.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| format!("ca.key: {e}"))?;
    let issuer = Issuer::from_ca_cert_der(ca_der, ca_key).map_err(|e| format!("ca.crt: {e}"))?;
    let key = KeyPair::generate().map_err(|e| format!("leaf key: {e}"))?;
    let mut params = CertificateParams::default();
    let uri = spiffe_id("consumer")
        .try_into()
        .map_err(|e| format!("SAN: {e}"))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if let Some(lifetime) = lifetime {
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::seconds(60);
        params.not_after = now + lifetime;
    }
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| format!("signing the second consumer certificate: {e}"))?;
    let x5t = CertThumbprint::from_der(cert.der()).to_cnf();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let client = HttpsClient::new(
        &ca_pem,
        Some((vec![cert.der().clone()], key_der)),
        "localhost",
    )
    .map_err(|e| format!("second consumer client: {e}"))?;
    Ok((client, x5t))
}

/// `GET /orders/1` at the edge with `token` and a fresh proof by `key`.
pub fn fresh_edge_get(edge_origin: &str, key: &EcKey, token: &str) -> Result<Request, String> {
    let path = "/orders/1";
    let htu = crate::dpop::htu(edge_origin, path);
    let proof = crate::dpop::proof(key, "GET", &htu, Some(token)).map_err(|e| e.to_string())?;
    Ok(Request::get(path)
        .header("authorization", &format!("DPoP {token}"))
        .header("dpop", &proof))
}

/// The consumer, on a second certificate, obtains a DPoP-bound token and uses it once at the
/// edge (200); the operator revokes that certificate (`POST /v1/admin/revocations`, kind
/// `cert`); the edge is polled with fresh proofs until it refuses the token as `revoked`, for
/// at most 10 s.
pub async fn dpop_token_of_revoked_cert(
    at: &Endpoints<'_>,
    anonymous: &HttpsClient,
) -> Result<RevokedCertToken, String> {
    let (client, x5t) = second_consumer_client(at.pki_dir, None)?;
    let key = EcKey::generate().map_err(|e| format!("DPoP key: {e}"))?;
    let token = AuthzClient::new(client, at.authz)
        .with_dpop(key.clone(), at.issuer)
        .token("orders", "orders:read")
        .await
        .map_err(|e| format!("no DPoP token over the second certificate: {e}"))?
        .access_token;
    let edge_get = || fresh_edge_get(at.edge_origin, &key, &token);
    let first = anonymous
        .send(at.edge, &edge_get()?)
        .await
        .map_err(|e| format!("first edge use: {e}"))?;
    if first.status != 200 {
        return Err(format!(
            "the token was refused before the revocation: {} {}",
            first.status,
            first.text()
        ));
    }
    let operator = HttpsClient::for_workload(at.pki_dir, Some("operator"))
        .map_err(|e| format!("needs the operator certificate: {e}"))?;
    let body = serde_json::json!({"kind": "cert", "value": x5t,
        "reason": "attack table: a certificate revoked after it obtained a DPoP token"});
    let revoked = operator
        .send(
            at.authz,
            &Request::post("/v1/admin/revocations").json(&body),
        )
        .await
        .map_err(|e| format!("POST /v1/admin/revocations: {e}"))?;
    if !(200..300).contains(&revoked.status) {
        return Err(format!(
            "the operator's revocation was refused: {} {}",
            revoked.status,
            revoked.text()
        ));
    }
    let start = Instant::now();
    // CONTRACT: within 1 s; 10 s leaves room for a loaded machine, the row shows the figure.
    while start.elapsed() < Duration::from_secs(10) {
        let r = anonymous
            .send(at.edge, &edge_get()?)
            .await
            .map_err(|e| format!("edge call after the revocation: {e}"))?;
        if r.status == 401 && r.json_str("reason").as_deref() == Some("revoked") {
            let refused_after = Some(start.elapsed());
            return Ok(RevokedCertToken {
                token,
                key,
                refused_after,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(RevokedCertToken {
        token,
        key,
        refused_after: None,
    })
}

/// What one workload's `/revoke` flood did, and what the others saw meanwhile.
#[derive(Debug, Clone)]
pub struct RevocationFlood {
    /// The flooder's last revoked token (revoked by coalescing, past its `jti` quota).
    pub token: String,
    pub revoked: usize,
    pub secs: f64,
    /// Rows in the revocation feed's snapshot before and after.
    pub list_before: usize,
    pub list_after: usize,
    /// Another workload's calls at the sidecar after the flood: admitted of sent.
    pub others_admitted: usize,
    pub others_sent: usize,
    /// Whether the sidecar refused the flooder's last token as `revoked` within 10 s.
    pub refused: bool,
}

/// Rows in the revocation feed's snapshot, read with the sidecar's (`envoy`) identity.
async fn feed_rows(pki_dir: &Path, authz: SocketAddr) -> Result<usize, String> {
    let envoy = HttpsClient::for_workload(pki_dir, Some("envoy"))
        .map_err(|e| format!("needs the sidecar's certificate: {e}"))?;
    let r = envoy
        .send(authz, &Request::get("/v1/revocations"))
        .await
        .map_err(|e| format!("GET /v1/revocations: {e}"))?;
    r.json()
        .ok()
        .and_then(|j| Some(j.get("revocations")?.as_array()?.len()))
        .filter(|_| r.status == 200)
        .ok_or_else(|| format!("GET /v1/revocations: {} {}", r.status, r.text()))
}

/// `flooder` obtains and revokes `count` fresh tokens of its own as fast as it can (what one
/// workload does to grow the list until sidecars give up); then `other` calls the orders
/// sidecar 20 times, and the sidecar is polled until it refuses the flooder's last token.
pub async fn revocation_flood(
    at: &Endpoints<'_>,
    orders: SocketAddr,
    (flooder, flooder_client): (&AuthzClient, &HttpsClient),
    (other, other_client): (&AuthzClient, &HttpsClient),
    count: usize,
) -> Result<RevocationFlood, String> {
    let list_before = feed_rows(at.pki_dir, at.authz).await?;
    let start = Instant::now();
    let mut token = String::new();
    for i in 0..count {
        token = flooder
            .token("orders", "orders:read")
            .await
            .map_err(|e| format!("flood token {i}: {e}"))?
            .access_token;
        flooder
            .revoke(&token)
            .await
            .map_err(|e| format!("flood revocation {i}: {e}"))?;
    }
    let secs = start.elapsed().as_secs_f64();
    let list_after = feed_rows(at.pki_dir, at.authz).await?;
    let other_token = other
        .token("orders", "orders:read")
        .await
        .map_err(|e| format!("the other workload's token: {e}"))?
        .access_token;
    let others_sent = 20;
    let mut others_admitted = 0;
    for _ in 0..others_sent {
        let r = other_client
            .send(orders, &Request::get("/orders/1").bearer(&other_token))
            .await
            .map_err(|e| format!("the other workload's call: {e}"))?;
        others_admitted += usize::from(r.status == 200);
    }
    let mut refused = false;
    let polled = Instant::now();
    while !refused && polled.elapsed() < Duration::from_secs(10) {
        let r = flooder_client
            .send(orders, &Request::get("/orders/1").bearer(&token))
            .await
            .map_err(|e| format!("the flooder's revoked token: {e}"))?;
        refused = r.status == 401 && r.json_str("reason").as_deref() == Some("revoked");
        if !refused {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(RevocationFlood {
        token,
        revoked: count,
        secs,
        list_before,
        list_after,
        others_admitted,
        others_sent,
        refused,
    })
}

/// What one client's flood of the edge's DPoP replay cache did, and what another client's
/// fresh proofs got afterwards, while the flood's entries still filled the cache.
#[derive(Debug, Clone, Default)]
pub struct ReplayFlood {
    pub sent: u64,
    pub admitted: u64,
    /// Refused `503 replay_cache_full`: the flooder's share of the cache was used up.
    pub full: u64,
    /// Refused `401 dpop_replay`: never right, every proof was fresh.
    pub replay: u64,
    /// Any other answer, or none.
    pub other: u64,
    pub secs: f64,
    pub victim_admitted: usize,
    pub victim_sent: usize,
}

/// Refusals as `replay_cache_full` after which the flood counts as having filled its share.
const FLOOD_FULL: u64 = 20;
/// The flood's bounds: the cache keeps a proof for its window (`max_age_s` 60 + skew 5 by
/// default), so a flood that cannot fill a share within it never will.
const FLOOD_SECS: u64 = 60;
const FLOOD_TASKS: usize = 8;
/// Proof keys the flooder spreads its proofs over: one more than a per-key share would allow.
const FLOOD_KEYS: usize = 2;

/// `flooder` sends fresh proofs to the edge from several connections at once, with two proof
/// keys of its own (a DPoP-bound token for each: the share is the client's, not the key's),
/// until its share of the replay cache is full (or [`FLOOD_SECS`]); then the victim sends 20
/// fresh proofs with its own key and token.
pub async fn replay_cache_flood(
    at: &Endpoints<'_>,
    anonymous: &HttpsClient,
    flooder: &AuthzClient,
    (victim_key, victim_token): (&EcKey, &str),
) -> Result<ReplayFlood, String> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    let mut keys = Vec::new();
    for _ in 0..FLOOD_KEYS {
        let key = EcKey::generate().map_err(|e| format!("flooder's DPoP key: {e}"))?;
        let token = flooder
            .clone()
            .with_dpop(key.clone(), at.issuer)
            .token("orders", "orders:read")
            .await
            .map_err(|e| format!("flooder's DPoP token: {e}"))?
            .access_token;
        keys.push((key, token));
    }
    let stop = Arc::new(AtomicBool::new(false));
    // sent, admitted, full, replay, other
    let counts: Arc<[AtomicU64; 5]> = Arc::new(Default::default());
    let start = Instant::now();
    let tasks: Vec<_> = (0..FLOOD_TASKS)
        .filter_map(|i| keys.get(i % FLOOD_KEYS).cloned())
        .map(|(key, token)| {
            let (stop, counts, client) = (stop.clone(), counts.clone(), anonymous.clone());
            let edge = at.edge;
            let origin = at.edge_origin.to_owned();
            tokio::spawn(async move {
                while !stop.load(Relaxed) {
                    let Ok(request) = fresh_edge_get(&origin, &key, &token) else {
                        counts[4].fetch_add(1, Relaxed);
                        continue;
                    };
                    let slot = match client.send(edge, &request).await {
                        Ok(r) => match (r.status, r.json_str("reason").as_deref()) {
                            (200, _) => 1,
                            (503, Some("replay_cache_full")) => 2,
                            (401, Some("dpop_replay")) => 3,
                            _ => 4,
                        },
                        Err(_) => 4,
                    };
                    counts[0].fetch_add(1, Relaxed);
                    counts[slot].fetch_add(1, Relaxed);
                }
            })
        })
        .collect();
    while counts[2].load(Relaxed) < FLOOD_FULL && start.elapsed().as_secs() < FLOOD_SECS {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Relaxed);
    for task in tasks {
        task.await
            .map_err(|e| format!("a flooding task failed: {e}"))?;
    }
    let secs = start.elapsed().as_secs_f64();
    let victim_sent = 20;
    let mut victim_admitted = 0;
    for i in 0..victim_sent {
        let request = fresh_edge_get(at.edge_origin, victim_key, victim_token)?;
        let r = anonymous
            .send(at.edge, &request)
            .await
            .map_err(|e| format!("victim proof {i}: {e}"))?;
        victim_admitted += usize::from(r.status == 200);
    }
    let n = |i: usize| counts[i].load(Relaxed);
    Ok(ReplayFlood {
        sent: n(0),
        admitted: n(1),
        full: n(2),
        replay: n(3),
        other: n(4),
        secs,
        victim_admitted,
        victim_sent,
    })
}

/// A consumer on a certificate that expires soon, with a token it got while the certificate
/// was valid and one admitted call: what someone holding an old key (and any session ticket)
/// keeps after the certificate's end.
pub struct Expiring {
    /// Resumes TLS sessions where a server offers tickets (rustls' default).
    pub client: HttpsClient,
    pub token: String,
    /// When the certificate's `notAfter` has passed (whole seconds: rcgen drops the rest).
    pub expired_at: Instant,
    pub lifetime: Duration,
}

/// Issues the short-lived certificate, gets an `orders:read` token over it from the
/// authz-server and has one call admitted at the orders sidecar, all before it expires.
pub async fn expiring_consumer(
    at: &Endpoints<'_>,
    orders: SocketAddr,
    lifetime: Duration,
) -> Result<Expiring, String> {
    let issued = Instant::now();
    let (client, _) = second_consumer_client(at.pki_dir, Some(lifetime))?;
    let token = AuthzClient::new(client.clone(), at.authz)
        .token("orders", "orders:read")
        .await
        .map_err(|e| format!("no token over the short-lived certificate: {e}"))?
        .access_token;
    let first = client
        .send(orders, &Request::get("/orders/1").bearer(&token))
        .await
        .map_err(|e| format!("first call with the short-lived certificate: {e}"))?;
    if first.status != 200 {
        return Err(format!(
            "the short-lived certificate was refused while valid: {} {}",
            first.status,
            first.text()
        ));
    }
    Ok(Expiring {
        client,
        token,
        expired_at: issued + lifetime + Duration::from_secs(1),
        lifetime,
    })
}
