//! certbind-filter: the proxy-wasm entry point. Registers the root context; `root` holds the
//! configuration and the tick, `http` one request, `vm` the state they share. `events` routes
//! call answers and ticks to `requests` (one request's steps), `jwks` and `revocation`
//! (the shared key set and feed); `host` is the one module that calls the host. Every
//! decision is made in certbind-core.
#![deny(clippy::indexing_slicing)]

mod crypto;
mod events;
mod facts;
mod feed;
mod header_map;
mod host;
mod http;
mod jwks;
mod metrics;
mod raw;
mod requests;
mod revocation;
mod root;
mod vm;

use proxy_wasm::traits::RootContext;
use proxy_wasm::types::LogLevel;

// The SDK's `main!` expands to the `_initialize` export Envoy calls at load time. It is
// expanded inside the SDK's own macro, so `deny(unsafe_code)` holds here; `raw` is the one
// module that allows it.
proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(root::Root::new(context_id))
    });
}}
