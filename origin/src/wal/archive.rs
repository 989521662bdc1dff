//! Archives of unloaded rooms: one small file per room, holding the room's
//! state at the moment it was unloaded (see "Unloading idle rooms" in
//! `rules/mod.rs`). The log keeps every event; an archive only spares a
//! reload from reading it.
//!
//! ```text
//! <data dir>/rooms/<room id, 20 digits>.room    the room's latest archive
//! <data dir>/rooms/<room id, 20 digits>.tmp     one being written; ignored
//!
//! archive := "RINGROOM" crc:u32le len:u64le state[len]
//!            state = postcard(RoomState), crc = CRC-32C(len, state), len <= 16 MiB
//! ```
//!
//! Written atomically (temporary file, fsync, rename, fsync of the
//! directory), so a crash leaves the previous archive or the new one. The
//! caller writes an archive only once every log record before it is synced
//! (the commit thread does), so an archive is never ahead of the durable log.

use super::crc;
use super::files::{corrupt, io_err, sync_dir};
use super::types::WalError;
use protocol::codec::{decode, encode};
use protocol::{RoomId, RoomState};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"RINGROOM";
/// Magic, crc, length.
const HEADER: usize = 8 + 4 + 8;
/// The largest archive body read back (a room's state is a few KiB at most).
const MAX_BODY: u64 = 16 << 20;

/// The archive directory of one origin.
#[derive(Clone, Debug)]
pub struct Archives {
    dir: PathBuf,
}

impl Archives {
    /// The archives under `data_dir/rooms` (created if missing).
    pub fn open(data_dir: &Path) -> Result<Archives, WalError> {
        let dir = data_dir.join("rooms");
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        Ok(Archives { dir })
    }

    fn path(&self, room: RoomId, ext: &str) -> PathBuf {
        self.dir.join(format!("{:020}.{ext}", room.0))
    }

    /// Store `state` as its room's archive, durably.
    pub fn write(&self, state: &RoomState) -> Result<(), WalError> {
        let body = encode(state).map_err(WalError::Encode)?;
        let tmp = self.path(state.room, "tmp");
        let path = self.path(state.room, "room");
        let mut head = [0u8; HEADER];
        head[..8].copy_from_slice(MAGIC);
        head[12..20].copy_from_slice(&(body.len() as u64).to_le_bytes());
        let crc = crc::update(crc::crc32c(&head[12..]), &body);
        head[8..12].copy_from_slice(&crc.to_le_bytes());
        let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
        file.write_all(&head).map_err(io_err("write", &tmp))?;
        file.write_all(&body).map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("sync", &tmp))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
        sync_dir(&self.dir)
    }

    /// The room's archive, if it has one. A damaged archive is an error,
    /// never a missing room (that would open it again from scratch).
    pub fn read(&self, room: RoomId) -> Result<Option<RoomState>, WalError> {
        let path = self.path(room, "room");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(corrupt(&path, 0, "not a room archive"));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[12..20]);
        let len = u64::from_le_bytes(len);
        if len > MAX_BODY || len != (bytes.len() - HEADER) as u64 {
            return Err(corrupt(&path, 12, format!("bad length {len}")));
        }
        let mut want = [0u8; 4];
        want.copy_from_slice(&bytes[8..12]);
        let crc = crc::update(crc::crc32c(&bytes[12..20]), &bytes[HEADER..]);
        if crc != u32::from_le_bytes(want) {
            return Err(corrupt(&path, 8, "checksum mismatch"));
        }
        let state: RoomState = decode(&bytes[HEADER..]).map_err(|source| WalError::Decode {
            segment: path.clone(),
            offset: HEADER as u64,
            source,
        })?;
        if state.room != room {
            return Err(corrupt(&path, 0, format!("holds {}", state.room)));
        }
        Ok(Some(state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_reads_back_exactly_and_damage_is_an_error() {
        let dir = std::env::temp_dir().join(format!("ringside-archive-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let a = Archives::open(&dir).expect("open");
        let mut state = RoomState::new(RoomId(42));
        state.seq = protocol::Seq(17);
        state.likes = 99;
        assert_eq!(a.read(RoomId(42)).expect("read"), None);
        a.write(&state).expect("write");
        assert_eq!(a.read(RoomId(42)).expect("read"), Some(state.clone()));
        state.seq = protocol::Seq(18);
        a.write(&state).expect("rewrite");
        assert_eq!(a.read(RoomId(42)).expect("read"), Some(state));
        let path = a.path(RoomId(42), "room");
        let mut bytes = fs::read(&path).expect("bytes");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, bytes).expect("damage");
        assert!(a.read(RoomId(42)).is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
