//! One client connection: hello and token check, then messages in (from
//! datagrams and the control stream, rate limited) and out (through the
//! datagram scheduler, the control stream, or one stream per snapshot).
//!
//! Bad input harms no one else: a malformed or oversized frame, a bad token,
//! a stream it may not open, or a flood closes this connection with a code
//! and a log line. What it can make the relay hold is bounded (see the
//! README's "Limits" for the sum per connection): quinn's windows (set in
//! `Tuning::client_facing`), the hub's byte-bounded queue to it, the
//! scheduler's budget, and at most one snapshot in flight with at most one
//! more waiting per room it follows. Decisions about who may do what are
//! [`crate::admission`]'s; this file only acts on them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::codec::{self, CodecError};
use protocol::message::Actor;
use protocol::message::{ClientMsg, ErrorCode, Hello, ServerMsg, Welcome, PROTOCOL_VERSION};
use protocol::net::{self, NetError};
use protocol::room::Reason;
use protocol::token::{unix_now, Claims, Purpose, TokenError};
use protocol::{ActionId, Class, Outcome, RoomId, SessionId, UserId};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::admission::{ActionVerdict, Requests};
use crate::hub::{self, ClientId, Out};
use crate::hub_driver::HubIn;
use crate::metrics::{self, PathStats};
use crate::queue::{out_queue, OutRx, OutTx};
use crate::sched::{self, Scheduler};
use crate::shared::Shared;

/// Copies of one action (datagram copy, stream fallbacks) forwarded without
/// spending the user's rate; further copies count as new actions.
const FREE_COPIES: u8 = 3;

/// Gives the connection's place back to admission when the connection ends,
/// however it ends.
struct Admitted {
    shared: Arc<Shared>,
    addr: SocketAddr,
    user: Option<UserId>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.shared.metrics.connections.dec();
        let (addr, user) = (self.addr.ip(), self.user);
        self.shared
            .admit(|a| a.handle_closed(Instant::now(), addr, user));
    }
}

/// Close a connection for abuse: the close code, a strike against its
/// address (see [`crate::admission`]'s penalty box).
fn refuse(shared: &Shared, conn: &quinn::Connection, code: ErrorCode, reason: &str) {
    close(shared, conn, code, reason);
    let addr = conn.remote_address().ip();
    shared.admit(|a| a.handle_abuse(Instant::now(), addr));
}

/// Close a connection with `code`, counted in `ringside_relay_clients_closed_total`.
fn close(shared: &Shared, conn: &quinn::Connection, code: ErrorCode, reason: &str) {
    shared.metrics.closed_with(code);
    net::close(conn, code, reason);
}

fn token_code(e: &TokenError) -> ErrorCode {
    match e {
        TokenError::Expired => ErrorCode::TokenExpired,
        _ => ErrorCode::BadToken,
    }
}

/// When a token expiring at `expires` (Unix seconds) runs out, as an instant.
fn expiry(expires: u64) -> tokio::time::Instant {
    let left = expires.saturating_sub(unix_now());
    tokio::time::Instant::now() + Duration::from_secs(left)
}

/// Serve one incoming connection, in a span naming the relay, the peer and
/// (once known) the user, so that every log line of it says whose it is.
pub(crate) async fn serve(incoming: quinn::Incoming, shared: Arc<Shared>) {
    let span = tracing::info_span!(
        "conn",
        relay = %shared.config.name,
        remote = %incoming.remote_address(),
        user = tracing::field::Empty,
    );
    serve_in_span(incoming, shared).instrument(span).await;
}

