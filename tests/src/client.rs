//! A small blocking HTTP/1.1 client over rustls (with a client certificate or none) or plain
//! TCP: one request per connection, returning status, headers and body.

use crate::Error;
use certbind_core::binding::SpiffeId;
use certbind_tls::SpiffeServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long any one connection may take to connect, or wait for bytes.
const TIMEOUT: Duration = Duration::from_secs(15);
/// The largest response this client reads.
const MAX_RESPONSE: usize = 4 << 20;

/// The request builder is the demo client's (one type for the attack table and the tests); this
/// client adds `Host`, `Content-Length` and `Connection: close` when it writes one.
pub use certbind_demo::client::Request;
/// The response is the demo client's too.
pub use certbind_demo::client::Response;

fn request_bytes(request: &Request) -> Vec<u8> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nhost: localhost\r\n",
        request.method, request.path
    );
    for (name, value) in &request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !request.body.is_empty() || request.method != "GET" {
        head.push_str(&format!("content-length: {}\r\n", request.body.len()));
    }
    head.push_str("connection: close\r\n\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&request.body);
    bytes
}

/// A certificate chain and its private key.
type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// A TLS client trusting one CA bundle (re-read when it changes), optionally presenting a
/// client certificate, accepting only a demo server's SPIFFE ID (exactly one after
/// [`TlsClient::expecting`]). Cheap to clone.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    ca: PathBuf,
    /// Loaded once: a renewer may be between its key's and its certificate's rename when
    /// [`TlsClient::expecting`] builds the pinned client.
    identity: Option<Arc<Identity>>,
    versions: Vec<&'static rustls::SupportedProtocolVersion>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsClient({:?})", self.server_name)
    }
}

impl TlsClient {
    /// Trusts `ca` (PEM); presents `identity` = (certificate chain PEM, private key PEM) if given.
    /// The server must prove the name `localhost` (every demo server certificate carries it)
    /// and be one of the demo servers (authz, pdp, orders, billing).
    pub fn new(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, Error> {
        Self::with_versions(ca, identity, rustls::DEFAULT_VERSIONS)
    }

    /// The same client accepting only the server `name` (`spiffe://certbind.test/ns/demo/sa/<name>`).
    pub fn expecting(&self, name: &str) -> Result<Self, Error> {
        let id = certbind_tls::demo_id(name).map_err(|e| Error::Tls(e.to_string()))?;
        self.expecting_id(id)
    }

    /// The same client accepting only the server `id`.
    pub fn expecting_id(&self, id: SpiffeId) -> Result<Self, Error> {
        Self::build(&self.ca, self.identity.clone(), &self.versions, vec![id])
    }

    /// Like [`TlsClient::new`], offering only these TLS versions (e.g. `&[&rustls::version::TLS12]`
    /// to prove a TLS-1.3-only listener refuses TLS 1.2).
    pub fn with_versions(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<Self, Error> {
        let servers = certbind_tls::demo_servers().map_err(|e| Error::Tls(e.to_string()))?;
        let identity = match identity {
            Some((cert, key)) => {
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| Error::Tls(format!("key {}: {e}", key.display())))?;
                Some(Arc::new((read_certs(cert)?, key)))
            }
            None => None,
        };
        Self::build(ca, identity, versions, servers)
    }

    fn build(
        ca: &Path,
        identity: Option<Arc<Identity>>,
        versions: &[&'static rustls::SupportedProtocolVersion],
        servers: Vec<SpiffeId>,
    ) -> Result<Self, Error> {
        let verifier = SpiffeServerVerifier::from_file(ca, servers)
            .map_err(|e| Error::Tls(format!("CA {}: {e}", ca.display())))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| Error::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &identity {
            Some(pair) => builder
                .with_client_auth_cert(pair.0.clone(), pair.1.clone_key())
                .map_err(|e| Error::Tls(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        Ok(Self {
            config: Arc::new(config),
            server_name: ServerName::try_from("localhost")
                .map_err(|e| Error::Tls(e.to_string()))?
                .to_owned(),
            ca: ca.to_owned(),
            identity,
            versions: versions.to_vec(),
        })
    }

    /// The client for a demo PKI directory: trusts `ca.crt`, presents `<name>.crt`/`<name>.key`.
    pub fn for_workload(pki_dir: &Path, name: Option<&str>) -> Result<Self, Error> {
        let ca = pki_dir.join("ca.crt");
        match name {
            Some(name) => {
                let cert = pki_dir.join(format!("{name}.crt"));
                let key = pki_dir.join(format!("{name}.key"));
                Self::new(&ca, Some((&cert, &key)))
            }
            None => Self::new(&ca, None),
        }
    }

    /// One request on a new connection. A refused handshake is [`Error::Tls`].
    pub fn send(&self, addr: SocketAddr, request: &Request) -> Result<Response, Error> {
        self.send_resuming(addr, request)
            .map(|(response, _)| response)
    }

    /// [`TlsClient::send`], also telling whether the TLS session was resumed (a ticket from an
    /// earlier connection of this client, kept in its session store) rather than a full
    /// handshake.
    pub fn send_resuming(
        &self,
        addr: SocketAddr,
        request: &Request,
    ) -> Result<(Response, bool), Error> {
        let tcp = connect(addr)?;
        let conn = ClientConnection::new(Arc::clone(&self.config), self.server_name.clone())
            .map_err(|e| Error::Tls(e.to_string()))?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| classify(e, "TLS handshake"))?;
        }
        let resumed = tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        tls.write_all(&request_bytes(request))
            .and_then(|()| tls.flush())
            .map_err(|e| classify(e, "sending the request"))?;
        read_response(&mut tls).map(|response| (response, resumed))
    }
}

/// One plain-HTTP request on a new connection (Envoy's admin port, the upstreams).
pub fn http_plain(addr: SocketAddr, request: &Request) -> Result<Response, Error> {
    let mut tcp = connect(addr)?;
    tcp.write_all(&request_bytes(request))
        .map_err(|e| classify(e, "sending the request"))?;
    read_response(&mut tcp)
}

fn connect(addr: SocketAddr) -> Result<TcpStream, Error> {
    let tcp = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(Error::io(format!("connecting to {addr}")))?;
    tcp.set_read_timeout(Some(TIMEOUT))
        .and_then(|()| tcp.set_write_timeout(Some(TIMEOUT)))
        .and_then(|()| tcp.set_nodelay(true))
        .map_err(Error::io("setting socket options"))?;
    Ok(tcp)
}

/// The certificates of a PEM file (the demo client's reader).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    certbind_demo::client::read_certs(path).map_err(|e| Error::Tls(e.to_string()))
}

/// A rustls error inside an io::Error is a TLS refusal; anything else is I/O.
fn classify(e: std::io::Error, doing: &str) -> Error {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map(ToString::to_string);
    match tls {
        Some(tls) => Error::Tls(format!("{doing}: {tls}")),
        None => Error::Io {
            context: doing.to_owned(),
            source: e,
        },
    }
}

/// Reads one response: framed by `content-length`, `chunked`, or the end of the connection.
fn read_response(stream: &mut impl Read) -> Result<Response, Error> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(response) = parse_complete(&buf, false)? {
            return Ok(response);
        }
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            // A peer that closes without close_notify: whatever arrived is all there is.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(classify(e, "reading the response")),
        };
        if n == 0 {
            return match parse_complete(&buf, true)? {
                Some(response) => Ok(response),
                None if buf.is_empty() => {
                    Err(Error::Http("connection closed before any response".into()))
                }
                None => Err(Error::Http(format!(
                    "connection closed mid-response: {}",
                    String::from_utf8_lossy(&buf)
                ))),
            };
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE {
            return Err(Error::Http("response larger than 4 MiB".into()));
        }
    }
}

