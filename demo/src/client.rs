//! A small HTTPS client for the demo workloads: rustls (ring) with an optional client
//! certificate and a custom CA, one HTTP/1.1 request per connection, any method, headers and raw
//! path, and a TLS refusal reported apart from every other failure.

use certbind_core::binding::SpiffeId;
use certbind_tls::SpiffeServerVerifier;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How long one exchange (connect, handshake, request, response) may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response body read.
const MAX_BODY: usize = 1 << 20;

/// Why a request got no HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// The client could not be set up (unreadable CA, certificate or key).
    Config(String),
    /// No TCP connection (nothing listening, unreachable).
    Connect(String),
    /// The TLS layer refused: the server demanded a certificate we did not have, did not trust
    /// ours, or we did not trust its own.
    TlsRefused(String),
    /// The connection broke, or the peer answered something that is not HTTP/1.1.
    Http(String),
    /// No answer within the timeout.
    Timeout,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "client setup: {e}"),
            Self::Connect(e) => write!(f, "connect: {e}"),
            Self::TlsRefused(e) => write!(f, "TLS handshake refused: {e}"),
            Self::Http(e) => write!(f, "HTTP: {e}"),
            Self::Timeout => write!(f, "no answer in time"),
        }
    }
}

impl std::error::Error for ClientError {}

/// One HTTP request. `path` is sent byte for byte as the request target (`/a/../b`, `//a` and
/// `/a%2Fb` are not normalised), so attacks can say exactly what goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    pub fn post(path: &str) -> Self {
        Self::new("POST", path)
    }

    /// Adds a header; the same name twice sends it twice.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// An `application/x-www-form-urlencoded` body.
    pub fn form(mut self, pairs: &[(&str, &str)]) -> Self {
        self.body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
            .into_bytes();
        self.header("content-type", "application/x-www-form-urlencoded")
    }

    /// A JSON body.
    pub fn json(mut self, value: &serde_json::Value) -> Self {
        self.body = value.to_string().into_bytes();
        self.header("content-type", "application/json")
    }
}

/// One HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, or why it is not (with the status and the body).
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    /// A top-level string member of a JSON body (`reason`, `error`, ...).
    pub fn json_str(&self, key: &str) -> Option<String> {
        self.json().ok()?.get(key)?.as_str().map(str::to_owned)
    }
}

/// A TLS client trusting one CA bundle (re-read when it changes) and presenting at most one
/// client certificate; it accepts only a demo server's SPIFFE ID (exactly one after
/// [`HttpsClient::expecting`]). Cheap to clone.
#[derive(Clone)]
pub struct HttpsClient {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    timeout: Duration,
    ca: std::path::PathBuf,
    identity: Option<Arc<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>>,
}

impl fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HttpsClient({:?})", self.server_name)
    }
}

/// The certificates of a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ClientError::Config(format!(
            "{}: no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ClientError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))
}

impl HttpsClient {
    /// Trusts the CA certificates of `ca_pem` (a PEM file) and presents `identity` (chain and
    /// key) when the server asks for one. The server must prove `server_name`.
    pub fn new(
        ca_pem: &Path,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
        server_name: &str,
    ) -> Result<Self, ClientError> {
        let servers =
            certbind_tls::demo_servers().map_err(|e| ClientError::Config(e.to_string()))?;
        Self::build(ca_pem, identity.map(Arc::new), server_name, servers)
    }

    /// The same client accepting only the server `name` (`spiffe://certbind.test/ns/demo/sa/<name>`).
    pub fn expecting(&self, name: &str) -> Result<Self, ClientError> {
        let id = certbind_tls::demo_id(name).map_err(|e| ClientError::Config(e.to_string()))?;
        let server_name = self.server_name.to_str().into_owned();
        let mut client = Self::build(&self.ca, self.identity.clone(), &server_name, vec![id])?;
        client.timeout = self.timeout;
        Ok(client)
    }

