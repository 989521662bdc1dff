//! Raw protocol clients that time one hop at a time, through the real
//! servers:
//!
//! - [`relay_pings`]: a client session on the relay (hello with a signed
//!   token), then `Ping` datagrams answered by the relay itself — the relay
//!   hop alone, no origin;
//! - [`OriginProbe`]: a connection to the origin that says hello as a relay
//!   (cluster proof), then `Ping` frames answered by the origin's link task
//!   (no rules, no log), and gift actions answered after the rules, the
//!   write-ahead log's group commit and the publisher — the origin hop alone.
//!
//! They speak the wire protocol exactly as the SDK and the relay do (same
//! codec, same ALPNs, same transport settings), so what they time is the
//! servers' work plus the network, without the SDK's or the relay's tasks
//! on this side.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use net::rustls::pki_types::CertificateDer;
use net::token::TokenKey;
use net::{self, Tuning};
use protocol::codec::{self, Packer};
use protocol::message::{
    ActionMsg, Actor, ClientMsg, DownMsg, Hello, ServerMsg, UpMsg, ALPN_CLIENT, ALPN_RELAY,
    PROTOCOL_VERSION,
};
use protocol::room::Grant;
use protocol::{Action, ActionId, GiftId, Outcome, RoomId, ServerTime, SessionId, UserId};

use super::echo::RoundTrips;
use super::stats::{Sampler, Sampling};

/// Open a client session on the relay at `addr` with `token`, then time
/// pings as `how` says, answered by the relay from its own clock.
pub async fn relay_pings(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
    token: Vec<u8>,
    session: SessionId,
    how: Sampling,
) -> anyhow::Result<RoundTrips> {
    let (endpoint, conn) =
        super::dial(addr, roots, ALPN_CLIENT, &Tuning::default(), "relay").await?;
    let (mut send, mut recv) = conn.open_bi().await.context("opening the control stream")?;
    let hello = ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        token,
        session,
        datagrams: true,
    });
    net::write_frame(&mut send, &hello).await?;
    let mut buf = Vec::new();
    match net::read_frame::<ServerMsg>(&mut recv, &mut buf).await? {
        Some(ServerMsg::Welcome(_)) => {}
        other => bail!("the relay answered hello with {other:?}"),
    }
    // Keep the control stream read, as a client would.
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Ok(Some(_)) = net::read_frame::<ServerMsg>(&mut recv, &mut buf).await {}
    });
    let max = conn.max_datagram_size().unwrap_or(1200);
    let ping = |nonce: u64| {
        let mut p = Packer::new(max);
        let _ = p.push(&ClientMsg::Ping { nonce });
        p.finish()
    };
    // The relay answers pings only once it knows origin time (its upstream
    // link's first clock exchange): wait for the first answer.
    let mut nonce = 0u64;
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            nonce += 1;
            for d in ping(nonce) {
                conn.send_datagram(d)?;
            }
            if let Ok(r) =
                tokio::time::timeout(Duration::from_millis(50), wait_pong(&conn, None)).await
            {
                return r.map_err(anyhow::Error::from);
            }
        }
    })
    .await;
    match first {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => bail!("relay connection lost: {e}"),
        Err(_) => bail!("the relay answered no ping within 5 s"),
    }
    let mut s = Sampler::new(how);
    while let Some(i) = s.next_trip() {
        nonce += 1;
        let t = Instant::now();
        for d in ping(nonce) {
            conn.send_datagram(d)?;
        }
        match tokio::time::timeout(Duration::from_secs(1), wait_pong(&conn, Some(nonce))).await {
            Ok(Ok(_)) => s.record(i, t.elapsed()),
            Ok(Err(e)) => bail!("relay connection lost: {e}"),
            Err(_) => s.lost(),
        }
        s.pause().await;
    }
    let out = s.finish();
    let _ = net::write_frame(&mut send, &ClientMsg::Bye).await;
    reader.abort();
    conn.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
    Ok(out)
}

/// Read datagrams until a pong (for `nonce`, if given) arrives. The relay
/// sends session messages twice, a few milliseconds apart: earlier copies
/// are skipped.
async fn wait_pong(
    conn: &quinn::Connection,
    nonce: Option<u64>,
) -> Result<u64, quinn::ConnectionError> {
    loop {
        let d = conn.read_datagram().await?;
        for m in codec::unpack::<ServerMsg>(&d) {
            if let Ok(ServerMsg::Pong { nonce: n, .. }) = m {
                if nonce.is_none_or(|want| want == n) {
                    return Ok(n);
                }
            }
        }
    }
}

/// A connection to the origin that presents itself as a relay.
pub struct OriginProbe {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: Vec<u8>,
    nonce: u64,
}

/// What the gift run measured.
#[derive(Debug, Clone, Default)]
pub struct GiftRun {
    /// Round trips of the applied gifts.
    pub trips: RoundTrips,
    /// Gifts not applied (should be 0).
    pub rejected: u64,
}

