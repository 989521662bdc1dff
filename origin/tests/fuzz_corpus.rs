//! The fuzz corpus in `fuzz/corpus/`, replayed through the fuzz targets'
//! bodies, so an input that once crashed a decoder (added to the corpus as
//! `regress-*`) fails `cargo test` fast on stable Rust.
//!
//! This file replays the log's targets (`wal_segment`, `wal_checkpoint`);
//! `protocol/tests/fuzz_corpus.rs` replays the wire's. It also holds the
//! generator of every seed (ignored; see `fuzz/README.md`):
//!
//! ```text
//! cargo test -p ringside-origin --test fuzz_corpus -- --ignored write_seeds
//! ```

mod common;

use common::*;
use net::fuzzing::{FUZZ_NOW, FUZZ_SECRET};
use net::token::{Claims, TokenKey};
use origin::rules::Record;
use origin::wal::fuzzing;
use origin::wal::{Wal, WalOptions};
use protocol::codec::{encode, write_frame, Packer, DEFAULT_DATAGRAM, MAX_FRAME};
use protocol::message::{
    ActionMsg, Actor, ClientMsg, DownMsg, ErrorCode, Hello, ServerMsg, UpMsg, Welcome,
    PROTOCOL_VERSION,
};
use protocol::room::{Goal, Grant, SeatMode};
use protocol::{Action, ActionId, Outcome, RoomId, Seq, ServerTime, SessionId, UserId};
use std::fs;
use std::path::{Path, PathBuf};

/// `fuzz/corpus/<target>`.
fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Replay `fuzz/corpus/<target>` through `body`.
fn replay(target: &str, body: impl FnMut(&[u8]) -> usize) {
    protocol::fuzzing::replay_corpus(&corpus_dir(target), body);
}

/// A scratch directory of this test process's own.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ringside-fuzz-corpus-{name}-{}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

#[test]
fn wal_segment_corpus_replays() {
    replay("wal_segment", fuzzing::segment);
}

#[test]
fn wal_checkpoint_corpus_replays() {
    let dir = scratch("checkpoint");
    replay("wal_checkpoint", |b| fuzzing::checkpoint(b, &dir));
    let _ = fs::remove_dir_all(&dir);
}

// ---- The seed generator ----------------------------------------------------

/// A short story played on the real rules: a battle with gifts, chat, likes,
/// seats and a challenge, so the seeds hold what the wire and the log carry.
fn story() -> World {
    let mut w = World::new();
    let battle = start_battle(&mut w, 60);
    applied(w.viewer(11, A, gift(3)));
    applied(w.viewer(21, B, gift(2)));
    let _ = w.viewer(11, A, Action::Chat { text: "gg".into() });
    let _ = w.viewer(12, A, Action::Like { count: 5 });
    let _ = w.host(
        A,
        Action::SeatMode {
            mode: SeatMode::FreeTake,
        },
    );
    let _ = w.viewer(13, A, Action::SeatTake { seat: 1 });
    let _ = w.host(
        A,
        Action::SeatMute {
            seat: 1,
            muted: true,
        },
    );
    let _ = w.host(
        B,
        Action::ChallengeStart {
            goal: Goal::GiftValue(500),
            window_secs: 30,
        },
    );
    w.presence(A, 14, true);
    w.advance(secs(60));
    let _ = w.host(A, Action::PkForfeit { battle });
    w.advance(secs(10));
    w
}

fn write_seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus_dir(target);
    fs::create_dir_all(&dir).expect("create the corpus directory");
    fs::write(dir.join(format!("seed-{name}")), bytes).expect("write a seed");
}

/// `frames` as one stream.
fn stream<M: serde::Serialize>(msgs: &[M]) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    for m in msgs {
        write_frame(m, &mut out).expect("frame");
    }
    out.to_vec()
}

/// Messages packed into datagrams as a sender does (the first one).
fn datagram<M: serde::Serialize>(msgs: &[M]) -> Vec<u8> {
    let mut p = Packer::new(DEFAULT_DATAGRAM);
    for m in msgs {
        p.push(m).expect("fits a datagram");
    }
    p.finish().first().expect("one datagram").to_vec()
}

