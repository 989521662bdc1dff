//! Fuzz target: `origin::wal::fuzzing::checkpoint` (see fuzz/README.md).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

/// One scratch directory per fuzzing process (set `TMPDIR` to a tmpfs such
/// as /dev/shm to keep the per-input file write off the disk).
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("ringside-fuzz-checkpoint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        dir
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    origin::wal::fuzzing::checkpoint(data, scratch());
});
