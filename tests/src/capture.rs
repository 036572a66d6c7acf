//! A capturing upstream: stands in for a demo upstream on its port and hands every request head
//! it receives to the test, so a test can see headers the echo service does not report
//! (`authorization`, `x-forwarded-client-cert`, ...).

use crate::Error;
use crate::ports::loopback;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

/// A request as the upstream received it: lower-case header names, in order.
#[derive(Debug, Clone)]
pub struct Captured {
    pub request_line: String,
    pub headers: Vec<(String, String)>,
}

impl Captured {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Listens on `127.0.0.1:<port>` until dropped (the listener thread ends with the process at
/// the latest; it only ever answers loopback requests with a fixed 200).
#[derive(Debug)]
pub struct CaptureUpstream {
    requests: mpsc::Receiver<Captured>,
}

impl CaptureUpstream {
    pub fn bind(port: u16) -> Result<Self, Error> {
        let listener = TcpListener::bind(loopback(port))
            .map_err(Error::io(format!("binding capture upstream on {port}")))?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("capture-upstream".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
                        match stream.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => break,
                        }
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let mut lines = text.split("\r\n");
                    let request_line = lines.next().unwrap_or_default().to_owned();
                    let headers = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        .collect();
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                    );
                    if tx
                        .send(Captured {
                            request_line,
                            headers,
                        })
                        .is_err()
                    {
                        break;
                    }
                }
            })
            .map_err(Error::io("starting the capture thread"))?;
        Ok(Self { requests: rx })
    }

    /// The next request received, waiting at most `timeout`.
    pub fn next(&self, timeout: Duration) -> Result<Captured, Error> {
        self.requests
            .recv_timeout(timeout)
            .map_err(|_| Error::Http(format!("no request reached the upstream in {timeout:?}")))
    }
}
