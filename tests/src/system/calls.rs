//! Talking to a running [`System`] as its workloads and its operator do: TLS clients, calls
//! to the sidecars, tokens and revocations at the authz-server, forged tokens, and the
//! authz-server's command line (key and certificate rotation, a foreign PKI).

use super::{System, pki_init};
use crate::client::{Request, Response, TlsClient};
use crate::tokens::{EcKey, Forge, authz_active_key};
use crate::{Error, spiffe_id};
use std::path::PathBuf;
use std::process::Command;

impl System {
    /// A DPoP-bound token (`cnf.jkt` of `key`) from the authz-server: `POST /token` as
    /// `client` (mTLS) with a proof signed by `key` for the token endpoint.
    pub fn dpop_token(
        &self,
        client: &str,
        service: &str,
        scope: &str,
        key: &EcKey,
    ) -> Result<String, Error> {
        let audience = spiffe_id(service);
        let htu = format!("{}/token", self.issuer);
        let proof = crate::tokens::dpop_proof(key, "POST", &htu, None)?;
        let request = Request::post("/token").header("dpop", &proof).form(&[
            ("grant_type", "client_credentials"),
            ("audience", &audience),
            ("scope", scope),
        ]);
        let response = self
            .authz_client(Some(client))?
            .send(self.authz_addr(), &request)?;
        let body = response.json().ok();
        let token_type = body.as_ref().and_then(|b| b.get("token_type")?.as_str());
        match (response.status, token_type) {
            (200, Some("DPoP")) => body
                .as_ref()
                .and_then(|b| b.get("access_token")?.as_str())
                .map(str::to_owned)
                .ok_or_else(|| Error::Http("token response without access_token".into())),
            _ => Err(Error::Http(format!(
                "authz-server refused a DPoP token for {client} → {service} ({scope}): {} {}",
                response.status,
                response.text()
            ))),
        }
    }

    /// A TLS client trusting the system's CA, presenting `identity`'s certificate (or none).
    pub fn client(&self, identity: Option<&str>) -> Result<TlsClient, Error> {
        TlsClient::for_workload(&self.pki, identity)
    }

    /// A TLS client as `identity` that accepts only the authz-server's SPIFFE ID.
    pub fn authz_client(&self, identity: Option<&str>) -> Result<TlsClient, Error> {
        self.client(identity)?.expecting("authz")
    }

    /// One request to `service`'s sidecar as `identity` (`None`: no client certificate); the
    /// sidecar must prove `service`'s SPIFFE ID.
    pub fn call(
        &self,
        identity: Option<&str>,
        service: &str,
        request: &Request,
    ) -> Result<Response, Error> {
        self.client(identity)?
            .expecting(service)?
            .send(self.sidecar(service), request)
    }

    /// `POST /token` as `client` (its certificate authenticates it) with these form fields.
    pub fn token_request(&self, client: &str, form: &[(&str, &str)]) -> Result<Response, Error> {
        self.authz_client(Some(client))?
            .send(self.authz_addr(), &Request::post("/token").form(form))
    }

    /// A real access token from the authz-server for `client` towards `service` with `scope`.
    pub fn token(&self, client: &str, service: &str, scope: &str) -> Result<String, Error> {
        let audience = spiffe_id(service);
        let response = self.token_request(
            client,
            &[
                ("grant_type", "client_credentials"),
                ("audience", &audience),
                ("scope", scope),
            ],
        )?;
        if response.status != 200 {
            return Err(Error::Http(format!(
                "authz-server refused a token for {client} → {service} ({scope}): {} {}",
                response.status,
                response.text()
            )));
        }
        response
            .json()
            .map_err(Error::Http)?
            .get("access_token")
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .ok_or_else(|| Error::Http("token response without access_token".into()))
    }

    /// `POST /v1/admin/revocations` as the `operator` identity: revokes `value` of `kind`
    /// (`jti`, `subject`, `cert`); returns the answer (200 with the recorded row).
    pub fn revoke(&self, kind: &str, value: &str) -> Result<Response, Error> {
        let body = serde_json::json!({"kind": kind, "value": value, "reason": "test"});
        self.authz_client(Some("operator"))?.send(
            self.authz_addr(),
            &Request::post("/v1/admin/revocations").json(&body),
        )
    }

    /// `POST /revoke` (RFC 7009) as `client` for its own `token`.
    pub fn revoke_token(&self, client: &str, token: &str) -> Result<Response, Error> {
        self.authz_client(Some(client))?.send(
            self.authz_addr(),
            &Request::post("/revoke").form(&[("token", token)]),
        )
    }

    /// `certbind-authz revoke <args> --state-dir S` (the operator's command line).
    pub fn revoke_cli(&self, args: &[&str]) -> Result<String, Error> {
        let mut cmd = Command::new(&self.authz_bin);
        cmd.arg("revoke")
            .args(args)
            .arg("--state-dir")
            .arg(&self.state);
        authz_cli("revoke", &mut cmd)
    }

    /// A forge signing with the authz-server's active key (tokens only the claim checks refuse).
    pub fn forge(&self) -> Result<Forge, Error> {
        Ok(Forge::new(
            &self.issuer,
            &self.pki,
            authz_active_key(&self.state)?,
        ))
    }

    /// A forge signing with a fresh attacker key (its own `kid`).
    pub fn attacker_forge(&self) -> Result<Forge, Error> {
        Ok(Forge::new(&self.issuer, &self.pki, EcKey::generate()?))
    }

    /// `certbind-authz keys rotate --state-dir S`; returns the new active key's `kid`.
    pub fn rotate_keys(&self) -> Result<String, Error> {
        let mut cmd = Command::new(&self.authz_bin);
        cmd.args(["keys", "rotate", "--state-dir"]).arg(&self.state);
        authz_cli("keys rotate", &mut cmd)?;
        Ok(authz_active_key(&self.state)?.kid().to_owned())
    }

    /// `certbind-authz pki rotate --dir <pki> [--identity NAME]...` (no names: consumer, orders,
    /// billing, envoy): new keys and certificates from the same CA; Envoy rereads them via SDS.
    /// Returns what the command printed (one line per certificate, with its serial).
    pub fn rotate_certs(&self, identities: &[&str]) -> Result<String, Error> {
        let mut cmd = Command::new(&self.authz_bin);
        cmd.args(["pki", "rotate", "--dir"]).arg(&self.pki);
        for name in identities {
            cmd.args(["--identity", name]);
        }
        authz_cli("pki rotate", &mut cmd)
    }

    /// A second, unrelated PKI (`certbind-authz pki init` into `<dir>/<name>`): same SPIFFE
    /// IDs, another CA, for impersonation attempts.
    pub fn foreign_pki(&self, name: &str) -> Result<PathBuf, Error> {
        let dir = self.dir.path().join(name);
        pki_init(&self.authz_bin, &dir)?;
        Ok(dir)
    }
}

/// Runs `cmd`, the `certbind-authz` subcommand `what`: what it printed, or what it complained.
fn authz_cli(what: &str, cmd: &mut Command) -> Result<String, Error> {
    let out = cmd
        .output()
        .map_err(Error::io(format!("running certbind-authz {what}")))?;
    if !out.status.success() {
        return Err(Error::Proc(format!(
            "certbind-authz {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
