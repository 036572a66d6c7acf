//! Everything the rows need, gathered once before the table runs ([`Context::prepare`]): a
//! client per identity, real tokens obtained the legitimate way, the real `kid` and public key,
//! an attacker's key, the insider's key when readable, and the measured set-ups (floods, races,
//! expiring and revoked credentials) whose outcome a row then reports.

use super::model::{Caller, Service, Target, dpop_request};
use crate::authz::{AuthzClient, AuthzError, IssuedToken};
use crate::client::{HttpsClient, Request};
use crate::forge::{self, EcKey, spiffe_id};
use serde_json::Value;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

/// Why the table could not even start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupError(pub String);

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

/// Everything the rows need, gathered once: clients for each identity, real tokens obtained
/// from the authz-server the legitimate way, the real `kid` and public key, an attacker's key,
/// and (when the state directory is readable) the insider's signing key.
pub struct Context {
    pub target: Target,
    pub(super) consumer: HttpsClient,
    pub(super) inventory: HttpsClient,
    pub(super) anonymous: HttpsClient,
    pub(super) self_signed: HttpsClient,
    pub(super) consumer_read: IssuedToken,
    pub(super) consumer_write: IssuedToken,
    pub(super) consumer_billing: IssuedToken,
    pub(super) inventory_read: IssuedToken,
    pub(super) kid: String,
    pub(super) real_public_pem: String,
    pub(super) attacker: EcKey,
    pub(super) insider: Result<EcKey, String>,
    pub(super) consumer_cnf: String,
    pub(super) inventory_cnf: String,
    /// DPoP: the consumer's proof key, two DPoP-bound tokens for it, and one legitimate edge
    /// request (token + proof) already sent once, as an attacker behind the TLS-terminating
    /// hop would capture it.
    pub(super) dpop_key: EcKey,
    pub(super) dpop_read: Result<IssuedToken, String>,
    pub(super) dpop_write: Result<IssuedToken, String>,
    pub(super) dpop_captured: Result<Request, String>,
    /// A consumer token used once, then revoked by the consumer itself (RFC 7009): a token
    /// leaked after its owner revoked it. Only this token is revoked, so no other row changes.
    pub(super) revoked: Result<String, String>,
    /// A 2-use token whose owner spent both uses, as a thief captured it (issue 22).
    pub(super) usage_spent: Result<String, String>,
    /// A race of 30 parallel uses of one 5-use token (issue 22).
    pub(super) usage_race: Result<crate::usage::Race, String>,
    /// A DPoP-bound token whose issuing certificate the operator revoked (issue 16).
    pub(super) revoked_cert_dpop: Result<crate::hardening::RevokedCertToken, String>,
    /// Inventory flooding `/revoke` with its own fresh tokens (issue 16).
    pub(super) revocation_flood: Result<crate::hardening::RevocationFlood, String>,
    /// Inventory flooding the edge's DPoP replay cache, then consumer's fresh proofs (issue 16).
    pub(super) replay_flood: Result<crate::hardening::ReplayFlood, String>,
    /// A consumer certificate that expired after a token and a call (issue 16).
    pub(super) expiring: Result<crate::hardening::Expiring, String>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Context(kid={})", self.kid)
    }
}

fn setup<E: fmt::Display>(what: &str) -> impl FnOnce(E) -> SetupError + '_ {
    move |e| SetupError(format!("{what}: {e}"))
}

/// A client certificate nobody issued: self-signed, claiming the consumer's SPIFFE ID.
fn self_signed_client(pki_dir: &Path) -> Result<HttpsClient, SetupError> {
    use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(setup("attacker key"))?;
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned()]).map_err(setup("attacker cert"))?;
    let uri = spiffe_id("consumer")
        .try_into()
        .map_err(setup("attacker SAN"))?;
    params.subject_alt_names.push(SanType::URI(uri));
    let cert = params.self_signed(&key).map_err(setup("attacker cert"))?;
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    HttpsClient::new(
        &pki_dir.join("ca.crt"),
        Some((vec![cert.der().clone()], key_der)),
        "localhost",
    )
    .map_err(setup("attacker client"))
}

/// The insider's key: the authz-server's own signing key for `kid`.
fn insider_key(state_dir: Option<&Path>, kid: &str) -> Result<EcKey, String> {
    let Some(dir) = state_dir else {
        return Err("needs --state-dir (the authz-server's signing keys)".into());
    };
    let path = dir.join("keys").join(format!("{kid}.pem"));
    EcKey::from_pkcs8_pem_file(&path)
        .map(|k| k.with_kid(kid))
        .map_err(|e| format!("needs a readable signing key ({e})"))
}

