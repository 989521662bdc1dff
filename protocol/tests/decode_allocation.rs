//! Decoding never allocates more than its input justifies: a few bytes that
//! claim a billion-element list cost a few bytes, not a gigabyte.
//!
//! A counting global allocator measures the peak bytes held while decoding.
//! This file holds one test so no other thread allocates meanwhile.

// A global allocator is the one way to measure allocation; it only forwards.
#![allow(unsafe_code)]

use protocol::codec::{decode, unpack, FrameDecoder};
use protocol::message::{ClientMsg, DownMsg, ServerMsg, UpMsg};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = HELD.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(now, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak bytes allocated while running `f`, above what was held before.
fn peak_of(f: impl FnOnce()) -> usize {
    let base = HELD.load(Relaxed);
    PEAK.store(base, Relaxed);
    f();
    PEAK.load(Relaxed) - base
}

fn decode_all(bytes: &[u8]) {
    let _ = decode::<ClientMsg>(bytes);
    let _ = decode::<ServerMsg>(bytes);
    let _ = decode::<UpMsg>(bytes);
    let _ = decode::<DownMsg>(bytes);
    for m in unpack::<ServerMsg>(bytes) {
        let _ = m;
    }
}

/// A bound generous enough for legitimate messages (a seat is a few bytes on
/// the wire and a few dozen in memory) and far below what a hostile length
/// prefix would cost without the checks.
fn bound(input: usize) -> usize {
    4096 + 256 * input
}

#[test]
fn decoding_allocates_in_proportion_to_the_input() {
    // Hostile length prefixes: a varint of u32::MAX / u64::MAX where a list,
    // a string or a byte vector's length goes.
    let huge = [0xff, 0xff, 0xff, 0xff, 0x0f];
    let huge64 = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for variant in 0u8..12 {
        for len in [&huge[..], &huge64[..]] {
            let mut v = vec![variant];
            v.extend_from_slice(len);
            inputs.push(v.clone());
            // The same, behind a small struct prefix (room id, a few ints).
            let mut w = vec![variant, 1, 1, 1];
            w.extend_from_slice(len);
            w.extend_from_slice(&[0; 16]);
            inputs.push(w);
        }
    }
    // Pseudo-random inputs (a fixed xorshift so the test is repeatable).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for n in 0..20_000usize {
        let len = n % 300;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        inputs.push(bytes);
    }
    for input in &inputs {
        let peak = peak_of(|| decode_all(input));
        assert!(
            peak <= bound(input.len()),
            "{} input bytes allocated {peak} bytes: {:?}",
            input.len(),
            &input[..input.len().min(32)]
        );
    }
    // A frame header announcing 4 GiB allocates nothing for the body.
    let peak = peak_of(|| {
        let mut dec = FrameDecoder::new();
        dec.extend(&u32::MAX.to_be_bytes());
        assert!(dec.decode::<ClientMsg>().is_err());
    });
    assert!(peak <= bound(4), "frame header allocated {peak} bytes");
}
