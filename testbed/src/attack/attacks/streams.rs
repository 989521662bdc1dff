//! Abuse of QUIC streams after a valid hello: every stream the relay
//! allows, held open; bogus length prefixes and unfinished frames.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use protocol::codec::MAX_FRAME;
use tokio::task::JoinSet;

use super::kit::{hello_dialing, MAX_TICKS};
use crate::attack::hostile::{client_config, persistent, Attacker, Dialing, Next, Target};

/// What a stream writer writes: zeros, shared (the attacker's memory
/// stays flat whatever it sends).
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
/// Streams one stream-exhaustion connection opens at most.
const MAX_STREAMS: usize = 2048;

/// Stream exhaustion: every stream the relay allows, written until flow
/// control blocks it, never finished.
pub(super) async fn streams(att: &mut Attacker, target: &Target) -> anyhow::Result<()> {
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
pub(super) async fn frames(att: &mut Attacker, target: &Target) -> anyhow::Result<()> {
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
