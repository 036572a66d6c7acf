//! cargo-fuzz target `dpop_proof`: see `certbind_fuzz::dpop_proof`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| certbind_fuzz::dpop_proof(data));
