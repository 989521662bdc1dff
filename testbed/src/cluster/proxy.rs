//! A TCP proxy that can be cut: what stands between an origin node and each
//! NATS server, so a scenario can partition the node from NATS. While cut,
//! every connection through it is closed and new ones are accepted and
//! closed at once (the node's client sees its server vanish and its
//! reconnects fail); healed, connections pass again. Bytes are copied
//! unchanged (`tokio::io::copy_bidirectional`): the proxy never reads NATS.
//! At most [`MAX_CONNS`] connections at once; more are closed on arrival.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

/// Most connections one proxy carries at once (a node's NATS client keeps
/// one).
pub const MAX_CONNS: usize = 64;

/// A running proxy; stopped (with every connection through it) on drop.
pub struct TcpProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    cut: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Listen on a free loopback port, forwarding to `upstream`.
    pub async fn spawn(upstream: SocketAddr) -> anyhow::Result<TcpProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding a proxy port")?;
        let addr = listener.local_addr()?;
        let (cut, cut_rx) = watch::channel(false);
        let task = tokio::spawn(accept(listener, upstream, cut_rx));
        Ok(TcpProxy {
            addr,
            upstream,
            cut,
            task,
        })
    }

    /// Where to connect instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Close every connection and refuse new ones until [`TcpProxy::heal`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Let connections through again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }

    /// Whether it is cut.
    pub fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // The accept task owns the connections' JoinSet: aborting it drops
        // the set, which aborts them.
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, cut: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNS));
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            // Reap finished connections as they end.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok((inbound, _)) = accepted else { continue };
        if *cut.borrow() {
            drop(inbound);
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(inbound);
            continue;
        };
        let mut cut = cut.clone();
        conns.spawn(async move {
            let _slot = slot;
            let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                return;
            };
            let mut inbound = inbound;
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = cut.wait_for(|c| *c) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server; returns its address.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await?;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn a_cut_proxy_closes_connections_until_healed() {
        let proxy = TcpProxy::spawn(echo().await).await.expect("proxy");
        assert_eq!(round_trip(proxy.addr()).await.expect("through"), b"ping");

        let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
        open.write_all(b"ab").await.expect("write");
        let mut two = [0u8; 2];
        open.read_exact(&mut two).await.expect("echoed");
        proxy.cut();
        assert!(proxy.is_cut());
        // The open connection is closed: a read ends (0 bytes or an error).
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), open.read(&mut buf))
            .await
            .expect("closed within 5 s");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        assert!(round_trip(proxy.addr()).await.is_err(), "new ones fail");

        proxy.heal();
        assert_eq!(round_trip(proxy.addr()).await.expect("healed"), b"ping");
    }
}
