//! The log's files: segment names, listing them, the checkpoint file
//! (replaced atomically), truncating a torn tail, removing old segments, and
//! making directory entries durable; and the errors that name a file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::crc;
use super::types::{
    Lsn, WalError, CHECKPOINT, CHECKPOINT_HEADER, CHECKPOINT_MAGIC, CHECKPOINT_TMP,
};

pub(super) fn segment_name(first: Lsn) -> String {
    format!("wal-{:020}.log", first.0)
}

/// The first LSN a segment file name gives, or `None` for other files.
pub(super) fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Lsn)
}

/// Every segment in `dir`, by first LSN.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<(Lsn, PathBuf)>, WalError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match parse_segment_name(name) {
            Some(Lsn::ZERO) => {
                return Err(corrupt(&entry.path(), 0, "a segment cannot start at LSN 0"));
            }
            Some(first) => segments.push((first, entry.path())),
            None if name.starts_with("wal-") => {
                tracing::warn!(file = %entry.path().display(), "write-ahead log: ignoring a file that is not a segment");
            }
            None => {}
        }
    }
    segments.sort();
    Ok(segments)
}

/// The checkpoint in `dir`: the last LSN it covers and its snapshot.
pub(super) fn read_checkpoint(dir: &Path) -> Result<Option<(Lsn, Vec<u8>)>, WalError> {
    let path = dir.join(CHECKPOINT);
    let mut bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    if bytes.len() < CHECKPOINT_HEADER || &bytes[..8] != CHECKPOINT_MAGIC {
        return Err(corrupt(&path, 0, "not a checkpoint file"));
    }
    let word = |at: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let lsn = Lsn(word(12));
    let len = word(20);
    if len != (bytes.len() - CHECKPOINT_HEADER) as u64 {
        return Err(corrupt(&path, 20, "length does not match the file size"));
    }
    if crc::crc32c(&bytes[12..]) != crc {
        return Err(corrupt(&path, 8, "checksum mismatch"));
    }
    bytes.drain(..CHECKPOINT_HEADER);
    Ok(Some((lsn, bytes)))
}

/// Replace the checkpoint atomically: temporary file, fsync, rename, fsync
/// of the directory.
pub(super) fn write_checkpoint(dir: &Path, lsn: Lsn, snapshot: &[u8]) -> Result<(), WalError> {
    let tmp = dir.join(CHECKPOINT_TMP);
    let path = dir.join(CHECKPOINT);
    let mut head = [0u8; CHECKPOINT_HEADER];
    head[..8].copy_from_slice(CHECKPOINT_MAGIC);
    head[12..20].copy_from_slice(&lsn.0.to_le_bytes());
    head[20..28].copy_from_slice(&(snapshot.len() as u64).to_le_bytes());
    let crc = crc::update(crc::crc32c(&head[12..]), snapshot);
    head[8..12].copy_from_slice(&crc.to_le_bytes());

    let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
    file.write_all(&head).map_err(io_err("write", &tmp))?;
    file.write_all(snapshot).map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("sync", &tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
    sync_dir(dir)
}

/// Cut a segment to `len` bytes, durably.
pub(super) fn truncate(path: &Path, len: u64) -> Result<(), WalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    file.set_len(len).map_err(io_err("truncate", path))?;
    file.sync_all().map_err(io_err("sync", path))
}

/// Delete `files` in order, then sync `dir`; those deleted leave the list
/// (the rest stay on failure, to be retried).
pub(super) fn remove_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), WalError> {
    if files.is_empty() {
        return Ok(());
    }
    let mut removed = 0;
    let result = files.iter().try_for_each(|path| {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("remove", path)(e)),
            _ => {}
        }
        removed += 1;
        Ok(())
    });
    files.drain(..removed);
    result?;
    sync_dir(dir)
}

/// Make the directory's entries (created, renamed, removed files) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

pub(super) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        segment: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}
