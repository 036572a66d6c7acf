//! certbind-filter: the proxy-wasm entry point. Registers the root context; everything else
//! lives in `root` (configuration, JWKS) and `http` (one request), all decisions in certbind-core.

mod http;
mod root;

use proxy_wasm::traits::RootContext;
use proxy_wasm::types::LogLevel;

// The SDK's `main!` expands to the `#[no_mangle] _initialize` export Envoy calls at load
// time (and a call of the WASI constructors); that export is the module's only unsafe surface.
#[allow(unsafe_code)]
mod entry {
    use super::*;
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Info);
        proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
            Box::new(root::Root::new(context_id))
        });
    }}
}