/// `Some(response)` once `buf` holds a whole response (`eof`: the peer has closed).
fn parse_complete(buf: &[u8], eof: bool) -> Result<Option<Response>, Error> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| Error::Http(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &buf[head_end + 4..];
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let body = if let Some(len) = find("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| Error::Http(format!("bad content-length {len:?}")))?;
        if rest.len() < len {
            return Ok(None);
        }
        rest[..len].to_vec()
    } else if find("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        match dechunk(rest)? {
            Some(body) => body,
            None => return Ok(None),
        }
    } else if eof || status == 204 || status == 304 {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response {
        status,
        headers,
        body,
    }))
}

/// Decodes a chunked body; `None` until the last chunk has arrived.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| Error::Http(format!("bad chunk size {size_text:?}")))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_chunked_and_close_delimited_bodies() {
        let r = parse_complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", false)
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "hi"));
        let chunked =
            b"HTTP/1.1 401 U\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n";
        let r = parse_complete(chunked, false).unwrap().unwrap();
        assert_eq!((r.status, r.text().as_str()), (401, "abc"));
        assert!(
            parse_complete(b"HTTP/1.1 200 OK\r\n\r\nsome", false)
                .unwrap()
                .is_none()
        );
        let r = parse_complete(b"HTTP/1.1 200 OK\r\n\r\nsome", true)
            .unwrap()
            .unwrap();
        assert_eq!(r.text(), "some");
    }

    #[test]
    fn waits_for_the_whole_body() {
        assert!(
            parse_complete(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab", false)
                .unwrap()
                .is_none()
        );
        assert!(
            parse_complete(b"HTTP/1.1 200 OK\r\ncontent-le", false)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn encodes_forms_like_a_browser() {
        let request = Request::post("/").form(&[("a", "spiffe://a/b c")]);
        assert_eq!(request.body, b"a=spiffe%3A%2F%2Fa%2Fb+c");
    }

    #[test]
    fn response_headers_are_found_in_any_case() {
        let r = parse_complete(
            b"HTTP/1.1 200 OK\r\nWWW-Authenticate: Bearer\r\ncontent-length: 0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
    }
}
