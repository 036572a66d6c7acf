//! The facts of one request as Envoy knows them: its headers (the caller's `x-certbind-*`
//! removed first) and its connection's TLS facts and peer, read once per connection.

use crate::host;
use crate::vm::{ConnFacts, VmRef};
use certbind_core::flow::log_safe;
use certbind_core::flow::{RequestFacts, is_reserved_header, source_ip};
use std::rc::Rc;

/// Envoy's `connection.id` (a uint64, serialised as 8 little-endian bytes), if it answers.
fn connection_id() -> Option<u64> {
    let bytes = host::property_bytes(&["connection", "id"])?;
    <[u8; 8]>::try_from(bytes.as_slice())
        .ok()
        .map(u64::from_le_bytes)
}

/// A header value as text: Envoy passes obs-text (0x80-0xff) through. A value that is not
/// UTF-8 becomes lossy text (U+FFFD), which no token, proof or path check accepts. (The
/// lossy reader goes a byte at a time; UTF-8 text is checked a word at a time first.)
fn header_text(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(value).into_owned(),
    }
}

/// The facts of the current request, read from Envoy. Caller-sent `x-certbind-*` headers, and
/// their `_` spellings, are removed here, before anything else can happen to the request.
/// `None` (refused) when Envoy's header map cannot be read whole.
pub fn read_facts(vm: &VmRef) -> Option<RequestFacts> {
    // One host call for every header, read in place (names are HTTP tokens: ASCII); only the
    // values the checks use become text.
    let headers = host::request_headers()?;
    let mut facts = RequestFacts::default();
    for (name, value) in headers.pairs() {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is_reserved_header(name) {
            host::remove_request_header(&String::from_utf8_lossy(name));
        } else if is("authorization") {
            if facts.authorization.is_none() {
                facts.authorization = Some(header_text(value));
            }
        } else if is("x-request-id") {
            facts.request_id = header_text(value);
        } else if is(":method") {
            facts.method = header_text(value);
        } else if is(":path") {
            facts.path = header_text(value);
        } else if is("dpop") {
            facts.dpop.push(header_text(value));
        }
    }
    let conn_id = connection_id();
    if let Some(id) = conn_id {
        let mut v = vm.try_borrow_mut().ok()?;
        let known = v.conns.probe(&id, 0, |known| {
            facts.peer = known.peer.clone();
            facts.source_ip = known.source_ip.clone();
            facts.tls_version = known.tls_version.clone();
            facts.local_uri_san = known.local_uri_san.clone();
        });
        if known.is_some() {
            return Some(facts);
        }
    }
    let property = host::property;
    let mtls = host::property_bytes(&["connection", "mtls"])
        .is_some_and(|b| b.as_slice() == [1] || b.as_slice() == b"true");
    let digest = property(&["connection", "sha256_peer_certificate_digest"]);
    facts.source_ip = property(&["source", "address"]).map(|a| Rc::from(source_ip(&a)));
    facts.tls_version = property(&["connection", "tls_version"]).map(Rc::from);
    let mut v = vm.try_borrow_mut().ok()?;
    if v.config().audience.is_none() {
        // One mesh-wide configuration: this listener's certificate names the service.
        facts.local_uri_san = property(&["connection", "uri_san_local_certificate"]).map(Rc::from);
        if v.config()
            .audience_for(facts.local_uri_san.as_deref())
            .is_none()
        {
            log::warn!(
                "certbind: no audience configured and the listener's certificate has no SPIFFE ID of the trust domain (URI SAN {}): every token is refused as wrong_audience",
                facts
                    .local_uri_san
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), log_safe)
            );
        }
    }
    facts.peer = v.engine.peer_identity(mtls, digest.as_deref(), || {
        let pem = property(&["connection", "peer_certificate"]);
        log::debug!(
            "certbind new peer certificate (PEM {})",
            if pem.is_some() {
                "available"
            } else {
                "absent: first URI SAN used"
            }
        );
        (pem, property(&["connection", "uri_san_peer_certificate"]))
    });
    if let Some(id) = conn_id {
        let known = ConnFacts {
            peer: facts.peer.clone(),
            source_ip: facts.source_ip.clone(),
            tls_version: facts.tls_version.clone(),
            local_uri_san: facts.local_uri_san.clone(),
        };
        v.conns.insert(id, known, u64::MAX, 0);
    }
    Some(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_value_that_is_not_utf8_becomes_lossy_text() {
        assert_eq!(header_text(b"Bearer a.b.c"), "Bearer a.b.c");
        assert_eq!(header_text(b"Bearer \xff"), "Bearer \u{fffd}");
    }
}
