//! One client connection: hello and token check, then messages in (from
//! datagrams and the control stream, rate limited) and out (through the
//! datagram scheduler, the control stream, or a stream per snapshot).
//!
//! Bad input harms no one else: a malformed or oversized frame, a bad token
//! or a flood closes this connection with a code and a log line.

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
use protocol::{ActionId, Class, Outcome, SessionId};
use tokio::sync::mpsc;

use crate::hub::{ClientId, Out};
use crate::sched::{self, Scheduler};
use crate::server::{HubIn, Shared};

/// How long a client has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages queued from the hub to one client before it counts as too slow.
const CLIENT_QUEUE: usize = 8192;

/// A token bucket: `rate` per second, bursts up to `burst`.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Bucket {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            at: now,
        }
    }

    /// How long until a token is available, after a refused `take`.
    pub fn wait(&self) -> Duration {
        if self.tokens >= 1.0 || self.rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
    }

    /// Take one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub(crate) async fn serve(incoming: quinn::Incoming, shared: Arc<Shared>) {
    let remote = incoming.remote_address();
    let conn = match tokio::time::timeout(HELLO_TIMEOUT, incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "client handshake failed");
            return;
        }
        Err(_) => return,
    };
    let Some((hello, send, recv)) = hello(&conn, &shared).await else {
        return;
    };
    let claims = match shared
        .tokens
        .verify(&hello.token, Purpose::Client, unix_now())
    {
        Ok(c) => c,
        Err(e) => {
            let code = match e {
                TokenError::Expired => ErrorCode::TokenExpired,
                _ => ErrorCode::BadToken,
            };
            tracing::warn!(%remote, error = %e, "client refused: bad token");
            net::close(&conn, code, &e.to_string());
            return;
        }
    };
    let client = shared.next_client.fetch_add(1, Ordering::Relaxed);
    let (out, out_rx) = mpsc::channel::<Out>(CLIENT_QUEUE);
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
    let (stream_tx, stream_rx) = mpsc::channel::<ClientMsg>(256);
    let reader = tokio::spawn(read_stream(conn.clone(), recv, stream_tx));
    let why = read_loop(
        &conn,
        client,
        hello.session,
        &claims,
        &shared,
        &out,
        stream_rx,
    )
    .await;
    tracing::debug!(client, %remote, reason = why, "client gone");
    let _ = shared.hub.send(HubIn::ClientGone { client }).await;
    reader.abort();
    // The writer ends when the hub drops its sender; give it a moment to flush.
    drop(out);
    let _ = tokio::time::timeout(Duration::from_millis(200), writer).await;
}

async fn hello(
    conn: &quinn::Connection,
    shared: &Shared,
) -> Option<(Hello, quinn::SendStream, quinn::RecvStream)> {
    let Ok(Ok((send, mut recv))) = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi()).await
    else {
        net::close(conn, ErrorCode::Timeout, "no hello");
        return None;
    };
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        HELLO_TIMEOUT,
        net::read_frame::<ClientMsg>(&mut recv, &mut buf),
    )
    .await;
    let remote = conn.remote_address();
    match read {
        Ok(Ok(Some(ClientMsg::Hello(h)))) => {
            if h.version != PROTOCOL_VERSION {
                tracing::warn!(%remote, version = h.version, "client speaks another protocol version");
                net::close(conn, ErrorCode::Version, "protocol version");
                return None;
            }
            if shared.draining.load(Ordering::Relaxed) {
                net::close(conn, ErrorCode::Shutdown, "relay draining");
                return None;
            }
            Some((h, send, recv))
        }
        Ok(Err(NetError::Codec(e))) => {
            let code = codec_code(&e);
            tracing::warn!(%remote, error = %e, "client refused: bad hello frame");
            net::close(conn, code, &e.to_string());
            None
        }
        Ok(Ok(Some(_))) => {
            tracing::warn!(%remote, "client refused: first message was not hello");
            net::close(conn, ErrorCode::Malformed, "expected hello");
            None
        }
        _ => {
            net::close(conn, ErrorCode::Timeout, "no hello");
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
                net::close(&conn, codec_code(&e), &e.to_string());
                return;
            }
            Err(_) => return,
        }
    }
}

/// The ids this connection forwarded lately (bounded), so that copies of an
/// action are recognised.
#[derive(Debug, Default)]
struct Recent {
    order: std::collections::VecDeque<ActionId>,
    set: std::collections::BTreeSet<ActionId>,
}

