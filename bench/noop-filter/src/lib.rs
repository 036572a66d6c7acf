//! The no-op Wasm filter of scenario S2w: per request it reads `authorization` and the peer
//! certificate's SHA-256 digest and sets one header, so its cost is what merely entering a
//! proxy-wasm filter in Envoy's V8 costs (the floor under any Wasm filter, certbind's included).

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

/// The header set on every request: whether both facts were present (`1`) or not (`0`).
pub const SEEN_HEADER: &str = "x-noop-seen";

/// `1` when the request carried an Authorization header and a client certificate digest.
pub fn seen_value(authorization: bool, digest: bool) -> &'static str {
    if authorization && digest { "1" } else { "0" }
}

struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopHttp))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct NoopHttp;

impl Context for NoopHttp {}

impl HttpContext for NoopHttp {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        // The same two host calls every certbind request makes first.
        let authorization = self.get_http_request_header("authorization").is_some();
        let digest = self
            .get_property(vec!["connection", "sha256_peer_certificate_digest"])
            .is_some();
        self.set_http_request_header(SEEN_HEADER, Some(seen_value(authorization, digest)));
        Action::Continue
    }
}

// The SDK's `main!` expands to the `#[no_mangle] _initialize` export Envoy calls at load time;
// that export is the module's only unsafe surface.
#[allow(unsafe_code)]
mod entry {
    use super::*;
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Warn);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
    }}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_a_request_seen_only_with_both_facts() {
        assert_eq!(seen_value(true, true), "1");
        assert_eq!(seen_value(true, false), "0");
        assert_eq!(seen_value(false, true), "0");
    }
}
