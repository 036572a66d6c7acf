//! The root context: parses the configuration and creates one http context per request.

use crate::http::Http;
use certbind_core::config::FilterConfig;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::rc::Rc;

pub struct Root {
    context_id: u32,
    config: Option<Rc<FilterConfig>>,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Self {
            context_id,
            config: None,
        }
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match FilterConfig::from_json(&bytes) {
            Ok(config) => {
                self.config = Some(Rc::new(config));
                true
            }
            Err(e) => {
                log::error!("[ctx {}] {e}", self.context_id);
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http::new(context_id, self.config.clone())))
    }
}
