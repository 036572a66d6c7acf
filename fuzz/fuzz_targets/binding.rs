//! cargo-fuzz target `binding`: see `certbind_fuzz::binding`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| certbind_fuzz::binding(data));
