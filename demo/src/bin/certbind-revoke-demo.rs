//! certbind-revoke-demo: the revocation step of `make demo` (issue 8). The `inventory` host is
//! marked compromised: the operator revokes its subject over the admin API, and its
//! previously valid token is refused by the orders sidecar within a second while `consumer`
//! is unaffected. Prints one line per step; exits non-zero when an answer differs.

use certbind_demo::authz::AuthzClient;
use certbind_demo::client::{HttpsClient, Request};
use certbind_demo::defaults;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const INVENTORY: &str = "spiffe://certbind.test/ns/demo/sa/inventory";

#[derive(Debug, Parser)]
#[command(
    name = "certbind-revoke-demo",
    version,
    about = "certbind's revocation demo step"
)]
struct Cli {
    /// The authz-server (token endpoint and admin API).
    #[arg(long, default_value = defaults::AUTHZ, value_parser = certbind_demo::socket_addr)]
    authz: SocketAddr,
    /// The orders sidecar listener.
    #[arg(long, default_value = defaults::ORDERS, value_parser = certbind_demo::socket_addr)]
    orders: SocketAddr,
    /// Holds ca.crt and <name>.crt/.key (operator included).
    #[arg(long, default_value = defaults::PKI_DIR)]
    pki_dir: PathBuf,
    /// Keep the ban at the end (by default it is lifted, so `make attacks` can run again; the
    /// revoked token stays refused either way).
    #[arg(long)]
    keep_ban: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certbind-revoke-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<(), String> {
    let client = |name: &str| {
        HttpsClient::for_workload(&cli.pki_dir, Some(name))
            .map(|c| c.with_timeout(Duration::from_secs(5)))
            .map_err(|e| format!("{name}: {e}"))
    };
    let (inventory, consumer, operator) = (
        client("inventory")?,
        client("consumer")?,
        client("operator")?,
    );
    let token = |c: &HttpsClient| {
        let authz = AuthzClient::new(c.clone(), cli.authz);
        async move {
            authz
                .token("orders", "orders:read")
                .await
                .map(|t| t.access_token)
                .map_err(|e| e.to_string())
        }
    };
    let call = |c: &HttpsClient, t: &str| {
        let request = Request::get("/orders/1").bearer(t);
        let c = c.clone();
        async move {
            c.send(cli.orders, &request)
                .await
                .map(|r| (r.status, r.json_str("reason").unwrap_or_default()))
                .map_err(|e| e.to_string())
        }
    };
    let expect = |what: &str, got: (u16, String), status: u16| -> Result<(), String> {
        let reason = if got.1.is_empty() { "ok" } else { &got.1 };
        println!("  {what:<58} {} {reason}", got.0);
        if got.0 == status {
            Ok(())
        } else {
            Err(format!("{what}: expected {status}, got {} {reason}", got.0))
        }
    };

    println!("revocation: the inventory host is marked compromised");
    let inventory_token = token(&inventory).await?;
    let consumer_token = token(&consumer).await?;
    expect(
        "inventory GET /orders/1 (valid token)",
        call(&inventory, &inventory_token).await?,
        200,
    )?;
    expect(
        "consumer  GET /orders/1",
        call(&consumer, &consumer_token).await?,
        200,
    )?;

    let revoke = |lift: bool| {
        let mut body = serde_json::json!({
            "kind": "subject", "value": INVENTORY, "reason": "host compromised (demo)"
        });
        if lift {
            body["lift"] = true.into();
        }
        let request = Request::post("/v1/admin/revocations").json(&body);
        let operator = operator.clone();
        async move {
            operator
                .send(cli.authz, &request)
                .await
                .map_err(|e| e.to_string())
        }
    };
    let answer = revoke(false).await?;
    let revoked_at = Instant::now();
    if answer.status != 200 {
        return Err(format!(
            "admin API refused the revocation: {} {}",
            answer.status,
            answer.text()
        ));
    }
    println!(
        "  operator POST /v1/admin/revocations subject=inventory      200 seq={}",
        answer
            .json()
            .ok()
            .and_then(|v| v.get("seq").cloned())
            .unwrap_or_default()
    );
    let refused_after = loop {
        let got = call(&inventory, &inventory_token).await?;
        if got == (401, "revoked".to_owned()) {
            break revoked_at.elapsed();
        }
        if revoked_at.elapsed() > Duration::from_secs(3) {
            return Err(format!(
                "inventory's token still answered {} {} 3 s after the revocation",
                got.0, got.1
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!(
        "  inventory GET /orders/1 (same token)                       401 revoked  after {} ms",
        refused_after.as_millis()
    );
    expect(
        "consumer  GET /orders/1 (unaffected)",
        call(&consumer, &consumer_token).await?,
        200,
    )?;
    match token(&inventory).await {
        Err(e) => {
            println!("  inventory POST /token (new token)                          refused: {e}")
        }
        Ok(_) => return Err("the banned subject got a new token".into()),
    }
    if !cli.keep_ban {
        let lifted = revoke(true).await?;
        println!(
            "  operator lifts the ban (demo cleanup; the old token stays revoked)  {}",
            lifted.status
        );
    }
    if refused_after > Duration::from_secs(1) {
        return Err(format!(
            "refused after {} ms: more than a second",
            refused_after.as_millis()
        ));
    }
    Ok(())
}
