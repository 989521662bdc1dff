//! The abuses, one function each. Every attacker runs one of them until the
//! attack's stop signal; [`persistent`] dials again whenever the relay cuts
//! it off, so each abuse lasts as long as the attacker likes, as a real one
//! would. Where an abuse has two forms (as fast as possible, or just under
//! the relay's default rate so as not to be cut off for flooding), even
//! attackers take one and odd attackers the other.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::codec::{self, Packer, MAX_FRAME};
use protocol::message::{ActionMsg, ClientMsg};
use protocol::{Action, ActionId, GiftId, RoomId, Seq, ServerTime};
use tokio::task::JoinSet;

use super::hostile::{
    client_config, count_answers, dial, end_of, hello, persistent, until, Attacker, Dialing, End,
    Next, Pace, Session, Target,
};
use super::plan::Attack;

/// What a stream writer writes: zeros, shared (the attacker's memory
/// stays flat whatever it sends).
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
/// Streams one stream-exhaustion connection opens at most.
const MAX_STREAMS: usize = 2048;
/// Handshakes each attacker keeps going at once in the handshake flood.
const HANDSHAKES_EACH: usize = 10;
/// Connections each attacker holds at most in the connection flood.
const FLOOD_CONNECTIONS_EACH: usize = 1000;
/// Initials each attacker replays in the half-open flood.
pub const INITIALS_EACH: usize = 40;
/// How often a half-open attacker replays its Initials (the relay's
/// handshake state has timed out by then, so each is a new handshake).
const REPLAY_EVERY: Duration = Duration::from_millis(1500);
/// Junk packets per attacker per second.
const JUNK_RATE: f64 = 1000.0;
/// Upper bound on the ticks of any paced loop (the stop signal ends them
/// long before).
const MAX_TICKS: usize = 1_000_000;

/// What an attack needs prepared before it starts (outside the measured
/// window): replayable Initials, a shared endpoint.
#[derive(Default)]
pub struct Prepared {
    /// Real QUIC Initials for the relay, one per connection attempt.
    pub initials: Vec<Bytes>,
    /// One endpoint (one source address) every attacker shares.
    pub shared: Option<quinn::Endpoint>,
}

/// Prepare what `attack` needs for `attackers` attackers.
pub async fn prepare(
    attack: Attack,
    target: &Target,
    attackers: usize,
) -> anyhow::Result<Prepared> {
    let mut p = Prepared::default();
    match attack {
        Attack::HalfOpen => {
            p.initials = capture_initials(target, attackers * INITIALS_EACH).await?
        }
        Attack::ConnFlood => {
            let bind = SocketAddr::from(([127, 0, 0, 2], 0));
            let ep = net::client_endpoint(bind, &net::Tuning::default())?;
            p.shared = Some(ep);
        }
        _ => {}
    }
    Ok(p)
}

/// Run `attack` as attacker `att` until the stop signal.
pub async fn run(
    attack: Attack,
    att: &mut Attacker,
    target: Arc<Target>,
    prepared: Arc<Prepared>,
) -> anyhow::Result<()> {
    match attack {
        Attack::Streams => streams(att, &target).await,
        Attack::Frames => frames(att, &target).await,
        Attack::Joins => joins(att, target, false).await,
        Attack::SnapshotStall => joins(att, target, true).await,
        Attack::Rooms => rooms(att, target).await,
        Attack::Sessions => sessions(att, target).await,
        Attack::Actions => actions(att, target).await,
        Attack::SlowReader => slow_reader(att, target).await,
        Attack::Malformed => malformed(att, &target).await,
        Attack::Tokens => tokens(att, &target).await,
        Attack::JunkUdp => junk_udp(att, &target).await,
        Attack::Handshakes => handshakes(att, &target).await,
        Attack::HalfOpen => half_open(att, &target, &prepared).await,
        Attack::ConnFlood => conn_flood(att, &target, &prepared).await,
    }
}

fn hello_dialing() -> Dialing {
    Dialing {
        hello: true,
        datagrams: true,
    }
}

