//! cargo-fuzz target `jwks`: see `certbind_fuzz::jwks`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| certbind_fuzz::jwks(data));
