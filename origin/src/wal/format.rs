//! The bytes of a segment, with no IO: building entries and scanning them.
//!
//! ```text
//! segment := entry*
//! entry   := len:u32le crc:u32le payload[len]    crc = CRC-32C(payload), 0 < len <= MAX_ENTRY
//! payload := (reclen:LEB128 record[reclen])+     record = postcard(Record)
//! ```
//!
//! One entry is what one sync wrote (split only when a batch exceeds
//! [`MAX_ENTRY`]; each part is then synced before the next is written). So
//! every entry before the last is durable before the next one's first byte is
//! written, and a crash can damage only the last entry of the last segment.

use super::crc::crc32c;
use crate::rules::Record;
use protocol::codec::{decode, CodecError};
use std::fmt;
use std::ops::Range;

/// Bytes before an entry's payload: its length and its checksum.
pub(crate) const HEADER: usize = 8;

/// The longest entry payload. A length above it on disk is damage, never an
/// allocation.
pub(crate) const MAX_ENTRY: usize = 16 << 20;

/// Encoded records waiting for a sync, already framed as entries whose
/// headers are filled in by [`Batch::seal`].
#[derive(Debug, Default)]
pub(crate) struct Batch {
    buf: Vec<u8>,
    /// Each entry's start in `buf` and how many records it holds.
    entries: Vec<(usize, u64)>,
}

impl Batch {
    /// No records waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records waiting.
    pub(crate) fn records(&self) -> u64 {
        self.entries.iter().map(|(_, n)| n).sum()
    }

    /// Add one encoded record; it opens a new entry when the current one
    /// would outgrow `max`. Returns `false` (and adds nothing) when the
    /// record cannot fit in any entry.
    pub(crate) fn push(&mut self, record: &[u8], max: usize) -> bool {
        let need = varint_len(record.len()) + record.len();
        if need > max {
            return false;
        }
        let fits = (self.entries.last())
            .is_some_and(|&(start, _)| self.buf.len() - start - HEADER + need <= max);
        if !fits {
            self.entries.push((self.buf.len(), 0));
            self.buf.extend_from_slice(&[0; HEADER]);
        }
        write_varint(&mut self.buf, record.len());
        self.buf.extend_from_slice(record);
        if let Some((_, n)) = self.entries.last_mut() {
            *n += 1;
        }
        true
    }

    /// Fill in every entry's header; returns each entry's byte range in
    /// [`Batch::bytes`] and its record count, in order.
    pub(crate) fn seal(&mut self) -> Vec<(Range<usize>, u64)> {
        let mut out = Vec::with_capacity(self.entries.len());
        for (i, &(start, n)) in self.entries.iter().enumerate() {
            let end = self.entries.get(i + 1).map_or(self.buf.len(), |e| e.0);
            let payload = start + HEADER..end;
            let len = payload.len() as u32;
            let crc = crc32c(&self.buf[payload]);
            self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
            self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
            out.push((start..end, n));
        }
        out
    }

    /// The framed bytes (headers valid after [`Batch::seal`]).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Forget everything, keeping the allocation.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.entries.clear();
    }
}

/// Why the bytes at an offset are not an intact entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bad {
    /// Fewer than [`HEADER`] bytes left.
    ShortHeader,
    /// A zero length (no sync writes an empty entry; zeros are what a file
    /// extended but never written reads as).
    Empty,
    /// A length above the cap.
    TooLong(u32),
    /// The entry runs past the end of the file.
    PastEnd(u32),
    /// The payload does not match its checksum.
    Checksum,
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bad::ShortHeader => write!(f, "incomplete entry header"),
            Bad::Empty => write!(f, "zero entry length"),
            Bad::TooLong(n) => write!(f, "entry length {n} above the cap"),
            Bad::PastEnd(n) => write!(f, "entry of {n} bytes runs past the end of the file"),
            Bad::Checksum => write!(f, "checksum mismatch"),
        }
    }
}

