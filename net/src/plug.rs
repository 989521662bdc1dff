//! Fault injection (feature `fault`): a socket whose plug can be pulled,
//! for the testbed's killed relays and partitions.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Pulls the plug on an endpoint's socket: while pulled, nothing goes out
/// and everything that comes in is discarded, as if the host had died or the
/// network had partitioned. Peers notice only by their idle timeout.
/// (Dropping quinn connections instead would send a polite CONNECTION_CLOSE.)
#[derive(Clone, Debug, Default)]
pub struct Plug(Arc<PlugState>);

#[derive(Debug, Default)]
struct PlugState {
    cut: AtomicBool,
    /// The socket, to tell when quinn has let go of it.
    socket: std::sync::OnceLock<std::sync::Weak<Pluggable>>,
}

impl Plug {
    /// Cut the socket off.
    pub fn pull(&self) {
        self.0.cut.store(true, Ordering::SeqCst);
    }

    /// Put the plug back (a partition heals).
    pub fn restore(&self) {
        self.0.cut.store(false, Ordering::SeqCst);
    }

    /// Whether the plug is pulled.
    pub fn is_pulled(&self) -> bool {
        self.0.cut.load(Ordering::SeqCst)
    }

    /// Wait (up to `limit`) until the endpoint has released its socket, so
    /// its port can be bound again. Returns whether it was released.
    pub async fn released(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let alive = self.0.socket.get().is_some_and(|w| w.strong_count() > 0);
            if !alive {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            // quinn's endpoint driver drops the socket when its last
            // connection has drained; nothing signals it, so look again.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// A UDP socket that can be cut off by its [`Plug`].
#[derive(Debug)]
struct Pluggable {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    plug: Plug,
}

impl quinn::AsyncUdpSocket for Pluggable {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit<'_>) -> std::io::Result<()> {
        if self.plug.is_pulled() {
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context<'_>,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            let polled = self.inner.poll_recv(cx, bufs, meta);
            match polled {
                // Drain and discard, keeping the waker registered.
                std::task::Poll::Ready(Ok(_)) if self.plug.is_pulled() => continue,
                other => return other,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Wrap `inner` in a socket whose plug can be pulled.
pub(crate) fn pluggable(
    inner: Arc<dyn quinn::AsyncUdpSocket>,
) -> (Arc<dyn quinn::AsyncUdpSocket>, Plug) {
    let plug = Plug::default();
    let socket = Arc::new(Pluggable {
        inner,
        plug: plug.clone(),
    });
    let _ = plug.0.socket.set(Arc::downgrade(&socket));
    (socket, plug)
}
