//! The attack catalogue: each row is what an attacker does, how it is sent, and what certbind
//! must answer (CONTRACT §4); [`run`] sends it to the bearer-token baseline and to the certbind
//! sidecar and judges the certbind answer. Positive controls prove the system still works.
//! The DPoP rows go to the orders edge listener (no client certificate, DPoP-bound tokens
//! only); their baseline call carries the same token as a plain bearer token, which is what a
//! bearer-only check does with a stolen DPoP token.

use crate::authz::{AuthzClient, AuthzError, IssuedToken};
use crate::client::{ClientError, HttpsClient, Request, Response};
use crate::control::{Dependency, Switch, outage};
use crate::forge::{self, EcKey, spiffe_id};
use serde_json::{Value, json};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the system under attack runs.
#[derive(Debug, Clone)]
pub struct Target {
    pub authz: SocketAddr,
    pub orders: SocketAddr,
    pub billing: SocketAddr,
    pub baseline_orders: SocketAddr,
    pub baseline_billing: SocketAddr,
    /// certbind's orders edge listener (DPoP) and its public origin (`https://host:port`).
    pub edge: SocketAddr,
    pub edge_origin: String,
    /// `ca.crt` and `<workload>.crt/.key` (CONTRACT §2).
    pub pki_dir: PathBuf,
    /// The authz-server's state directory (`keys/<kid>.pem`), for the insider rows.
    pub state_dir: Option<PathBuf>,
    /// The authz-server's issuer URL.
    pub issuer: String,
    /// Takes the PDP or the authz-server down for the fail-closed rows.
    pub control: Arc<dyn Switch>,
}

/// The service a row calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Orders,
    Billing,
    /// Orders through the DPoP edge listener.
    OrdersEdge,
    /// The authz-server itself (its `/introspect`): the baseline has no counterpart.
    Authz,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Self::Orders | Self::OrdersEdge => "orders",
            Self::Billing => "billing",
            Self::Authz => "authz",
        }
    }
}

/// Who connects to the certbind listener (the baseline never asks for a certificate, so every
/// baseline call is anonymous).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The legitimate consumer's certificate.
    Consumer,
    /// The compromised inventory host's own (valid) certificate.
    Inventory,
    /// No client certificate at all.
    NoCert,
    /// A self-signed certificate claiming the consumer's SPIFFE ID.
    SelfSigned,
}

/// What certbind must answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// 2xx, and the upstream saw `x-certbind-subject` = this SPIFFE ID (the caller's real one).
    Allow { subject: String },
    /// Refused by the filter with one of these (status, reason) answers.
    Deny(Vec<(u16, &'static str)>),
    /// The TLS handshake refuses the caller: no request is ever read.
    TlsRefused,
    /// Envoy itself refuses the request before the filter runs (no certbind reason).
    Rejected { status: u16 },
    /// An introspection answer telling nothing: exactly `200 {"active": false}` (RFC 7662).
    Inactive,
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allow { subject } => write!(f, "2xx, upstream subject {}", short_id(subject)),
            Self::Deny(answers) => {
                let answers: Vec<String> =
                    answers.iter().map(|(s, r)| format!("{s} {r}")).collect();
                f.write_str(&answers.join(" or "))
            }
            Self::TlsRefused => f.write_str("TLS handshake refused"),
            Self::Rejected { status } => write!(f, "{status} from Envoy (before the filter)"),
            Self::Inactive => f.write_str("200 {\"active\": false}"),
        }
    }
}

/// What of the upstream's echo a row shows when a call got through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Nothing,
    /// The path the upstream received.
    Path,
    /// The `x-certbind-subject` the upstream received.
    Subject,
    /// An introspection answer: `active` and, when active, whose token it is.
    Active,
}

/// One request, ready to send.
#[derive(Debug, Clone)]
pub struct Probe {
    pub service: Service,
    pub caller: Caller,
    pub request: Request,
    /// What the baseline gets instead of `request` (the DPoP rows: the token as `Bearer`).
    pub baseline_request: Option<Request>,
    /// Down while both calls of the row are sent.
    pub outage: Option<Dependency>,
    /// The certbind call's own client, instead of the caller's usual one (a row's own
    /// certificate, e.g. one that has expired).
    pub client: Option<HttpsClient>,
}

/// One row of the catalogue.
#[derive(Debug, Clone)]
pub struct Attack {
    pub id: &'static str,
    /// What the attacker does.
    pub title: String,
    /// How it is sent.
    pub how: String,
    /// Needs the authz-server's signing key: shows one claim check, not a realistic attacker.
    pub insider: bool,
    /// A positive control: must be admitted on both listeners.
    pub control: bool,
    pub expect: Expect,
    pub show: Show,
    /// The request, or why it cannot be built here (the row is then "not run").
    pub probe: Result<Probe, String>,
}

/// What a listener answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Http {
        status: u16,
        /// certbind's `reason` (CONTRACT §4), when the body carries one.
        reason: Option<String>,
        /// The body's `error`, or a short excerpt of a non-JSON body.
        detail: Option<String>,
        /// The upstream's echo (CONTRACT §2) when the call got through.
        upstream: Option<Value>,
    },
    TlsRefused(String),
    Failed(String),
    NotRun(String),
}

impl Answer {
    fn from_response(response: &Response) -> Self {
        let json = response.json();
        let reason = json
            .as_ref()
            .and_then(|j| j.get("reason")?.as_str().map(str::to_owned));
        let detail = match json.as_ref().and_then(|j| j.get("error")?.as_str()) {
            Some(error) => Some(error.to_owned()),
            None => Some(crate::authz::excerpt(&response.text())).filter(|t| !t.is_empty()),
        };
        let admitted = (200..300).contains(&response.status);
        Self::Http {
            status: response.status,
            reason: if admitted { None } else { reason },
            detail: if admitted { None } else { detail },
            upstream: if admitted {
                json.map(redact_echo)
            } else {
                None
            },
        }
    }

    fn from_error(error: ClientError) -> Self {
        match error {
            ClientError::TlsRefused(e) => Self::TlsRefused(e),
            other => Self::Failed(other.to_string()),
        }
    }

    /// Whether the request reached the upstream.
    pub fn admitted(&self) -> bool {
        matches!(self, Self::Http { status, .. } if (200..300).contains(status))
    }

