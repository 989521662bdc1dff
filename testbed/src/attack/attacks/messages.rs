//! Abuses with well-formed messages on a valid session: join and resync
//! floods, gifts into unknown rooms, session spam, gift combos and a reader
//! that never reads.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::codec::{self, Packer};
use protocol::message::ClientMsg;
use protocol::Seq;
use tokio::task::JoinSet;

use super::kit::{answers_counted, gift, hello_dialing, join, send_both, unknown_room, MAX_TICKS};
use crate::attack::hostile::{
    client_config, persistent, Attacker, Dialing, Next, Pace, Session, Target,
};

/// Join and resync floods. With `stall`, the attacker grants no stream
/// credit at all (`max_concurrent_uni_streams(0)`), so every snapshot the
/// relay wants to send it waits; otherwise it reads everything, so the
/// relay does all the work it is asked for. Even attackers flood, odd ones
/// pace themselves just under the relay's message rate.
pub(super) async fn joins(
    att: &mut Attacker,
    target: Arc<Target>,
    stall: bool,
) -> anyhow::Result<()> {
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
            let Some(mut send) = answers_counted(&mut s, &mut tasks) else {
                return Next::Hold;
            };
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
                if !send_both(&s.conn, &mut send, p.finish(), &frames).await {
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
pub(super) async fn read_snapshots(conn: quinn::Connection) {
    let mut readers = JoinSet::new();
    while let Ok(mut r) = conn.accept_uni().await {
        readers.spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(Some(_)) = r.read(&mut buf).await {}
        });
        while readers.try_join_next().is_some() {}
    }
}

/// Gifts (and some joins) on unknown room ids: the origin must not open a
/// room for them. Even attackers flood, odd ones pace at the action rate.
pub(super) async fn rooms(att: &mut Attacker, target: Arc<Target>) -> anyhow::Result<()> {
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
            let Some(_send) = answers_counted(&mut s, &mut tasks) else {
                return Next::Hold;
            };
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
pub(super) async fn sessions(att: &mut Attacker, target: Arc<Target>) -> anyhow::Result<()> {
    let cfg = client_config(&target, |_| {})?;
    let room = target.busy[att.index % 2];
    persistent(
        att,
        &target,
        cfg,
        hello_dialing(),
        move |mut s| async move {
            let mut tasks = JoinSet::new();
            let Some(mut send) = answers_counted(&mut s, &mut tasks) else {
                return Next::Hold;
            };
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
pub(super) async fn actions(att: &mut Attacker, target: Arc<Target>) -> anyhow::Result<()> {
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
            let Some(mut send) = answers_counted(&mut s, &mut tasks) else {
                return Next::Hold;
            };
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
                if !send_both(&s.conn, &mut send, datagrams, &frames).await {
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
pub(super) async fn slow_reader(att: &mut Attacker, target: Arc<Target>) -> anyhow::Result<()> {
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
