//! NAT-style sessions: one upstream socket per downstream peer, so that the
//! upstream's replies find their way back to the right peer.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::socket;
use super::stats::SessionStats;

/// A datagram from the upstream service for `peer`.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The peer whose session received it.
    pub(crate) peer: SocketAddr,
    /// The datagram.
    pub(crate) payload: Vec<u8>,
}

/// One peer's session.
#[derive(Debug)]
struct Session {
    /// Connected to the upstream; bound to an ephemeral port.
    socket: Arc<UdpSocket>,
    /// Last packet in either direction; the session idles out from here.
    last_active: Instant,
    /// The task that reads replies; aborted when the session closes.
    reader: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Every open session.
#[derive(Debug)]
pub(crate) struct Sessions {
    /// By peer address.
    map: HashMap<SocketAddr, Session>,
    /// The service behind the link.
    upstream: SocketAddr,
    /// Most sessions open at once; the least recently active one makes room.
    max: usize,
    /// How long a session lives without traffic.
    idle: Duration,
    /// Socket buffer size for session sockets.
    buffer: usize,
    /// Where readers send replies; the driver holds the receiver.
    replies: mpsc::Sender<Reply>,
    /// Counters.
    stats: SessionStats,
}

impl Sessions {
    /// An empty table.
    pub(crate) fn new(
        upstream: SocketAddr,
        max: usize,
        idle: Duration,
        buffer: usize,
        replies: mpsc::Sender<Reply>,
    ) -> Self {
        Self {
            map: HashMap::new(),
            upstream,
            max: max.max(1),
            idle,
            buffer,
            replies,
            stats: SessionStats::default(),
        }
    }

    /// The upstream socket of `peer`'s session, opening the session if
    /// needed; marks it active.
    pub(crate) fn socket_for(
        &mut self,
        peer: SocketAddr,
        now: Instant,
    ) -> anyhow::Result<Arc<UdpSocket>> {
        if let Some(s) = self.map.get_mut(&peer) {
            s.last_active = now;
            return Ok(s.socket.clone());
        }
        let socket = match socket::bind(
            socket::any_for(self.upstream),
            Some(self.upstream),
            self.buffer,
        ) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                self.stats.open_errors += 1;
                return Err(e);
            }
        };
        if self.map.len() >= self.max {
            self.evict_one();
        }
        let reader = tokio::spawn(read_replies(socket.clone(), peer, self.replies.clone()));
        self.map.insert(
            peer,
            Session {
                socket: socket.clone(),
                last_active: now,
                reader,
            },
        );
        self.stats.opened += 1;
        tracing::debug!(%peer, local = ?socket.local_addr().ok(), "session opened");
        Ok(socket)
    }

    /// Marks `peer`'s session active, if it still exists.
    pub(crate) fn touch(&mut self, peer: SocketAddr, now: Instant) {
        if let Some(s) = self.map.get_mut(&peer) {
            s.last_active = now;
        }
    }

    /// Closes sessions idle for longer than the idle timeout.
    pub(crate) fn expire(&mut self, now: Instant) {
        let idle = self.idle;
        let before = self.map.len();
        self.map.retain(|peer, s| {
            let keep = now.saturating_duration_since(s.last_active) < idle;
            if !keep {
                tracing::debug!(%peer, "session idle, closed");
            }
            keep
        });
        self.stats.expired += (before - self.map.len()) as u64;
    }

    /// Closes every session.
    pub(crate) fn close_all(&mut self) {
        self.map.clear();
    }

    /// Counters, with `active` filled in.
    pub(crate) fn stats(&self) -> SessionStats {
        SessionStats {
            active: self.map.len() as u64,
            ..self.stats
        }
    }

    /// Closes the least recently active session.
    fn evict_one(&mut self) {
        let oldest = self
            .map
            .iter()
            .min_by_key(|(_, s)| s.last_active)
            .map(|(p, _)| *p);
        if let Some(peer) = oldest {
            self.map.remove(&peer);
            self.stats.evicted += 1;
            tracing::debug!(%peer, "session evicted to make room");
        }
    }
}

/// Reads the upstream's datagrams for `peer` until the session closes (the
/// task is aborted) or the driver stops (the channel closes).
async fn read_replies(socket: Arc<UdpSocket>, peer: SocketAddr, replies: mpsc::Sender<Reply>) {
    let mut buf = vec![0u8; super::socket::MAX_DATAGRAM];
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => {
                let reply = Reply {
                    peer,
                    payload: buf[..n].to_vec(),
                };
                if replies.send(reply).await.is_err() {
                    return;
                }
            }
            // ICMP errors from an earlier send surface here on a connected
            // socket; the session itself is fine.
            Err(e) if is_transient(&e) => {
                tracing::trace!(%peer, error = %e, "session socket");
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "session socket failed; replies stop until it idles out");
                return;
            }
        }
    }
}

/// Errors after which a UDP socket is still usable.
pub(crate) fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::Interrupted
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}
