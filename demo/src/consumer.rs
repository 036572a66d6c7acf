//! The legitimate consumer's flow: a least-privilege token per (service, scope) from the
//! authz-server over mTLS, calls through the sidecar with its certificate, a token refresh
//! before expiry and one retry after a 401, and a check of every answer against the policy.
//! In DPoP mode (RFC 9449) the tokens are bound to a proof key instead of the certificate, and
//! every call goes to the orders edge listener without a client certificate, each with a fresh
//! proof signed by that key. When its certificate files are rotated (`make rotate-certs`) it
//! loads the new pair for its next connections and drops the tokens bound to the old one.

use crate::attacks::short_id;
use crate::authz::{AuthzClient, AuthzError, TokenCache};
use crate::client::{HttpsClient, Request, Response};
use crate::forge::{EcKey, spiffe_id};
use serde_json::json;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the consumer runs and what it does.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub authz: SocketAddr,
    pub orders: SocketAddr,
    pub billing: SocketAddr,
    pub pki_dir: PathBuf,
    /// The workload whose certificate is used (`consumer`).
    pub name: String,
    /// How many times the whole plan runs.
    pub rounds: u32,
    /// Pause between rounds (long runs show the refresh before expiry).
    pub interval: Duration,
    /// Also make a call the policy forbids and expect 403.
    pub least_privilege: bool,
    /// DPoP mode: DPoP-bound tokens, calls to the orders edge listener.
    pub dpop: Option<DpopTarget>,
}

/// Where DPoP mode sends its calls and asks for its tokens.
#[derive(Debug, Clone)]
pub struct DpopTarget {
    /// The orders edge listener.
    pub edge: SocketAddr,
    /// Its public origin (`https://host:port`): proofs name `<origin><path>`.
    pub origin: String,
    /// The authz-server's issuer URL: token proofs name `<issuer>/token`.
    pub issuer: String,
}

/// One planned call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub service: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    /// The one scope the token for this call carries.
    pub scope: &'static str,
    /// 200, or 403 for the least-privilege call.
    pub expect: u16,
}

/// The consumer's calls in DPoP mode: orders only (the edge listener fronts orders).
pub fn dpop_plan(least_privilege: bool) -> Vec<Call> {
    let mut calls: Vec<Call> = plan(false)
        .into_iter()
        .filter(|c| c.service == "orders")
        .collect();
    if least_privilege {
        // The consumer may read and create orders, never delete one: the PDP says no.
        calls.push(Call {
            service: "orders",
            method: "DELETE",
            path: "/orders/1",
            scope: "orders:write",
            expect: 403,
        });
    }
    calls
}

/// The consumer's calls (CONTRACT §2 demo policy).
pub fn plan(least_privilege: bool) -> Vec<Call> {
    let call = |service, method, path, scope, expect| Call {
        service,
        method,
        path,
        scope,
        expect,
    };
    let mut calls = vec![
        call("orders", "GET", "/orders/1", "orders:read", 200),
        call("orders", "GET", "/orders", "orders:read", 200),
        call("orders", "POST", "/orders", "orders:write", 200),
        call("billing", "GET", "/billing/1", "billing:read", 200),
    ];
    if least_privilege {
        // The consumer may read billing, never write it: the PDP says no.
        calls.push(call("billing", "POST", "/billing/1", "billing:read", 403));
    }
    calls
}

/// How one call went.
#[derive(Debug, Clone)]
pub struct CallResult {
    pub round: u32,
    pub call: Call,
    pub status: Option<u16>,
    /// certbind's `reason` on a refusal, or what went wrong without an answer.
    pub detail: String,
    /// The subject the upstream saw (`x-certbind-subject`), on success.
    pub upstream_subject: Option<String>,
    /// A new token was fetched for this call (first use, near expiry, or after a 401).
    pub fresh_token: bool,
    /// The first answer was 401 and the call was retried with a new token.
    pub retried: bool,
    /// The certificate files had been rotated: this call loaded the new pair.
    pub new_certificate: bool,
    pub ok: bool,
}

