//! Fuzz target: `origin::wal::fuzzing::segment` (see fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    origin::wal::fuzzing::segment(data);
});