    fn build(
        ca_pem: &Path,
        identity: Option<Arc<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>>,
        server_name: &str,
        servers: Vec<SpiffeId>,
    ) -> Result<Self, ClientError> {
        let verifier = SpiffeServerVerifier::from_file(ca_pem, servers)
            .map_err(|e| ClientError::Config(format!("CA {}: {e}", ca_pem.display())))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &identity {
            Some(pair) => builder
                .with_client_auth_cert(pair.0.clone(), pair.1.clone_key())
                .map_err(|e| ClientError::Config(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        // HTTP/1.1 only: one request per connection keeps every attack on its own handshake.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            server_name: ServerName::try_from(server_name.to_owned())
                .map_err(|e| ClientError::Config(format!("server name {server_name:?}: {e}")))?,
            timeout: DEFAULT_TIMEOUT,
            ca: ca_pem.to_owned(),
            identity,
        })
    }

    /// The client of a demo workload: trusts `<pki>/ca.crt`, presents `<pki>/<name>.crt` and
    /// `<pki>/<name>.key` (or nothing for `None`), expects the server name `localhost`.
    pub fn for_workload(pki_dir: &Path, name: Option<&str>) -> Result<Self, ClientError> {
        let ca = pki_dir.join("ca.crt");
        let identity = match name {
            Some(name) => Some((
                read_certs(&pki_dir.join(format!("{name}.crt")))?,
                read_key(&pki_dir.join(format!("{name}.key")))?,
            )),
            None => None,
        };
        Self::new(&ca, identity, "localhost")
    }

    /// The same client with another time limit per exchange.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// One request on a fresh connection to `addr`.
    pub async fn send(&self, addr: SocketAddr, request: &Request) -> Result<Response, ClientError> {
        tokio::time::timeout(self.timeout, self.exchange(addr, request))
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    async fn exchange(&self, addr: SocketAddr, request: &Request) -> Result<Response, ClientError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connect(format!("{addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let tls = TlsConnector::from(Arc::clone(&self.config))
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| classify(&e, "handshake"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| classify(&e, "HTTP handshake"))?;
        // The connection task ends with the exchange. When it dies first (a TLS 1.3 server
        // refuses the client certificate only after the handshake), the request future just
        // says "canceled": the real cause is the task's own error.
        let mut driver = tokio::spawn(conn);
        let outcome = async {
            let response = match sender.send_request(build(request)?).await {
                Ok(response) => response,
                Err(e) => {
                    let cause = tokio::time::timeout(Duration::from_secs(1), &mut driver).await;
                    return Err(match cause {
                        Ok(Ok(Err(conn))) => match classify(&conn, "request") {
                            tls @ ClientError::TlsRefused(_) => tls,
                            _ => classify(&e, "request"),
                        },
                        _ => classify(&e, "request"),
                    });
                }
            };
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| ClientError::Http(format!("reading the body: {e}")))?
                .to_bytes()
                .to_vec();
            Ok(Response {
                status,
                headers,
                body,
            })
        }
        .await;
        driver.abort();
        outcome
    }
}

/// The hyper request for `request`, with `Host: localhost` and `Connection: close`.
fn build(request: &Request) -> Result<hyper::Request<Full<Bytes>>, ClientError> {
    let method = hyper::Method::from_bytes(request.method.as_bytes())
        .map_err(|e| ClientError::Http(format!("method {:?}: {e}", request.method)))?;
    // Built from a path-and-query alone, the URI is sent as written (origin form): no `..`
    // resolution, no slash merging, no percent decoding.
    let uri = hyper::Uri::builder()
        .path_and_query(request.path.as_str())
        .build()
        .map_err(|e| ClientError::Http(format!("path {:?}: {e}", request.path)))?;
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header(hyper::header::HOST, "localhost")
        .header(hyper::header::CONNECTION, "close");
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder
        .body(Full::new(Bytes::from(request.body.clone())))
        .map_err(|e| ClientError::Http(format!("building the request: {e}")))
}

/// A rustls error anywhere in the chain is a TLS refusal; anything else is an HTTP failure.
/// (`io::Error::source` skips the error it wraps, so each io::Error is opened by hand.)
fn classify(error: &(dyn std::error::Error + 'static), doing: &str) -> ClientError {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return ClientError::TlsRefused(format!("{doing}: {tls}"));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return ClientError::TlsRefused(format!("{doing}: {tls}"));
        }
        next = e.source();
    }
    ClientError::Http(format!("{doing}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_paths_are_sent_as_written() {
        for path in [
            "/orders/../billing/1",
            "//orders",
            "/orders%2F1",
            "/orders/1?access_token=x",
        ] {
            let request = build(&Request::get(path)).unwrap();
            assert_eq!(request.uri().to_string(), path);
        }
    }

    #[test]
    fn repeated_headers_are_all_sent() {
        let request = build(
            &Request::get("/")
                .header("x-a", "1")
                .header("x-a", "2")
                .bearer("t"),
        )
        .unwrap();
        let values: Vec<_> = request.headers().get_all("x-a").iter().collect();
        assert_eq!(values.len(), 2);
        assert_eq!(request.headers()["authorization"], "Bearer t");
    }

    #[test]
    fn refuses_a_path_that_is_not_a_request_target() {
        assert!(matches!(
            build(&Request::get("no slash with space")),
            Err(ClientError::Http(_))
        ));
    }

    #[test]
    fn a_rustls_error_inside_an_io_error_is_a_tls_refusal() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        );
        assert!(matches!(classify(&io, "x"), ClientError::TlsRefused(_)));
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(matches!(classify(&plain, "x"), ClientError::Http(_)));
    }

    #[test]
    fn forms_are_url_encoded() {
        let request = Request::post("/token").form(&[("audience", "spiffe://a/b c")]);
        assert_eq!(request.body, b"audience=spiffe%3A%2F%2Fa%2Fb+c");
    }
}