/// How a segment's bytes end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// Every byte belongs to an intact entry.
    Clean,
    /// The entry at `at` is damaged and no intact entry follows: what a crash
    /// during a write leaves.
    Torn {
        /// Where the damage starts; every byte before it is intact.
        at: usize,
        /// What is wrong there.
        why: Bad,
    },
    /// The entry at `at` is damaged but an intact entry follows at
    /// `intact_at`: not something a crash leaves.
    Corrupt {
        /// Where the damage starts.
        at: usize,
        /// What is wrong there.
        why: Bad,
        /// Where an intact entry was found after it.
        intact_at: usize,
    },
}

/// The records of a segment and how it ends.
#[derive(Debug)]
pub(crate) struct Scanned {
    /// Every record of the intact entries, in order.
    pub records: Vec<Record>,
    /// How the bytes end.
    pub end: End,
}

/// Read a segment. An entry whose checksum holds but whose records do not
/// decode is an error (`offset`, cause): the bytes are what was written, so
/// this is a format mismatch, not damage.
pub(crate) fn scan(bytes: &[u8], max: usize) -> Result<Scanned, (usize, CodecError)> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match entry_at(bytes, at, max) {
            Ok(payload) => {
                decode_payload(payload, &mut records).map_err(|e| (at, e))?;
                at += HEADER + payload.len();
            }
            Err(why) => {
                let end = match find_intact(bytes, at + 1, max) {
                    Some(intact_at) => End::Corrupt { at, why, intact_at },
                    None => End::Torn { at, why },
                };
                return Ok(Scanned { records, end });
            }
        }
    }
    Ok(Scanned {
        records,
        end: End::Clean,
    })
}

/// The length at `at`, checked against the cap and the bytes left.
fn length_at(bytes: &[u8], at: usize, max: usize) -> Result<usize, Bad> {
    let Some(header) = bytes.get(at..at + HEADER) else {
        return Err(Bad::ShortHeader);
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    match len as usize {
        0 => Err(Bad::Empty),
        n if n > max => Err(Bad::TooLong(len)),
        n if n > bytes.len() - at - HEADER => Err(Bad::PastEnd(len)),
        n => Ok(n),
    }
}

fn checksum_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]])
}

/// The payload of the intact entry at `at`.
fn entry_at(bytes: &[u8], at: usize, max: usize) -> Result<&[u8], Bad> {
    let len = length_at(bytes, at, max)?;
    let payload = &bytes[at + HEADER..at + HEADER + len];
    if crc32c(payload) != checksum_at(bytes, at) {
        return Err(Bad::Checksum);
    }
    Ok(payload)
}

/// The first offset at or after `from` holding an intact entry whose records
/// decode. The cheap tests come first (length, then decoding, which fails
/// within a few bytes on anything that is not a record boundary), so the
/// checksum is computed only for real candidates.
fn find_intact(bytes: &[u8], from: usize, max: usize) -> Option<usize> {
    let mut scratch = Vec::new();
    (from..bytes.len()).find(|&at| {
        let Ok(len) = length_at(bytes, at, max) else {
            return false;
        };
        let payload = &bytes[at + HEADER..at + HEADER + len];
        scratch.clear();
        decode_payload(payload, &mut scratch).is_ok() && crc32c(payload) == checksum_at(bytes, at)
    })
}