    /// The HTTP status, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The certbind reason, if there was one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Http { reason, .. } => reason.as_deref(),
            _ => None,
        }
    }

    /// What the upstream saw under `key` (`path`, or a `certbind` header).
    fn upstream_saw(&self, show: Show) -> Option<String> {
        let Self::Http {
            upstream: Some(echo),
            ..
        } = self
        else {
            return None;
        };
        match show {
            Show::Nothing => None,
            Show::Path => echo.get("path")?.as_str().map(|p| format!("path={p}")),
            Show::Subject => echo
                .get("certbind")
                .and_then(|c| c.get("x-certbind-subject"))
                .and_then(Value::as_str)
                .map(|s| format!("subject={}", short_id(s))),
            Show::Active => {
                let active = echo.get("active")?;
                Some(match echo.get("client_id").and_then(Value::as_str) {
                    Some(client) => format!("active={active}, client_id={client}"),
                    None => format!("active={active}"),
                })
            }
        }
    }

    /// One short line: `401 binding_mismatch`, `200 admitted`, `TLS handshake refused`, ...
    pub fn summary(&self, show: Show) -> String {
        match self {
            Self::Http {
                status,
                reason,
                detail,
                ..
            } => {
                if self.admitted() && show == Show::Active {
                    // An introspection answer admits nothing: say what it told.
                    let told = self.upstream_saw(show);
                    format!("{status} {}", told.unwrap_or_else(|| "(no active)".into()))
                } else if self.admitted() {
                    match self.upstream_saw(show) {
                        Some(saw) => format!("{status} admitted, {saw}"),
                        None => format!("{status} admitted"),
                    }
                } else if let Some(reason) = reason {
                    format!("{status} {reason}")
                } else if let Some(detail) = detail {
                    format!("{status} \"{detail}\"")
                } else {
                    format!("{status} (empty body)")
                }
            }
            Self::TlsRefused(_) => "TLS handshake refused".to_owned(),
            Self::Failed(e) => format!("no answer: {e}"),
            Self::NotRun(why) => format!("not run: {why}"),
        }
    }

    fn to_json(&self, show: Show) -> Value {
        let mut value = match self {
            Self::Http {
                status,
                reason,
                detail,
                upstream,
            } => json!({"kind": "http", "status": status, "reason": reason, "detail": detail,
                        "upstream": upstream}),
            Self::TlsRefused(e) => json!({"kind": "tls_refused", "detail": e}),
            Self::Failed(e) => json!({"kind": "failed", "detail": e}),
            Self::NotRun(e) => json!({"kind": "not_run", "detail": e}),
        };
        value["summary"] = Value::String(self.summary(show));
        value["admitted"] = Value::Bool(self.admitted());
        value
    }
}

/// The upstream's echo without what must never be recorded: a query string (the token-in-URL
/// row puts a real token there) is cut to `?…`.
fn redact_echo(mut echo: Value) -> Value {
    if let Some(path) = echo.get("path").and_then(Value::as_str)
        && let Some((before, _)) = path.split_once('?')
    {
        echo["path"] = Value::String(format!("{before}?…"));
    }
    echo
}

/// `spiffe://certbind.test/ns/demo/sa/inventory` → `inventory`.
pub fn short_id(id: &str) -> String {
    id.strip_prefix("spiffe://certbind.test/ns/demo/sa/")
        .unwrap_or(id)
        .to_owned()
}

/// How a row ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// certbind gave exactly the expected refusal.
    Blocked,
    /// A positive control got through on both listeners.
    Passed,
    /// certbind let an attack through: a failure.
    Admitted,
    /// certbind refused, but not with the expected answer: a failure (contract drift).
    WrongAnswer,
    /// A positive control was refused: a failure.
    ControlFailed,
    /// Not run here (a prerequisite is missing): neither passed nor failed.
    NotRun,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blocked => "blocked",
            Self::Passed => "passed",
            Self::Admitted => "ADMITTED",
            Self::WrongAnswer => "WRONG ANSWER",
            Self::ControlFailed => "CONTROL FAILED",
            Self::NotRun => "not run",
        }
    }

    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Self::Admitted | Self::WrongAnswer | Self::ControlFailed
        )
    }
}

/// Judges certbind's answer (and, for a control, the baseline's) against the expectation.
pub fn judge(attack: &Attack, baseline: &Answer, certbind: &Answer) -> Verdict {
    if matches!(certbind, Answer::NotRun(_)) {
        return Verdict::NotRun;
    }
    let expected = match &attack.expect {
        Expect::Allow { subject } => {
            certbind.admitted()
                && certbind.upstream_saw(Show::Subject)
                    == Some(format!("subject={}", short_id(subject)))
        }
        Expect::Deny(answers) => answers
            .iter()
            .any(|(s, r)| certbind.status() == Some(*s) && certbind.reason() == Some(*r)),
        Expect::TlsRefused => matches!(certbind, Answer::TlsRefused(_)),
        Expect::Rejected { status } => {
            certbind.status() == Some(*status) && certbind.reason().is_none()
        }
        Expect::Inactive => {
            matches!(certbind, Answer::Http { status: 200, upstream: Some(body), .. }
            if *body == json!({"active": false}))
        }
    };
    match (attack.control, expected) {
        (true, true) if baseline.admitted() => Verdict::Passed,
        (true, _) => Verdict::ControlFailed,
        (false, true) => Verdict::Blocked,
        (false, false) if certbind.admitted() => Verdict::Admitted,
        (false, false) => Verdict::WrongAnswer,
    }
}

/// One finished row.
#[derive(Debug, Clone)]
pub struct Row {
    pub attack: Attack,
    pub baseline: Answer,
    pub certbind: Answer,
    pub verdict: Verdict,
}