impl Context {
    /// Gets the real tokens and keys. Fails when the authz-server or the PKI is unusable:
    /// without them no row means anything.
    pub async fn prepare(target: Target) -> Result<Self, SetupError> {
        let pki = &target.pki_dir;
        let consumer =
            HttpsClient::for_workload(pki, Some("consumer")).map_err(setup("consumer client"))?;
        let inventory =
            HttpsClient::for_workload(pki, Some("inventory")).map_err(setup("inventory client"))?;
        let anonymous = HttpsClient::for_workload(pki, None).map_err(setup("anonymous client"))?;
        let self_signed = self_signed_client(pki)?;
        let as_consumer = AuthzClient::new(consumer.clone(), target.authz);
        let as_inventory = AuthzClient::new(inventory.clone(), target.authz);
        // First: past its quota the flood coalesces into a subject row covering every
        // inventory token issued so far, so inventory's own tokens for the other rows are
        // issued after it, in a later second (`iat` has second resolution).
        let endpoints = crate::hardening::Endpoints {
            pki_dir: pki,
            authz: target.authz,
            issuer: &target.issuer,
            edge: target.edge,
            edge_origin: &target.edge_origin,
        };
        let revocation_flood = crate::hardening::revocation_flood(
            &endpoints,
            target.orders,
            (&as_inventory, &inventory),
            (&as_consumer, &consumer),
            REVOCATION_FLOOD,
        )
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        // Its certificate expires while the rest is prepared.
        let expiring = crate::hardening::expiring_consumer(
            &endpoints,
            target.orders,
            std::time::Duration::from_secs(EXPIRING_CERT_SECS),
        )
        .await;
        let token = |authz: &AuthzClient, service: &'static str, scope: &'static str| {
            let authz = authz.clone();
            async move {
                authz.token(service, scope).await.map_err(|e: AuthzError| {
                    SetupError(format!("getting a {scope} token for {service}: {e}"))
                })
            }
        };
        let consumer_read = token(&as_consumer, "orders", "orders:read").await?;
        let consumer_write = token(&as_consumer, "orders", "orders:write").await?;
        let consumer_billing = token(&as_consumer, "billing", "billing:read").await?;
        let inventory_read = token(&as_inventory, "orders", "orders:read").await?;
        let kid = consumer_read
            .kid()
            .ok_or_else(|| SetupError("the issued token has no kid".into()))?;
        let jwks = as_consumer
            .jwks()
            .await
            .map_err(setup("reading the JWKS"))?;
        let jwk = jwks["keys"]
            .as_array()
            .and_then(|keys| keys.iter().find(|k| k["kid"] == kid.as_str()))
            .ok_or_else(|| SetupError(format!("kid {kid} is not in the JWKS")))?;
        let real_public_pem = forge::jwk_public_pem(jwk).map_err(setup("the published key"))?;
        let insider = insider_key(target.state_dir.as_deref(), &kid);
        let consumer_cnf =
            forge::cert_thumbprint(&pki.join("consumer.crt")).map_err(setup("consumer cert"))?;
        let inventory_cnf =
            forge::cert_thumbprint(&pki.join("inventory.crt")).map_err(setup("inventory cert"))?;
        let dpop_key = EcKey::generate().map_err(setup("DPoP key"))?;
        let as_dpop_consumer = as_consumer
            .clone()
            .with_dpop(dpop_key.clone(), &target.issuer);
        let dpop_token = |scope: &'static str| {
            let authz = as_dpop_consumer.clone();
            async move {
                authz
                    .token("orders", scope)
                    .await
                    .map_err(|e| format!("no DPoP-bound {scope} token: {e}"))
            }
        };
        let dpop_read = dpop_token("orders:read").await;
        let dpop_write = dpop_token("orders:write").await;
        let dpop_captured = match &dpop_read {
            Ok(token) => capture_edge_request(&anonymous, &target, &dpop_key, token).await,
            Err(e) => Err(e.clone()),
        };
        let revoked = revoked_token(&as_consumer, &consumer, &target).await;
        let usage_spent =
            crate::usage::spent_token(&as_consumer, &consumer, target.orders, 2).await;
        let usage_race = crate::usage::race(&as_consumer, &consumer, target.orders, 5, 30).await;
        let revoked_cert_dpop =
            crate::hardening::dpop_token_of_revoked_cert(&endpoints, &anonymous).await;
        let replay_flood = match &dpop_read {
            Ok(victim) => {
                let victim = (&dpop_key, victim.access_token.as_str());
                crate::hardening::replay_cache_flood(&endpoints, &anonymous, &as_inventory, victim)
                    .await
            }
            Err(e) => Err(e.clone()),
        };
        if let Ok(e) = &expiring {
            tokio::time::sleep_until(e.expired_at.into()).await;
        }
        Ok(Self {
            expiring,
            replay_flood,
            revoked_cert_dpop,
            revocation_flood,
            revoked,
            usage_spent,
            usage_race,
            dpop_key,
            dpop_read,
            dpop_write,
            dpop_captured,
            consumer,
            inventory,
            anonymous,
            self_signed,
            consumer_read,
            consumer_write,
            consumer_billing,
            inventory_read,
            kid,
            real_public_pem,
            attacker: EcKey::generate().map_err(setup("attacker key"))?,
            insider,
            consumer_cnf,
            inventory_cnf,
            target,
        })
    }

    /// Claims as the authz-server would issue them to the consumer for orders (`orders:read`).
    pub(super) fn consumer_claims(&self) -> Result<Value, String> {
        forge::claims(
            &self.target.issuer,
            "consumer",
            "orders",
            "orders:read",
            &self.consumer_cnf,
        )
        .map_err(|e| e.to_string())
    }

    /// A token signed by the insider's key after `edit` changed the consumer's claims.
    pub(super) fn insider_token(&self, edit: impl FnOnce(&mut Value)) -> Result<String, String> {
        let key = self.insider.as_ref().map_err(Clone::clone)?;
        let mut claims = self.consumer_claims()?;
        edit(&mut claims);
        Ok(forge::es256(&forge::header(key.kid()), &claims, key))
    }

    pub(super) fn client(&self, caller: Caller) -> &HttpsClient {
        match caller {
            Caller::Consumer => &self.consumer,
            Caller::Inventory => &self.inventory,
            Caller::NoCert => &self.anonymous,
            Caller::SelfSigned => &self.self_signed,
        }
    }

    pub(super) fn sidecar(&self, service: Service) -> SocketAddr {
        match service {
            Service::Orders => self.target.orders,
            Service::Billing => self.target.billing,
            Service::OrdersEdge => self.target.edge,
            Service::Authz => self.target.authz,
        }
    }

    pub(super) fn baseline(&self, service: Service) -> Option<SocketAddr> {
        match service {
            Service::Orders | Service::OrdersEdge => Some(self.target.baseline_orders),
            Service::Billing => Some(self.target.baseline_billing),
            Service::Authz => None,
        }
    }
}

