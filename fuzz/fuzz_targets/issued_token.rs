//! cargo-fuzz target `issued_token`: see `certbind_fuzz::issued_token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| certbind_fuzz::issued_token(data));