async fn serve_in_span(incoming: quinn::Incoming, shared: Arc<Shared>) {
    let remote = incoming.remote_address();
    shared.metrics.connections.inc();
    let mut admitted = Admitted {
        shared: shared.clone(),
        addr: remote,
        user: None,
    };
    let limit = Duration::from_millis(shared.config.limits.hello_timeout_ms);
    let deadline = tokio::time::Instant::now() + limit;
    let conn = match tokio::time::timeout_at(deadline, incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "client handshake failed");
            return;
        }
        Err(_) => return,
    };
    let Some((hello, send, recv)) = hello(&conn, &shared, deadline).await else {
        return;
    };
    let claims = match shared
        .tokens
        .verify(&hello.token, Purpose::Client, unix_now())
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%remote, error = %e, "client refused: bad token");
            refuse(&shared, &conn, token_code(&e), &e.to_string());
            return;
        }
    };
    if let Err(code) = shared.admit(|a| a.handle_authenticated(Instant::now(), claims.user)) {
        tracing::warn!(%remote, user = %claims.user, "client refused: too many sessions");
        refuse(&shared, &conn, code, "too many sessions for this user");
        return;
    }
    admitted.user = Some(claims.user);
    tracing::Span::current().record("user", tracing::field::display(claims.user));
    let client = shared.next_client.fetch_add(1, Ordering::Relaxed);
    let (out, out_rx) = out_queue(
        shared.config.limits.queue_bytes,
        shared.metrics.queued_bytes.clone(),
    );
    let welcome = ServerMsg::Welcome(Welcome {
        session: hello.session,
        relay: shared.config.name.clone(),
        region: shared.config.region.clone(),
        upstream: true,
    });
    let mut send = send;
    if net::write_frame(&mut send, &welcome).await.is_err() {
        return;
    }
    let up = HubIn::ClientUp {
        client,
        session: hello.session,
        user: claims.user,
        out: out.clone(),
        conn: conn.clone(),
    };
    if shared.hub.send(up).await.is_err() {
        return;
    }
    tracing::debug!(client, %remote, user = %claims.user, "client connected");
    let writer = tokio::spawn(write_loop(
        conn.clone(),
        send,
        out_rx,
        shared.clone(),
        hello.datagrams,
    ));
    let (stream_tx, stream_rx) = mpsc::channel::<ClientMsg>(64);
    let reader = tokio::spawn(read_stream(conn.clone(), recv, stream_tx, shared.clone()));
    let why = read_loop(
        &conn,
        client,
        hello.session,
        claims,
        &shared,
        &out,
        stream_rx,
    )
    .await;
    tracing::debug!(client, %remote, reason = why, "client gone");
    let clean = why == "bye";
    let _ = shared.hub.send(HubIn::ClientGone { client, clean }).await;
    reader.abort();
    // The writer ends when the hub drops its sender; give it a moment to flush.
    drop(out);
    let _ = tokio::time::timeout(Duration::from_millis(200), writer).await;
    drop(admitted);
}

async fn hello(
    conn: &quinn::Connection,
    shared: &Shared,
    deadline: tokio::time::Instant,
) -> Option<(Hello, quinn::SendStream, quinn::RecvStream)> {
    let Ok(Ok((send, mut recv))) = tokio::time::timeout_at(deadline, conn.accept_bi()).await else {
        refuse(shared, conn, ErrorCode::Timeout, "no hello");
        return None;
    };
    let mut buf = Vec::new();
    let read =
        tokio::time::timeout_at(deadline, net::read_frame::<ClientMsg>(&mut recv, &mut buf)).await;
    let remote = conn.remote_address();
    match read {
        Ok(Ok(Some(ClientMsg::Hello(h)))) => {
            if h.version != PROTOCOL_VERSION {
                tracing::warn!(%remote, version = h.version, "client speaks another protocol version");
                close(shared, conn, ErrorCode::Version, "protocol version");
                return None;
            }
            if shared.draining.load(Ordering::Relaxed) {
                close(shared, conn, ErrorCode::Shutdown, "relay draining");
                return None;
            }
            Some((h, send, recv))
        }
        Ok(Err(NetError::Codec(e))) => {
            let code = codec_code(&e);
            tracing::warn!(%remote, error = %e, "client refused: bad hello frame");
            refuse(shared, conn, code, &e.to_string());
            None
        }
        Ok(Ok(Some(_))) => {
            tracing::warn!(%remote, "client refused: first message was not hello");
            refuse(shared, conn, ErrorCode::Malformed, "expected hello");
            None
        }
        _ => {
            refuse(shared, conn, ErrorCode::Timeout, "no hello");
            None
        }
    }
}

