//! cargo-fuzz target `filter_config`: see `certbind_fuzz::filter_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| certbind_fuzz::filter_config(data));
