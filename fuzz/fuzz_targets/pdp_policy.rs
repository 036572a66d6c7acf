//! cargo-fuzz target `pdp_policy`: see `certbind_fuzz::pdp_policy`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| certbind_fuzz::pdp_policy(data));
