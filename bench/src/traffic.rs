//! Mixed valid and hostile traffic, shared by `soak` and `overload`: the kinds of request and the
//! answer each must get (status and CONTRACT §4 reason), their credentials (a real token, the
//! rest forged with the authz-server's own key), one request on a keep-alive connection, and a
//! token refresher (tokens live 300 s, a run may last longer).

use crate::load::Sender;
use crate::mint;
use crate::setup::Bench;
use certbind_tests::tokens::{Forge, authz_active_key};
use http_body_util::Empty;
use hyper::body::Bytes;
use serde_json::Value;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// One kind of request and the answer it must get.
pub struct Kind {
    pub name: &'static str,
    pub path: &'static str,
    /// Each request asks for its own resource, `<path><n>`: a decision-cache miss, so a PDP
    /// call for every one of them.
    pub distinct: bool,
    pub authorization: Option<String>,
    pub status: u16,
    /// The filter's counter this answer increments (`certbind.allowed`, `certbind.denied.<r>`).
    pub counter: &'static str,
}

impl Kind {
    /// The CONTRACT §4 reason of the expected answer (`None` for 200).
    pub fn reason(&self) -> Option<&'static str> {
        self.counter.strip_prefix("certbind.denied.")
    }

    /// Whether an allowed request of this kind goes on to the PDP (and so may be shed there).
    pub fn asks_the_pdp(&self) -> bool {
        self.status == 200 || self.status == 403
    }

    /// The path of the `n`-th request of this kind.
    pub fn path_of(&self, n: u64) -> String {
        if self.distinct {
            format!("{}{n}", self.path)
        } else {
            self.path.to_owned()
        }
    }
}

/// Token refresh period: tokens live 300 s; like a real client, a run gets a fresh token (and
/// rebuilds the kinds derived from it) this often.
pub const REFRESH: Duration = Duration::from_secs(60);

/// Mints every kind's credentials: a real token from the authz-server, the rest forged with
/// the authz-server's own key so each is refused for exactly one reason.
pub struct Minter {
    authz: std::net::SocketAddr,
    mtls: Arc<rustls::ClientConfig>,
    forge: Forge,
}

impl Minter {
    pub fn new(bench: &Bench) -> Result<Self, String> {
        let issuer = format!("https://{}", bench.authz_addr);
        let key = authz_active_key(&bench.dir().join("authz-state")).map_err(|e| e.to_string())?;
        Ok(Self {
            authz: bench.authz_addr,
            mtls: Arc::clone(&bench.authz_mtls),
            forge: Forge::new(&issuer, &bench.pki, key),
        })
    }

    /// [`kinds`] with a freshly issued token.
    pub fn kinds(&self) -> Result<Vec<Kind>, String> {
        let token = mint::tokens(self.authz, Arc::clone(&self.mtls), 1)?
            .pop()
            .ok_or("the authz-server gave no token")?;
        kinds(&self.forge, &token)
    }
}

/// Index of each kind in [`kinds`]' answer.
pub const VALID: usize = 0;
pub const POLICY_DENIED: usize = 1;
pub const EXPIRED: usize = 2;
pub const BAD_SIGNATURE: usize = 3;
pub const MISSING_TOKEN: usize = 4;
pub const BINDING_MISMATCH: usize = 5;
pub const MALFORMED_TOKEN: usize = 6;
pub const VALID_FRESH: usize = 7;

/// Every kind, at the indexes above: `valid` (the same order every time, its decision cached),
/// six hostile kinds each refused for one reason, and `valid_fresh` (an allowed order of its
/// own each time, so a PDP decision each time).
pub fn kinds(forge: &Forge, token: &str) -> Result<Vec<Kind>, String> {
    let mut expired = forge
        .claims(mint::CLIENT, "orders", mint::SCOPE)
        .map_err(|e| e.to_string())?;
    let now = certbind_tests::tokens::now();
    expired["iat"] = (now - 400).into();
    expired["nbf"] = (now - 400).into();
    expired["exp"] = (now - 100).into();
    // Bound to inventory's certificate, sent on the consumer's connection: a stolen token.
    let stolen = forge
        .token("inventory", "orders", mint::SCOPE)
        .map_err(|e| e.to_string())?;
    // One signature character changed well inside the signature: every bit of it counts (the
    // last character carries padding bits, and changing those is a malformed token instead).
    let mut bad_signature = token.as_bytes().to_vec();
    let at = bad_signature.len().saturating_sub(10);
    if let Some(c) = bad_signature.get_mut(at) {
        *c = if *c == b'A' { b'B' } else { b'A' };
    }
    let bad_signature = String::from_utf8(bad_signature).map_err(|e| e.to_string())?;
    let bearer = |t: &str| Some(format!("Bearer {t}"));
    let kind = |name, path, authorization, status, counter| Kind {
        name,
        path,
        distinct: false,
        authorization,
        status,
        counter,
    };
    Ok(vec![
        kind("valid", mint::PATH, bearer(token), 200, "certbind.allowed"),
        kind(
            "policy_denied",
            "/admin",
            bearer(token),
            403,
            "certbind.denied.policy_denied",
        ),
        kind(
            "expired",
            mint::PATH,
            bearer(&forge.sign(&expired)),
            401,
            "certbind.denied.expired",
        ),
        kind(
            "bad_signature",
            mint::PATH,
            bearer(&bad_signature),
            401,
            "certbind.denied.bad_signature",
        ),
        kind(
            "missing_token",
            mint::PATH,
            None,
            401,
            "certbind.denied.missing_token",
        ),
        kind(
            "binding_mismatch",
            mint::PATH,
            bearer(&stolen),
            401,
            "certbind.denied.binding_mismatch",
        ),
        kind(
            "malformed_token",
            mint::PATH,
            bearer("not.a.jwt"),
            401,
            "certbind.denied.malformed_token",
        ),
        Kind {
            distinct: true,
            ..kind(
                "valid_fresh",
                "/orders/fresh-",
                bearer(token),
                200,
                "certbind.allowed",
            )
        },
    ])
}

/// One request of `kind` to `path` on a keep-alive connection, read fully.
pub async fn one(sender: &mut Sender, kind: &Kind, path: &str) -> Result<(u16, String), String> {
    let mut request = hyper::Request::get(path).header("host", "localhost");
    if let Some(a) = &kind.authorization {
        request = request.header("authorization", a);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let (status, body) = crate::load::exchange(sender, request).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The `reason` of a certbind answer's JSON body, if it is one.
pub fn reason(body: &str) -> Option<String> {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["reason"].as_str().map(str::to_owned))
}

/// The kinds in use now (replaced every [`REFRESH`]).
pub type Current = Arc<RwLock<Arc<Vec<Kind>>>>;

/// Replaces `current` with freshly minted kinds every [`REFRESH`] until `end`; returns how many
/// times it did.
pub fn refresh_until(
    minter: Minter,
    current: Current,
    end: Instant,
) -> std::thread::JoinHandle<Result<u32, String>> {
    std::thread::spawn(move || {
        let mut refreshed = 0;
        while Instant::now() + REFRESH < end {
            std::thread::sleep(REFRESH);
            let fresh = minter.kinds()?;
            if let Ok(mut c) = current.write() {
                *c = Arc::new(fresh);
                refreshed += 1;
            }
        }
        Ok(refreshed)
    })
}