fn codec_code(e: &CodecError) -> ErrorCode {
    match e {
        CodecError::TooLarge { .. } => ErrorCode::TooLarge,
        _ => ErrorCode::Malformed,
    }
}

/// Frames from the control stream, handed to the main loop.
async fn read_stream(
    conn: quinn::Connection,
    mut recv: quinn::RecvStream,
    tx: mpsc::Sender<ClientMsg>,
    shared: Arc<Shared>,
) {
    let mut buf = Vec::new();
    loop {
        match net::read_frame::<ClientMsg>(&mut recv, &mut buf).await {
            Ok(Some(m)) => {
                if tx.send(m).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(NetError::Codec(e)) => {
                tracing::warn!(remote = %conn.remote_address(), error = %e, "bad frame from client; closing");
                refuse(&shared, &conn, codec_code(&e), &e.to_string());
                return;
            }
            Err(_) => return,
        }
    }
}

/// The ids this connection forwarded lately (bounded), with the copies of
/// each seen since, so that copies of an action are recognised.
#[derive(Debug, Default)]
struct Recent {
    order: std::collections::VecDeque<ActionId>,
    copies: BTreeMap<ActionId, u8>,
}

impl Recent {
    const CAP: usize = 1024;

    /// A copy of a forwarded action: `Some(true)` if it is still free.
    fn copy(&mut self, id: ActionId) -> Option<bool> {
        let n = self.copies.get_mut(&id)?;
        *n = n.saturating_add(1);
        Some(*n <= FREE_COPIES)
    }

    fn insert(&mut self, id: ActionId) {
        if self.copies.insert(id, 0).is_none() {
            self.order.push_back(id);
            if self.order.len() > Self::CAP {
                if let Some(old) = self.order.pop_front() {
                    self.copies.remove(&old);
                }
            }
        }
    }
}

async fn read_loop(
    conn: &quinn::Connection,
    client: ClientId,
    session: SessionId,
    mut claims: Claims,
    shared: &Shared,
    out: &OutTx,
    mut stream: mpsc::Receiver<ClientMsg>,
) -> &'static str {
    let mut forwarded = Recent::default();
    let mut requests = Requests::new(&shared.config.limits, Instant::now());
    let mut last_report: Option<Instant> = None;
    let user = claims.user;
    let expires = tokio::time::sleep_until(expiry(claims.expires));
    tokio::pin!(expires);
    loop {
        let (msgs, via_stream): (Vec<Result<ClientMsg, CodecError>>, bool) = tokio::select! {
            d = conn.read_datagram() => match d {
                Ok(d) => (codec::unpack::<ClientMsg>(&d).collect(), false),
                // Its `Bye` may still be on its way through the stream
                // reader: a client closing with `Normal` said goodbye.
                Err(e) if net::close_code(&e) == Some(ErrorCode::Normal) => return "bye",
                Err(_) => return "connection closed",
            },
            m = stream.recv() => match m {
                Some(m) => (vec![Ok(m)], true),
                None => return "control stream ended",
            },
            () = &mut expires => {
                tracing::debug!(client, %user, "token expired; closing");
                close(shared, conn, ErrorCode::TokenExpired, "token expired");
                return "token expired";
            }
        };
        for m in msgs {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(client, error = %e, "malformed datagram from client; closing");
                    refuse(shared, conn, codec_code(&e), &e.to_string());
                    return "malformed datagram";
                }
            };
            let now = Instant::now();
            if !shared.admit(|a| a.handle_message(now, user)) {
                tracing::warn!(client, %user, "client flooding; closing");
                refuse(shared, conn, ErrorCode::Flood, "too many messages");
                return "flood";
            }
            let cmd = match m {
                ClientMsg::Ping { nonce } => {
                    if let Some(origin_time) = shared.origin_clock.origin_at(Instant::now()) {
                        let pong = ServerMsg::Pong { nonce, origin_time };
                        let _ = out.push(Out::Datagram(sched::Item {
                            class: Class::Session,
                            payload: hub::payload(&pong),
                            coalesce: None,
                            copies: sched::Copies::Once,
                        }));
                    }
                    continue;
                }
                ClientMsg::Join { room, since } => {
                    if !requests.take(now) {
                        HubIn::RefuseJoin {
                            client,
                            room,
                            reason: Reason::TooMany,
                        }
                    } else if claims.grant(room).is_some() {
                        HubIn::Join {
                            client,
                            room,
                            since,
                        }
                    } else {
                        HubIn::RefuseJoin {
                            client,
                            room,
                            reason: Reason::NoGrant,
                        }
                    }
                }
                ClientMsg::Leave { room } => HubIn::Leave { client, room },
                ClientMsg::Resync { room, from } => {
                    // Over budget: nothing; the client's repair timer asks again.
                    if !requests.take(now) {
                        continue;
                    }
                    HubIn::Resync { client, room, from }
                }
                ClientMsg::Action(msg) => {
                    if msg.id.session != session {
                        tracing::warn!(client, %user, "action of another session; closing");
                        refuse(
                            shared,
                            conn,
                            ErrorCode::Malformed,
                            "action of another session",
                        );
                        return "action of another session";
                    }
                    let Some(grant) = claims.grant(msg.room) else {
                        let ack = ServerMsg::Ack {
                            id: msg.id,
                            outcome: Outcome::Rejected {
                                reason: Reason::NoGrant,
                            },
                        };
                        answer(out, &ack, via_stream);
                        continue;
                    };
                    // Copies of an action already forwarded (the datagram
                    // twice, the stream fallback) are free up to a point;
                    // past it they cost what a new action costs.
                    let free = forwarded.copy(msg.id) == Some(true);
                    if !free {
                        if let ActionVerdict::Throttle(wait) =
                            shared.admit(|a| a.handle_action(now, user))
                        {
                            // Not forwarded, and the sender is told so (not an
                            // outcome: nothing happened) with when to retry.
                            let retry_after_ms =
                                u32::try_from(wait.as_millis().max(1)).unwrap_or(u32::MAX);
                            tracing::debug!(client, id = %msg.id, retry_after_ms, "action over the rate; throttled");
                            let msg = ServerMsg::Throttled {
                                id: msg.id,
                                retry_after_ms,
                            };
                            answer(out, &msg, via_stream);
                            continue;
                        }
                    }
                    forwarded.insert(msg.id);
                    let actor = Actor { user, grant };
                    HubIn::Action {
                        client,
                        actor,
                        msg,
                        via_stream,
                    }
                }
                ClientMsg::Renew { token } => {
                    match shared.tokens.verify(&token, Purpose::Client, unix_now()) {
                        Ok(fresh) if fresh.user == user => {
                            expires.as_mut().reset(expiry(fresh.expires));
                            claims = fresh;
                        }
                        Ok(_) => {
                            tracing::warn!(client, %user, "renewal with another user's token; closing");
                            refuse(shared, conn, ErrorCode::BadToken, "token of another user");
                            return "renewed as another user";
                        }
                        Err(e) => {
                            tracing::warn!(client, %user, error = %e, "bad renewal token; closing");
                            close(shared, conn, token_code(&e), &e.to_string());
                            return "bad renewal";
                        }
                    }
                    continue;
                }
                ClientMsg::Bye => return "bye",
                ClientMsg::Report(report) => {
                    // At most one report per interval counts; it is the
                    // client's word about itself, bounded in what it moves.
                    let due = last_report
                        .is_none_or(|t| now.duration_since(t) >= metrics::REPORT_EVERY_MIN);
                    if due {
                        last_report = Some(now);
                        shared.metrics.observe_report(&report);
                    } else {
                        shared.metrics.reports_ignored.inc();
                    }
                    continue;
                }
                ClientMsg::Hello(_) => {
                    refuse(shared, conn, ErrorCode::Malformed, "second hello");
                    return "second hello";
                }
            };
            if shared.hub.send(cmd).await.is_err() {
                return "relay stopping";
            }
        }
    }
}

