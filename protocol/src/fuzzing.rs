//! Fuzz target bodies for every decoder of this crate, shared by the
//! cargo-fuzz targets in `fuzz/` and the corpus replay in
//! `protocol/tests/fuzz_corpus.rs`, so a crashing input added to the corpus
//! fails `cargo test` the same way it failed the fuzzer.
//!
//! Each body takes arbitrary bytes, must never panic, and checks what the
//! decoder promises (see [`crate::codec`]): decoding is independent of how the
//! bytes arrive, whatever decodes encodes again and decodes to the same
//! value, and nothing is buffered past the frame limit. A body returns how
//! many messages (or tokens) it accepted, so the replay can tell that the
//! corpus still holds valid encodings.
//!
//! Not for production use: an invariant that does not hold panics.

use crate::codec::{unpack, write_frame, CodecError, FrameDecoder, Packer};
use crate::codec::{DEFAULT_DATAGRAM, FRAME_HEADER, MAX_FRAME};
use crate::message::{ClientMsg, DownMsg, ServerMsg, UpMsg};
use bytes::BytesMut;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

/// Piece sizes the stream body feeds a [`FrameDecoder`] with, besides the
/// whole input at once: every one must decode the same messages.
pub const FRAME_PIECES: [usize; 3] = [1, 7, 1024];

/// Stream frames: the input as a byte stream from a peer, decoded as each of
/// the four message enums ([`ClientMsg`], [`ServerMsg`], [`UpMsg`],
/// [`DownMsg`]). Returns the messages decoded, over all four.
pub fn frames(data: &[u8]) -> usize {
    frames_as::<ClientMsg>(data)
        + frames_as::<ServerMsg>(data)
        + frames_as::<UpMsg>(data)
        + frames_as::<DownMsg>(data)
}

/// How a stream of frames ended.
#[derive(Debug, PartialEq)]
enum StreamEnd {
    /// Every byte was decoded.
    Clean,
    /// Bytes of an unfinished frame are held.
    Pending(usize),
    /// A frame was refused (the peer would be closed).
    Failed(CodecError),
}

/// Decode `data` fed in pieces of `piece` bytes, up to the first error.
fn decode_stream<M: DeserializeOwned>(data: &[u8], piece: usize) -> (Vec<M>, StreamEnd) {
    let mut dec = FrameDecoder::new();
    let mut out = Vec::new();
    let mut fed = 0;
    for chunk in data.chunks(piece.max(1)) {
        dec.extend(chunk);
        fed += chunk.len();
        loop {
            match dec.decode::<M>() {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(e) => return (out, StreamEnd::Failed(e)),
            }
        }
        // Waiting for more: what is held is less than one whole frame, and
        // a header over the limit was refused at once, never waited on.
        let held = dec.buffered();
        assert!(
            held < FRAME_HEADER + MAX_FRAME,
            "{held} bytes buffered while waiting for a frame"
        );
        if held >= FRAME_HEADER {
            let h = &data[fed - held..];
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
            assert!(
                len as usize <= MAX_FRAME,
                "waiting for the rest of a frame of {len} bytes"
            );
        }
    }
    let end = match dec.buffered() {
        0 => StreamEnd::Clean,
        n => StreamEnd::Pending(n),
    };
    (out, end)
}

fn frames_as<M>(data: &[u8]) -> usize
where
    M: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let (msgs, end) = decode_stream::<M>(data, data.len());
    for piece in FRAME_PIECES {
        let (again, again_end) = decode_stream::<M>(data, piece);
        assert_eq!(again, msgs, "pieces of {piece} decode other messages");
        assert_eq!(again_end, end, "pieces of {piece} end otherwise");
    }
    // Whatever decoded encodes again, within the frame limit (never longer
    // than the bytes it came from), and decodes to the same messages.
    let mut wire = BytesMut::new();
    for m in &msgs {
        let before = wire.len();
        if let Err(e) = write_frame(m, &mut wire) {
            panic!("a decoded message does not encode again: {e}: {m:?}");
        }
        assert!(wire.len() - before <= FRAME_HEADER + MAX_FRAME);
    }
    assert!(wire.len() <= data.len(), "re-encoding grew the stream");
    let (again, again_end) = decode_stream::<M>(&wire, wire.len());
    assert_eq!(again, msgs);
    assert_eq!(again_end, StreamEnd::Clean);
    msgs.len()
}

/// Packed datagrams: the input as one datagram from a peer, unpacked as each
/// of the four message enums. Returns the messages unpacked, over all four.
pub fn datagrams(data: &[u8]) -> usize {
    datagrams_as::<ClientMsg>(data)
        + datagrams_as::<ServerMsg>(data)
        + datagrams_as::<UpMsg>(data)
        + datagrams_as::<DownMsg>(data)
}

fn datagrams_as<M>(data: &[u8]) -> usize
where
    M: Serialize + DeserializeOwned + PartialEq + Debug + Clone,
{
    let mut msgs = Vec::new();
    let mut it = unpack::<M>(data);
    // Each entry takes at least one byte, so the iteration is bounded.
    for _ in 0..=data.len() {
        match it.next() {
            Some(Ok(m)) => msgs.push(m),
            Some(Err(_)) => {
                assert!(it.next().is_none(), "unpacking went on after an error");
                break;
            }
            None => break,
        }
    }
    assert!(it.next().is_none(), "more entries than bytes");
    // Packed again into one datagram as large as the input (an entry never
    // grows when encoded again), they unpack to the same messages.
    let mut packer = Packer::new(data.len().max(DEFAULT_DATAGRAM));
    for m in &msgs {
        if let Err(e) = packer.push(m) {
            panic!("a decoded message does not pack again: {e}: {m:?}");
        }
    }
    let packed = packer.finish();
    assert!(packed.len() <= 1, "{} datagrams", packed.len());
    let again: Result<Vec<M>, _> = packed.iter().flat_map(|d| unpack::<M>(d)).collect();
    assert_eq!(again.as_ref(), Ok(&msgs));
    msgs.len()
}

/// Every file of a fuzz corpus folder, by name (at least `min` of them).
pub fn corpus(dir: &std::path::Path, min: usize) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("list the corpus").path();
        let name = path.file_name().expect("a file name").to_string_lossy();
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        files.push((name.into_owned(), bytes));
    }
    files.sort();
    assert!(
        files.len() >= min,
        "{} holds {} files, expected at least {min}",
        dir.display(),
        files.len()
    );
    files
}

/// Replay the corpus in `dir` through a target's `body` (the tests of every
/// crate with a fuzz target do): each input is fed as the fuzzer would, and
/// the corpus must hold inputs the body accepts (valid encodings) and
/// inputs it accepts nothing of, so a stale corpus does not pass silently.
pub fn replay_corpus(dir: &std::path::Path, mut body: impl FnMut(&[u8]) -> usize) {
    let target = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    let target = target.unwrap_or_default();
    let (mut accepting, mut refused) = (0, 0);
    for (name, bytes) in corpus(dir, 4) {
        let accepted = body(&bytes);
        eprintln!(
            "{target}/{name}: {} bytes, {accepted} accepted",
            bytes.len()
        );
        match accepted {
            0 => refused += 1,
            _ => accepting += 1,
        }
    }
    assert!(
        accepting > 0,
        "no {target} seed decodes: regenerate the seeds"
    );
    assert!(refused > 0, "no garbage among the {target} seeds");
}
