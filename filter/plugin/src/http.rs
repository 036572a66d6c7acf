//! One request's http context: hands the request to the VM's flow driver and forwards the
//! answers of calls it dispatched. It holds no state of its own beyond its id.

use crate::vm::{self, VmRef};
use crate::{events, host, requests};
use certbind_core::flow::Deny;
use certbind_core::reason::Reason;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

pub struct Http {
    context_id: u32,
    vm: Option<VmRef>,
}

impl Http {
    pub fn new(context_id: u32, vm: Option<VmRef>) -> Self {
        Self { context_id, vm }
    }
}

impl Context for Http {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        vm::enter(self.context_id);
        if let Some(vm) = &self.vm {
            events::on_call_response(vm, self.context_id, token_id, body_size);
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        vm::enter(self.context_id);
        let Some(vm) = &self.vm else {
            // Not configured: nothing can be checked, so nothing passes.
            host::reply(&Deny::new(Reason::InternalError, "certbind", ""));
            return Action::Pause;
        };
        if requests::start_request(vm, self.context_id) {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    // While the checks wait (JWKS or PDP), body and trailers wait too: nothing of the request
    // may reach the upstream before the decision.
    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        self.hold_while_checking()
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.hold_while_checking()
    }
}

impl Http {
    fn hold_while_checking(&self) -> Action {
        vm::enter(self.context_id);
        match &self.vm {
            Some(vm) if !requests::is_waiting(vm, self.context_id) => Action::Continue,
            _ => Action::Pause,
        }
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        if let Some(vm) = &self.vm {
            requests::forget_context(vm, self.context_id);
        }
    }
}
