//! Fuzz target: `protocol::fuzzing::datagrams` (see fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    protocol::fuzzing::datagrams(data);
});
