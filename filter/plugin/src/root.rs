//! The root context: configuration (refused with one log line when bad), the VM's shared
//! state, the JWKS tick, and answers to calls it dispatched.

use crate::http::Http;
use crate::vm::{self, Vm, VmRef};
use crate::{events, host};
use certbind_core::config::FilterConfig;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::RefCell;
use std::rc::Rc;

pub struct Root {
    context_id: u32,
    vm: Option<VmRef>,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Self {
            context_id,
            vm: None,
        }
    }
}

impl Context for Root {
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

// The plugin or its VM is going away (the host deletes the root context, and the SDK drops it
// in `proxy_on_delete`): the counts the tick has not handed over yet. Here rather than in
// `on_done`, which the module does not export (scripts/trim-wasm.sh): the host would enter it
// on every stream.
impl Drop for Root {
    fn drop(&mut self) {
        vm::enter(self.context_id);
        if let Some(vm) = &self.vm {
            events::flush_counters(vm);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        vm::enter(self.context_id);
        let bytes = host::plugin_configuration();
        match FilterConfig::from_json(&bytes) {
            Ok(config) => {
                log::info!(
                    "[ctx {}] certbind configured: audience={} mode={}",
                    self.context_id,
                    config
                        .audience
                        .as_deref()
                        .unwrap_or("(the listener's certificate)"),
                    config.mode.as_str()
                );
                let vm = Rc::new(RefCell::new(Vm::new(config, self.context_id)));
                events::configured(&vm);
                self.vm = Some(vm);
                true
            }
            Err(e) => {
                log::error!("[ctx {}] {e}", self.context_id);
                false
            }
        }
    }

    fn on_tick(&mut self) {
        vm::enter(self.context_id);
        if let Some(vm) = &self.vm {
            events::on_tick(vm);
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http::new(context_id, self.vm.clone())))
    }
}
