//! cargo-fuzz target `pdp_decision`: see `certbind_fuzz::pdp_decision`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| certbind_fuzz::pdp_decision(data));
