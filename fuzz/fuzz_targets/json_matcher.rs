//! cargo-fuzz target: [`liaison_fuzz::json_matcher`].
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| liaison_fuzz::json_matcher(data));
