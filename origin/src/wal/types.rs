//! The log's vocabulary: log sequence numbers, what can go wrong, and the
//! checkpoint file's name and header. (Kept apart from `mod.rs` so that the
//! log's other files depend on it, not on their parent.)

use std::fmt;
use std::io;
use std::path::PathBuf;

use protocol::codec::CodecError;

pub(super) const CHECKPOINT: &str = "checkpoint";
pub(super) const CHECKPOINT_TMP: &str = "checkpoint.tmp";
pub(super) const CHECKPOINT_MAGIC: &[u8; 8] = b"RINGCKP1";
/// Magic, crc, lsn, length.
pub(super) const CHECKPOINT_HEADER: usize = 8 + 4 + 8 + 8;

/// A log sequence number: the position of a record in the log, counted
/// from 1 across every segment and checkpoint. [`Lsn::ZERO`] is "no record".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Before the first record.
    pub const ZERO: Lsn = Lsn(0);

    /// The LSN after this one.
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lsn {}", self.0)
    }
}

/// What can go wrong with the log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file-system operation failed.
    #[error("write-ahead log: cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done ("open", "sync", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Damage a crash cannot explain (or a damaged checkpoint): opening
    /// stops rather than drop acknowledged records.
    #[error("write-ahead log corrupt: {} at byte {offset}: {reason}", segment.display())]
    Corrupt {
        /// The segment (or checkpoint) file.
        segment: PathBuf,
        /// Where in it.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An intact entry (its checksum holds) whose records do not decode: a
    /// log written by an incompatible version.
    #[error("write-ahead log: undecodable record in {} at byte {offset}: {source}", segment.display())]
    Decode {
        /// The segment file.
        segment: PathBuf,
        /// The entry's offset.
        offset: u64,
        /// The cause.
        #[source]
        source: CodecError,
    },
    /// A record could not be encoded.
    #[error("write-ahead log: cannot encode a record: {0}")]
    Encode(#[source] CodecError),
    /// A record longer than [`MAX_RECORD`](super::MAX_RECORD) once encoded.
    #[error("write-ahead log: record of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An earlier write or sync failed; the log takes nothing more. Reopen it.
    #[error("write-ahead log poisoned by an earlier write or sync failure; reopen it")]
    Poisoned,
}
