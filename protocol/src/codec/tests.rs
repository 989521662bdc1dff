//! Property tests of the codec: every message round-trips in both forms, and
//! no byte string — random, truncated or garbled — makes decoding panic.

use super::*;
use crate::message::{ClientMsg, DownMsg, ServerMsg, UpMsg};
use bytes::BytesMut;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

fn round_trip<M>(msg: &M)
where
    M: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let bytes = encode(msg).expect("encode");
    assert_eq!(&decode::<M>(&bytes).expect("decode"), msg);
}

/// Stream form, fed to the decoder in pieces of `chunk` bytes.
fn stream_round_trip<M>(msgs: &[M], chunk: usize) -> Vec<M>
where
    M: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let mut wire = BytesMut::new();
    for m in msgs {
        write_frame(m, &mut wire).expect("frame");
    }
    let mut dec = FrameDecoder::new();
    let mut out = Vec::new();
    for piece in wire.chunks(chunk.max(1)) {
        dec.extend(piece);
        while let Some(m) = dec.decode::<M>().expect("decode frame") {
            out.push(m);
        }
    }
    assert_eq!(dec.buffered(), 0);
    out
}

/// Datagram form: pack, then unpack every datagram.
fn datagram_round_trip<M>(msgs: &[M], max: usize) -> Vec<M>
where
    M: Serialize + DeserializeOwned + PartialEq + Debug + Clone,
{
    let mut p = Packer::new(max);
    let mut fitted = Vec::new();
    for m in msgs {
        match p.push(m) {
            Ok(()) => fitted.push(m.clone()),
            Err(CodecError::TooLarge { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let mut out = Vec::new();
    for d in p.finish() {
        assert!(d.len() <= max, "datagram of {} > {max}", d.len());
        for m in unpack::<M>(&d) {
            out.push(m.expect("unpack"));
        }
    }
    assert_eq!(out, fitted);
    out
}

fn never_panics<M: DeserializeOwned>(bytes: &[u8]) {
    let _ = decode::<M>(bytes);
    for m in unpack::<M>(bytes) {
        let _ = m;
    }
    let mut dec = FrameDecoder::new();
    dec.extend(bytes);
    while let Ok(Some(_)) = dec.decode::<M>() {}
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn client_messages_round_trip(msgs in prop::collection::vec(any::<ClientMsg>(), 1..8), chunk in 1usize..64) {
        for m in &msgs { round_trip(m); }
        prop_assert_eq!(&stream_round_trip(&msgs, chunk), &msgs);
        datagram_round_trip(&msgs, DEFAULT_DATAGRAM);
    }

    #[test]
    fn server_messages_round_trip(msgs in prop::collection::vec(any::<ServerMsg>(), 1..6), chunk in 1usize..256) {
        for m in &msgs { round_trip(m); }
        prop_assert_eq!(&stream_round_trip(&msgs, chunk), &msgs);
        datagram_round_trip(&msgs, DEFAULT_DATAGRAM);
    }

    #[test]
    fn upstream_messages_round_trip(msgs in prop::collection::vec(any::<UpMsg>(), 1..8), chunk in 1usize..64) {
        for m in &msgs { round_trip(m); }
        prop_assert_eq!(&stream_round_trip(&msgs, chunk), &msgs);
        datagram_round_trip(&msgs, DEFAULT_DATAGRAM);
    }

    #[test]
    fn downstream_messages_round_trip(msgs in prop::collection::vec(any::<DownMsg>(), 1..6), chunk in 1usize..256) {
        for m in &msgs { round_trip(m); }
        prop_assert_eq!(&stream_round_trip(&msgs, chunk), &msgs);
        datagram_round_trip(&msgs, DEFAULT_DATAGRAM);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        never_panics::<ClientMsg>(&bytes);
        never_panics::<ServerMsg>(&bytes);
        never_panics::<UpMsg>(&bytes);
        never_panics::<DownMsg>(&bytes);
    }

    #[test]
    fn truncated_messages_are_errors_not_panics(msg in any::<ServerMsg>(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&msg).expect("encode");
        let cut = cut.index(bytes.len());
        prop_assert!(decode::<ServerMsg>(&bytes[..cut]).is_err());
        let mut wire = BytesMut::new();
        write_frame(&msg, &mut wire).expect("frame");
        let mut dec = FrameDecoder::new();
        dec.extend(&wire[..cut.min(wire.len() - 1)]);
        prop_assert_eq!(dec.decode::<ServerMsg>(), Ok(None));
    }

    #[test]
    fn garbled_messages_never_panic(msg in any::<ClientMsg>(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = encode(&msg).expect("encode");
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x | 1;
        }
        never_panics::<ClientMsg>(&bytes);
        let mut framed = (bytes.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        never_panics::<ClientMsg>(&framed);
    }
}

#[test]
fn an_oversized_frame_header_is_refused_before_buffering() {
    let mut dec = FrameDecoder::new();
    dec.extend(&u32::MAX.to_be_bytes());
    assert!(matches!(
        dec.decode::<ClientMsg>(),
        Err(CodecError::TooLarge { .. })
    ));
    assert_eq!(
        frame_len(((MAX_FRAME + 1) as u32).to_be_bytes()),
        Err(CodecError::TooLarge {
            len: MAX_FRAME + 1,
            max: MAX_FRAME
        })
    );
}

#[test]
fn an_oversized_message_is_not_framed() {
    let msg = ClientMsg::Hello(crate::message::Hello {
        version: 1,
        token: vec![0; MAX_FRAME + 1],
        session: crate::SessionId(1),
        datagrams: true,
    });
    let mut out = BytesMut::new();
    assert!(matches!(
        write_frame(&msg, &mut out),
        Err(CodecError::TooLarge { .. })
    ));
    assert!(out.is_empty());
}

#[test]
fn trailing_bytes_are_malformed() {
    let mut bytes = encode(&ClientMsg::Bye).expect("encode");
    bytes.push(0);
    assert!(matches!(
        decode::<ClientMsg>(&bytes),
        Err(CodecError::Malformed(_))
    ));
}