/// Stream exhaustion: every stream the relay allows, written until flow
/// control blocks it, never finished.
async fn streams(att: &mut Attacker, target: &Target) -> anyhow::Result<()> {
    let cfg = client_config(target, |_| {})?;
    persistent(att, target, cfg, hello_dialing(), |s| async move {
        let mut writers = JoinSet::new();
        let _control = s.control;
        for bidi in [true, false] {
            while writers.len() < MAX_STREAMS {
                let opened = if bidi {
                    tokio::time::timeout(Duration::from_millis(200), s.conn.open_bi())
                        .await
                        .map(|r| r.map(|(send, _recv)| send))
                } else {
                    tokio::time::timeout(Duration::from_millis(200), s.conn.open_uni()).await
                };
                let Ok(Ok(mut send)) = opened else { break };
                writers.spawn(async move {
                    while send.write_chunk(Bytes::from_static(&ZEROS)).await.is_ok() {}
                    // Hold the stream: dropping it would finish it.
                    std::future::pending::<()>().await;
                });
            }
        }
        s.answers
            .sent
            .fetch_add(writers.len() as u64, Ordering::Relaxed);
        while writers.join_next().await.is_some() {}
        Next::Hold
    })
    .await
}

/// Bogus length prefixes and unfinished frames. Four forms by attacker:
/// a 4 GiB header on the control stream; a 64 KiB header then a trickle of
/// a byte every 50 ms; a 64 KiB frame short by one byte plus 16 uni streams
/// with 4 GiB headers, then silence; and a 64 KiB header trickled before
/// any hello.
async fn frames(att: &mut Attacker, target: &Target) -> anyhow::Result<()> {
    let form = att.index % 4;
    let cfg = client_config(target, |_| {})?;
    let dialing = Dialing {
        hello: form != 3,
        datagrams: true,
    };
    persistent(att, target, cfg, dialing, move |s| async move {
        let huge = u32::MAX.to_be_bytes();
        let max = (MAX_FRAME as u32).to_be_bytes();
        let mut send = match s.control {
            Some((send, _recv)) => send,
            None => match s.conn.open_bi().await {
                Ok((send, _)) => send,
                Err(_) => return Next::Hold,
            },
        };
        let mut held = Vec::new();
        match form {
            0 => {
                let _ = send.write_all(&huge).await;
                let _ = send.write_all(&ZEROS[..1024]).await;
            }
            1 | 3 => {
                let _ = send.write_all(&max).await;
                for _ in 0..MAX_TICKS {
                    if send.write_all(&[0]).await.is_err() {
                        break;
                    }
                    s.answers.sent.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            _ => {
                let _ = send.write_all(&max).await;
                let _ = send.write_all(&ZEROS[..MAX_FRAME - 1]).await;
                for _ in 0..16 {
                    let Ok(mut u) = s.conn.open_uni().await else {
                        break;
                    };
                    let _ = u.write_all(&huge).await;
                    let _ = u.write_all(&ZEROS[..60 * 1024]).await;
                    held.push(u);
                }
            }
        }
        // Never finish: hold every stream until the connection ends.
        std::future::pending::<()>().await;
        drop((send, held));
        Next::Hold
    })
    .await
}

fn join(room: RoomId) -> ClientMsg {
    ClientMsg::Join { room, since: None }
}

fn unknown_room(s: &mut Session) -> RoomId {
    RoomId(1_000_000 + s.rng.next_u64() % 1_000_000_000)
}

/// Join and resync floods. With `stall`, the attacker grants no stream
/// credit at all (`max_concurrent_uni_streams(0)`), so every snapshot the
/// relay wants to send it waits; otherwise it reads everything, so the
/// relay does all the work it is asked for. Even attackers flood, odd ones
/// pace themselves just under the relay's message rate.
async fn joins(att: &mut Attacker, target: Arc<Target>, stall: bool) -> anyhow::Result<()> {
    let rate = if att.index.is_multiple_of(2) {
        target.flood
    } else {
        target.paced_messages
    };
    let cfg = client_config(&target, |t| {
        if stall {
            t.max_concurrent_uni_streams(0u32.into());
        }
    })?;
    let t = target.clone();
    persistent(att, &target, cfg, hello_dialing(), move |mut s| {
        let target = t.clone();
        async move {
            let mut tasks = JoinSet::new();
            let Some((mut send, recv)) = s.control.take() else {
                return Next::Hold;
            };
            tasks.spawn(count_answers(s.conn.clone(), recv, s.answers.clone()));
            if !stall {
                tasks.spawn(read_snapshots(s.conn.clone()));
            }
            let max = s.conn.max_datagram_size().unwrap_or(1200);
            let mut pace = Pace::new(rate);
            let mut k = 0u64;
            for _ in 0..MAX_TICKS {
                let n = pace.tick().await;
                let mut p = Packer::new(max);
                let mut frames = bytes::BytesMut::new();
                for _ in 0..n {
                    k += 1;
                    let busy = target.busy[(k % 2) as usize];
                    let m = match k % 6 {
                        0 | 1 => join(busy),
                        2 => join(unknown_room(&mut s)),
                        3 => ClientMsg::Resync {
                            room: busy,
                            from: Seq(1),
                        },
                        4 => ClientMsg::Leave { room: busy },
                        _ => ClientMsg::Join {
                            room: busy,
                            since: Some(Seq(1)),
                        },
                    };
                    if k.is_multiple_of(2) {
                        let _ = p.push(&m);
                    } else {
                        let _ = codec::write_frame(&m, &mut frames);
                    }
                }
                for d in p.finish() {
                    if s.conn.send_datagram(d).is_err() {
                        return Next::Hold;
                    }
                }
                if send.write_all(&frames).await.is_err() {
                    return Next::Hold;
                }
                s.answers.sent.fetch_add(n as u64, Ordering::Relaxed);
            }
            Next::Hold
        }
    })
    .await
}

/// Accept and read every snapshot stream, discarding it.
async fn read_snapshots(conn: quinn::Connection) {
    let mut readers = JoinSet::new();
    while let Ok(mut r) = conn.accept_uni().await {
        readers.spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(Some(_)) = r.read(&mut buf).await {}
        });
        while readers.try_join_next().is_some() {}
    }
}

