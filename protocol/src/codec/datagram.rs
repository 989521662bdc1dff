use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::payload::{decode, encode, CodecError};

/// Packs several small messages into as few datagrams as possible, each at
/// most `max` bytes, in the order they were pushed.
#[derive(Debug)]
pub struct Packer {
    max: usize,
    current: Vec<u8>,
    done: Vec<Bytes>,
}

impl Packer {
    /// A packer for datagrams of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        // Nothing is allocated until the first message (a packer that stays
        // empty costs nothing), and a datagram holds about what it carries:
        // quinn counts queued datagrams by length, not by allocation.
        Packer {
            max,
            current: Vec::new(),
            done: Vec::new(),
        }
    }

    /// The size limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Add one message. A message that cannot fit in a datagram even alone is
    /// refused with [`CodecError::TooLarge`]: send it on a stream.
    pub fn push<M: Serialize>(&mut self, msg: &M) -> Result<(), CodecError> {
        let payload = encode(msg)?;
        self.push_encoded(&payload)
    }

    /// Add one message that is already encoded (see [`super::encode`]).
    pub fn push_encoded(&mut self, payload: &[u8]) -> Result<(), CodecError> {
        let mut prefix = [0u8; 5];
        let n = write_varint(payload.len() as u32, &mut prefix);
        let entry = n + payload.len();
        if entry > self.max || payload.len() > u32::MAX as usize {
            return Err(CodecError::TooLarge {
                len: entry,
                max: self.max,
            });
        }
        if self.current.len() + entry > self.max {
            self.flush();
        }
        self.current.extend_from_slice(&prefix[..n]);
        self.current.extend_from_slice(payload);
        Ok(())
    }

    /// Whether an already-encoded payload of `len` bytes fits in the datagram
    /// being filled without starting a new one.
    pub fn fits(&self, len: usize) -> bool {
        self.current.len() + varint_len(len as u32) + len <= self.max
    }

    /// Bytes in the datagram being filled.
    pub fn pending(&self) -> usize {
        self.current.len()
    }

    /// Bytes in every datagram so far, finished or being filled.
    pub fn total(&self) -> usize {
        self.done.iter().map(Bytes::len).sum::<usize>() + self.current.len()
    }

    /// Close the datagram being filled, if any.
    pub fn flush(&mut self) {
        if !self.current.is_empty() {
            let d = std::mem::take(&mut self.current);
            self.done.push(Bytes::from(d));
        }
    }

    /// Take every finished datagram (closing the current one).
    pub fn finish(&mut self) -> Vec<Bytes> {
        self.flush();
        std::mem::take(&mut self.done)
    }
}

/// The messages of one datagram, in order. Iteration stops after the first
/// error: the rest of a datagram cannot be trusted once one entry is bad.
pub fn unpack<M: DeserializeOwned>(datagram: &[u8]) -> Unpack<'_, M> {
    Unpack {
        rest: datagram,
        failed: false,
        _m: std::marker::PhantomData,
    }
}

/// Iterator returned by [`unpack`].
#[derive(Debug)]
pub struct Unpack<'a, M> {
    rest: &'a [u8],
    failed: bool,
    _m: std::marker::PhantomData<fn() -> M>,
}

impl<M: DeserializeOwned> Iterator for Unpack<'_, M> {
    type Item = Result<M, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let item = read_varint(self.rest).and_then(|(len, n)| {
            let len = len as usize;
            let body = self.rest.get(n..n + len).ok_or(CodecError::Truncated)?;
            let msg = decode(body)?;
            self.rest = &self.rest[n + len..];
            Ok(msg)
        });
        self.failed = item.is_err();
        Some(item)
    }
}

/// The encoded messages of one datagram, in order, without decoding them
/// (to pack them again into smaller datagrams). Stops after the first error.
pub fn entries(datagram: &[u8]) -> Entries<'_> {
    Entries {
        rest: datagram,
        failed: false,
    }
}

/// Iterator returned by [`entries`].
#[derive(Debug)]
pub struct Entries<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<&'a [u8], CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let item = read_varint(self.rest).and_then(|(len, n)| {
            let body = (self.rest)
                .get(n..n + len as usize)
                .ok_or(CodecError::Truncated)?;
            self.rest = &self.rest[n + len as usize..];
            Ok(body)
        });
        self.failed = item.is_err();
        Some(item)
    }
}

fn varint_len(mut v: u32) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn write_varint(mut v: u32, out: &mut [u8; 5]) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        out[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    out[i] = v as u8;
    i + 1
}

fn read_varint(bytes: &[u8]) -> Result<(u32, usize), CodecError> {
    let mut v: u32 = 0;
    for (i, b) in bytes.iter().take(5).enumerate() {
        let part = u32::from(b & 0x7f);
        if i == 4 && part > 0x0f {
            return Err(CodecError::Malformed("length varint overflows u32".into()));
        }
        v |= part << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    if bytes.len() >= 5 {
        Err(CodecError::Malformed("length varint too long".into()))
    } else {
        Err(CodecError::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_at_the_edges() {
        for v in [0u32, 1, 127, 128, 16_383, 16_384, u32::MAX] {
            let mut buf = [0u8; 5];
            let n = write_varint(v, &mut buf);
            assert_eq!(n, varint_len(v));
            assert_eq!(read_varint(&buf[..n]), Ok((v, n)));
        }
    }

    #[test]
    fn entries_pack_again_into_smaller_datagrams() {
        let mut p = Packer::new(1200);
        let payloads: Vec<Vec<u8>> = (0u8..6).map(|i| vec![i; 150]).collect();
        for x in &payloads {
            p.push_encoded(x).expect("fits");
        }
        let big = p.finish();
        assert_eq!(big.len(), 1);
        let mut small = Packer::new(400);
        for e in entries(&big[0]) {
            small.push_encoded(e.expect("well formed")).expect("fits");
        }
        let small = small.finish();
        assert_eq!(small.len(), 3, "two entries of 152 bytes per 400");
        let again: Vec<Vec<u8>> = (small.iter())
            .flat_map(|d| {
                entries(d)
                    .map(|e| e.expect("well formed").to_vec())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(again, payloads);
        assert!(entries(&[0x05, 1, 2]).any(|e| e.is_err()), "truncated");
    }

    #[test]
    fn an_entry_too_large_for_any_datagram_is_refused() {
        let mut p = Packer::new(64);
        let big = vec![7u8; 100];
        assert!(matches!(
            p.push_encoded(&big),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(p.finish().is_empty());
    }
}