impl CallResult {
    /// One line for the terminal.
    pub fn line(&self) -> String {
        let status = self.status.map_or("---".to_owned(), |s| s.to_string());
        let mut notes = vec![format!("token {}", self.call.scope)];
        if self.new_certificate {
            notes.push("new certificate".into());
        }
        if self.fresh_token {
            notes.push("new token".into());
        }
        if self.retried {
            notes.push("retried after 401".into());
        }
        let seen = match &self.upstream_subject {
            Some(subject) => format!("upstream saw subject {}", short_id(subject)),
            None => self.detail.clone(),
        };
        format!(
            "round {} {:<7} {:<4} {:<11} -> {} {:<5} {:<28} ({})",
            self.round,
            self.call.service,
            self.call.method,
            self.call.path,
            status,
            if self.ok { "ok" } else { "FAIL" },
            seen,
            notes.join(", "),
        )
    }
}

/// Whether `response` is what the policy promises for `call` made by `subject`.
pub fn answer_ok(call: &Call, subject: &str, response: &Response) -> bool {
    if response.status != call.expect {
        return false;
    }
    if call.expect == 200 {
        let seen = response.json().ok().and_then(|j| {
            j["certbind"]["x-certbind-subject"]
                .as_str()
                .map(str::to_owned)
        });
        seen.as_deref() == Some(subject)
    } else {
        response.json_str("reason").as_deref() == Some("policy_denied")
    }
}

/// The consumer's state across calls.
#[derive(Debug)]
pub struct Consumer {
    config: ConsumerConfig,
    client: HttpsClient,
    tokens: TokenCache,
    subject: String,
    /// DPoP mode: the proof key every token is bound to (one per run, never leaves memory).
    dpop_key: Option<EcKey>,
    /// What the certificate and key files looked like when the clients were built.
    identity_stamp: Option<IdentityStamp>,
    /// Tokens fetched by token caches dropped at a certificate reload.
    fetched_before: u32,
    /// How many times a rotated certificate was loaded.
    reloads: u32,
}

/// The identity of `<name>.crt` and `<name>.key` on disk (inode, size, modification time):
/// a rotation replaces each by a rename, so any change shows here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IdentityStamp([(u64, u64, i64, i64); 2]);

impl IdentityStamp {
    fn read(pki_dir: &Path, name: &str) -> Option<Self> {
        let one = |ext: &str| {
            std::fs::metadata(pki_dir.join(format!("{name}.{ext}")))
                .ok()
                .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
        };
        Some(Self([one("crt")?, one("key")?]))
    }
}

/// The consumer's two clients (calls, and tokens over mTLS) built from the files as they are
/// now. A certificate and key that do not match (a rotation caught between its two renames)
/// are refused by rustls here, so a half-rotated pair is never used.
fn build_clients(
    config: &ConsumerConfig,
    dpop_key: Option<&EcKey>,
) -> Result<(HttpsClient, TokenCache), crate::client::ClientError> {
    let mtls = HttpsClient::for_workload(&config.pki_dir, Some(&config.name))?;
    // Tokens only from the authz-server's SPIFFE ID: a workload posing as it gets nothing.
    let mut authz = AuthzClient::new(mtls.expecting("authz")?, config.authz);
    let client = match (&config.dpop, dpop_key) {
        (Some(target), Some(key)) => {
            authz = authz.with_dpop(key.clone(), &target.issuer);
            // Behind a TLS-terminating hop no client certificate reaches the edge.
            HttpsClient::for_workload(&config.pki_dir, None)?
        }
        _ => mtls,
    };
    Ok((client, TokenCache::new(authz)))
}

impl Consumer {
    pub fn new(config: ConsumerConfig) -> Result<Self, crate::client::ClientError> {
        let dpop_key = match &config.dpop {
            None => None,
            Some(_) => Some(
                EcKey::generate().map_err(|e| crate::client::ClientError::Config(e.to_string()))?,
            ),
        };
        let identity_stamp = IdentityStamp::read(&config.pki_dir, &config.name);
        let (client, tokens) = build_clients(&config, dpop_key.as_ref())?;
        let subject = spiffe_id(&config.name);
        Ok(Self {
            config,
            client,
            tokens,
            subject,
            dpop_key,
            identity_stamp,
            fetched_before: 0,
            reloads: 0,
        })
    }

    /// How many times a rotated certificate was picked up.
    pub fn certificate_reloads(&self) -> u32 {
        self.reloads
    }

