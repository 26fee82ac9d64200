//! cargo-fuzz target: [`liaison_fuzz::signature_headers`].
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| liaison_fuzz::signature_headers(data));