fn gift(s: &Session, n: u64, room: RoomId) -> ClientMsg {
    ClientMsg::Action(ActionMsg {
        id: ActionId {
            session: s.session,
            n,
        },
        room,
        sent_at: ServerTime::ZERO,
        action: Action::Gift {
            gift: GiftId(1),
            count: 1,
        },
    })
}

/// Gifts (and some joins) on unknown room ids: the origin must not open a
/// room for them. Even attackers flood, odd ones pace at the action rate.
async fn rooms(att: &mut Attacker, target: Arc<Target>) -> anyhow::Result<()> {
    let rate = if att.index.is_multiple_of(2) {
        target.flood
    } else {
        target.paced_actions
    };
    let cfg = client_config(&target, |_| {})?;
    persistent(
        att,
        &target,
        cfg,
        hello_dialing(),
        move |mut s| async move {
            let mut tasks = JoinSet::new();
            let Some((_send, recv)) = s.control.take() else {
                return Next::Hold;
            };
            tasks.spawn(count_answers(s.conn.clone(), recv, s.answers.clone()));
            let max = s.conn.max_datagram_size().unwrap_or(1200);
            let mut pace = Pace::new(rate);
            let mut n = 0u64;
            for _ in 0..MAX_TICKS {
                let due = pace.tick().await;
                let mut p = Packer::new(max);
                for _ in 0..due {
                    n += 1;
                    let room = unknown_room(&mut s);
                    let m = if n.is_multiple_of(4) {
                        join(room)
                    } else {
                        gift(&s, n, room)
                    };
                    let _ = p.push(&m);
                }
                for d in p.finish() {
                    if s.conn.send_datagram(d).is_err() {
                        return Next::Hold;
                    }
                }
                s.answers.sent.fetch_add(due as u64, Ordering::Relaxed);
            }
            Next::Hold
        },
    )
    .await
}