/// A session-class answer to the client (see [`hub::answer`]).
fn answer(out: &OutTx, msg: &ServerMsg, via_stream: bool) {
    for o in hub::answer(msg, via_stream) {
        let _ = out.push(o);
    }
}

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

async fn write_loop(
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
    loop {
        let wake = match (sched.queued_bytes() > 0, sched.poll_timeout()) {
            // Queued but no room in quinn's buffer last time: look again soon.
            (true, _) => Some(Instant::now() + Duration::from_millis(1)),
            (false, t) => t,
        };
        let woke = tokio::select! {
            o = rx.recv() => Some(o),
            () = sleep_until(wake) => None,
            sent = snapshots.poll() => {
                if sent.is_err() {
                    tracing::warn!(remote = %conn.remote_address(), "client did not take a snapshot in time; closing");
                    close(&shared, &conn, ErrorCode::Flood, "snapshot not taken");
                    return;
                }
                snapshots.start_next(&conn);
                None
            }
        };
        let mut batch = Vec::new();
        match woke {
            // The hub let go of this client: flush what is queued, then stop.
            Some(None) => break,
            Some(Some(out)) => {
                batch.push(out);
                while batch.len() < 1024 {
                    match rx.try_recv() {
                        Some(o) => batch.push(o),
                        None => break,
                    }
                }
            }
            // A timer: copies fell due, or quinn's buffer has room again.
            None => {}
        }
        for out in batch {
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
        let Some(max) = conn.max_datagram_size() else {
            continue;
        };
        let now = Instant::now();
        sched.set_lossy(loss.lossy(now, &conn, m));
        if sched.dropped() > shed_seen {
            let class = metrics::ClassLabel { class: "ambient" };
            m.shed
                .get_or_create(&class)
                .inc_by(sched.dropped() - shed_seen);
            shed_seen = sched.dropped();
        }
        let space = conn.datagram_send_buffer_space();
        for d in sched.poll_datagrams(now, max, space) {
            if conn.send_datagram(d).is_err() {
                return;
            }
        }
    }
}

/// Whether a connection has lost packets lately: quinn's loss counter,
/// looked at no more than every 50 ms; a loss keeps the path "lossy" for 5 s.
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
}

impl LossWatch {
    const EVERY: Duration = Duration::from_millis(50);
    const LOSSY_FOR: Duration = Duration::from_secs(5);

    fn lossy(&mut self, now: Instant, conn: &quinn::Connection, m: &metrics::Metrics) -> bool {
        if (self.checked_at).is_none_or(|t| now.saturating_duration_since(t) >= Self::EVERY) {
            self.checked_at = Some(now);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_free_only_up_to_a_point() {
        // Finding 13: once the original was acked, its copies went to the
        // origin without costing anything, at any rate.
        let id = ActionId {
            session: SessionId(1),
            n: 1,
        };
        let mut r = Recent::default();
        assert_eq!(r.copy(id), None, "not forwarded yet: a new action");
        r.insert(id);
        let free = (0..10).filter(|_| r.copy(id) == Some(true)).count();
        assert_eq!(free, usize::from(FREE_COPIES));
    }
}
