//! certbind-filter: the proxy-wasm entry point. Registers the root context; `root` holds the
//! configuration and the JWKS tick, `http` one request, `vm` the state they share and the
//! mapping of certbind-core's steps onto host calls. Every decision is made in certbind-core.
#![deny(clippy::indexing_slicing)]

mod crypto;
mod http;
mod metrics;
mod revocation;
mod root;
mod vm;

use proxy_wasm::traits::RootContext;
use proxy_wasm::types::LogLevel;

// The SDK's `main!` expands to the `_initialize` export Envoy calls at load time. It is
// expanded inside the SDK's own macro, so the workspace-wide `forbid(unsafe_code)` holds here.
proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(root::Root::new(context_id))
    });
}}
