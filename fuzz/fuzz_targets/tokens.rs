//! Fuzz target: `net::fuzzing::tokens` (see fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    net::fuzzing::tokens(data);
});