/// The lifetime of the certificate that expires before the table runs.
const EXPIRING_CERT_SECS: u64 = 5;

/// Tokens inventory revokes in its flood: past its 64 `jti` rows (the server's quota).
const REVOCATION_FLOOD: usize = 100;

/// A fresh consumer token, admitted once (so the filter has it cached), then revoked by the
/// consumer at the authz-server; the feed carries the revocation to the sidecars.
async fn revoked_token(
    authz: &AuthzClient,
    consumer: &HttpsClient,
    target: &Target,
) -> Result<String, String> {
    let token = authz
        .token("orders", "orders:read")
        .await
        .map_err(|e| format!("no token to revoke: {e}"))?
        .access_token;
    let first = consumer
        .send(target.orders, &Request::get("/orders/1").bearer(&token))
        .await
        .map_err(|e| format!("first use of the token to revoke: {e}"))?;
    if first.status != 200 {
        return Err(format!(
            "the token to revoke was refused before: {}",
            first.status
        ));
    }
    authz
        .revoke(&token)
        .await
        .map_err(|e| format!("POST /revoke: {e}"))?;
    Ok(token)
}

/// The consumer's legitimate edge call, sent once: what an attacker behind the TLS-terminating
/// hop captures (token and proof) to replay.
async fn capture_edge_request(
    client: &HttpsClient,
    target: &Target,
    key: &EcKey,
    token: &IssuedToken,
) -> Result<Request, String> {
    let path = "/orders/1";
    let htu = crate::dpop::htu(&target.edge_origin, path);
    let proof = crate::dpop::proof(key, "GET", &htu, Some(&token.access_token))
        .map_err(|e| e.to_string())?;
    let request = dpop_request(path, &token.access_token, &[proof]);
    match client.send(target.edge, &request).await {
        Ok(response) if response.status == 200 => Ok(request),
        Ok(response) => Err(format!(
            "the consumer's own DPoP call got {} {}",
            response.status,
            response.json_str("reason").unwrap_or_default()
        )),
        Err(e) => Err(format!("the edge listener did not answer: {e}")),
    }
}
