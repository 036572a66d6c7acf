//! cargo-fuzz target `access_token`: see `certbind_fuzz::access_token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| certbind_fuzz::access_token(data));