/// Session spam: every connection says hello with a new session id, sends
/// one gift into a busy room, waits for its ack (two seconds at most), and
/// closes; then again at once. The attackers share a few users, so each
/// user has many sessions.
async fn sessions(att: &mut Attacker, target: Arc<Target>) -> anyhow::Result<()> {
    let cfg = client_config(&target, |_| {})?;
    let room = target.busy[att.index % 2];
    persistent(
        att,
        &target,
        cfg,
        hello_dialing(),
        move |mut s| async move {
            let mut tasks = JoinSet::new();
            let Some((mut send, recv)) = s.control.take() else {
                return Next::Hold;
            };
            tasks.spawn(count_answers(s.conn.clone(), recv, s.answers.clone()));
            let mut frame = bytes::BytesMut::new();
            let _ = codec::write_frame(&gift(&s, 1, room), &mut frame);
            if send.write_all(&frame).await.is_err() {
                return Next::Hold;
            }
            s.answers.sent.fetch_add(1, Ordering::Relaxed);
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                let a = &s.answers;
                if a.applied.load(Ordering::Relaxed) + a.rejected.load(Ordering::Relaxed) > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Next::Reconnect
        },
    )
    .await
}

/// Gift combos: 500 gifts at once into a busy room (datagrams, every tenth
/// also on the control stream, as the SDK's fallback would), then a flood
/// of new ones at the flood rate.
async fn actions(att: &mut Attacker, target: Arc<Target>) -> anyhow::Result<()> {
    let cfg = client_config(&target, |_| {})?;
    let room = target.busy[att.index % 2];
    let flood = target.flood;
    persistent(
        att,
        &target,
        cfg,
        hello_dialing(),
        move |mut s| async move {
            let mut tasks = JoinSet::new();
            let Some((mut send, recv)) = s.control.take() else {
                return Next::Hold;
            };
            tasks.spawn(count_answers(s.conn.clone(), recv, s.answers.clone()));
            let max = s.conn.max_datagram_size().unwrap_or(1200);
            let mut n = 0u64;
            let burst = |s: &mut Session, count: usize, n: &mut u64| {
                let mut p = Packer::new(max);
                let mut frames = bytes::BytesMut::new();
                for _ in 0..count {
                    *n += 1;
                    let m = gift(s, *n, room);
                    let _ = p.push(&m);
                    if (*n).is_multiple_of(10) {
                        let _ = codec::write_frame(&m, &mut frames);
                    }
                }
                (p.finish(), frames)
            };
            let mut pace = Pace::new(flood);
            for tick in 0..MAX_TICKS {
                let due = if tick == 0 { 500 } else { pace.tick().await };
                let (datagrams, frames) = burst(&mut s, due, &mut n);
                for d in datagrams {
                    if s.conn.send_datagram(d).is_err() {
                        return Next::Hold;
                    }
                }
                if send.write_all(&frames).await.is_err() {
                    return Next::Hold;
                }
                s.answers.sent.fetch_add(due as u64, Ordering::Relaxed);
            }
            Next::Hold
        },
    )
    .await
}