impl Recent {
    const CAP: usize = 1024;

    fn contains(&self, id: ActionId) -> bool {
        self.set.contains(&id)
    }

    fn insert(&mut self, id: ActionId) {
        if self.set.insert(id) {
            self.order.push_back(id);
            if self.order.len() > Self::CAP {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

async fn read_loop(
    conn: &quinn::Connection,
    client: ClientId,
    session: SessionId,
    claims: &Claims,
    shared: &Shared,
    out: &mpsc::Sender<Out>,
    mut stream: mpsc::Receiver<ClientMsg>,
) -> &'static str {
    let mut forwarded = Recent::default();
    let now = Instant::now();
    let mut messages = Bucket::new(
        shared.config.messages_per_sec,
        shared.config.messages_per_sec * 2,
        now,
    );
    let mut actions = Bucket::new(
        shared.config.actions_per_sec,
        shared.config.actions_per_sec * 2,
        now,
    );
    loop {
        let (msgs, via_stream): (Vec<Result<ClientMsg, CodecError>>, bool) = tokio::select! {
            d = conn.read_datagram() => match d {
                Ok(d) => (codec::unpack::<ClientMsg>(&d).collect(), false),
                Err(_) => return "connection closed",
            },
            m = stream.recv() => match m {
                Some(m) => (vec![Ok(m)], true),
                None => return "control stream ended",
            },
        };
        for m in msgs {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(client, error = %e, "malformed datagram from client; closing");
                    net::close(conn, codec_code(&e), &e.to_string());
                    return "malformed datagram";
                }
            };
            if !messages.take(Instant::now()) {
                tracing::warn!(client, user = %claims.user, "client flooding; closing");
                net::close(conn, ErrorCode::Flood, "too many messages");
                return "flood";
            }
            let cmd = match m {
                ClientMsg::Ping { nonce } => {
                    if let Some(origin_time) = shared.clock.origin_now() {
                        let pong = ServerMsg::Pong { nonce, origin_time };
                        let _ = out.try_send(Out::Datagram(item(
                            Class::Session,
                            &pong,
                            sched::Copies::Once,
                        )));
                    }
                    continue;
                }
                ClientMsg::Join { room, since } => match claims.grant(room) {
                    Some(_) => HubIn::Join {
                        client,
                        room,
                        since,
                    },
                    None => HubIn::RefuseJoin { client, room },
                },
                ClientMsg::Leave { room } => HubIn::Leave { client, room },
                ClientMsg::Resync { room, from } => HubIn::Resync { client, room, from },
                ClientMsg::Action(msg) => {
                    if msg.id.session != session {
                        tracing::warn!(client, user = %claims.user, "action of another session; closing");
                        net::close(conn, ErrorCode::Malformed, "action of another session");
                        return "action of another session";
                    }
                    // Copies of an action already forwarded (the datagram
                    // twice, the stream fallback) cost nothing more.
                    let copy = forwarded.contains(msg.id);
                    let Some(grant) = claims.grant(msg.room) else {
                        let ack = ServerMsg::Ack {
                            id: msg.id,
                            outcome: Outcome::Rejected {
                                reason: Reason::NoGrant,
                            },
                        };
                        let _ = out.try_send(Out::Datagram(item(
                            Class::Session,
                            &ack,
                            sched::Copies::Twice,
                        )));
                        if via_stream {
                            let _ = out.try_send(Out::Reliable(frame(&ack)));
                        }
                        continue;
                    };
                    if !copy && !actions.take(Instant::now()) {
                        // Over the rate: not forwarded, and the sender is told
                        // so (not an outcome: nothing happened) with when to
                        // send it again.
                        let retry_after_ms =
                            u32::try_from(actions.wait().as_millis().max(1)).unwrap_or(u32::MAX);
                        tracing::debug!(client, id = %msg.id, retry_after_ms, "action over the rate; throttled");
                        let msg = ServerMsg::Throttled {
                            id: msg.id,
                            retry_after_ms,
                        };
                        let _ = out.try_send(Out::Datagram(item(
                            Class::Session,
                            &msg,
                            sched::Copies::Twice,
                        )));
                        if via_stream {
                            let _ = out.try_send(Out::Reliable(frame(&msg)));
                        }
                        continue;
                    }
                    forwarded.insert(msg.id);
                    let actor = Actor {
                        user: claims.user,
                        grant,
                    };
                    HubIn::Action {
                        client,
                        actor,
                        msg,
                        via_stream,
                    }
                }
                ClientMsg::Renew { .. } => continue,
                ClientMsg::Bye => return "bye",
                ClientMsg::Hello(_) => {
                    net::close(conn, ErrorCode::Malformed, "second hello");
                    return "second hello";
                }
            };
            if shared.hub.send(cmd).await.is_err() {
                return "relay stopping";
            }
        }
    }
}

fn item(class: Class, msg: &ServerMsg, copies: sched::Copies) -> sched::Item {
    sched::Item {
        class,
        payload: Bytes::from(codec::encode(msg).unwrap_or_default()),
        coalesce: None,
        copies,
    }
}

fn frame(msg: &ServerMsg) -> Bytes {
    let mut b = bytes::BytesMut::new();
    let _ = codec::write_frame(msg, &mut b);
    b.freeze()
}

async fn write_loop(
    conn: quinn::Connection,
    mut ctrl: quinn::SendStream,
    mut rx: mpsc::Receiver<Out>,
    shared: Arc<Shared>,
    datagrams: bool,
) {
    let redundancy = (shared.config.redundancy_us > 0).then_some(shared.config.redundancy_us);
    let mut sched = Scheduler::new(shared.config.client_budget, redundancy);
    let clock = shared.clock.clone();
    let mut loss = LossWatch::default();
    loop {
        let wake = match (sched.queued_bytes() > 0, sched.poll_timeout()) {
            // Queued but no room in quinn's buffer last time: look again soon.
            (true, _) => Some(clock.local() + 1_000),
            (false, t) => t,
        };
        let woke = tokio::select! {
            o = rx.recv() => Some(o),
            () = sleep_until_local(&clock, wake) => None,
        };
        let mut batch = Vec::new();
        match woke {
            // The hub let go of this client: flush what is queued, then stop.
            Some(None) => break,
            Some(Some(out)) => {
                batch.push(out);
                while batch.len() < 1024 {
                    match rx.try_recv() {
                        Ok(o) => batch.push(o),
                        Err(_) => break,
                    }
                }
            }
            // A timer: copies fell due, or quinn's buffer has room again.
            None => {}
        }
        for out in batch {
            match out {
                Out::Datagram(item) if !datagrams => {
                    // A client without datagrams gets everything on the stream.
                    let mut b = bytes::BytesMut::with_capacity(item.payload.len() + 4);
                    b.extend_from_slice(&(item.payload.len() as u32).to_be_bytes());
                    b.extend_from_slice(&item.payload);
                    if ctrl.write_all(&b).await.is_err() {
                        return;
                    }
                }
                Out::Datagram(item) => {
                    if sched.push(item).is_err() {
                        tracing::warn!(remote = %conn.remote_address(), "client cannot keep up; closing");
                        net::close(&conn, ErrorCode::Flood, "client too slow");
                        return;
                    }
                }
                Out::Reliable(b) => {
                    if ctrl.write_all(&b).await.is_err() {
                        return;
                    }
                }
                Out::Snapshot(b) => {
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        if let Ok(mut s) = conn.open_uni().await {
                            let _ = s.write_all(&b).await;
                            let _ = s.finish();
                        }
                    });
                }
                Out::Close(code, reason) => {
                    net::close(&conn, code, reason);
                    return;
                }
            }
        }
        let Some(max) = conn.max_datagram_size() else {
            continue;
        };
        let now = clock.local();
        sched.set_lossy(loss.lossy(now, &conn));
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
    checked_at: u64,
    lost: u64,
    lossy_until: u64,
}

impl LossWatch {
    fn lossy(&mut self, now: u64, conn: &quinn::Connection) -> bool {
        if now.saturating_sub(self.checked_at) >= 50_000 {
            self.checked_at = now;
            let lost = conn.stats().path.lost_packets;
            if lost > self.lost {
                self.lossy_until = now + 5_000_000;
            }
            self.lost = lost;
        }
        now < self.lossy_until
    }
}

async fn sleep_until_local(clock: &crate::clock::Clock, wake: Option<u64>) {
    match wake {
        Some(t) => {
            let now = clock.local();
            tokio::time::sleep(Duration::from_micros(t.saturating_sub(now))).await;
        }
        None => std::future::pending().await,
    }
}
