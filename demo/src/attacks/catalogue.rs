//! The catalogue as data: each row a [`Spec`] (its id, what the attacker does, how it is sent,
//! what certbind must answer, and the function that builds its request), and [`catalogue`],
//! which builds every row against one prepared [`Context`]. The rows themselves stand in
//! `catalogue/identity.rs` (credentials and tokens), `catalogue/requests.rs` (request tricks,
//! DPoP, dependencies) and `catalogue/measured.rs` (rows that report what `prepare` measured).

mod identity;
mod measured;
mod requests;

use super::context::Context;
use super::model::{Attack, Caller, Expect, Probe, Service, Show, edge_probe, probe};
use crate::client::Request;
use crate::control::Dependency;
use crate::forge::{self, EcKey, spiffe_id};
use serde_json::Value;

/// The catalogue, in the order it runs: positive controls, attacks with real credentials,
/// forgeries, insider rows, request tricks, DPoP, the rows that take a dependency down, then
/// the measured rows and what introspection tells.
pub fn catalogue(ctx: &Context) -> Vec<Attack> {
    let kit = Kit {
        ctx,
        claims: ctx.consumer_claims(),
    };
    let mut rows: Vec<Attack> = identity::ROWS
        .iter()
        .chain(requests::ROWS)
        .map(|spec| spec.build(&kit))
        .collect();
    rows.extend(measured::rows(&kit));
    rows.extend(requests::INFORMATION.iter().map(|spec| spec.build(&kit)));
    rows
}

/// Builds a row's request from the kit, or says why it cannot be built here.
pub(super) type Build = fn(&Kit<'_>) -> Result<Probe, String>;

/// Whose row it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// An attack a real attacker can mount.
    Attack,
    /// Needs the authz-server's signing key: shows one claim check, not a realistic attacker.
    Insider,
    /// A positive control: must be admitted on both listeners.
    Control,
}

/// What certbind must answer, as data (an [`Expect`] once the row is built).
#[derive(Debug, Clone, Copy)]
pub(super) enum Want {
    /// Admitted, the upstream seeing this demo workload's SPIFFE ID as the subject.
    Admit(&'static str),
    /// Refused by the filter with one of these (status, reason) answers.
    Deny(&'static [(u16, &'static str)]),
    TlsRefused,
    /// Refused by Envoy before the filter runs.
    Rejected(u16),
    /// `200 {"active": false}`.
    Inactive,
}

impl Want {
    fn expect(self) -> Expect {
        match self {
            Self::Admit(workload) => Expect::Allow {
                subject: spiffe_id(workload),
            },
            Self::Deny(answers) => Expect::Deny(answers.to_vec()),
            Self::TlsRefused => Expect::TlsRefused,
            Self::Rejected(status) => Expect::Rejected { status },
            Self::Inactive => Expect::Inactive,
        }
    }
}

/// One row of the catalogue, as data.
#[derive(Debug, Clone, Copy)]
pub(super) struct Spec {
    pub id: &'static str,
    /// What the attacker does.
    pub title: &'static str,
    /// How it is sent.
    pub how: &'static str,
    pub kind: Kind,
    pub want: Want,
    pub show: Show,
    pub probe: Build,
}

/// An attack row that shows nothing of the upstream's echo.
pub(super) const fn row(
    id: &'static str,
    title: &'static str,
    how: &'static str,
    want: Want,
    probe: Build,
) -> Spec {
    Spec {
        id,
        title,
        how,
        kind: Kind::Attack,
        want,
        show: Show::Nothing,
        probe,
    }
}

/// A positive control: admitted on both listeners as `workload`, whose subject the row shows.
pub(super) const fn control(
    id: &'static str,
    title: &'static str,
    how: &'static str,
    workload: &'static str,
    probe: Build,
) -> Spec {
    Spec {
        kind: Kind::Control,
        show: Show::Subject,
        ..row(id, title, how, Want::Admit(workload), probe)
    }
}

impl Spec {
    /// The same row, made with the insider's signing key.
    pub(super) const fn insider(self) -> Self {
        Self {
            kind: Kind::Insider,
            ..self
        }
    }

    /// The same row, showing `show` of the upstream's echo.
    pub(super) const fn showing(self, show: Show) -> Self {
        Self { show, ..self }
    }

    fn build(&self, kit: &Kit<'_>) -> Attack {
        self.attack(self.how.to_owned(), self.want.expect(), (self.probe)(kit))
    }

