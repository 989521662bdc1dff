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
//! [`crate::admission`]'s; this folder only acts on them.
//!
//! Files: this one takes a connection from handshake to hello, token and
//! welcome; `read` carries what the client sends to the hub; `write`
//! carries the hub's outputs to the client; `close` maps errors to close
//! codes.

mod close;
mod read;
mod write;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use net::token::{unix_now, Purpose};
use net::{self, NetError};
use protocol::message::{ClientMsg, ErrorCode, Hello, ServerMsg, Welcome, PROTOCOL_VERSION};
use protocol::UserId;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::hub_driver::HubIn;
use crate::queue::out_queue;
use crate::shared::Shared;

use close::{close, codec_code, refuse, token_code};
use read::{read_loop, read_stream};
use write::write_loop;

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