fn leb128(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Seeds that are neither valid nor empty: cut short, flipped, padded.
fn damaged(target: &str, name: &str, valid: &[u8]) {
    write_seed(
        target,
        &format!("{name}-cut"),
        &valid[..valid.len() * 2 / 3],
    );
    let mut flipped = valid.to_vec();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    write_seed(target, &format!("{name}-flipped"), &flipped);
}

/// Regenerate every `seed-*` file of `fuzz/corpus/` (run after a format
/// change; `regress-*` files are kept).
#[test]
#[ignore = "writes the seed corpus; run by hand (fuzz/README.md)"]
fn write_seeds() {
    for target in [
        "frames",
        "datagrams",
        "tokens",
        "wal_segment",
        "wal_checkpoint",
    ] {
        if let Ok(entries) = fs::read_dir(corpus_dir(target)) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("seed-") {
                    fs::remove_file(e.path()).expect("remove an old seed");
                }
            }
        }
    }
    let w = story();
    let key = TokenKey::new(FUZZ_SECRET);
    let client_token = key.mint(&Claims::client(
        UserId(11),
        vec![RoomId(7)],
        FUZZ_NOW + 3600,
    ));
    let cluster_token = key.mint(&Claims::cluster(FUZZ_NOW + 3600));
    let state_a = Box::new(w.state(A).clone());
    let events_a = w.events(A);
    let recent: Vec<_> = events_a.iter().rev().take(4).rev().cloned().collect();
    let id = ActionId {
        session: SessionId(11),
        n: 3,
    };
    let action = ActionMsg {
        id,
        room: A,
        sent_at: ServerTime(1_000_000_123),
        action: gift(2),
    };
    let outcome = Outcome::Applied { seq: Seq(17) };

    // Stream frames, one conversation per hop and direction.
    let client = [
        ClientMsg::Hello(Hello {
            version: PROTOCOL_VERSION,
            token: client_token.clone(),
            session: SessionId(11),
            datagrams: true,
        }),
        ClientMsg::Join {
            room: A,
            since: None,
        },
        ClientMsg::Join {
            room: B,
            since: Some(Seq(9)),
        },
        ClientMsg::Action(action.clone()),
        ClientMsg::Resync {
            room: A,
            from: Seq(12),
        },
        ClientMsg::Ping { nonce: 99 },
        ClientMsg::Renew {
            token: client_token.clone(),
        },
        ClientMsg::Leave { room: B },
        ClientMsg::Standby {
            primary: "relay-2".into(),
        },
        ClientMsg::Bye,
    ];
    let server = [
        ServerMsg::Welcome(Welcome {
            session: SessionId(11),
            relay: "relay-1".into(),
            region: "eu".into(),
            upstream: true,
        }),
        ServerMsg::Snapshot {
            room: A,
            state: state_a.clone(),
        },
        ServerMsg::Events {
            room: A,
            events: events_a.clone(),
        },
        ServerMsg::Head {
            room: A,
            seq: Seq(30),
        },
        ServerMsg::JoinFailed {
            room: RoomId(9),
            reason: protocol::Reason::NotAllowed,
        },
        ServerMsg::Ack { id, outcome },
        ServerMsg::Throttled {
            id,
            retry_after_ms: 250,
        },
        ServerMsg::Pong {
            nonce: 99,
            origin_time: ServerTime(1_000_000_500),
        },
        ServerMsg::Upstream { connected: false },
        ServerMsg::GoAway {
            alternatives: vec!["relay-2:4433".into()],
        },
        ServerMsg::RelayGone {
            relay: "relay-2".into(),
        },
        ServerMsg::Error {
            code: ErrorCode::Flood,
            message: "too many actions".into(),
        },
    ];
    let actor = Actor {
        user: UserId(11),
        grant: Grant::Viewer,
    };
    let up = [
        UpMsg::Hello {
            version: PROTOCOL_VERSION,
            relay: "relay-1".into(),
            proof: cluster_token.clone(),
        },
        UpMsg::Subscribe {
            room: A,
            since: Some(Seq(3)),
            history: Some(Seq(1)),
        },
        UpMsg::Action {
            actor,
            msg: action.clone(),
        },
        UpMsg::Presence {
            room: A,
            user: UserId(11),
            online: true,
        },
        UpMsg::Ping { nonce: 5 },
        UpMsg::Unsubscribe { room: A },
    ];
    let down = [
        DownMsg::Welcome {
            origin: "origin".into(),
        },
        DownMsg::Snapshot {
            room: A,
            state: state_a.clone(),
            recent: recent.clone(),
        },
        DownMsg::Events {
            room: A,
            events: events_a.clone(),
        },
        DownMsg::Ack {
            user: UserId(11),
            id,
            outcome,
        },
        DownMsg::Throttled {
            user: UserId(11),
            id,
            retry_after_ms: 100,
        },
        DownMsg::Pong {
            nonce: 5,
            origin_time: ServerTime(1_000_000_500),
        },
        DownMsg::RelayGone {
            relay: "relay-2".into(),
        },
        DownMsg::Moved {
            room: A,
            owner: Some("origin-2".into()),
        },
        DownMsg::Redirect {
            actor,
            msg: action.clone(),
            owner: None,
        },
        DownMsg::Serving { rooms: vec![A] },
        DownMsg::Error {
            code: ErrorCode::Internal,
            message: "log failed".into(),
        },
    ];
    let streams = [
        ("client", stream(&client)),
        ("server", stream(&server)),
        ("up", stream(&up)),
        ("down", stream(&down)),
    ];
    for (name, bytes) in &streams {
        write_seed("frames", name, bytes);
    }
    damaged("frames", "server", &streams[1].1);
    // A header over the limit, one exactly at it with a short body, and a
    // valid header before a body that is no message.
    let mut over = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
    over.extend_from_slice(&[0; 16]);
    write_seed("frames", "over-limit", &over);
    let mut at = (MAX_FRAME as u32).to_be_bytes().to_vec();
    at.extend_from_slice(&[1; 16]);
    write_seed("frames", "at-limit-short", &at);
    write_seed("frames", "bad-body", &[0, 0, 0, 3, 0xff, 0xff, 0xff]);

    // Datagrams: what each side packs.
    let small_events: Vec<_> = events_a.iter().rev().take(2).cloned().collect();
    let grams = [
        (
            "client",
            datagram(&[
                ClientMsg::Action(action.clone()),
                ClientMsg::Action(ActionMsg {
                    id: ActionId {
                        session: SessionId(11),
                        n: 4,
                    },
                    action: Action::Like { count: 3 },
                    ..action.clone()
                }),
                ClientMsg::Ping { nonce: 1 },
            ]),
        ),
        (
            "server",
            datagram(&[
                ServerMsg::Events {
                    room: A,
                    events: small_events.clone(),
                },
                ServerMsg::Ack { id, outcome },
                ServerMsg::Head {
                    room: A,
                    seq: Seq(30),
                },
            ]),
        ),
        (
            "up",
            datagram(&[
                UpMsg::Action {
                    actor,
                    msg: action.clone(),
                },
                UpMsg::Presence {
                    room: A,
                    user: UserId(12),
                    online: false,
                },
            ]),
        ),
        (
            "down",
            datagram(&[
                DownMsg::Events {
                    room: A,
                    events: small_events,
                },
                DownMsg::Ack {
                    user: UserId(11),
                    id,
                    outcome,
                },
            ]),
        ),
    ];
    for (name, bytes) in &grams {
        write_seed("datagrams", name, bytes);
    }
    damaged("datagrams", "server", &grams[1].1);
    write_seed(
        "datagrams",
        "varint-overflow",
        &[0xff, 0xff, 0xff, 0xff, 0x7f, 0],
    );
    write_seed("datagrams", "length-past-end", &[0x40, 1, 2, 3]);

    // Tokens, minted with the fuzzing secret.
    write_seed("tokens", "client", &client_token);
    write_seed("tokens", "cluster", &cluster_token);
    let mut scoped = Claims::client(UserId(5), vec![RoomId(1)], FUZZ_NOW + 60);
    scoped.rooms = Some(vec![RoomId(1), RoomId(2), RoomId(3)]);
    scoped.operator = true;
    write_seed("tokens", "scoped", &key.mint(&scoped));
    write_seed(
        "tokens",
        "expired",
        &key.mint(&Claims::client(UserId(5), Vec::new(), FUZZ_NOW)),
    );
    write_seed(
        "tokens",
        "other-key",
        &TokenKey::new(b"another secret of thirty-two bytes").mint(&Claims::client(
            UserId(5),
            Vec::new(),
            FUZZ_NOW + 60,
        )),
    );
    damaged("tokens", "client", &client_token);
    write_seed("tokens", "tag-only", &[0; 33]);

    // The log, written by the real log: one entry per few records.
    let dir = scratch("seeds");
    let snapshot = encode(&w.auth.snapshot()).expect("snapshot");
    {
        let (mut wal, _) = Wal::open(&dir, WalOptions::default()).expect("open");
        for chunk in w.log.chunks(4) {
            for r in chunk {
                wal.append(r).expect("append");
            }
            wal.sync().expect("sync");
        }
        let segment = only_file(&dir, "wal-");
        write_seed("wal_segment", "story", &segment);
        damaged("wal_segment", "story", &segment);
        let mut zeros = segment.clone();
        zeros.extend_from_slice(&[0; 64]);
        write_seed("wal_segment", "zero-tail", &zeros);
        wal.checkpoint(&snapshot).expect("checkpoint");
    }
    // An entry's payload alone (the body frames it with a valid checksum).
    let mut payload = Vec::new();
    for r in w.log.iter().take(6) {
        let bytes = encode::<Record>(r).expect("record");
        leb128(bytes.len(), &mut payload);
        payload.extend_from_slice(&bytes);
    }
    write_seed("wal_segment", "payload", &payload);
    write_seed("wal_segment", "garbage", &[0x05, 0, 0, 0, 1, 2, 3, 4, 0xff]);

    let checkpoint = fs::read(dir.join("checkpoint")).expect("the checkpoint file");
    write_seed("wal_checkpoint", "file", &checkpoint);
    damaged("wal_checkpoint", "file", &checkpoint);
    // A snapshot alone (the body frames it as a valid checkpoint file).
    write_seed("wal_checkpoint", "snapshot", &snapshot);
    write_seed("wal_checkpoint", "magic-only", b"RINGCKP1");
    let _ = fs::remove_dir_all(&dir);
}

/// The contents of the one file in `dir` whose name starts with `prefix`.
fn only_file(dir: &Path, prefix: &str) -> Vec<u8> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).expect("list").flatten() {
        if e.file_name().to_string_lossy().starts_with(prefix) {
            found.push(fs::read(e.path()).expect("read"));
        }
    }
    assert_eq!(found.len(), 1, "files starting with {prefix}");
    found.remove(0)
}