    /// The row with what only the run knows: how it went, what it expects, its request.
    pub(super) fn attack(
        &self,
        how: String,
        expect: Expect,
        probe: Result<Probe, String>,
    ) -> Attack {
        Attack {
            id: self.id,
            title: self.title.to_owned(),
            how,
            insider: self.kind == Kind::Insider,
            control: self.kind == Kind::Control,
            expect,
            show: self.show,
            probe,
        }
    }
}

/// What a row's builder works with: the prepared context and the request shapes rows share.
pub(super) struct Kit<'a> {
    pub ctx: &'a Context,
    /// The consumer's claims as the authz-server issues them: a forgery's starting point.
    claims: Result<Value, String>,
}

impl Kit<'_> {
    /// The consumer's real orders:read token (mTLS-bound).
    pub fn read(&self) -> &str {
        &self.ctx.consumer_read.access_token
    }

    /// Inventory's own real orders:read token.
    pub fn inventory_read(&self) -> &str {
        &self.ctx.inventory_read.access_token
    }

    /// The real signing key's `kid`.
    pub fn kid(&self) -> &str {
        &self.ctx.kid
    }

    pub fn claims(&self) -> Result<&Value, String> {
        self.claims.as_ref().map_err(Clone::clone)
    }

    pub fn insider_key(&self) -> Result<&EcKey, String> {
        self.ctx.insider.as_ref().map_err(Clone::clone)
    }

    /// `request` to orders as `caller`.
    pub fn orders(&self, caller: Caller, request: Request) -> Result<Probe, String> {
        Ok(probe(Service::Orders, caller, request))
    }

    /// `GET /orders/1` as `caller` with `token` as the bearer token.
    pub fn get_order(&self, caller: Caller, token: &str) -> Result<Probe, String> {
        self.orders(caller, Request::get("/orders/1").bearer(token))
    }

    /// The consumer's `GET /orders/1` with a token `make` forges from the consumer's claims; if
    /// even those cannot be built the row says so.
    pub fn forged(&self, make: &dyn Fn(&Value) -> Result<String, String>) -> Result<Probe, String> {
        self.get_order(Caller::Consumer, &make(self.claims()?)?)
    }

    /// `GET /orders/1` as `caller` with the insider's token after `edit` changed the claims.
    pub fn insider(&self, edit: &dyn Fn(&mut Value), caller: Caller) -> Result<Probe, String> {
        self.get_order(caller, &self.ctx.insider_token(edit)?)
    }

    /// An edge probe whose request `make(token, other_token)` builds with the consumer's
    /// DPoP-bound orders:read token (and its orders:write one, for the `ath` row).
    pub fn edge(
        &self,
        make: &dyn Fn(&str, &str) -> Result<Request, String>,
    ) -> Result<Probe, String> {
        let token = &self
            .ctx
            .dpop_read
            .as_ref()
            .map_err(Clone::clone)?
            .access_token;
        let other = &self
            .ctx
            .dpop_write
            .as_ref()
            .map_err(Clone::clone)?
            .access_token;
        Ok(edge_probe(make(token, other)?, token))
    }

    /// A proof by the consumer's key for `method` `path` with `token`'s `ath`, then `edit`ed.
    pub fn proof_for(
        &self,
        token: &str,
        method: &str,
        path: &str,
        edit: &dyn Fn(&mut Value),
    ) -> Result<String, String> {
        let key = &self.ctx.dpop_key;
        let htu = crate::dpop::htu(&self.ctx.target.edge_origin, path);
        let mut claims =
            crate::dpop::claims(method, &htu, Some(token)).map_err(|e| e.to_string())?;
        edit(&mut claims);
        let header = crate::dpop::header(key).map_err(|e| e.to_string())?;
        Ok(forge::es256(&header, &claims, key))
    }

    /// A proof for `GET /orders/1` with `token`'s `ath`, signed by the attacker's key.
    pub fn thief_proof(&self, token: &str) -> Result<String, String> {
        let htu = crate::dpop::htu(&self.ctx.target.edge_origin, "/orders/1");
        crate::dpop::proof(&self.ctx.attacker, "GET", &htu, Some(token)).map_err(|e| e.to_string())
    }

    /// `p` with `which` down while it is sent, if this run can take it down.
    pub fn down(&self, which: Dependency, mut p: Probe) -> Result<Probe, String> {
        if self.ctx.target.control.available(which) {
            p.outage = Some(which);
            Ok(p)
        } else {
            Err(format!("needs {}", which.flag()))
        }
    }

    /// `prefix` and a fresh id: a path no decision is cached for.
    pub fn unique(&self, prefix: &str) -> String {
        forge::random_id()
            .map(|id| format!("{prefix}{id}"))
            .unwrap_or_else(|_| format!("{prefix}{}", forge::now()))
    }
}
