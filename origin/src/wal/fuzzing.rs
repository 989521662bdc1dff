//! Fuzz target bodies for the log's decoders (segment entries and their
//! records, the checkpoint file and the snapshot inside it), shared by the
//! cargo-fuzz targets in `fuzz/` and the corpus replay in
//! `origin/tests/fuzz_corpus.rs`.
//!
//! Each body takes arbitrary bytes, must never panic, and checks what the
//! format promises (see [`crate::wal`]). Since a fuzzer rarely guesses a
//! CRC-32C, each body also wraps the input in a valid frame (an entry header,
//! a checkpoint header) so the decoders behind the checksum are reached.
//! A body returns how many records (or snapshots) it accepted, so the replay
//! can tell that the corpus still holds valid encodings.
//!
//! Not for production use: an invariant that does not hold panics.

use super::crc;
use super::files::read_checkpoint;
use super::format::{scan, Batch, End, HEADER, MAX_ENTRY};
use super::types::{Lsn, CHECKPOINT, CHECKPOINT_HEADER, CHECKPOINT_MAGIC};
use crate::rules::{Authority, Config, Record, Snapshot};
use protocol::codec::{decode, encode};
use std::path::Path;

/// A small entry cap, so that the length checks are crossed by short inputs
/// too (the real cap, [`super::MAX_RECORD`] and a few bytes, is also used).
pub const SMALL_ENTRY: usize = 256;

/// Segment bytes: the input as a whole segment (scanned with the real entry
/// cap and with [`SMALL_ENTRY`]), then as the payload of one intact entry.
/// The records read are replayed into an empty authority (errors are fine,
/// panics are not). Returns the records read.
pub fn segment(data: &[u8]) -> usize {
    let mut read = scan_checked(data, MAX_ENTRY) + scan_checked(data, SMALL_ENTRY);
    if !data.is_empty() && data.len() <= MAX_ENTRY {
        let mut entry = Vec::with_capacity(HEADER + data.len());
        entry.extend_from_slice(&(data.len() as u32).to_le_bytes());
        entry.extend_from_slice(&crc::crc32c(data).to_le_bytes());
        entry.extend_from_slice(data);
        match scan(&entry, MAX_ENTRY) {
            // An intact entry is read whole, or refused as a format mismatch.
            Ok(s) => {
                assert_eq!(s.end, End::Clean);
                read += s.records.len();
            }
            Err((at, _)) => assert_eq!(at, 0),
        }
    }
    read
}

/// Scan `data` with entry cap `max` and check how it says the bytes end.
fn scan_checked(data: &[u8], max: usize) -> usize {
    let scanned = match scan(data, max) {
        Ok(s) => s,
        Err((at, _)) => {
            // An intact entry of undecodable records: the entries before it
            // are fine.
            assert!(at < data.len(), "undecodable entry at {at} past the end");
            let before = scan(&data[..at], max).expect("the entries before decode");
            assert_eq!(before.end, End::Clean);
            return 0;
        }
    };
    match scanned.end {
        End::Clean => {
            // The records, logged again, read back the same.
            let mut batch = Batch::default();
            for r in &scanned.records {
                let bytes = encode(r).expect("a decoded record encodes");
                assert!(batch.push(&bytes, max), "a decoded record does not fit");
            }
            batch.seal();
            let again = scan(batch.bytes(), max).expect("logged records decode");
            assert_eq!(again.end, End::Clean);
            assert_eq!(again.records, scanned.records);
        }
        End::Torn { at, .. } | End::Corrupt { at, .. } => {
            assert!(at < data.len(), "damage at {at} past the end");
            if let End::Corrupt { intact_at, .. } = scanned.end {
                assert!(at < intact_at && intact_at < data.len());
            }
            // Every byte before the damage is intact and holds those records.
            let before = scan(&data[..at], max).expect("the intact prefix decodes");
            assert_eq!(before.end, End::Clean);
            assert_eq!(before.records, scanned.records);
        }
    }
    replay(&scanned.records);
    scanned.records.len()
}

/// Feed records to an empty authority, as opening the origin does.
fn replay(records: &[Record]) {
    let mut auth = Authority::new(Config::default());
    for r in records {
        let _ = auth.replay(r);
    }
    let _ = auth.poll_timeout();
}

/// The LSN the body writes into the checkpoints it frames.
const FRAMED_LSN: Lsn = Lsn(42);

/// Checkpoint files: the input as the whole `checkpoint` file, then as the
/// snapshot inside a valid one. `dir` is a scratch directory the body writes
/// its `checkpoint` file into (the decoder reads a directory). A snapshot
/// that decodes is restored into an authority, as opening the origin does.
/// Returns the snapshots that decoded.
pub fn checkpoint(data: &[u8], dir: &Path) -> usize {
    let path = dir.join(CHECKPOINT);
    let mut decoded = 0;
    std::fs::write(&path, data).expect("write the scratch checkpoint");
    if let Ok(Some((_, blob))) = read_checkpoint(dir) {
        assert_eq!(blob.len() + CHECKPOINT_HEADER, data.len());
        assert_eq!(blob, data[CHECKPOINT_HEADER..]);
        decoded += snapshot(&blob);
    }

    let mut file = Vec::with_capacity(CHECKPOINT_HEADER + data.len());
    file.extend_from_slice(CHECKPOINT_MAGIC);
    file.extend_from_slice(&[0; 4]);
    file.extend_from_slice(&FRAMED_LSN.0.to_le_bytes());
    file.extend_from_slice(&(data.len() as u64).to_le_bytes());
    file.extend_from_slice(data);
    let crc = crc::crc32c(&file[12..]);
    file[8..12].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &file).expect("write the scratch checkpoint");
    match read_checkpoint(dir) {
        Ok(Some((lsn, blob))) => {
            assert_eq!(lsn, FRAMED_LSN);
            assert_eq!(blob, data);
        }
        other => panic!("a valid checkpoint file was refused: {other:?}"),
    }
    decoded + snapshot(data)
}

/// Decode a snapshot and restore it; restoring what a restored authority
/// snapshots changes nothing more.
fn snapshot(blob: &[u8]) -> usize {
    let Ok(snap) = decode::<Snapshot>(blob) else {
        return 0;
    };
    let first = Authority::restore(Config::default(), snap).snapshot();
    let second = Authority::restore(Config::default(), first.clone()).snapshot();
    assert_eq!(first, second, "restoring a restored snapshot changed it");
    let bytes = encode(&first).expect("a snapshot encodes");
    assert_eq!(decode::<Snapshot>(&bytes).as_ref(), Ok(&first));
    1
}