    /// If the certificate files changed since the clients were built, rebuilds them from the
    /// new pair (new connections present it) and drops every cached token: each was bound to
    /// the old certificate and would be refused as `binding_mismatch`. A pair that does not
    /// load (mismatched mid-rotation, unreadable) keeps the old clients; the next call retries.
    pub fn reload_if_rotated(&mut self) -> bool {
        let now = IdentityStamp::read(&self.config.pki_dir, &self.config.name);
        if now.is_none() || now == self.identity_stamp {
            return false;
        }
        match build_clients(&self.config, self.dpop_key.as_ref()) {
            Ok((client, tokens)) => {
                self.fetched_before += self.tokens.fetched;
                self.client = client;
                self.tokens = tokens;
                self.identity_stamp = now;
                self.reloads += 1;
                true
            }
            Err(_) => false,
        }
    }

    /// The token cache (e.g. to hand the consumer a token it already holds).
    pub fn tokens_mut(&mut self) -> &mut TokenCache {
        &mut self.tokens
    }

    /// How many tokens were fetched so far.
    pub fn tokens_fetched(&self) -> u32 {
        self.fetched_before + self.tokens.fetched
    }

    fn addr(&self, service: &str) -> SocketAddr {
        if let Some(target) = &self.config.dpop {
            target.edge
        } else if service == "billing" {
            self.config.billing
        } else {
            self.config.orders
        }
    }

    /// The request of `call` with `token`: `Bearer`, or in DPoP mode `DPoP` with a fresh proof.
    fn request(&self, call: &Call, token: &str) -> Result<Request, String> {
        let request = match (&self.config.dpop, &self.dpop_key) {
            (Some(target), Some(key)) => {
                let htu = crate::dpop::htu(&target.origin, call.path);
                let proof = crate::dpop::proof(key, call.method, &htu, Some(token))
                    .map_err(|e| format!("cannot sign a proof: {e}"))?;
                Request::new(call.method, call.path)
                    .header("authorization", &format!("DPoP {token}"))
                    .header("dpop", &proof)
            }
            _ => Request::new(call.method, call.path).bearer(token),
        };
        Ok(Self::with_body(call, request))
    }

    fn with_body(call: &Call, request: Request) -> Request {
        if call.method == "POST" {
            request.json(&json!({"item": "demo"}))
        } else {
            request
        }
    }

    /// One call: token (cached or new), request, and on a 401 one retry with a new token.
    pub async fn call(&mut self, round: u32, call: &Call) -> CallResult {
        let mut result = CallResult {
            round,
            call: call.clone(),
            status: None,
            detail: String::new(),
            upstream_subject: None,
            fresh_token: false,
            retried: false,
            new_certificate: false,
            ok: false,
        };
        result.new_certificate = self.reload_if_rotated();
        for attempt in 0..2 {
            let token = match self.tokens.get(call.service, call.scope).await {
                Ok((token, fresh)) => {
                    result.fresh_token |= fresh;
                    token
                }
                Err(e) => {
                    result.detail = token_error(&e);
                    return result;
                }
            };
            let addr = self.addr(call.service);
            let request = match self.request(call, &token.access_token) {
                Ok(request) => request,
                Err(e) => {
                    result.detail = e;
                    return result;
                }
            };
            // The sidecar must prove the called service's SPIFFE ID.
            let client = match self.client.expecting(call.service) {
                Ok(client) => client,
                Err(e) => {
                    result.detail = e.to_string();
                    return result;
                }
            };
            let response = match client.send(addr, &request).await {
                Ok(response) => response,
                Err(e) => {
                    result.detail = e.to_string();
                    return result;
                }
            };
            // A 401 means the token went stale under us (rotated signing key, clock, or
            // `binding_mismatch`: a token bound to a certificate since rotated): get a new one
            // once, with the certificate now on disk.
            if response.status == 401 && attempt == 0 && call.expect != 401 {
                result.new_certificate |= self.reload_if_rotated();
                self.tokens.invalidate(call.service, call.scope);
                result.retried = true;
                continue;
            }
            result.status = Some(response.status);
            result.detail = response
                .json_str("reason")
                .unwrap_or_else(|| crate::authz::excerpt(&response.text()));
            result.upstream_subject = response.json().ok().and_then(|j| {
                j["certbind"]["x-certbind-subject"]
                    .as_str()
                    .map(str::to_owned)
            });
            result.ok = answer_ok(call, &self.subject, &response);
            return result;
        }
        result
    }