/// A slow reader: 1 KiB stream windows, a tiny datagram buffer; joins the
/// busy rooms (and joins again every half second, within the rate) and
/// never reads a byte. Half of them take no datagrams, so everything the
/// relay sends them goes on the blocked control stream.
async fn slow_reader(att: &mut Attacker, target: Arc<Target>) -> anyhow::Result<()> {
    let cfg = client_config(&target, |t| {
        t.stream_receive_window(1024u32.into());
        t.receive_window(4096u32.into());
        t.datagram_receive_buffer_size(Some(2048));
    })?;
    let dialing = Dialing {
        hello: true,
        datagrams: att.index % 2 == 1,
    };
    let busy = target.busy;
    persistent(att, &target, cfg, dialing, move |mut s| async move {
        let Some((mut send, _recv)) = s.control.take() else {
            return Next::Hold;
        };
        for _ in 0..MAX_TICKS {
            let mut frames = bytes::BytesMut::new();
            for room in busy {
                let _ = codec::write_frame(&join(room), &mut frames);
            }
            if send.write_all(&frames).await.is_err() {
                return Next::Hold;
            }
            s.answers.sent.fetch_add(2, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Next::Hold
    })
    .await
}

/// Undecodable input after a valid hello, three forms by attacker: a
/// datagram of random bytes, a datagram with a valid length and a garbage
/// body, a stream frame with a valid length and a garbage body. The relay
/// should close each with a code; the attacker comes back.
async fn malformed(att: &mut Attacker, target: &Target) -> anyhow::Result<()> {
    let form = att.index % 3;
    let cfg = client_config(target, |_| {})?;
    persistent(att, target, cfg, hello_dialing(), move |mut s| async move {
        match form {
            0 => {
                let len = 1 + (s.rng.next_u64() % 1000) as usize;
                let junk: Vec<u8> = (0..len).map(|_| s.rng.next_u64() as u8).collect();
                let _ = s.conn.send_datagram(Bytes::from(junk));
            }
            1 => {
                let _ = s
                    .conn
                    .send_datagram(Bytes::from_static(&[5, 0xff, 0xff, 0xff, 0xff, 0xff]));
            }
            _ => {
                if let Some((send, _)) = s.control.as_mut() {
                    let mut f = 16u32.to_be_bytes().to_vec();
                    f.extend_from_slice(&[0xff; 16]);
                    let _ = send.write_all(&f).await;
                }
            }
        }
        s.answers.sent.fetch_add(1, Ordering::Relaxed);
        // Hold the streams while the relay decides.
        std::future::pending::<()>().await;
        drop(s);
        Next::Hold
    })
    .await
}

/// Hellos with tokens the relay must refuse, five forms by attacker: random
/// bytes, a token signed with another secret, an expired one, a cluster
/// proof signed with the client secret, and 60 KiB of token. The attacker
/// comes back after each refusal.
async fn tokens(att: &mut Attacker, target: &Target) -> anyhow::Result<()> {
    use net::token::{unix_now, Claims, TokenKey};
    let form = att.index % 5;
    let user = att.user;
    let key = TokenKey::new(target.secrets.token.as_bytes());
    let cfg = client_config(target, |_| {})?;
    let dialing = Dialing {
        hello: false,
        datagrams: true,
    };
    persistent(att, target, cfg, dialing, move |mut s| {
        let token = match form {
            0 => (0..200).map(|_| s.rng.next_u64() as u8).collect(),
            1 => TokenKey::new(b"not the relay's secret, not at all").mint(&Claims::client(
                protocol::UserId(user),
                Vec::new(),
                unix_now() + 3600,
            )),
            2 => key.mint(&Claims::client(
                protocol::UserId(user),
                Vec::new(),
                unix_now() - 10,
            )),
            3 => key.mint(&Claims::cluster(unix_now() + 3600)),
            _ => vec![0x42; 60 * 1024],
        };
        let conn = s.conn.clone();
        let session = s.session;
        async move {
            s.answers.sent.fetch_add(1, Ordering::Relaxed);
            // Refused (as it should be) or welcomed: either way, wait for
            // the relay to close the connection.
            let held = hello(&conn, token, session, true).await;
            std::future::pending::<()>().await;
            drop((held, s));
            Next::Hold
        }
    })
    .await
}

/// Junk UDP: random packets at the relay's port from a plain socket, a
/// quarter of them 1,200 bytes shaped like a QUIC Initial (long header,
/// version 1, random connection ids and payload) so the relay must try to
/// decrypt them.
async fn junk_udp(att: &mut Attacker, target: &Target) -> anyhow::Result<()> {
    let sock = tokio::net::UdpSocket::bind(att.bind).await?;
    let mut pace = Pace::new(JUNK_RATE);
    for _ in 0..MAX_TICKS {
        if att.stopped() {
            break;
        }
        let due = pace.tick().await;
        for _ in 0..due {
            let p = junk_packet(&mut att.rng);
            if sock.send_to(&p, target.relay).await.is_ok() {
                att.tally.raw_packets += 1;
                att.tally.bytes_sent += p.len() as u64;
            }
        }
    }
    Ok(())
}

fn junk_packet(rng: &mut crate::impair::rng::Rng) -> Vec<u8> {
    let initial = rng.next_u64().is_multiple_of(4);
    let len = if initial {
        1200
    } else {
        1 + (rng.next_u64() % 1400) as usize
    };
    let mut p: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    if initial {
        // Long header, Initial, version 1, 8-byte connection ids, no
        // token, a length that covers the rest.
        p[0] = 0xc3;
        p[1..5].copy_from_slice(&1u32.to_be_bytes());
        p[5] = 8;
        p[14] = 8;
        p[23] = 0;
        p[24..26].copy_from_slice(&(0x4000u16 | 1100).to_be_bytes());
    }
    p
}

/// A handshake flood: complete QUIC handshakes that never say hello, ten at
/// a time per attacker; each ended one is replaced at once.
async fn handshakes(att: &mut Attacker, target: &Target) -> anyhow::Result<()> {
    let ep = att.endpoint()?;
    let cfg = client_config(target, |_| {})?;
    let mut held: JoinSet<(End, Instant, u64)> = JoinSet::new();
    let mut stop = att.stop.clone();
    for _ in 0..MAX_TICKS {
        if att.stopped() {
            break;
        }
        while held.len() < HANDSHAKES_EACH && !att.stopped() {
            let (ep, cfg, relay) = (ep.clone(), cfg.clone(), target.relay);
            let mut stop = att.stop.clone();
            att.tally.connections += 1;
            held.spawn(async move {
                let opened = Instant::now();
                let connecting = match ep.connect_with(cfg, relay, "localhost") {
                    Ok(c) => c,
                    Err(e) => return (End::Refused(e.to_string()), opened, 0),
                };
                let conn = tokio::select! {
                    c = connecting => match c {
                        Ok(c) => c,
                        Err(e) => return (end_of(&e), opened, 0),
                    },
                    _ = until(&mut stop) => return (End::Open, opened, 0),
                };
                let end = tokio::select! {
                    e = conn.closed() => end_of(&e),
                    _ = until(&mut stop) => End::Open,
                };
                if end == End::Open {
                    conn.close(0u32.into(), b"attacker done");
                }
                (end, opened, conn.stats().udp_tx.bytes)
            });
        }
        let done = tokio::select! {
            d = held.join_next() => d,
            _ = until(&mut stop) => None,
        };
        if let Some(Ok((end, opened, bytes))) = done {
            att.tally.bytes_sent += bytes;
            let refused = end.by_relay() && matches!(end, End::Refused(_));
            att.record(end, opened);
            if refused {
                att.pause(Duration::from_millis(100)).await;
            }
        }
    }
    while let Some(r) = held.join_next().await {
        if let Ok((end, opened, bytes)) = r {
            att.tally.bytes_sent += bytes;
            att.record(end, opened);
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(300), ep.wait_idle()).await;
    Ok(())
}

/// Capture `n` real QUIC Initials for the relay (ALPN, SNI and all), each
/// with its own connection id, by dialing a plain socket that never answers.
pub async fn capture_initials(target: &Target, n: usize) -> anyhow::Result<Vec<Bytes>> {
    let sink = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let to = sink.local_addr()?;
    let ep = net::client_endpoint(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &net::Tuning::default(),
    )?;
    let cfg = client_config(target, |_| {})?;
    let mut got: HashMap<Vec<u8>, Bytes> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    for _ in 0..n.div_ceil(100) {
        let want = (got.len() + 100).min(n);
        let mut pending = Vec::new();
        for _ in 0..want - got.len() {
            pending.push(ep.connect_with(cfg.clone(), to, "localhost")?);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while got.len() < want {
            let r = tokio::time::timeout_at(deadline, sink.recv_from(&mut buf)).await;
            let Ok(Ok((len, _))) = r else { break };
            let d = &buf[..len];
            // Long header: flags, version (4), dcid length, dcid.
            if len < 7 || d[0] & 0x80 == 0 {
                continue;
            }
            let dcid_len = d[5] as usize;
            let Some(dcid) = d.get(6..6 + dcid_len) else {
                continue;
            };
            got.entry(dcid.to_vec())
                .or_insert_with(|| Bytes::copy_from_slice(d));
        }
        drop(pending);
    }
    ep.close(0u32.into(), b"");
    Ok(got.into_values().collect())
}

/// Half-open handshakes: real Initials replayed from a plain socket that
/// never answers the relay, each again once the relay's handshake state
/// for it has timed out.
async fn half_open(att: &mut Attacker, target: &Target, prepared: &Prepared) -> anyhow::Result<()> {
    let share: Vec<Bytes> = prepared
        .initials
        .iter()
        .skip(att.index * INITIALS_EACH)
        .take(INITIALS_EACH)
        .cloned()
        .collect();
    if share.is_empty() {
        // Fewer Initials were captured than attackers wanted: this one idles.
        return Ok(());
    }
    let sock = tokio::net::UdpSocket::bind(att.bind).await?;
    let gap = REPLAY_EVERY / share.len() as u32;
    for i in 0..MAX_TICKS {
        if att.stopped() {
            break;
        }
        let p = &share[i % share.len()];
        if sock.send_to(p, target.relay).await.is_ok() {
            att.tally.raw_packets += 1;
            att.tally.bytes_sent += p.len() as u64;
        }
        // Read (and drop) what the relay answers, so the socket never fills.
        let mut buf = [0u8; 2048];
        while sock.try_recv_from(&mut buf).is_ok() {}
        if !att.pause(gap).await {
            break;
        }
    }
    Ok(())
}

/// A connection flood from one source address: every attacker dials
/// through the same endpoint, says hello with a valid token and holds the
/// connection, then dials again, without pause.
async fn conn_flood(
    att: &mut Attacker,
    target: &Target,
    prepared: &Prepared,
) -> anyhow::Result<()> {
    let Some(ep) = prepared.shared.clone() else {
        anyhow::bail!("no shared endpoint prepared");
    };
    let cfg = client_config(target, |_| {})?;
    let mut held: JoinSet<(End, Instant, u64)> = JoinSet::new();
    let mut refused = 0;
    for _ in 0..FLOOD_CONNECTIONS_EACH {
        if att.stopped() {
            break;
        }
        while let Some(Ok((end, opened, bytes))) = held.try_join_next() {
            att.tally.bytes_sent += bytes;
            att.record(end, opened);
        }
        let opened = Instant::now();
        att.tally.connections += 1;
        let conn = match dial(&ep, cfg.clone(), target).await {
            Ok(c) => c,
            Err(end) => {
                att.record(end, opened);
                refused += 1;
                if !att.pause(Duration::from_millis(20 * refused.min(10))).await {
                    break;
                }
                continue;
            }
        };
        let session = att.session();
        let control = match hello(&conn, target.secrets.viewer(att.user), session, true).await {
            Ok(c) => c,
            Err(end) => {
                att.tally.bytes_sent += conn.stats().udp_tx.bytes;
                att.record(end, opened);
                refused += 1;
                if !att.pause(Duration::from_millis(20 * refused.min(10))).await {
                    break;
                }
                continue;
            }
        };
        refused = 0;
        let mut stop = att.stop.clone();
        held.spawn(async move {
            let _control = control;
            let end = tokio::select! {
                e = conn.closed() => end_of(&e),
                _ = until(&mut stop) => End::Open,
            };
            if end == End::Open {
                conn.close(0u32.into(), b"attacker done");
            }
            (end, opened, conn.stats().udp_tx.bytes)
        });
    }
    let mut stop = att.stop.clone();
    until(&mut stop).await;
    while let Some(r) = held.join_next().await {
        if let Ok((end, opened, bytes)) = r {
            att.tally.bytes_sent += bytes;
            att.record(end, opened);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attack::honest::ROOMS;
    use crate::attack::hostile::Tally;
    use crate::attack::secrets::Secrets;
    use crate::bench::sys::TempDir;
    use net::Identity;
    use protocol::message::ErrorCode;
    use tokio::sync::watch;

    /// Run `attack` with attackers `indices` against a real in-process
    /// relay for `secs`, and return each attacker's tally.
    async fn against_a_relay(attack: Attack, indices: &[usize], secs: f64) -> Vec<Tally> {
        let secrets = Secrets::generate().expect("secrets");
        let identity = Identity::self_signed(&["localhost"]).expect("certificate");
        let dir = TempDir::new(None).expect("temp dir");
        let origin = origin::Origin::start_with(
            origin::Config {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                data_dir: dir.path().join("origin"),
                cluster_secret: Some(secrets.cluster.clone()),
                ..origin::Config::default()
            },
            identity.clone(),
        )
        .await
        .expect("origin");
        let relay = relay::Relay::start_with(
            relay::Config {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                origin: origin.addr(),
                origin_cert: None,
                cert_out: None,
                cluster_secret: Some(secrets.cluster.clone()),
                token_secret: Some(secrets.token.clone()),
                ..relay::Config::default()
            },
            identity.clone(),
            identity.certs.clone(),
        )
        .await
        .expect("relay");
        let target = Arc::new(Target {
            relay: relay.addr(),
            roots: identity.certs.clone(),
            secrets,
            busy: ROOMS,
            users: 2,
            paced_messages: 10.0,
            paced_actions: 5.0,
            flood: 1000.0,
        });
        let prepared = Arc::new(
            prepare(attack, &target, indices.len())
                .await
                .expect("prepared"),
        );
        let (stop, stop_rx) = watch::channel(false);
        let started = Instant::now();
        let mut set = JoinSet::new();
        for &i in indices {
            let mut att = Attacker::new(i, &target, 7, started, stop_rx.clone());
            let (target, prepared) = (target.clone(), prepared.clone());
            set.spawn(async move {
                run(attack, &mut att, target, prepared)
                    .await
                    .expect("attack runs");
                (i, att.tally)
            });
        }
        // The attack's duration: attackers go on until told to stop.
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        let _ = stop.send(true);
        let mut out: Vec<(usize, Tally)> = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.expect("attacker task"));
        }
        relay.shutdown().await;
        let _ = origin.shutdown().await;
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, t)| t).collect()
    }

    fn first_stop(t: &Tally) -> Option<End> {
        t.first_stops.first().map(|(e, _)| e.clone())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn malformed_input_is_cut_off_with_its_code_and_the_attacker_comes_back() {
        let tallies = against_a_relay(Attack::Malformed, &[0, 1, 2], 1.5).await;
        for (form, t) in tallies.iter().enumerate() {
            assert_eq!(
                first_stop(t),
                Some(End::code(ErrorCode::Malformed)),
                "form {form}: {t:?}"
            );
            assert!(t.connections >= 2, "form {form} dialed again: {t:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_bad_token_is_refused_with_a_code() {
        let tallies = against_a_relay(Attack::Tokens, &[0, 1, 2, 3, 4], 1.5).await;
        let refusals = [
            ErrorCode::BadToken,
            ErrorCode::TokenExpired,
            ErrorCode::TooLarge,
        ]
        .map(End::code);
        for (form, t) in tallies.iter().enumerate() {
            let end = first_stop(t);
            assert!(
                end.as_ref().is_some_and(|e| refusals.contains(e)),
                "form {form}: {t:?}"
            );
            assert_eq!(
                t.ends.get(&End::Open),
                None,
                "form {form} was let in: {t:?}"
            );
        }
        assert_eq!(
            first_stop(&tallies[2]),
            Some(End::code(ErrorCode::TokenExpired))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_four_gib_frame_header_is_cut_off_as_too_large() {
        // Attacker 0 plays the frames attack's first form.
        let tallies = against_a_relay(Attack::Frames, &[0], 1.0).await;
        assert_eq!(
            first_stop(&tallies[0]),
            Some(End::code(ErrorCode::TooLarge)),
            "{:?}",
            tallies[0]
        );
    }

    #[test]
    fn junk_initials_look_like_quic_long_headers() {
        let mut rng = crate::impair::rng::Rng::new(3);
        let mut initials = 0;
        for _ in 0..200 {
            let p = junk_packet(&mut rng);
            assert!(!p.is_empty() && p.len() <= 1400);
            if p.len() == 1200 && p[0] == 0xc3 {
                initials += 1;
                assert_eq!(&p[1..5], &[0, 0, 0, 1]);
            }
        }
        assert!(initials > 20, "{initials}");
    }
}
