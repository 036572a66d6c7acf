//! cargo-fuzz target `revocation_feed`: see `certbind_fuzz::revocation_feed`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| certbind_fuzz::revocation_feed(data));
