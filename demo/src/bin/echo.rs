//! certbind-echo: the demo upstream (CONTRACT §2). Answers every request with what crossed the
//! sidecar: `{"service","method","path","certbind":{every x-certbind-* header}}`.
//!
//! Usage: `certbind-echo <service-name> <listen-addr>`, e.g. `certbind-echo orders 127.0.0.1:7001`.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

fn echo(service: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let certbind: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-certbind-"))
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), serde_json::Value::String(value))
        })
        .collect();
    let body = serde_json::json!({
        "service": service,
        "method": req.method().as_str(),
        "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "certbind": certbind,
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(service), Some(addr)) = (args.next(), args.next()) else {
        eprintln!("usage: certbind-echo <service-name> <listen-addr>");
        return std::process::ExitCode::from(2);
    };
    let addr: SocketAddr = match addr.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("certbind-echo: bad listen address {addr:?}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("certbind-echo: cannot listen on {addr}: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    eprintln!("certbind-echo: {service} listening on {addr}");
    let service: Arc<str> = service.into();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let resp = echo(&service, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            // A peer that hangs up mid-request is not our concern.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