/// Decode every record of one entry's payload.
fn decode_payload(mut payload: &[u8], out: &mut Vec<Record>) -> Result<(), CodecError> {
    while !payload.is_empty() {
        let (len, n) = read_varint(payload).ok_or(CodecError::Truncated)?;
        let rest = &payload[n..];
        let record = rest.get(..len).ok_or(CodecError::Truncated)?;
        out.push(decode(record)?);
        payload = &rest[len..];
    }
    Ok(())
}

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn write_varint(buf: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        buf.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

/// A LEB128 length of at most 4 bytes (the cap is 2^24): the value and the
/// bytes it took.
fn read_varint(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut n = 0usize;
    for (i, &b) in bytes.iter().take(4).enumerate() {
        n |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((n, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Ack;
    use protocol::codec::encode;
    use protocol::{ActionId, Outcome, Seq, SessionId, UserId};

    fn record(n: u64) -> Record {
        Record {
            ack: Some(Ack {
                id: ActionId {
                    session: SessionId(7),
                    n,
                },
                user: UserId(7),
                outcome: Outcome::Applied { seq: Seq(n) },
                at: protocol::ServerTime(n),
            }),
            events: Vec::new(),
        }
    }

    fn batch(records: &[Record], max: usize) -> (Vec<u8>, Vec<(Range<usize>, u64)>) {
        let mut b = Batch::default();
        for r in records {
            assert!(b.push(&encode(r).expect("encodes"), max));
        }
        let entries = b.seal();
        (b.bytes().to_vec(), entries)
    }

    #[test]
    fn varints_round_trip() {
        for n in [0, 1, 127, 128, 300, 16_383, 16_384, MAX_ENTRY] {
            let mut buf = Vec::new();
            write_varint(&mut buf, n);
            assert_eq!(buf.len(), varint_len(n));
            assert_eq!(read_varint(&buf), Some((n, buf.len())));
        }
        assert_eq!(read_varint(&[0x80, 0x80, 0x80, 0x80, 0x01]), None);
        assert_eq!(read_varint(&[]), None);
    }

    #[test]
    fn one_entry_per_batch_split_at_the_cap() {
        let records: Vec<Record> = (1..=40).map(record).collect();
        let (bytes, entries) = batch(&records, MAX_ENTRY);
        assert_eq!(entries.len(), 1);
        let scanned = scan(&bytes, MAX_ENTRY).expect("decodes");
        assert_eq!(scanned.end, End::Clean);
        assert_eq!(scanned.records, records);

        // A small cap splits the batch; every entry respects it.
        let (bytes, entries) = batch(&records, 64);
        assert!(entries.len() >= 5, "{} entries", entries.len());
        assert_eq!(entries.iter().map(|e| e.1).sum::<u64>(), 40);
        for (range, _) in &entries {
            assert!(range.len() - HEADER <= 64);
        }
        let scanned = scan(&bytes, 64).expect("decodes");
        assert_eq!(scanned.end, End::Clean);
        assert_eq!(scanned.records, records);

        // A record larger than the cap is refused.
        let mut b = Batch::default();
        assert!(!b.push(&[0u8; 64], 64));
        assert!(b.is_empty());
    }

    #[test]
    fn torn_and_corrupt_tails() {
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        for n in 1..=3 {
            starts.push(bytes.len());
            bytes.extend(batch(&[record(n)], MAX_ENTRY).0);
        }
        // Every cut inside the last entry is a torn tail at its start.
        for cut in starts[2]..bytes.len() {
            let s = scan(&bytes[..cut], MAX_ENTRY).expect("decodes");
            assert_eq!(s.records.len(), 2);
            if cut > starts[2] {
                assert!(
                    matches!(s.end, End::Torn { at, .. } if at == starts[2]),
                    "{cut}"
                );
            }
        }
        // Zeros after the last entry are a torn tail too.
        let mut zeros = bytes.clone();
        zeros.extend([0; 4096]);
        let s = scan(&zeros, MAX_ENTRY).expect("decodes");
        assert_eq!(
            s.end,
            End::Torn {
                at: bytes.len(),
                why: Bad::Empty
            }
        );
        // A flip in the middle entry is corruption: the last one is intact.
        for i in starts[1]..starts[2] {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x10;
            let s = scan(&flipped, MAX_ENTRY).expect("decodes");
            assert!(
                matches!(s.end, End::Corrupt { at, .. } if at == starts[1]),
                "byte {i}: {:?}",
                s.end
            );
        }
    }

    #[test]
    fn intact_entry_of_garbage_records_is_a_codec_error() {
        let payload = [1u8, 0xff];
        let mut bytes = Vec::new();
        bytes.extend((payload.len() as u32).to_le_bytes());
        bytes.extend(crc32c(&payload).to_le_bytes());
        bytes.extend(payload);
        assert!(matches!(scan(&bytes, MAX_ENTRY), Err((0, _))));
    }
}
