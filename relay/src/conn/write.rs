//! The writing half of a client connection: the hub's outputs for it go
//! through the datagram scheduler, onto the control stream, or onto one
//! stream per snapshot (at most one in flight, at most one waiting per
//! room); a path losing packets turns redundancy on.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::message::ErrorCode;
use protocol::{codec, Class, RoomId};

use crate::hub::Out;
use crate::metrics::{self, PathStats};
use crate::queue::OutRx;
use crate::sched::Scheduler;
use crate::shared::Shared;

use super::close::close;

/// Snapshots for one client: at most one in flight (on a stream of its
/// own), at most one waiting per room (a newer one replaces it). A client
/// that does not take the one in flight within the deadline (it grants no
/// stream credit, or reads nothing) is cut off, and so is one with more
/// rooms waiting than it may follow (it left and joined rooms while one was
/// stuck): waiting snapshots stay within `rooms_per_connection` frames.
struct Snapshots {
    in_flight: Option<(tokio::task::JoinHandle<bool>, tokio::time::Instant)>,
    waiting: BTreeMap<RoomId, Bytes>,
    timeout: Duration,
    max_waiting: usize,
}

impl Snapshots {
    /// Queue a room's snapshot; `false` when too many are waiting.
    fn push(&mut self, conn: &quinn::Connection, room: RoomId, bytes: Bytes) -> bool {
        self.waiting.insert(room, bytes);
        self.start_next(conn);
        self.waiting.len() <= self.max_waiting
    }

    fn start_next(&mut self, conn: &quinn::Connection) {
        if self.in_flight.is_some() {
            return;
        }
        let Some((_, bytes)) = self.waiting.pop_first() else {
            return;
        };
        let conn = conn.clone();
        let task = tokio::spawn(async move {
            let Ok(mut s) = conn.open_uni().await else {
                return false;
            };
            s.write_all(&bytes).await.is_ok() && s.finish().is_ok()
        });
        self.in_flight = Some((task, tokio::time::Instant::now() + self.timeout));
    }

    /// Wait for the snapshot in flight: `Ok` when it is sent, `Err` when the
    /// client did not take it in time. Pending for ever when none is.
    async fn poll(&mut self) -> Result<(), ()> {
        let Some((task, deadline)) = &mut self.in_flight else {
            return std::future::pending().await;
        };
        let deadline = *deadline;
        let done = tokio::select! {
            r = &mut *task => r.unwrap_or(false),
            () = tokio::time::sleep_until(deadline) => {
                task.abort();
                self.in_flight = None;
                return Err(());
            }
        };
        self.in_flight = None;
        if done {
            Ok(())
        } else {
            Err(())
        }
    }
}

impl Drop for Snapshots {
    fn drop(&mut self) {
        if let Some((task, _)) = &self.in_flight {
            task.abort();
        }
    }
}