impl Row {
    pub fn to_json(&self) -> Value {
        let a = &self.attack;
        json!({
            "id": a.id,
            "attack": a.title,
            "how": a.how,
            "insider": a.insider,
            "control": a.control,
            "expected": a.expect.to_string(),
            "baseline": self.baseline.to_json(a.show),
            "certbind": self.certbind.to_json(a.show),
            "verdict": self.verdict.as_str(),
        })
    }
}

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
    consumer: HttpsClient,
    inventory: HttpsClient,
    anonymous: HttpsClient,
    self_signed: HttpsClient,
    consumer_read: IssuedToken,
    consumer_write: IssuedToken,
    consumer_billing: IssuedToken,
    inventory_read: IssuedToken,
    kid: String,
    real_public_pem: String,
    attacker: EcKey,
    insider: Result<EcKey, String>,
    consumer_cnf: String,
    inventory_cnf: String,
    /// DPoP: the consumer's proof key, two DPoP-bound tokens for it, and one legitimate edge
    /// request (token + proof) already sent once, as an attacker behind the TLS-terminating
    /// hop would capture it.
    dpop_key: EcKey,
    dpop_read: Result<IssuedToken, String>,
    dpop_write: Result<IssuedToken, String>,
    dpop_captured: Result<Request, String>,
    /// A consumer token used once, then revoked by the consumer itself (RFC 7009): a token
    /// leaked after its owner revoked it. Only this token is revoked, so no other row changes.
    revoked: Result<String, String>,
    /// A 2-use token whose owner spent both uses, as a thief captured it (issue 22).
    usage_spent: Result<String, String>,
    /// A race of 30 parallel uses of one 5-use token (issue 22).
    usage_race: Result<crate::usage::Race, String>,
    /// A DPoP-bound token whose issuing certificate the operator revoked (issue 16).
    revoked_cert_dpop: Result<crate::hardening::RevokedCertToken, String>,
    /// Inventory flooding `/revoke` with its own fresh tokens (issue 16).
    revocation_flood: Result<crate::hardening::RevocationFlood, String>,
    /// Inventory flooding the edge's DPoP replay cache, then consumer's fresh proofs (issue 16).
    replay_flood: Result<crate::hardening::ReplayFlood, String>,
    /// A consumer certificate that expired after a token and a call (issue 16).
    expiring: Result<crate::hardening::Expiring, String>,
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
    fn consumer_claims(&self) -> Result<Value, String> {
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
    fn insider_token(&self, edit: impl FnOnce(&mut Value)) -> Result<String, String> {
        let key = self.insider.as_ref().map_err(Clone::clone)?;
        let mut claims = self.consumer_claims()?;
        edit(&mut claims);
        Ok(forge::es256(&forge::header(key.kid()), &claims, key))
    }

    fn client(&self, caller: Caller) -> &HttpsClient {
        match caller {
            Caller::Consumer => &self.consumer,
            Caller::Inventory => &self.inventory,
            Caller::NoCert => &self.anonymous,
            Caller::SelfSigned => &self.self_signed,
        }
    }

    fn sidecar(&self, service: Service) -> SocketAddr {
        match service {
            Service::Orders => self.target.orders,
            Service::Billing => self.target.billing,
            Service::OrdersEdge => self.target.edge,
            Service::Authz => self.target.authz,
        }
    }

    fn baseline(&self, service: Service) -> Option<SocketAddr> {
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

fn probe(service: Service, caller: Caller, request: Request) -> Probe {
    Probe {
        service,
        caller,
        request,
        baseline_request: None,
        outage: None,
        client: None,
    }
}

/// `GET path` at the edge with `Authorization: DPoP <token>` and these `DPoP` headers.
fn dpop_request(path: &str, token: &str, proofs: &[String]) -> Request {
    let mut request = Request::get(path).header("authorization", &format!("DPoP {token}"));
    for proof in proofs {
        request = request.header("dpop", proof);
    }
    request
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

fn deny(status: u16, reason: &'static str) -> Expect {
    Expect::Deny(vec![(status, reason)])
}

/// The catalogue, in the order it runs: positive controls, attacks with real credentials,
/// forgeries, insider rows, request tricks, then the rows that take a dependency down.
pub fn catalogue(ctx: &Context) -> Vec<Attack> {
    use Caller::{Consumer, Inventory, NoCert, SelfSigned};
    use Service::{Billing, Orders};
    let consumer = spiffe_id("consumer");
    let inventory = spiffe_id("inventory");
    let read = &ctx.consumer_read.access_token;
    let kid = ctx.kid.as_str();
    let unique = |prefix: &str| {
        forge::random_id()
            .map(|id| format!("{prefix}{id}"))
            .unwrap_or_else(|_| format!("{prefix}{}", forge::now()))
    };
    let claims = ctx.consumer_claims();
    // A forgery needs only the consumer's claims; if even those cannot be built the row says so.
    let forged = |make: &dyn Fn(&Value) -> Result<String, String>| -> Result<Probe, String> {
        let claims = claims.as_ref().map_err(Clone::clone)?;
        Ok(probe(
            Orders,
            Consumer,
            Request::get("/orders/1").bearer(&make(claims)?),
        ))
    };
    let insider = |edit: &dyn Fn(&mut Value), caller: Caller| -> Result<Probe, String> {
        let token = ctx.insider_token(edit)?;
        Ok(probe(
            Orders,
            caller,
            Request::get("/orders/1").bearer(&token),
        ))
    };
    let row = |id, title: &str, how: &str, expect, probe| Attack {
        id,
        title: title.to_owned(),
        how: how.to_owned(),
        insider: false,
        control: false,
        expect,
        show: Show::Nothing,
        probe,
    };
    let control = |id, title: &str, how: &str, subject: &str, probe| Attack {
        control: true,
        show: Show::Subject,
        ..row(
            id,
            title,
            how,
            Expect::Allow {
                subject: subject.to_owned(),
            },
            probe,
        )
    };
    let insider_row = |id, title: &str, how: &str, expect, probe| Attack {
        insider: true,
        ..row(id, title, how, expect, probe)
    };
    // DPoP rows: `make(token, other_token)` builds the edge request with the consumer's
    // DPoP-bound orders:read token (and its orders:write one, for the `ath` row).
    let edge = |make: &dyn Fn(&str, &str) -> Result<Request, String>| -> Result<Probe, String> {
        let token = &ctx.dpop_read.as_ref().map_err(Clone::clone)?.access_token;
        let other = &ctx.dpop_write.as_ref().map_err(Clone::clone)?.access_token;
        Ok(edge_probe(make(token, other)?, token))
    };
    // A proof by the consumer's key for `method` `path` with `token`'s `ath`, then `edit`ed.
    let proof_for = |token: &str,
                     method: &str,
                     path: &str,
                     edit: &dyn Fn(&mut Value)|
     -> Result<String, String> {
        let htu = crate::dpop::htu(&ctx.target.edge_origin, path);
        let mut claims =
            crate::dpop::claims(method, &htu, Some(token)).map_err(|e| e.to_string())?;
        edit(&mut claims);
        let header = crate::dpop::header(&ctx.dpop_key).map_err(|e| e.to_string())?;
        Ok(forge::es256(&header, &claims, &ctx.dpop_key))
    };
    let down = |which: Dependency, mut p: Probe| -> Result<Probe, String> {
        if ctx.target.control.available(which) {
            p.outage = Some(which);
            Ok(p)
        } else {
            Err(format!("needs {}", which.flag()))
        }
    };

    vec![
        // ------------------------------------------------------------ positive controls
        control(
            "control-consumer-reads-order",
            "Control: consumer reads an order",
            "consumer cert + its orders:read token, GET /orders/1",
            &consumer,
            Ok(probe(
                Orders,
                Consumer,
                Request::get("/orders/1").bearer(read),
            )),
        ),
        control(
            "control-consumer-creates-order",
            "Control: consumer creates an order",
            "consumer cert + its orders:write token, POST /orders",
            &consumer,
            Ok(probe(
                Orders,
                Consumer,
                Request::post("/orders")
                    .json(&json!({"item": "demo"}))
                    .bearer(&ctx.consumer_write.access_token),
            )),
        ),
        control(
            "control-consumer-reads-billing",
            "Control: consumer reads a billing record",
            "consumer cert + its billing:read token, GET /billing/1",
            &consumer,
            Ok(probe(
                Billing,
                Consumer,
                Request::get("/billing/1").bearer(&ctx.consumer_billing.access_token),
            )),
        ),
        control(
            "control-inventory-reads-order",
            "Control: inventory reads an order with its own token",
            "inventory cert + its orders:read token, GET /orders/1",
            &inventory,
            Ok(probe(
                Orders,
                Inventory,
                Request::get("/orders/1").bearer(&ctx.inventory_read.access_token),
            )),
        ),
        // ----------------------------------------------------- stolen tokens, stolen identity
        row(
            "stolen-token-from-inventory",
            "Stolen token replayed from the compromised inventory host",
            "inventory cert + consumer's orders:read token, GET /orders/1",
            deny(401, "binding_mismatch"),
            Ok(probe(
                Orders,
                Inventory,
                Request::get("/orders/1").bearer(read),
            )),
        ),
        row(
            "stolen-token-no-cert",
            "Stolen token replayed without a client certificate",
            "no client cert + consumer's token, GET /orders/1",
            Expect::TlsRefused,
            Ok(probe(
                Orders,
                NoCert,
                Request::get("/orders/1").bearer(read),
            )),
        ),
        row(
            "self-signed-cert",
            "Self-signed cert claiming consumer + stolen token",
            "self-signed cert (URI SAN consumer) + consumer's token, GET /orders/1",
            Expect::TlsRefused,
            Ok(probe(
                Orders,
                SelfSigned,
                Request::get("/orders/1").bearer(read),
            )),
        ),
        row(
            "forged-xfcc",
            "Forged x-forwarded-client-cert naming consumer's cert",
            "inventory cert + consumer's token + x-forwarded-client-cert: Hash=<consumer>;URI=<consumer>",
            deny(401, "binding_mismatch"),
            Ok(probe(
                Orders,
                Inventory,
                Request::get("/orders/1").bearer(read).header(
                    "x-forwarded-client-cert",
                    &format!("Hash={};URI={consumer}", ctx.consumer_cnf),
                ),
            )),
        ),
        row(
            "token-for-billing-at-orders",
            "A token issued for billing used at orders",
            "consumer cert + its billing:read token (aud billing), GET /orders/1",
            deny(401, "wrong_audience"),
            Ok(probe(
                Orders,
                Consumer,
                Request::get("/orders/1").bearer(&ctx.consumer_billing.access_token),
            )),
        ),
        row(
            "scope-escalation",
            "Scope escalation: write with a read-only token",
            "consumer cert + its orders:read token, POST /orders",
            deny(403, "policy_denied"),
            Ok(probe(
                Orders,
                Consumer,
                Request::post("/orders")
                    .json(&json!({"item": "x"}))
                    .bearer(read),
            )),
        ),
        row(
            "inventory-lists-orders",
            "Inventory lists all orders (outside its policy)",
            "inventory cert + its own orders:read token, GET /orders",
            deny(403, "policy_denied"),
            Ok(probe(
                Orders,
                Inventory,
                Request::get("/orders").bearer(&ctx.inventory_read.access_token),
            )),
        ),
        // ------------------------------------------------------------------- no/garbage token
        row(
            "no-token",
            "No token at all",
            "consumer cert, no Authorization header, GET /orders/1",
            deny(401, "missing_token"),
            Ok(probe(Orders, Consumer, Request::get("/orders/1"))),
        ),
        row(
            "token-in-query",
            "Token in the URL query (?access_token=)",
            "consumer cert, GET /orders/1?access_token=<consumer's token>",
            deny(401, "missing_token"),
            Ok(probe(
                Orders,
                Consumer,
                Request::get(&format!("/orders/1?access_token={read}")),
            )),
        ),
        row(
            "garbage-token",
            "Garbage bearer token",
            "consumer cert + `Bearer not.a.jwt`",
            deny(401, "malformed_token"),
            Ok(probe(
                Orders,
                Consumer,
                Request::get("/orders/1").bearer("not.a.jwt"),
            )),
        ),
        // ------------------------------------------------------------------------ forgeries
        row(
            "alg-none",
            "alg: none (unsigned token)",
            "consumer cert + consumer's claims, header alg none, empty signature",
            deny(401, "unsupported_alg"),
            forged(&|c| Ok(forge::alg_none(kid, c))),
        ),
        row(
            "hs256-key-confusion",
            "HS256 key confusion (HMAC keyed with the public key)",
            "consumer cert + consumer's claims, alg HS256, secret = JWKS key as PEM",
            deny(401, "unsupported_alg"),
            forged(&|c| Ok(forge::hs256(kid, c, ctx.real_public_pem.as_bytes()))),
        ),
        row(
            "psychic-signature",
            "Psychic signature (r = s = 0, CVE-2022-21449)",
            "consumer cert + consumer's claims, ES256 with the real kid, signature all zeros",
            deny(401, "bad_signature"),
            forged(&|c| Ok(forge::psychic(kid, c))),
        ),
        row(
            "attacker-key-real-kid",
            "Attacker's own P-256 key under the real kid",
            "consumer cert + consumer's claims signed by the attacker, kid = real kid",
            deny(401, "bad_signature"),
            forged(&|c| {
                Ok(forge::es256(
                    &forge::header(kid),
                    c,
                    &ctx.attacker.clone().with_kid(kid),
                ))
            }),
        ),
        row(
            "jwk-header-injection",
            "jwk header injection (attacker's key embedded)",
            "consumer cert + consumer's claims signed by the attacker, header jwk = attacker key, real kid",
            deny(401, "bad_signature"),
            forged(&|c| forge::jwk_injection(kid, c, &ctx.attacker).map_err(|e| e.to_string())),
        ),
        row(
            "jku-header-injection",
            "jku header injection (attacker's JWKS URL)",
            "consumer cert + claims signed by the attacker, jku = https://attacker.example/jwks.json",
            deny(401, "unknown_kid"),
            forged(&|c| {
                Ok(forge::jku_injection(
                    "https://attacker.example/jwks.json",
                    c,
                    &ctx.attacker,
                ))
            }),
        ),
        row(
            "unknown-kid",
            "Unknown kid",
            "consumer cert + claims signed by the attacker under a kid the JWKS lacks",
            deny(401, "unknown_kid"),
            forged(&|c| {
                let key = ctx.attacker.clone().with_kid("attacker-kid-1");
                Ok(forge::es256(&forge::header(key.kid()), c, &key))
            }),
        ),
        row(
            "oversized-token",
            "Oversized token (16 KiB)",
            "consumer cert + a 16 KiB ES256 token",
            deny(401, "malformed_token"),
            forged(&|c| Ok(forge::oversized(c, &ctx.attacker, 16 * 1024))),
        ),
        // -------------------------------------------------------- insider: one claim check each
        insider_row(
            "expired",
            "Expired token (insider with the signing key)",
            "consumer cert + real-key token with exp 10 min ago",
            deny(401, "expired"),
            insider(
                &|c| {
                    let now = forge::now();
                    c["iat"] = json!(now - 900);
                    c["nbf"] = json!(now - 900);
                    c["exp"] = json!(now - 600);
                },
                Consumer,
            ),
        ),
        insider_row(
            "not-yet-valid",
            "Not-yet-valid token (insider with the signing key)",
            "consumer cert + real-key token with nbf in 10 min",
            deny(401, "not_yet_valid"),
            insider(
                &|c| {
                    let now = forge::now();
                    c["nbf"] = json!(now + 600);
                    c["exp"] = json!(now + 900);
                },
                Consumer,
            ),
        ),
        insider_row(
            "wrong-issuer",
            "Wrong issuer (insider with the signing key)",
            "consumer cert + real-key token with iss https://attacker.example",
            deny(401, "wrong_issuer"),
            insider(&|c| c["iss"] = json!("https://attacker.example"), Consumer),
        ),
        insider_row(
            "wrong-type",
            "typ JWT, not at+jwt (insider with the signing key)",
            "consumer cert + real-key token whose header says typ JWT",
            deny(401, "wrong_type"),
            ctx.insider.as_ref().map_err(Clone::clone).and_then(|key| {
                let claims = claims.as_ref().map_err(Clone::clone)?;
                let header = json!({"alg": "ES256", "typ": "JWT", "kid": key.kid()});
                Ok(probe(
                    Orders,
                    Consumer,
                    Request::get("/orders/1").bearer(&forge::es256(&header, claims, key)),
                ))
            }),
        ),
        insider_row(
            "missing-cnf",
            "Token without cnf (insider with the signing key)",
            "consumer cert + real-key token with no cnf claim",
            deny(401, "binding_missing"),
            insider(
                &|c| {
                    if let Some(map) = c.as_object_mut() {
                        map.remove("cnf");
                    }
                },
                Consumer,
            ),
        ),
        insider_row(
            "cnf-of-other-cert",
            "cnf of another cert (insider with the signing key)",
            "consumer cert + real-key token bound to inventory's certificate",
            deny(401, "binding_mismatch"),
            insider(
                &|c| c["cnf"] = json!({"x5t#S256": ctx.inventory_cnf}),
                Consumer,
            ),
        ),
        insider_row(
            "sub-of-other-workload",
            "sub of another workload (insider with the signing key)",
            "inventory cert + real-key token, sub consumer, cnf = inventory's cert",
            deny(401, "subject_mismatch"),
            insider(
                &|c| c["cnf"] = json!({"x5t#S256": ctx.inventory_cnf}),
                Inventory,
            ),
        ),
        insider_row(
            "duplicated-claims",
            "Duplicated sub claims (insider with the signing key)",
            "consumer cert + real-key token whose JSON says sub twice (inventory, then consumer)",
            deny(401, "malformed_token"),
            ctx.insider.as_ref().map_err(Clone::clone).and_then(|key| {
                let claims = claims.as_ref().map_err(Clone::clone)?;
                let text = forge::duplicate_claim(claims, "sub", &json!(inventory))
                    .map_err(|e| e.to_string())?;
                let token = forge::es256_raw(&forge::header(key.kid()).to_string(), &text, key);
                Ok(probe(
                    Orders,
                    Consumer,
                    Request::get("/orders/1").bearer(&token),
                ))
            }),
        ),
        // ------------------------------------------------------------- headers and paths
        row(
            "spoofed-certbind-headers-denied",
            "Spoofed x-certbind-* headers to borrow consumer's rights",
            "inventory cert + own token + x-certbind-subject: consumer, x-certbind-scope: orders:write, GET /orders",
            deny(403, "policy_denied"),
            Ok(probe(
                Orders,
                Inventory,
                Request::get("/orders")
                    .bearer(&ctx.inventory_read.access_token)
                    .header("x-certbind-subject", &consumer)
                    .header("x-certbind-scope", "orders:read orders:write"),
            )),
        ),
        Attack {
            show: Show::Subject,
            ..row(
                "spoofed-certbind-headers-stripped",
                "Spoofed x-certbind-subject on an allowed call",
                "inventory cert + own token + x-certbind-subject: consumer, GET /orders/1",
                Expect::Allow {
                    subject: inventory.clone(),
                },
                Ok(probe(
                    Orders,
                    Inventory,
                    Request::get("/orders/1")
                        .bearer(&ctx.inventory_read.access_token)
                        .header("x-certbind-subject", &consumer),
                )),
            )
        },
        Attack {
            show: Show::Path,
            ..row(
                "path-traversal",
                "Path traversal out of /orders/*",
                "inventory cert + own token, GET /orders/1/../../admin",
                deny(403, "policy_denied"),
                Ok(probe(
                    Orders,
                    Inventory,
                    Request::get("/orders/1/../../admin").bearer(&ctx.inventory_read.access_token),
                )),
            )
        },
        Attack {
            show: Show::Path,
            ..row(
                "double-slash",
                "Double slash to dodge the path match",
                "inventory cert + own token, GET //orders",
                deny(403, "policy_denied"),
                Ok(probe(
                    Orders,
                    Inventory,
                    Request::get("//orders").bearer(&ctx.inventory_read.access_token),
                )),
            )
        },
        Attack {
            show: Show::Path,
            ..row(
                "encoded-slash",
                "Encoded slash (%2F) to dodge the path match",
                "inventory cert + own token, GET /orders%2F..%2Fadmin",
                Expect::Rejected { status: 400 },
                Ok(probe(
                    Orders,
                    Inventory,
                    Request::get("/orders%2F..%2Fadmin").bearer(&ctx.inventory_read.access_token),
                )),
            )
        },
        // ------------------------------------------------ DPoP edge listener (RFC 9449)
        control(
            "control-dpop-consumer-reads-order",
            "Control: consumer reads an order at the DPoP edge",
            "no client cert + its DPoP-bound orders:read token + a fresh proof, GET /orders/1",
            &consumer,
            edge(&|token, _| {
                let proof = proof_for(token, "GET", "/orders/1", &|_| {})?;
                Ok(dpop_request("/orders/1", token, &[proof]))
            }),
        ),
        row(
            "dpop-replayed-proof",
            "DPoP: captured request (token + proof) replayed",
            "the consumer's edge request, already served once, sent again as is",
            deny(401, "dpop_replay"),
            ctx.dpop_captured.clone().and_then(|request| {
                let token = &ctx.dpop_read.as_ref().map_err(Clone::clone)?.access_token;
                Ok(edge_probe(request, token))
            }),
        ),
        row(
            "dpop-proof-other-method",
            "DPoP: proof made for another method",
            "DPoP token + a proof with htm POST, GET /orders/1",
            deny(401, "dpop_invalid"),
            edge(&|token, _| {
                let proof = proof_for(token, "POST", "/orders/1", &|_| {})?;
                Ok(dpop_request("/orders/1", token, &[proof]))
            }),
        ),
        row(
            "dpop-proof-other-url",
            "DPoP: proof made for another URL",
            "DPoP token + a proof with htu …/orders/2, GET /orders/1",
            deny(401, "dpop_invalid"),
            edge(&|token, _| {
                let proof = proof_for(token, "GET", "/orders/2", &|_| {})?;
                Ok(dpop_request("/orders/1", token, &[proof]))
            }),
        ),
        row(
            "dpop-proof-without-ath",
            "DPoP: proof without ath (not tied to the token)",
            "DPoP token + a proof with no ath claim, GET /orders/1",
            deny(401, "dpop_invalid"),
            edge(&|token, _| {
                let proof = proof_for(token, "GET", "/orders/1", &|c| {
                    if let Some(map) = c.as_object_mut() {
                        map.remove("ath");
                    }
                })?;
                Ok(dpop_request("/orders/1", token, &[proof]))
            }),
        ),
        row(
            "dpop-proof-ath-of-other-token",
            "DPoP: proof whose ath is another token's",
            "DPoP orders:read token + a proof with the ath of the consumer's orders:write token",
            deny(401, "dpop_invalid"),
            edge(&|token, other| {
                let other_ath = certbind_core::dpop::access_token_hash(other);
                let proof = proof_for(token, "GET", "/orders/1", &|c| {
                    c["ath"] = other_ath.clone().into();
                })?;
                Ok(dpop_request("/orders/1", token, &[proof]))
            }),
        ),
        row(
            "dpop-proof-other-key",
            "DPoP: stolen token, proof signed by the thief's key",
            "DPoP token + a valid-looking proof signed by the attacker's key (not cnf.jkt)",
            deny(401, "dpop_invalid"),
            edge(&|token, _| {
                let htu = crate::dpop::htu(&ctx.target.edge_origin, "/orders/1");
                let proof = crate::dpop::proof(&ctx.attacker, "GET", &htu, Some(token))
                    .map_err(|e| e.to_string())?;
                Ok(dpop_request("/orders/1", token, &[proof]))
            }),
        ),
        row(
            "dpop-proof-stale-iat",
            "DPoP: stale proof (iat 5 min ago)",
            "DPoP token + a proof with iat 300 s in the past, GET /orders/1",
            deny(401, "dpop_invalid"),
            edge(&|token, _| {
                let proof = proof_for(token, "GET", "/orders/1", &|c| {
                    c["iat"] = (forge::now() - 300).into();
                })?;
                Ok(dpop_request("/orders/1", token, &[proof]))
            }),
        ),
        row(
            "dpop-token-as-bearer",
            "DPoP: DPoP-bound token sent as a bearer token",
            "Authorization: Bearer <DPoP token>, no proof, GET /orders/1",
            deny(401, "dpop_invalid"),
            edge(&|token, _| Ok(Request::get("/orders/1").bearer(token))),
        ),
        row(
            "dpop-two-proofs",
            "DPoP: two DPoP headers",
            "DPoP token + two valid proofs in two DPoP headers, GET /orders/1",
            deny(401, "dpop_invalid"),
            edge(&|token, _| {
                let a = proof_for(token, "GET", "/orders/1", &|_| {})?;
                let b = proof_for(token, "GET", "/orders/1", &|_| {})?;
                Ok(dpop_request("/orders/1", token, &[a, b]))
            }),
        ),
        row(
            "dpop-proof-private-key",
            "DPoP: proof whose jwk carries the private key",
            "DPoP token + a proof whose header jwk includes d, GET /orders/1",
            deny(401, "dpop_invalid"),
            edge(&|token, _| {
                let key = &ctx.dpop_key;
                let mut header = crate::dpop::header(key).map_err(|e| e.to_string())?;
                header["jwk"]["d"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE".into();
                let htu = crate::dpop::htu(&ctx.target.edge_origin, "/orders/1");
                let claims =
                    crate::dpop::claims("GET", &htu, Some(token)).map_err(|e| e.to_string())?;
                let proof = forge::es256(&header, &claims, key);
                Ok(dpop_request("/orders/1", token, &[proof]))
            }),
        ),
        row(
            "dpop-mtls-token-at-edge",
            "Stolen certificate-bound token at the DPoP edge",
            "no client cert + consumer's mTLS-bound token + a proof by the thief's key",
            deny(401, "binding_mismatch"),
            (|| {
                let htu = crate::dpop::htu(&ctx.target.edge_origin, "/orders/1");
                let proof = crate::dpop::proof(&ctx.attacker, "GET", &htu, Some(read))
                    .map_err(|e| e.to_string())?;
                Ok(edge_probe(dpop_request("/orders/1", read, &[proof]), read))
            })(),
        ),
        // ------------------------------------------------------- failures of dependencies
        row(
            "pdp-down",
            "PDP down: must fail closed",
            "PDP down (SIGSTOP); consumer cert + valid token, GET /orders/<new id> (no cached decision)",
            deny(503, "pdp_unavailable"),
            down(
                Dependency::Pdp,
                probe(
                    Orders,
                    Consumer,
                    Request::get(&unique("/orders/pdp-down-")).bearer(read),
                ),
            ),
        ),
        control(
            "control-jwks-down-cached",
            "Control: JWKS down after start, cached keys still serve",
            "authz-server down (SIGSTOP); consumer cert + valid token, GET /orders/<new id>",
            &consumer,
            down(
                Dependency::Authz,
                probe(
                    Orders,
                    Consumer,
                    Request::get(&unique("/orders/jwks-down-")).bearer(read),
                ),
            ),
        ),
        row(
            "jwks-down-unknown-kid",
            "JWKS down after start: unknown kid still refused",
            "authz-server down (SIGSTOP); consumer cert + attacker-signed token with an unknown kid",
            // With the JWKS cached the kid is simply unknown; if the filter counts the failed
            // refetch instead, it refuses as unavailable. Both fail closed.
            Expect::Deny(vec![(401, "unknown_kid"), (503, "jwks_unavailable")]),
            forged(&|c| {
                let key = ctx.attacker.clone().with_kid("attacker-kid-2");
                Ok(forge::es256(&forge::header(key.kid()), c, &key))
            })
            .and_then(|p| down(Dependency::Authz, p)),
        ),
        row(
            "revoked-token-replayed",
            "A leaked token its owner has revoked (RFC 7009), replayed with its owner's certificate",
            "consumer revoked the token at POST /revoke after using it once; consumer cert + the revoked token, GET /orders/1",
            deny(401, "revoked"),
            ctx.revoked
                .clone()
                .map(|t| probe(Orders, Consumer, Request::get("/orders/1").bearer(&t))),
        ),
        row(
            "revoked-token-high-s-twin",
            "The revoked token with its signature's s replaced by n - s (a second valid signature)",
            "consumer cert + the revoked token's high-S twin: different bytes, same jti, GET /orders/1",
            // Refused as revoked (the revocation is keyed on the jti, never on token bytes);
            // a verifier that refuses high-S signatures outright would also be right.
            Expect::Deny(vec![(401, "revoked"), (401, "bad_signature")]),
            ctx.revoked
                .clone()
                .and_then(|t| forge::high_s_twin(&t).map_err(|e| e.to_string()))
                .map(|t| probe(Orders, Consumer, Request::get("/orders/1").bearer(&t))),
        ),
        // ------------------------------------------------------------ request shape (issue 16)
        Attack {
            show: Show::Path,
            ..row(
                "path-parameter",
                "Path parameter (;) to dodge the path match: Java upstreams strip `;...`",
                "inventory cert + own orders:read token, GET /orders/;jsessionid=1 (policy: /orders/*)",
                Expect::Rejected { status: 400 },
                Ok(probe(
                    Orders,
                    Inventory,
                    Request::get("/orders/;jsessionid=1").bearer(&ctx.inventory_read.access_token),
                )),
            )
        },
        row(
            "underscore-identity-header",
            "Underscore twin of the identity header (x_certbind_subject: CGI/WSGI/Rack/PHP read it as X-Certbind-Subject)",
            "inventory cert + own token + `x_certbind_subject: …/sa/consumer`, GET /orders/1",
            Expect::Rejected { status: 400 },
            Ok(probe(
                Orders,
                Inventory,
                Request::get("/orders/1")
                    .bearer(&ctx.inventory_read.access_token)
                    .header("x_certbind_subject", &consumer),
            )),
        ),
        // ------------------------------------------------------- usage-bound tokens (issue 22)
        row(
            "usage-token-replayed-after-spent",
            "A captured usage-bound token (max_uses=2) replayed after its owner spent both uses",
            "consumer used the token twice; consumer cert + the same token, GET /orders/1",
            deny(401, "usage_exhausted"),
            ctx.usage_spent
                .clone()
                .map(|t| probe(Orders, Consumer, Request::get("/orders/1").bearer(&t))),
        ),
        {
            // The race ran in `prepare`; exactly `max_uses` admitted is the row's first
            // condition, one more use refused its second.
            let (how, expect, probe) = match &ctx.usage_race {
                Ok(r) => (
                    format!(
                        "{} parallel GET /orders/1 with one {}-use token: certbind admitted {}, refused {} as usage_exhausted; then one more use",
                        r.attempts, r.max_uses, r.admitted, r.exhausted
                    ),
                    if r.admitted == r.max_uses as usize {
                        deny(401, "usage_exhausted")
                    } else {
                        // Never matches: a wrong count fails the row.
                        Expect::Deny(Vec::new())
                    },
                    Ok(probe(
                        Orders,
                        Consumer,
                        Request::get("/orders/1").bearer(&r.token),
                    )),
                ),
                Err(e) => (String::new(), deny(401, "usage_exhausted"), Err(e.clone())),
            };
            row(
                "usage-token-race",
                "Race: many parallel uses of one usage-bound token",
                &how,
                expect,
                probe,
            )
        },
        // ---------------------------------------------- credentials that ended (issue 16)
        {
            // Revoking ran in `prepare`, on a second consumer certificate of its own, so no
            // other row loses its credentials.
            let (how, probe) = match &ctx.revoked_cert_dpop {
                Ok(r) => (
                    format!(
                        "consumer (second certificate) got a DPoP token, used it (200); operator revoked that certificate; edge refused the token after {}; no client cert + the token + a fresh proof by its key, GET /orders/1",
                        r.refused_after
                            .map_or("more than 10 s".to_owned(), |d| format!(
                                "{} ms",
                                d.as_millis()
                            ))
                    ),
                    crate::hardening::fresh_edge_get(&ctx.target.edge_origin, &r.key, &r.token)
                        .map(|request| edge_probe(request, &r.token)),
                ),
                Err(e) => (String::new(), Err(e.clone())),
            };
            row(
                "dpop-token-after-cert-revoked",
                "DPoP token (and its proof key) used after the certificate that obtained it was revoked",
                &how,
                deny(401, "revoked"),
                probe,
            )
        },
        // ------------------------------------------ revocation as a lever (issue 16)
        {
            // The flood ran in `prepare`; the list growing by at most the quota plus one
            // coalesced row and the other workload served throughout are the row's first
            // conditions, the flooder's own last token refused its second.
            let (how, expect, probe) = match &ctx.revocation_flood {
                Ok(f) => (
                    format!(
                        "inventory revoked {} fresh tokens of its own at POST /revoke in {:.1} s: revocation list {} -> {} rows; consumer then served {}/{}; inventory cert + its last revoked token, GET /orders/1",
                        f.revoked,
                        f.secs,
                        f.list_before,
                        f.list_after,
                        f.others_admitted,
                        f.others_sent
                    ),
                    if f.list_after <= f.list_before + 65 && f.others_admitted == f.others_sent {
                        deny(401, "revoked")
                    } else {
                        // Never matches: an unbounded list or a starved workload fails the row.
                        Expect::Deny(Vec::new())
                    },
                    Ok(probe(
                        Orders,
                        Inventory,
                        Request::get("/orders/1").bearer(&f.token),
                    )),
                ),
                Err(e) => (String::new(), deny(401, "revoked"), Err(e.clone())),
            };
            row(
                "revocation-flood",
                "Revocation flood: one workload revokes its own fresh tokens to grow the list until sidecars fail",
                &how,
                expect,
                probe,
            )
        },
        // ---------------------------------------------- credentials that ended (issue 16)
        {
            let (how, probe) = match &ctx.expiring {
                Ok(e) => (
                    format!(
                        "consumer on a {} s certificate got a token and was admitted (200); after notAfter the same client (resumes any session it was offered) + that token, GET /orders/1",
                        e.lifetime.as_secs()
                    ),
                    Ok(Probe {
                        client: Some(e.client.clone()),
                        ..probe(Orders, Consumer, Request::get("/orders/1").bearer(&e.token))
                    }),
                ),
                Err(e) => (String::new(), Err(e.clone())),
            };
            row(
                "session-resumption-after-cert-expired",
                "Certificate expired: keep access through a resumed TLS session (tickets outlived it)",
                &how,
                // The sidecar offers no session to resume, so the full handshake meets the
                // expired certificate; where resumption is on, the filter answers 401
                // certificate_expired (tests/tests/hardening_e2e.rs).
                Expect::TlsRefused,
                probe,
            )
        },
        // ------------------------------------------------ shared caches (issue 16)
        {
            // The flood ran in `prepare`: inventory filled its share (503 replay_cache_full,
            // never dpop_replay) and consumer's fresh proofs were all admitted; then one more.
            let (how, subject, probe) = match (&ctx.replay_flood, &ctx.dpop_read) {
                (Ok(f), Ok(victim)) => (
                    format!(
                        "inventory sent {} fresh DPoP proofs to the edge in {:.1} s ({} admitted, {} refused 503 replay_cache_full, {} dpop_replay, {} other); then consumer's fresh proofs: {}/{} admitted; no client cert + consumer's DPoP token + a fresh proof, GET /orders/1",
                        f.sent,
                        f.secs,
                        f.admitted,
                        f.full,
                        f.replay,
                        f.other,
                        f.victim_admitted,
                        f.victim_sent
                    ),
                    if f.full > 0 && f.replay == 0 && f.victim_admitted == f.victim_sent {
                        consumer.clone()
                    } else {
                        // Never seen upstream: a flood that never filled its share, or a victim
                        // refused, fails the row.
                        "(the flood's conditions failed)".to_owned()
                    },
                    crate::hardening::fresh_edge_get(
                        &ctx.target.edge_origin,
                        &ctx.dpop_key,
                        &victim.access_token,
                    )
                    .map(|request| edge_probe(request, &victim.access_token)),
                ),
                (Err(e), _) | (_, Err(e)) => (String::new(), consumer.clone(), Err(e.clone())),
            };
            control(
                "dpop-replay-cache-flood",
                "Control under attack: one client floods the edge's DPoP replay cache; another client's fresh proof is still admitted",
                &how,
                &subject,
                probe,
            )
        },
        // -------------------------------------------------- information (issue 16)
        Attack {
            show: Show::Active,
            ..row(
                "introspect-other-clients-token",
                "Introspection as an oracle: inventory asks about consumer's live token (RFC 7662 §4)",
                "inventory cert, POST /introspect token=<consumer's live orders:read token> at the authz-server",
                Expect::Inactive,
                Ok(probe(
                    Service::Authz,
                    Inventory,
                    Request::post("/introspect").form(&[
                        ("token", read.as_str()),
                        ("token_type_hint", "access_token"),
                    ]),
                )),
            )
        },
    ]
}

/// An edge probe: `request` to the DPoP listener without a client certificate; the baseline
/// gets the same method and path with `token` as a plain bearer token.
fn edge_probe(request: Request, token: &str) -> Probe {
    let mut bearer = Request::new(&request.method, &request.path).bearer(token);
    bearer.body.clone_from(&request.body);
    Probe {
        baseline_request: Some(bearer),
        ..probe(Service::OrdersEdge, Caller::NoCert, request)
    }
}

/// Sends one probe to one address with one client.
async fn send(client: &HttpsClient, addr: SocketAddr, request: &Request) -> Answer {
    match client.send(addr, request).await {
        Ok(response) => Answer::from_response(&response),
        Err(e) => Answer::from_error(e),
    }
}

/// Why a row aimed at the authz-server has no baseline answer.
const NO_BASELINE_AUTHZ: &str = "n/a: the bearer-only baseline has no authorization server, so no \
     introspection endpoint to ask (certbind's own answered active=true with scope, audience and \
     client to any workload before issue 16)";

/// Runs one row: the baseline call (anonymous, as from anywhere) and the certbind call (with the
/// caller's certificate), with a dependency down around both when the row asks for it.
pub async fn run_one(ctx: &Context, attack: Attack) -> Row {
    let (baseline, certbind) = match &attack.probe {
        Err(why) => (Answer::NotRun(why.clone()), Answer::NotRun(why.clone())),
        Ok(p) => {
            let guard = match p
                .outage
                .map(|which| outage(ctx.target.control.as_ref(), which))
            {
                Some(Err(e)) => {
                    let why = format!("could not take it down: {e}");
                    return finish(attack, Answer::NotRun(why.clone()), Answer::NotRun(why));
                }
                Some(Ok(guard)) => Some(guard),
                None => None,
            };
            let baseline_request = p.baseline_request.as_ref().unwrap_or(&p.request);
            let baseline = match ctx.baseline(p.service) {
                Some(addr) => send(&ctx.anonymous, addr, baseline_request).await,
                None => Answer::NotRun(NO_BASELINE_AUTHZ.into()),
            };
            let client = p.client.as_ref().unwrap_or_else(|| ctx.client(p.caller));
            let certbind = send(client, ctx.sidecar(p.service), &p.request).await;
            drop(guard);
            (baseline, certbind)
        }
    };
    finish(attack, baseline, certbind)
}

fn finish(attack: Attack, baseline: Answer, certbind: Answer) -> Row {
    let verdict = judge(&attack, &baseline, &certbind);
    Row {
        attack,
        baseline,
        certbind,
        verdict,
    }
}

/// Runs the whole catalogue in order, calling `each` as every row finishes.
pub async fn run(ctx: &Context, mut each: impl FnMut(&Row)) -> Vec<Row> {
    let mut rows = Vec::new();
    for attack in catalogue(ctx) {
        let row = run_one(ctx, attack).await;
        each(&row);
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attack(control: bool, expect: Expect) -> Attack {
        Attack {
            id: "t",
            title: "t".into(),
            how: "t".into(),
            insider: false,
            control,
            expect,
            show: Show::Nothing,
            probe: Err("x".into()),
        }
    }

    fn http(status: u16, reason: Option<&str>, subject: Option<&str>) -> Answer {
        Answer::Http {
            status,
            reason: reason.map(str::to_owned),
            detail: None,
            upstream: subject.map(|s| json!({"path": "/p", "certbind": {"x-certbind-subject": s}})),
        }
    }

    #[test]
    fn an_expected_refusal_is_blocked() {
        let a = attack(false, deny(401, "binding_mismatch"));
        assert_eq!(
            judge(
                &a,
                &http(200, None, None),
                &http(401, Some("binding_mismatch"), None)
            ),
            Verdict::Blocked
        );
    }

    #[test]
    fn an_admitted_attack_fails_the_table() {
        let a = attack(false, deny(401, "binding_mismatch"));
        let v = judge(&a, &http(200, None, None), &http(200, None, Some("x")));
        assert_eq!(v, Verdict::Admitted);
        assert!(v.is_failure());
    }

    #[test]
    fn a_refusal_for_another_reason_is_a_wrong_answer() {
        let a = attack(false, deny(401, "binding_mismatch"));
        let v = judge(
            &a,
            &http(401, None, None),
            &http(401, Some("bad_signature"), None),
        );
        assert_eq!(v, Verdict::WrongAnswer);
        assert!(v.is_failure());
        let v = judge(
            &a,
            &http(401, None, None),
            &Answer::Failed("timeout".into()),
        );
        assert_eq!(v, Verdict::WrongAnswer);
    }

    #[test]
    fn a_tls_refusal_is_only_blocked_where_expected() {
        let a = attack(false, Expect::TlsRefused);
        assert_eq!(
            judge(
                &a,
                &http(200, None, None),
                &Answer::TlsRefused("alert".into())
            ),
            Verdict::Blocked
        );
        let b = attack(false, deny(401, "missing_token"));
        assert_eq!(
            judge(
                &b,
                &http(401, None, None),
                &Answer::TlsRefused("alert".into())
            ),
            Verdict::WrongAnswer
        );
    }

    #[test]
    fn an_envoy_rejection_carries_no_certbind_reason() {
        let a = attack(false, Expect::Rejected { status: 400 });
        assert_eq!(
            judge(&a, &http(200, None, None), &http(400, None, None)),
            Verdict::Blocked
        );
        assert_eq!(
            judge(
                &a,
                &http(200, None, None),
                &http(400, Some("malformed_token"), None)
            ),
            Verdict::WrongAnswer
        );
    }

    #[test]
    fn a_control_passes_only_when_both_listeners_admit_the_real_subject() {
        let subject = spiffe_id("consumer");
        let a = attack(
            true,
            Expect::Allow {
                subject: subject.clone(),
            },
        );
        assert_eq!(
            judge(&a, &http(200, None, None), &http(200, None, Some(&subject))),
            Verdict::Passed
        );
        assert_eq!(
            judge(&a, &http(401, None, None), &http(200, None, Some(&subject))),
            Verdict::ControlFailed
        );
        assert_eq!(
            judge(
                &a,
                &http(200, None, None),
                &http(403, Some("policy_denied"), None)
            ),
            Verdict::ControlFailed
        );
        assert_eq!(
            judge(
                &a,
                &http(200, None, None),
                &http(200, None, Some("spiffe://other"))
            ),
            Verdict::ControlFailed
        );
    }

    #[test]
    fn a_spoofed_subject_reaching_the_upstream_is_admitted() {
        let a = attack(
            false,
            Expect::Allow {
                subject: spiffe_id("inventory"),
            },
        );
        let spoofed = http(200, None, Some(&spiffe_id("consumer")));
        assert_eq!(judge(&a, &spoofed, &spoofed), Verdict::Admitted);
        let clean = http(200, None, Some(&spiffe_id("inventory")));
        assert_eq!(judge(&a, &spoofed, &clean), Verdict::Blocked);
    }

    #[test]
    fn a_row_not_run_is_neither_passed_nor_failed() {
        let a = attack(true, Expect::TlsRefused);
        let v = judge(
            &a,
            &Answer::NotRun("x".into()),
            &Answer::NotRun("needs --pdp-pid-file".into()),
        );
        assert_eq!(v, Verdict::NotRun);
        assert!(!v.is_failure());
    }

    #[test]
    fn a_token_in_the_echoed_query_is_never_recorded() {
        let answer = Answer::from_response(&Response {
            status: 200,
            headers: vec![],
            body: json!({"path": "/orders/1?access_token=eyJsecret"})
                .to_string()
                .into_bytes(),
        });
        let recorded = answer.to_json(Show::Path).to_string();
        assert!(!recorded.contains("eyJsecret"), "{recorded}");
        assert_eq!(answer.summary(Show::Path), "200 admitted, path=/orders/1?…");
    }

    #[test]
    fn summaries_name_status_and_reason() {
        assert_eq!(
            http(401, Some("expired"), None).summary(Show::Nothing),
            "401 expired"
        );
        assert_eq!(
            http(200, None, Some(&spiffe_id("inventory"))).summary(Show::Subject),
            "200 admitted, subject=inventory"
        );
        let baseline = Answer::from_response(&Response {
            status: 401,
            headers: vec![],
            body: b"Jwt verification fails".to_vec(),
        });
        assert_eq!(
            baseline.summary(Show::Nothing),
            "401 \"Jwt verification fails\""
        );
        assert_eq!(
            Answer::TlsRefused("x".into()).summary(Show::Nothing),
            "TLS handshake refused"
        );
    }

    #[test]
    fn an_introspection_passes_only_when_it_tells_nothing() {
        let a = attack(false, Expect::Inactive);
        let answer = |body: Value| Answer::Http {
            status: 200,
            reason: None,
            detail: None,
            upstream: Some(body),
        };
        let na = Answer::NotRun(NO_BASELINE_AUTHZ.into());
        let told_nothing = answer(json!({"active": false}));
        assert_eq!(judge(&a, &na, &told_nothing), Verdict::Blocked);
        assert_eq!(told_nothing.summary(Show::Active), "200 active=false");
        let leaked = answer(json!({"active": true, "client_id": "consumer"}));
        assert_eq!(judge(&a, &na, &leaked), Verdict::Admitted);
        assert_eq!(
            leaked.summary(Show::Active),
            "200 active=true, client_id=consumer"
        );
        // Inactive, but with claims alongside: not the RFC 7662 §4 answer.
        let extra = answer(json!({"active": false, "scope": "orders:read"}));
        assert_eq!(judge(&a, &na, &extra), Verdict::Admitted);
        assert_eq!(judge(&a, &na, &http(401, None, None)), Verdict::WrongAnswer);
    }
}
