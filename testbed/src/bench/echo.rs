//! A plain quinn datagram echo, with the same transport settings and socket
//! buffers as Ringside's links ([`net`]): the floor every
//! Ringside round trip is compared against.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use net::rustls::pki_types::CertificateDer;
use net::{self, Identity, Tuning};

pub use super::stats::RoundTrips;
use super::stats::{Sampler, Sampling};

/// The echo's ALPN.
pub const ALPN_ECHO: &[u8] = b"ringside-bench-echo/1";

/// Serve the echo on `bind` until `stop` resolves: every datagram goes back
/// as it came. Calls `ready` with the bound address first.
pub async fn serve(
    bind: SocketAddr,
    identity: &Identity,
    ready: impl FnOnce(SocketAddr),
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let endpoint = net::server_endpoint(bind, identity, &[ALPN_ECHO], &Tuning::default())
        .context("binding the echo endpoint")?;
    ready(endpoint.local_addr().context("echo address")?);
    let accept = async {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok(d) = conn.read_datagram().await {
                    if conn.send_datagram(d).is_err() {
                        return;
                    }
                }
            });
        }
    };
    tokio::select! {
        () = accept => {}
        () = stop => {}
    }
    endpoint.close(0u32.into(), b"bye");
    Ok(())
}

/// Connect to the echo at `addr` and time round trips of a `size`-byte
/// datagram as `how` says.
pub async fn round_trips(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
    size: usize,
    how: Sampling,
) -> anyhow::Result<RoundTrips> {
    let (endpoint, conn) = super::dial(addr, roots, ALPN_ECHO, &Tuning::default(), "echo").await?;
    let size = size.max(8);
    let mut s = Sampler::new(how);
    while let Some(i) = s.next_trip() {
        let mut payload = vec![0u8; size];
        payload[..8].copy_from_slice(&i.to_be_bytes());
        let t = Instant::now();
        conn.send_datagram(Bytes::from(payload))
            .context("sending a datagram")?;
        let answered = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                let d = conn.read_datagram().await?;
                if d.len() >= 8 && d[..8] == i.to_be_bytes() {
                    return Ok::<_, quinn::ConnectionError>(());
                }
            }
        })
        .await;
        match answered {
            Ok(Ok(())) => s.record(i, t.elapsed()),
            Ok(Err(e)) => bail!("echo connection lost: {e}"),
            Err(_) => s.lost(),
        }
        s.pause().await;
    }
    let out = s.finish();
    conn.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
    Ok(out)
}