/// Carry the hub's outputs for one client to its connection until the hub
/// lets go of it or the connection fails.
pub(super) async fn write_loop(
    conn: quinn::Connection,
    mut ctrl: quinn::SendStream,
    mut rx: OutRx,
    shared: Arc<Shared>,
    datagrams: bool,
) {
    let redundancy = (shared.config.redundancy_us > 0)
        .then(|| Duration::from_micros(shared.config.redundancy_us));
    let mut sched = Scheduler::new(shared.config.client_budget, redundancy);
    let mut loss = LossWatch::default();
    let m = &shared.metrics;
    let mut shed_seen = 0u64;
    let mut snapshots = Snapshots {
        in_flight: None,
        waiting: BTreeMap::new(),
        timeout: Duration::from_millis(shared.config.limits.snapshot_timeout_ms),
        max_waiting: shared.config.limits.rooms_per_connection,
    };
    // What the hub queued, taken whole each time the writer wakes.
    let mut batch = VecDeque::new();
    loop {
        let wake = match (sched.queued_bytes() > 0, sched.poll_timeout()) {
            // Queued but no room in quinn's buffer last time: look again soon.
            (true, _) => Some(Instant::now() + Duration::from_millis(1)),
            (false, t) => t,
        };
        tokio::select! {
            open = rx.take(&mut batch) => {
                // The hub let go of this client: stop.
                if !open {
                    break;
                }
            }
            // A timer: copies fell due, or quinn's buffer has room again.
            () = sleep_until(wake) => {}
            sent = snapshots.poll() => {
                if sent.is_err() {
                    tracing::warn!(remote = %conn.remote_address(), "client did not take a snapshot in time; closing");
                    close(&shared, &conn, ErrorCode::Flood, "snapshot not taken");
                    return;
                }
                snapshots.start_next(&conn);
            }
        }
        for out in batch.drain(..) {
            match out {
                Out::Datagram(item) if !datagrams => {
                    m.sent_on(item.class, false);
                    // A client without datagrams gets everything on the stream.
                    let mut b = bytes::BytesMut::with_capacity(item.payload.len() + 4);
                    b.extend_from_slice(&(item.payload.len() as u32).to_be_bytes());
                    b.extend_from_slice(&item.payload);
                    if ctrl.write_all(&b).await.is_err() {
                        return;
                    }
                }
                Out::Datagram(item) => {
                    m.sent_on(item.class, true);
                    if sched.push(item).is_err() {
                        tracing::warn!(remote = %conn.remote_address(), "client cannot keep up; closing");
                        close(&shared, &conn, ErrorCode::Flood, "client too slow");
                        return;
                    }
                }
                // Reliable frames are all session-class answers and notices.
                Out::Reliable(b) => {
                    m.sent_on(Class::Session, false);
                    if ctrl.write_all(&b).await.is_err() {
                        return;
                    }
                }
                Out::Snapshot(room, b) => {
                    if !snapshots.push(&conn, room, b) {
                        tracing::warn!(remote = %conn.remote_address(), "snapshots pile up for a client; closing");
                        close(&shared, &conn, ErrorCode::Flood, "snapshots not taken");
                        return;
                    }
                }
                Out::Close(code, reason) => {
                    close(&shared, &conn, code, reason);
                    return;
                }
            }
        }
        crate::queue::trim(&mut batch);
        let now = Instant::now();
        // Nothing for the datagram path (only stream frames, or a copy not
        // due yet): quinn's connection is not even looked at.
        if sched.queued_bytes() == 0 && sched.poll_timeout().is_none_or(|t| t > now) {
            continue;
        }
        sched.set_lossy(loss.lossy(now, &conn, m));
        let Some(max) = loss.max_datagram else {
            continue;
        };
        if sched.dropped() > shed_seen {
            let class = metrics::ClassLabel { class: "ambient" };
            m.shed
                .get_or_create(&class)
                .inc_by(sched.dropped() - shed_seen);
            shed_seen = sched.dropped();
        }
        let space = conn.datagram_send_buffer_space();
        for d in sched.poll_datagrams(now, max, space) {
            if send(&conn, &mut loss, d).is_err() {
                return;
            }
        }
    }
}

/// Send one datagram. The path's datagram size is looked up every 50 ms
/// (see [`LossWatch`]), not per send: when it shrank meanwhile (an MTU
/// black hole), the datagram's messages go again in smaller datagrams.
fn send(
    conn: &quinn::Connection,
    loss: &mut LossWatch,
    d: Bytes,
) -> Result<(), quinn::SendDatagramError> {
    match conn.send_datagram(d.clone()) {
        Err(quinn::SendDatagramError::TooLarge) => {}
        other => return other,
    }
    loss.max_datagram = conn.max_datagram_size();
    let Some(max) = loss.max_datagram else {
        return Err(quinn::SendDatagramError::Disabled);
    };
    let mut p = codec::Packer::new(max);
    // Entries the scheduler packed itself: well formed, and far smaller
    // than the smallest datagram QUIC allows; one that is not is lost like
    // a lost packet (the client repairs sequenced gaps).
    for entry in codec::entries(&d).flatten() {
        let _ = p.push_encoded(entry);
    }
    for d in p.finish() {
        conn.send_datagram(d)?;
    }
    Ok(())
}

/// Whether a connection has lost packets lately: quinn's loss counter,
/// looked at no more than every 50 ms; a loss keeps the path "lossy" for 5 s.
/// The path's largest datagram is looked up at the same time (computing it
/// takes quinn's lock and asks the crypto for its overheads: once per send
/// was a visible share of the fan-out profile).
#[derive(Debug, Default)]
struct LossWatch {
    /// When quinn's counter was last looked at.
    checked_at: Option<Instant>,
    /// Packets lost by then.
    lost: u64,
    /// The path counts as lossy until then.
    lossy_until: Option<Instant>,
    /// The path figures last reported to the metrics.
    path: PathStats,
    /// The largest datagram the path carries, as of the last look.
    max_datagram: Option<usize>,
}

impl LossWatch {
    const EVERY: Duration = Duration::from_millis(50);
    const LOSSY_FOR: Duration = Duration::from_secs(5);

    fn lossy(&mut self, now: Instant, conn: &quinn::Connection, m: &metrics::Metrics) -> bool {
        if (self.checked_at).is_none_or(|t| now.saturating_duration_since(t) >= Self::EVERY) {
            self.checked_at = Some(now);
            self.max_datagram = conn.max_datagram_size();
            let stats = conn.stats();
            self.path.update(m, "client", &stats);
            let lost = stats.path.lost_packets;
            if lost > self.lost {
                self.lossy_until = Some(now + Self::LOSSY_FOR);
            }
            self.lost = lost;
        }
        self.lossy_until.is_some_and(|until| now < until)
    }
}

/// Sleep until `wake`, or for ever when there is nothing to wake for.
async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
