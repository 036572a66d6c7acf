//! certbind-filter: the proxy-wasm glue (work in progress).
