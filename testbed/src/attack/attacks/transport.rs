//! Abuse below the protocol's messages: junk UDP at the relay's port,
//! handshake floods that never say hello, half-open handshakes replayed from
//! captured Initials, and a connection flood from one source address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::kit::MAX_TICKS;
use crate::attack::hostile::{
    client_config, dial, end_of, hello, until, Attacker, End, Pace, Target,
};

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

/// Junk UDP: random packets at the relay's port from a plain socket, a
/// quarter of them 1,200 bytes shaped like a QUIC Initial (long header,
/// version 1, random connection ids and payload) so the relay must try to
/// decrypt them.
pub(super) async fn junk_udp(att: &mut Attacker, target: &Target) -> anyhow::Result<()> {
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

pub(super) fn junk_packet(rng: &mut crate::impair::rng::Rng) -> Vec<u8> {
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
pub(super) async fn handshakes(att: &mut Attacker, target: &Target) -> anyhow::Result<()> {
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
                let (end, bytes) = hold(&conn, &mut stop).await;
                (end, opened, bytes)
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
    record_all(att, &mut held).await;
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
pub(super) async fn half_open(
    att: &mut Attacker,
    target: &Target,
    initials: &[Bytes],
) -> anyhow::Result<()> {
    let share: Vec<Bytes> = initials
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
pub(super) async fn conn_flood(
    att: &mut Attacker,
    target: &Target,
    shared: Option<quinn::Endpoint>,
) -> anyhow::Result<()> {
    let Some(ep) = shared else {
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
            let (end, bytes) = hold(&conn, &mut stop).await;
            (end, opened, bytes)
        });
    }
    let mut stop = att.stop.clone();
    until(&mut stop).await;
    record_all(att, &mut held).await;
    Ok(())
}

/// Hold `conn` until the relay ends it or the attack stops (the attacker
/// then closes it): how it ended, and the bytes sent on it.
async fn hold(conn: &quinn::Connection, stop: &mut watch::Receiver<bool>) -> (End, u64) {
    let end = tokio::select! {
        e = conn.closed() => end_of(&e),
        _ = until(stop) => End::Open,
    };
    if end == End::Open {
        conn.close(0u32.into(), b"attacker done");
    }
    (end, conn.stats().udp_tx.bytes)
}

/// Wait for the end of every connection in `held` and record it.
async fn record_all(att: &mut Attacker, held: &mut JoinSet<(End, Instant, u64)>) {
    while let Some(r) = held.join_next().await {
        if let Ok((end, opened, bytes)) = r {
            att.tally.bytes_sent += bytes;
            att.record(end, opened);
        }
    }
}
