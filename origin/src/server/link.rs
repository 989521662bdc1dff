//! Relay links: accept a relay's connection, check that it belongs to the
//! deployment, then carry its messages in and its frames out.
//!
//! Only relays get in: the TLS endpoint speaks only the relay ALPN, and the
//! first message must carry a proof signed with the cluster secret. Anything
//! else closes that one connection with a code and a log line.
//!
//! Each link runs in a `relay_link` span (the relay's address, then its
//! number and name once it said hello), so every line about it, JSON or
//! text, says which relay it was; `ringside_origin_relays` counts the
//! links past hello.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use net::token::{unix_now, Purpose};
use protocol::codec;
use protocol::message::{DownMsg, ErrorCode, UpMsg, PROTOCOL_VERSION};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::shared::{Input, Shared};

/// How long a relay has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) async fn accept(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
            _ = shutdown.changed() => break,
        };
        let shared = shared.clone();
        let span = tracing::info_span!(
            "relay_link",
            remote = %incoming.remote_address(),
            relay = tracing::field::Empty,
            name = tracing::field::Empty,
        );
        tokio::spawn(
            async move {
                if let Err(e) = serve(incoming, shared).await {
                    tracing::debug!(error = %e, "relay link ended");
                }
            }
            .instrument(span),
        );
    }
}

async fn serve(incoming: quinn::Incoming, shared: Arc<Shared>) -> Result<(), net::NetError> {
    let remote = incoming.remote_address();
    let conn = incoming.await?;
    let (mut send, mut recv) = match tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi()).await {
        Ok(r) => r?,
        Err(_) => {
            net::close(&conn, ErrorCode::Timeout, "no hello");
            return Ok(());
        }
    };
    let mut buf = Vec::new();
    let hello =
        tokio::time::timeout(HELLO_TIMEOUT, net::read_frame::<UpMsg>(&mut recv, &mut buf)).await;
    let relay_name = match hello {
        Ok(Ok(Some(UpMsg::Hello {
            version,
            relay,
            proof,
        }))) => {
            if version != PROTOCOL_VERSION {
                tracing::warn!(%remote, version, "relay speaks another protocol version");
                net::close(&conn, ErrorCode::Version, "protocol version");
                return Ok(());
            }
            if let Err(e) = shared.cluster.verify(&proof, Purpose::Cluster, unix_now()) {
                tracing::warn!(%remote, relay, error = %e, "relay refused: bad cluster proof");
                net::close(&conn, ErrorCode::BadToken, "bad cluster proof");
                return Ok(());
            }
            relay
        }
        Ok(Err(net::NetError::Codec(e))) => {
            tracing::warn!(%remote, error = %e, "relay refused: malformed hello");
            net::close(&conn, ErrorCode::Malformed, "malformed hello");
            return Ok(());
        }
        _ => {
            tracing::warn!(%remote, "relay refused: no hello");
            net::close(&conn, ErrorCode::Timeout, "no hello");
            return Ok(());
        }
    };
    net::write_frame(
        &mut send,
        &DownMsg::Welcome {
            origin: shared.name.clone(),
        },
    )
    .await?;
    let relay = shared.next_relay.fetch_add(1, Ordering::Relaxed);
    let span = tracing::Span::current();
    span.record("relay", relay);
    span.record("name", relay_name.as_str());
    tracing::info!(relay, name = %relay_name, %remote, "relay connected");
    let _connected = Connected::new(&shared.metrics.relays);
    let (out, out_rx) = mpsc::channel::<Bytes>(shared.relay_queue);
    let up = Input::RelayUp {
        relay,
        name: relay_name.clone(),
        out: out.clone(),
        conn: conn.clone(),
    };
    if shared.inputs.send(up).await.is_err() {
        return Ok(());
    }
    let writer = tokio::spawn(write_loop(send, out_rx));
    let result = read_loop(&conn, &mut recv, relay, &shared, &out).await;
    let lost = went_silent(conn.close_reason().as_ref());
    let gone = Input::RelayGone {
        relay,
        name: relay_name.clone(),
        lost,
    };
    let _ = shared.inputs.send(gone).await;
    writer.abort();
    match lost {
        true => {
            tracing::warn!(relay, name = %relay_name, "relay lost (its link went silent); telling the other relays")
        }
        false => tracing::info!(relay, name = %relay_name, "relay disconnected"),
    }
    result
}

/// Whether a link that ended was lost rather than closed: it timed out
/// (the relay died or is cut off; the backbone's idle timeout is short, see
/// `net::Tuning::backbone`) or was reset (the relay's host restarted).
fn went_silent(reason: Option<&quinn::ConnectionError>) -> bool {
    matches!(
        reason,
        Some(quinn::ConnectionError::TimedOut | quinn::ConnectionError::Reset)
    )
}

async fn read_loop(
    conn: &quinn::Connection,
    recv: &mut quinn::RecvStream,
    relay: u64,
    shared: &Shared,
    out: &mpsc::Sender<Bytes>,
) -> Result<(), net::NetError> {
    let mut buf = Vec::new();
    loop {
        let msg = match net::read_frame::<UpMsg>(recv, &mut buf).await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(net::NetError::Codec(e)) => {
                tracing::warn!(relay, error = %e, "malformed frame from relay; closing");
                net::close(conn, ErrorCode::Malformed, "malformed frame");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        match msg {
            UpMsg::Ping { nonce } => {
                let pong = DownMsg::Pong {
                    nonce,
                    origin_time: shared.clock.now(),
                };
                let mut b = BytesMut::new();
                if codec::write_frame(&pong, &mut b).is_ok() {
                    let _ = out.try_send(b.freeze());
                }
            }
            UpMsg::Hello { .. } => {
                net::close(conn, ErrorCode::Malformed, "second hello");
                return Ok(());
            }
            msg => {
                if shared.inputs.send(Input::Up { relay, msg }).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// Write frames as they come, coalescing whatever is queued into one write.
async fn write_loop(mut send: quinn::SendStream, mut frames: mpsc::Receiver<Bytes>) {
    let mut buf = BytesMut::new();
    while let Some(first) = frames.recv().await {
        buf.clear();
        buf.extend_from_slice(&first);
        while buf.len() < 256 * 1024 {
            match frames.try_recv() {
                Ok(b) => buf.extend_from_slice(&b),
                Err(_) => break,
            }
        }
        if send.write_all(&buf).await.is_err() {
            break;
        }
    }
}

/// Counts a relay link in `ringside_origin_relays` while it lives (also
/// when its task is aborted at shutdown).
struct Connected(prometheus_client::metrics::gauge::Gauge);

impl Connected {
    fn new(gauge: &prometheus_client::metrics::gauge::Gauge) -> Connected {
        gauge.inc();
        Connected(gauge.clone())
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.dec();
    }
}
