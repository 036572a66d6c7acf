//! The benchmark's floor filters. Unconfigured (scenario S2w): per request it reads
//! `authorization` and the peer certificate's SHA-256 digest and sets one header, so its cost is
//! what merely entering a proxy-wasm filter in Envoy's V8 costs (the floor under any Wasm
//! filter, certbind's included). Configured with `verify <hex>` (scenario S2v): the same, plus
//! one call of Envoy's `verify_signature` with those arguments per request, so S2v − S2w is what
//! the host's ES256 verify costs through the ABI (the floor under a fresh token's cost, R9).

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, Status};
use std::rc::Rc;

/// The header set on every request: whether both facts were present (`1`) or not (`0`).
pub const SEEN_HEADER: &str = "x-noop-seen";

/// The plugin configuration's word before the hex of the `verify_signature` arguments.
pub const VERIFY_PREFIX: &str = "verify";

/// The answer Envoy writes for a signature that holds: `VerifySignatureResult { result: true }`.
pub const VERIFIED: [u8; 2] = [0x08, 0x01];

/// Whether the host's answer to `verify_signature` says the signature holds: exactly
/// [`VERIFIED`]; a refusal, an error, no answer or anything else is a no.
pub fn verified(answer: Result<Option<Vec<u8>>, Status>) -> bool {
    matches!(answer, Ok(Some(a)) if a.as_slice() == VERIFIED)
}

/// `1` when the request carried an Authorization header and a client certificate digest.
pub fn seen_value(authorization: bool, digest: bool) -> &'static str {
    if authorization && digest { "1" } else { "0" }
}

/// The `verify_signature` arguments of a configuration: `None` when it asks for no verify,
/// `Some(Err)` when it asks for one but the hex is broken.
pub fn verify_arguments(configuration: &str) -> Option<Result<Vec<u8>, String>> {
    let hex = configuration.trim().strip_prefix(VERIFY_PREFIX)?;
    Some(decode_hex(hex.trim()))
}

fn decode_hex(hex: &str) -> Result<Vec<u8>, String> {
    let digit = |c: u8| {
        (c as char)
            .to_digit(16)
            .ok_or(format!("not hex: {:?}", c as char))
    };
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return Err(format!("{} hex digits: not whole bytes", hex.len()));
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Ok((digit(*hi)? * 16 + digit(*lo)?) as u8),
            _ => Err("odd hex".into()),
        })
        .collect()
}

#[derive(Default)]
struct NoopRoot {
    verify: Option<Rc<[u8]>>,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let configuration = self.get_plugin_configuration().unwrap_or_default();
        match verify_arguments(&String::from_utf8_lossy(&configuration)) {
            None => true,
            Some(Ok(arguments)) => {
                self.verify = Some(arguments.into());
                true
            }
            Some(Err(e)) => {
                log::error!("noop: bad verify configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopHttp {
            verify: self.verify.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct NoopHttp {
    verify: Option<Rc<[u8]>>,
}

impl Context for NoopHttp {}

impl HttpContext for NoopHttp {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        // The same two host calls every certbind request makes first.
        let authorization = self.get_http_request_header("authorization").is_some();
        let digest = self
            .get_property(vec!["connection", "sha256_peer_certificate_digest"])
            .is_some();
        if let Some(arguments) = &self.verify {
            let answer = hostcalls::call_foreign_function("verify_signature", Some(arguments));
            if !verified(answer) {
                // A floor that did not verify measures nothing: the run sees 500s and fails.
                self.send_http_response(500, vec![], Some(b"verify_signature did not verify\n"));
                return Action::Pause;
            }
        }
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
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot::default()) });
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

    #[test]
    fn only_a_clean_yes_counts_as_verified() {
        assert!(verified(Ok(Some(VERIFIED.to_vec()))));
        for no in [
            Ok(Some(vec![0x08, 0x00])),
            Ok(Some(vec![0x08, 0x01, 0x12, 0x00])),
            Ok(Some(Vec::new())),
            Ok(None),
            Err(Status::NotFound),
            Err(Status::InternalFailure),
        ] {
            assert!(!verified(no.clone()), "{no:?}");
        }
    }

    #[test]
    fn reads_verify_arguments_only_when_asked_and_whole() {
        assert_eq!(verify_arguments(""), None);
        assert_eq!(verify_arguments("{}"), None);
        assert_eq!(
            verify_arguments("verify 0aff10"),
            Some(Ok(vec![0x0a, 0xff, 0x10]))
        );
        assert_eq!(
            verify_arguments(" verify 0AfF \n"),
            Some(Ok(vec![0x0a, 0xff]))
        );
        for broken in ["verify ", "verify abc", "verify 0g", "verify +1"] {
            assert!(
                matches!(verify_arguments(broken), Some(Err(_))),
                "{broken:?} accepted"
            );
        }
    }
}