impl OriginProbe {
    /// Connect to the origin at `addr` and say hello with a proof signed
    /// with `cluster_secret`.
    pub async fn connect(
        addr: SocketAddr,
        roots: &[CertificateDer<'static>],
        cluster_secret: &str,
    ) -> anyhow::Result<OriginProbe> {
        let (endpoint, conn) =
            super::dial(addr, roots, ALPN_RELAY, &Tuning::backbone(), "origin").await?;
        let cluster = TokenKey::new(cluster_secret.as_bytes());
        let (send, recv) =
            net::handshake::relay_hello(&conn, "bench-probe", &cluster, Duration::from_secs(3))
                .await?;
        Ok(OriginProbe {
            endpoint,
            conn,
            send,
            recv,
            buf: Vec::new(),
            nonce: 0,
        })
    }

    async fn next(&mut self) -> anyhow::Result<DownMsg> {
        match net::read_frame::<DownMsg>(&mut self.recv, &mut self.buf).await? {
            Some(m) => Ok(m),
            None => bail!("the origin closed the link"),
        }
    }

    /// Time pings answered by the origin's link task.
    pub async fn pings(&mut self, how: Sampling) -> anyhow::Result<RoundTrips> {
        let mut s = Sampler::new(how);
        while let Some(i) = s.next_trip() {
            self.nonce += 1;
            let want = self.nonce;
            let t = Instant::now();
            net::write_frame(&mut self.send, &UpMsg::Ping { nonce: want }).await?;
            let answered = tokio::time::timeout(Duration::from_secs(1), async {
                loop {
                    if let DownMsg::Pong { nonce, .. } = self.next().await? {
                        if nonce == want {
                            return Ok::<_, anyhow::Error>(());
                        }
                    }
                }
            })
            .await;
            match answered {
                Ok(Ok(())) => s.record(i, t.elapsed()),
                Ok(Err(e)) => return Err(e),
                Err(_) => bail!("the origin stopped answering pings"),
            }
            s.pause().await;
        }
        Ok(s.finish())
    }

    /// Open `room` (by subscribing to it, as a relay does for its first
    /// client), then time gifts from a viewer, one at a time: each ack
    /// comes after the rules, the log's fsync and the publisher.
    pub async fn gifts(
        &mut self,
        room: RoomId,
        session: SessionId,
        how: Sampling,
    ) -> anyhow::Result<GiftRun> {
        net::write_frame(
            &mut self.send,
            &UpMsg::Subscribe {
                room,
                since: None,
                history: None,
            },
        )
        .await?;
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let DownMsg::Snapshot { room: r, .. } = self.next().await? {
                    if r == room {
                        return Ok::<_, anyhow::Error>(());
                    }
                }
            }
        })
        .await
        .context("no snapshot from the origin within 5 s")??;
        // Only a host opens a room: its host sets the seat mode first.
        let host = Actor {
            user: UserId(session.0 ^ 1),
            grant: Grant::Host,
        };
        let open = ActionMsg {
            id: ActionId {
                session: SessionId(session.0 ^ 1),
                n: 1,
            },
            room,
            sent_at: ServerTime::ZERO,
            action: Action::SeatMode {
                mode: protocol::room::SeatMode::ApplyToTake,
            },
        };
        net::write_frame(
            &mut self.send,
            &UpMsg::Action {
                actor: host,
                msg: open,
            },
        )
        .await?;
        let actor = Actor {
            user: UserId(session.0),
            grant: Grant::Viewer,
        };
        let mut rejected = 0;
        let mut s = Sampler::new(how);
        while let Some(i) = s.next_trip() {
            let id = ActionId { session, n: i + 1 };
            let msg = ActionMsg {
                id,
                room,
                // Too old to be trusted: the origin stamps it on arrival.
                sent_at: ServerTime::ZERO,
                action: Action::Gift {
                    gift: GiftId(1),
                    count: 1,
                },
            };
            let t = Instant::now();
            net::write_frame(&mut self.send, &UpMsg::Action { actor, msg }).await?;
            let outcome = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match self.next().await? {
                        DownMsg::Ack {
                            id: got, outcome, ..
                        } if got == id => return Ok::<_, anyhow::Error>(outcome),
                        DownMsg::Throttled { id: got, .. } if got == id => {
                            anyhow::bail!("the origin throttled gift {id} (its per-user rate)")
                        }
                        _ => {}
                    }
                }
            })
            .await
            .context("no ack from the origin within 5 s")??;
            let took = t.elapsed();
            match outcome {
                Outcome::Applied { .. } => s.record(i, took),
                Outcome::Rejected { .. } => rejected += 1,
            }
            s.pause().await;
        }
        let _ = net::write_frame(&mut self.send, &UpMsg::Unsubscribe { room }).await;
        Ok(GiftRun {
            trips: s.finish(),
            rejected,
        })
    }

    /// Close the link.
    pub async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_millis(500), self.endpoint.wait_idle()).await;
    }
}
