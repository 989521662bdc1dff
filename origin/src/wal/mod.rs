//! The write-ahead log: every [`Record`] is durable here before its ack or
//! its events leave the origin, and replaying the log rebuilds every room.
//!
//! # Use
//!
//! ```no_run
//! # fn main() -> Result<(), origin::wal::WalError> {
//! use origin::wal::{Wal, WalOptions};
//! # let dir = std::path::Path::new("data");
//! # let waiting: Vec<origin::rules::Record> = Vec::new();
//! let (mut wal, recovered) = Wal::open(dir, WalOptions::default())?;
//! // restore `recovered.checkpoint`, then replay `recovered.records` in order
//! for record in &waiting {
//!     wal.append(record)?; // buffered: no IO
//! }
//! let durable = wal.sync()?; // one write, one fdatasync for all of them
//! // now ack and publish every record with an LSN <= durable
//! # let _ = durable; Ok(()) }
//! ```
//!
//! Group commit is the caller's loop: take every record waiting, append them
//! all, sync once. One `fdatasync` costs ~0.2–0.7 ms on the project's
//! machines, so syncing per record caps a log at a few thousand records per
//! second, while a batch of 256 costs barely more than a batch of 1 (run
//! `cargo run --release -p ringside-origin --example wal_bench` for this
//! machine's figures).
//!
//! The log does blocking file IO: run it on a thread of its own.
//!
//! # On disk
//!
//! ```text
//! <dir>/wal-<first LSN, 20 digits>.log   segments, oldest first
//! <dir>/checkpoint                       the latest checkpoint, if any
//! <dir>/checkpoint.tmp                   a checkpoint being written; removed on open
//!
//! segment    := entry*
//! entry      := len:u32le crc:u32le payload[len]     crc = CRC-32C(payload), 0 < len <= 16 MiB
//! payload    := (reclen:LEB128 record[reclen])+      record = postcard(Record)
//! checkpoint := "RINGCKP1" crc:u32le lsn:u64le len:u64le snapshot[len]
//!                                                    crc = CRC-32C(lsn, len, snapshot)
//! ```
//!
//! Records are numbered by [`Lsn`] from 1, across segments; the k-th record
//! (from 0) of segment `wal-F.log` has LSN `F + k`. Other files in the
//! directory are left alone.
//!
//! An entry is what one [`Wal::sync`] wrote (a batch above 16 MiB becomes
//! several entries, each synced before the next is written). So an entry is
//! only ever written once everything before it is durable, and a crash can
//! damage only the last entry of the last segment — which is what lets
//! [`Wal::open`] tell a torn write from corruption:
//!
//! - a damaged entry at the end of the last segment, with no intact entry
//!   after it, is a torn write: it is cut off (with a `warn!` line) and
//!   opening succeeds. Nothing acknowledged is lost: that entry's sync never
//!   returned. (A bit flip in the very last entry looks the same and is cut
//!   off the same way; no log can tell the two apart.)
//! - a damaged entry followed by an intact one, a damaged entry in any other
//!   segment, a missing segment, or a damaged checkpoint is
//!   [`WalError::Corrupt`]: the log refuses to open rather than silently drop
//!   acknowledged data.
//!
//! # Durability
//!
//! - [`Wal::append`] only buffers in memory. Records appended but not synced
//!   are lost if the process stops (callers must not rely on it either way).
//! - [`Wal::sync`] returns once every appended record is on disk
//!   (`fdatasync`). Creating a segment also syncs the directory, so the new
//!   file survives a crash.
//! - A failed write or sync poisons the log: after a failed `fdatasync` the
//!   kernel may have dropped the dirty pages, so nothing written since the
//!   last good sync can be trusted. Every later call fails with
//!   [`WalError::Poisoned`]; restart and reopen.
//! - [`Wal::checkpoint`] stores an opaque snapshot atomically (temporary
//!   file, fsync, rename, fsync of the directory), then starts a new segment
//!   and deletes the ones the snapshot covers. A crash at any step leaves
//!   either the old checkpoint with every segment it needs or the new one;
//!   [`Wal::open`] finishes an interrupted deletion.
//! - No lock guards the directory: one process per data directory.

