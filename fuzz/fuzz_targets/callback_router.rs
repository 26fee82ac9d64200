//! cargo-fuzz target: [`liaison_fuzz::callback_router`].
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| liaison_fuzz::callback_router(data));
