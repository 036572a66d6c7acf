//! Usage-bound tokens in the demo (issue 22): a token captured and replayed after its owner
//! spent its uses, and a race of many parallel uses of one token, run before the attack table
//! so its rows can replay them.

use crate::authz::AuthzClient;
use crate::client::{HttpsClient, Request};
use std::net::SocketAddr;

/// A usage-bound token whose owner spent every use (`max_uses` admitted calls): what a thief
/// who captured it on the way holds.
pub async fn spent_token(
    authz: &AuthzClient,
    owner: &HttpsClient,
    orders: SocketAddr,
    max_uses: u32,
) -> Result<String, String> {
    let token = authz
        .usage_token("orders", "orders:read", max_uses)
        .await
        .map_err(|e| format!("no usage-bound token: {e}"))?
        .access_token;
    for i in 0..max_uses {
        let r = owner
            .send(orders, &Request::get("/orders/1").bearer(&token))
            .await
            .map_err(|e| format!("use {i} of the usage-bound token: {e}"))?;
        if r.status != 200 {
            return Err(format!("use {i} of {max_uses} was refused: {}", r.status));
        }
    }
    Ok(token)
}

/// What a race of parallel uses of one token did.
#[derive(Debug, Clone)]
pub struct Race {
    pub token: String,
    pub max_uses: u32,
    pub attempts: usize,
    pub admitted: usize,
    /// Refused with `401 usage_exhausted`.
    pub exhausted: usize,
}

/// `attempts` parallel calls, each on its own connection, with one `max_uses`-use token.
pub async fn race(
    authz: &AuthzClient,
    caller: &HttpsClient,
    orders: SocketAddr,
    max_uses: u32,
    attempts: usize,
) -> Result<Race, String> {
    let token = authz
        .usage_token("orders", "orders:read", max_uses)
        .await
        .map_err(|e| format!("no usage-bound token: {e}"))?
        .access_token;
    let calls = (0..attempts).map(|_| {
        let (caller, request) = (caller.clone(), Request::get("/orders/1").bearer(&token));
        tokio::spawn(async move { until_definite(&caller, orders, &request).await })
    });
    let calls: Vec<_> = calls.collect();
    let (mut admitted, mut exhausted) = (0, 0);
    for call in calls {
        match call.await {
            Ok(Ok(true)) => admitted += 1,
            Ok(Ok(false)) => exhausted += 1,
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(format!("a racing task failed: {e}")),
        }
    }
    Ok(Race {
        token,
        max_uses,
        attempts,
        admitted,
        exhausted,
    })
}

/// One racing caller: `true` when admitted, `false` when refused as `usage_exhausted`. A 503
/// (a dependency slow under the burst: no use was counted) is tried again a few times.
async fn until_definite(
    caller: &HttpsClient,
    orders: SocketAddr,
    request: &Request,
) -> Result<bool, String> {
    for _ in 0..20 {
        let r = caller
            .send(orders, request)
            .await
            .map_err(|e| format!("a racing call failed: {e}"))?;
        match (r.status, r.json_str("reason").as_deref()) {
            (200, _) => return Ok(true),
            (401, Some("usage_exhausted")) => return Ok(false),
            (503, _) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            (status, _) => return Err(format!("a racing call got {status} {}", r.text())),
        }
    }
    Err("a racing call got only 503s".into())
}