mod archive;
mod crc;
mod files;
mod format;
pub mod fuzzing;
#[cfg(test)]
mod tests;
mod types;

pub use archive::Archives;
pub use types::{Lsn, WalError};

use crate::rules::Record;
use files::{
    corrupt, io_err, list_segments, read_checkpoint, remove_files, segment_name, sync_dir,
    truncate, write_checkpoint,
};
use format::{Batch, End};
use protocol::codec::encode;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use types::CHECKPOINT_TMP;

/// The largest record the log takes, encoded, in bytes (16 MiB less a few
/// bytes of framing).
pub const MAX_RECORD: usize = format::MAX_ENTRY - 4;

/// The default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;

/// Most `fdatasync` durations kept for [`Wal::take_sync_times`].
pub const MAX_SYNC_TIMES: usize = 4096;

/// How the log is laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A sync that would grow the current segment past this many bytes
    /// starts a new one first (a segment holds at least one entry, so one
    /// large entry may exceed it). Default [`DEFAULT_SEGMENT_SIZE`].
    pub segment_size: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
        }
    }
}

/// What [`Wal::open`] found: restore the checkpoint, then replay the records
/// in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The latest checkpoint's snapshot, as given to [`Wal::checkpoint`].
    pub checkpoint: Option<Vec<u8>>,
    /// The last record the checkpoint covers ([`Lsn::ZERO`] without one).
    /// `records[i]` has LSN `checkpoint_lsn + 1 + i`.
    pub checkpoint_lsn: Lsn,
    /// Every durable record after the checkpoint, oldest first.
    pub records: Vec<Record>,
    /// The LSN the next appended record gets.
    pub next_lsn: Lsn,
    /// Bytes of a torn tail cut off the last segment (0 when it was clean).
    pub truncated: u64,
}

/// The write-ahead log of one data directory.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    options: WalOptions,
    /// The most an entry holds (a parameter only so tests can make it small).
    max_entry: usize,
    /// The segment being appended to.
    active: Segment,
    /// Older segments still on disk, oldest first.
    older: Vec<PathBuf>,
    /// Appended, not yet written.
    batch: Batch,
    /// The LSN the next append gets.
    next_lsn: Lsn,
    /// The last LSN on disk.
    durable: Lsn,
    poisoned: bool,
    /// How long each `fdatasync` of a segment took since the last
    /// [`Wal::take_sync_times`] (one per entry written).
    sync_times: Vec<Duration>,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: File,
    len: u64,
}

impl Wal {
    /// Open the log in `dir` (created if missing): read the checkpoint and
    /// every segment after it, cut off a torn tail, and get ready to append.
    pub fn open(dir: &Path, options: WalOptions) -> Result<(Wal, Recovered), WalError> {
        Wal::open_with(dir, options, format::MAX_ENTRY)
    }

