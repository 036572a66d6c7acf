//! The catalogue's vocabulary: where the system under attack runs ([`Target`]), who calls which
//! service ([`Service`], [`Caller`]), what certbind must answer ([`Expect`]), and one row
//! ([`Attack`]) with its ready-to-send request ([`Probe`]).

use crate::client::{HttpsClient, Request};
use crate::control::{Dependency, Switch};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
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

/// A probe of `service` as `caller`, with no outage, the baseline getting the same request.
pub(super) fn probe(service: Service, caller: Caller, request: Request) -> Probe {
    Probe {
        service,
        caller,
        request,
        baseline_request: None,
        outage: None,
        client: None,
    }
}

/// An edge probe: `request` to the DPoP listener without a client certificate; the baseline
/// gets the same method and path with `token` as a plain bearer token.
pub(super) fn edge_probe(request: Request, token: &str) -> Probe {
    let mut bearer = Request::new(&request.method, &request.path).bearer(token);
    bearer.body.clone_from(&request.body);
    Probe {
        baseline_request: Some(bearer),
        ..probe(Service::OrdersEdge, Caller::NoCert, request)
    }
}

/// `GET path` at the edge with `Authorization: DPoP <token>` and these `DPoP` headers.
pub(super) fn dpop_request(path: &str, token: &str, proofs: &[String]) -> Request {
    let mut request = Request::get(path).header("authorization", &format!("DPoP {token}"));
    for proof in proofs {
        request = request.header("dpop", proof);
    }
    request
}

/// `spiffe://certbind.test/ns/demo/sa/inventory` → `inventory`.
pub fn short_id(id: &str) -> String {
    id.strip_prefix("spiffe://certbind.test/ns/demo/sa/")
        .unwrap_or(id)
        .to_owned()
}