    /// Every round of the plan, calling `each` after each call.
    pub async fn run(&mut self, mut each: impl FnMut(&CallResult)) -> Vec<CallResult> {
        let calls = if self.config.dpop.is_some() {
            dpop_plan(self.config.least_privilege)
        } else {
            plan(self.config.least_privilege)
        };
        let mut results = Vec::new();
        for round in 1..=self.config.rounds.max(1) {
            if round > 1 {
                tokio::time::sleep(self.config.interval).await;
            }
            for call in &calls {
                let result = self.call(round, call).await;
                each(&result);
                results.push(result);
            }
        }
        results
    }
}

fn token_error(e: &AuthzError) -> String {
    format!("no token: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: serde_json::Value) -> Response {
        Response {
            status,
            headers: vec![],
            body: body.to_string().into_bytes(),
        }
    }

    #[test]
    fn the_plan_ends_with_a_forbidden_call_only_when_asked() {
        assert!(plan(false).iter().all(|c| c.expect == 200));
        let last = plan(true).pop().unwrap();
        assert_eq!(
            (last.method, last.path, last.expect),
            ("POST", "/billing/1", 403)
        );
    }

    #[test]
    fn an_allowed_call_must_reach_the_upstream_as_the_caller() {
        let call = &plan(false)[0];
        let me = spiffe_id("consumer");
        let ok = response(200, json!({"certbind": {"x-certbind-subject": me}}));
        assert!(answer_ok(call, &me, &ok));
        let other = response(
            200,
            json!({"certbind": {"x-certbind-subject": spiffe_id("inventory")}}),
        );
        assert!(!answer_ok(call, &me, &other));
        assert!(!answer_ok(
            call,
            &me,
            &response(403, json!({"reason": "policy_denied"}))
        ));
    }

    #[test]
    fn the_forbidden_call_must_be_a_policy_denial() {
        let call = plan(true).pop().unwrap();
        let me = spiffe_id("consumer");
        assert!(answer_ok(
            &call,
            &me,
            &response(403, json!({"reason": "policy_denied"}))
        ));
        assert!(!answer_ok(
            &call,
            &me,
            &response(403, json!({"reason": "other"}))
        ));
        assert!(!answer_ok(&call, &me, &response(200, json!({}))));
    }

    /// A directory removed when the test ends.
    struct TempDir(PathBuf);

    impl TempDir {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A self-signed pair for `localhost` (enough for the client to load it).
    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn replace(path: &Path, body: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn a_rotated_pair_is_loaded_and_a_half_rotated_one_is_not() {
        let mut tag = [0u8; 8];
        getrandom::fill(&mut tag).unwrap();
        let path =
            std::env::temp_dir().join(format!("certbind-consumer-{}", u64::from_le_bytes(tag)));
        std::fs::create_dir_all(&path).unwrap();
        let dir = TempDir(path);
        let (ca, _) = pair();
        let (crt_a, key_a) = pair();
        std::fs::write(dir.path().join("ca.crt"), &ca).unwrap();
        std::fs::write(dir.path().join("consumer.crt"), &crt_a).unwrap();
        std::fs::write(dir.path().join("consumer.key"), &key_a).unwrap();
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut consumer = Consumer::new(ConsumerConfig {
            authz: addr,
            orders: addr,
            billing: addr,
            pki_dir: dir.path().to_owned(),
            name: "consumer".into(),
            rounds: 1,
            interval: Duration::ZERO,
            least_privilege: false,
            dpop: None,
        })
        .unwrap();
        assert!(!consumer.reload_if_rotated(), "nothing changed yet");
        // Key first, as `pki rotate` writes: the new key with the old certificate is refused.
        let (crt_b, key_b) = pair();
        replace(&dir.path().join("consumer.key"), &key_b);
        assert!(!consumer.reload_if_rotated());
        assert_eq!(consumer.certificate_reloads(), 0);
        replace(&dir.path().join("consumer.crt"), &crt_b);
        assert!(consumer.reload_if_rotated());
        assert_eq!(consumer.certificate_reloads(), 1);
        assert!(!consumer.reload_if_rotated(), "loaded once");
    }
}