    fn open_with(
        dir: &Path,
        options: WalOptions,
        max_entry: usize,
    ) -> Result<(Wal, Recovered), WalError> {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let tmp = dir.join(CHECKPOINT_TMP);
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("remove", &tmp)(e));
            }
            _ => {}
        }
        let (checkpoint_lsn, checkpoint) = match read_checkpoint(dir)? {
            Some((lsn, blob)) => (lsn, Some(blob)),
            None => (Lsn::ZERO, None),
        };
        let segments = list_segments(dir)?;

        // Segments whose successor starts at or before the first record after
        // the checkpoint hold nothing the checkpoint lacks: an interrupted
        // checkpoint left them. They are deleted below, unread.
        let after = checkpoint_lsn.next();
        let live_from = (1..segments.len())
            .rev()
            .find(|&i| segments[i].0 <= after)
            .unwrap_or(0);
        let (doomed, live) = segments.split_at(live_from);
        let mut doomed = doomed.iter().map(|s| s.1.clone()).collect::<Vec<_>>();

        let mut records = Vec::new();
        let mut truncated = 0;
        let mut end = None::<(Lsn, PathBuf, u64)>;
        for (i, (first, path)) in live.iter().enumerate() {
            let last = i + 1 == live.len();
            match &end {
                None if *first > after => {
                    return Err(corrupt(
                        path,
                        0,
                        format!("the log starts at {first}, but records from {after} are missing"),
                    ));
                }
                Some((expected, _, _)) if first != expected => {
                    return Err(corrupt(
                        path,
                        0,
                        format!(
                            "segment starts at {first}; the previous one ends before {expected}"
                        ),
                    ));
                }
                _ => {}
            }
            let bytes = fs::read(path).map_err(io_err("read", path))?;
            let scanned =
                format::scan(&bytes, max_entry).map_err(|(offset, source)| WalError::Decode {
                    segment: path.clone(),
                    offset: offset as u64,
                    source,
                })?;
            let mut len = bytes.len() as u64;
            match scanned.end {
                End::Clean => {}
                End::Torn { at, why } if last => {
                    tracing::warn!(
                        segment = %path.display(),
                        offset = at,
                        dropped = bytes.len() - at,
                        reason = %why,
                        "write-ahead log: cutting off a torn tail (a crash during a write); \
                         every entry before it is intact"
                    );
                    truncate(path, at as u64)?;
                    truncated = (bytes.len() - at) as u64;
                    len = at as u64;
                }
                End::Torn { at, why } => {
                    return Err(corrupt(
                        path,
                        at as u64,
                        format!("{why} in a segment that is not the last"),
                    ));
                }
                End::Corrupt { at, why, intact_at } => {
                    return Err(corrupt(
                        path,
                        at as u64,
                        format!("{why}, followed by an intact entry at byte {intact_at}"),
                    ));
                }
            }
            let mut lsn = *first;
            for record in scanned.records {
                if lsn > checkpoint_lsn {
                    records.push(record);
                }
                lsn = lsn.next();
            }
            end = Some((lsn, path.clone(), len));
        }

        let log_end = end.as_ref().map_or(after, |e| e.0);
        if log_end < checkpoint_lsn {
            tracing::warn!(
                dir = %dir.display(),
                log_end = log_end.0,
                checkpoint = checkpoint_lsn.0,
                "write-ahead log: the segments end before the checkpoint; \
                 continuing from the checkpoint"
            );
        }
        let next_lsn = log_end.max(after);
        let mut older: Vec<PathBuf> = live.iter().map(|s| s.1.clone()).collect();
        let active = match end {
            Some((lsn, path, len)) if lsn == next_lsn => {
                older.pop();
                Segment::open(path, len)?
            }
            _ => {
                // The last segment (if any) ends inside the checkpoint: all
                // of them are covered.
                doomed.append(&mut older);
                Segment::create(dir, next_lsn)?
            }
        };
        remove_files(dir, &mut doomed)?;

        let wal = Wal {
            dir: dir.to_path_buf(),
            options,
            max_entry,
            active,
            older,
            batch: Batch::default(),
            next_lsn,
            durable: Lsn(next_lsn.0 - 1),
            poisoned: false,
            sync_times: Vec::new(),
        };
        let recovered = Recovered {
            checkpoint,
            checkpoint_lsn,
            records,
            next_lsn,
            truncated,
        };
        Ok((wal, recovered))
    }

    /// Buffer one record (no IO) and return its LSN. It is durable once a
    /// [`Wal::sync`] returns that LSN or a later one.
    pub fn append(&mut self, record: &Record) -> Result<Lsn, WalError> {
        self.check()?;
        let bytes = encode(record).map_err(WalError::Encode)?;
        if !self.batch.push(&bytes, self.max_entry) {
            return Err(WalError::TooLarge {
                len: bytes.len(),
                max: self.max_entry - 4,
            });
        }
        let lsn = self.next_lsn;
        self.next_lsn = lsn.next();
        Ok(lsn)
    }

    /// Write every appended record and `fdatasync` once; returns the last
    /// durable LSN (every record up to it is on disk). Does no IO when
    /// nothing is waiting. On failure the log is poisoned.
    pub fn sync(&mut self) -> Result<Lsn, WalError> {
        self.check()?;
        if self.batch.is_empty() {
            return Ok(self.durable);
        }
        let mut batch = std::mem::take(&mut self.batch);
        let written = self.write(&mut batch);
        if written.is_err() {
            self.poisoned = true;
        }
        batch.clear();
        self.batch = batch;
        written
    }

    /// Store `snapshot` as the state after every record appended so far
    /// (unsynced ones are synced first), then start a new segment and delete
    /// the segments it covers. Returns the last LSN it covers. On the next
    /// open, [`Recovered::checkpoint`] is this snapshot and
    /// [`Recovered::records`] holds only the records appended after this call.
    ///
    /// If writing the snapshot fails the log is still whole (the previous
    /// checkpoint and every segment remain) and may be used further.
    pub fn checkpoint(&mut self, snapshot: &[u8]) -> Result<Lsn, WalError> {
        self.sync()?;
        let lsn = self.durable;
        write_checkpoint(&self.dir, lsn, snapshot)?;
        if self.active.len > 0 {
            if let Err(e) = self.rotate(self.next_lsn) {
                self.poisoned = true;
                return Err(e);
            }
        }
        remove_files(&self.dir, &mut self.older)?;
        Ok(lsn)
    }

    /// The LSN the next appended record gets.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// The last record on disk ([`Lsn::ZERO`] before the first).
    pub fn durable_lsn(&self) -> Lsn {
        self.durable
    }

    /// Records appended but not yet synced.
    pub fn pending(&self) -> u64 {
        self.batch.records()
    }

    /// How long each `fdatasync` of a segment took since the last call, for
    /// metrics: one entry per entry written (the first [`MAX_SYNC_TIMES`]
    /// only, if nobody drains them).
    pub fn take_sync_times(&mut self) -> Vec<Duration> {
        std::mem::take(&mut self.sync_times)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn check(&self) -> Result<(), WalError> {
        if self.poisoned {
            Err(WalError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Write the batch's entries, each followed by `fdatasync`, starting a
    /// new segment first when one would outgrow the segment size.
    fn write(&mut self, batch: &mut Batch) -> Result<Lsn, WalError> {
        for (range, records) in batch.seal() {
            let entry = &batch.bytes()[range];
            let size = self.options.segment_size;
            if self.active.len > 0 && self.active.len + entry.len() as u64 > size {
                self.rotate(self.durable.next())?;
            }
            let synced = self.active.write_durably(entry)?;
            if self.sync_times.len() < MAX_SYNC_TIMES {
                self.sync_times.push(synced);
            }
            self.durable = Lsn(self.durable.0 + records);
        }
        Ok(self.durable)
    }

    /// Start a new segment whose first record is `first`.
    fn rotate(&mut self, first: Lsn) -> Result<(), WalError> {
        let segment = Segment::create(&self.dir, first)?;
        let old = std::mem::replace(&mut self.active, segment);
        self.older.push(old.path);
        Ok(())
    }
}

impl Segment {
    /// Create `wal-<first>.log` and make its name durable.
    fn create(dir: &Path, first: Lsn) -> Result<Segment, WalError> {
        let path = dir.join(segment_name(first));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        sync_dir(dir)?;
        Ok(Segment { path, file, len: 0 })
    }

    /// Open an existing segment of `len` bytes for appending.
    fn open(path: PathBuf, len: u64) -> Result<Segment, WalError> {
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        Ok(Segment { path, file, len })
    }

    /// Write and `fdatasync`; returns how long the `fdatasync` took.
    fn write_durably(&mut self, bytes: &[u8]) -> Result<Duration, WalError> {
        self.file
            .write_all(bytes)
            .map_err(io_err("write", &self.path))?;
        let start = Instant::now();
        self.file.sync_data().map_err(io_err("sync", &self.path))?;
        let took = start.elapsed();
        self.len += bytes.len() as u64;
        Ok(took)
    }
}
