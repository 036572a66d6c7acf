//! One request's http context (work in progress: until the flow lands it fails closed).

use certbind_core::config::FilterConfig;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

pub struct Http {
    context_id: u32,
    config: Option<Rc<FilterConfig>>,
}

impl Http {
    pub fn new(context_id: u32, config: Option<Rc<FilterConfig>>) -> Self {
        Self { context_id, config }
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let request_id = self
            .get_http_request_header("x-request-id")
            .unwrap_or_default();
        log::info!(
            "[ctx {}] certbind request_id={request_id} configured={} reason=jwks_unavailable",
            self.context_id,
            self.config.is_some()
        );
        self.send_http_response(
            503,
            vec![("content-type", "application/json"), ("retry-after", "1")],
            Some(b"{\"error\":\"temporarily_unavailable\",\"reason\":\"jwks_unavailable\"}"),
        );
        Action::Pause
    }
}
