//! UDP sockets with explicit buffer sizes.

use std::net::SocketAddr;

use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

/// A non-blocking UDP socket bound to `bind` (and connected to `connect`, if
/// given) with send and receive buffers of `buffer` bytes — as much of it as
/// the kernel allows (`net.core.rmem_max` / `wmem_max` cap it silently).
///
/// The kernel default (about 208 KiB) loses packets under bursts; the buffer
/// is a cap, not a reservation, so a large one costs nothing while empty.
/// Must be called inside a tokio runtime.
pub(crate) fn bind(
    bind: SocketAddr,
    connect: Option<SocketAddr>,
    buffer: usize,
) -> anyhow::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))
        .context("creating a UDP socket")?;
    socket
        .set_recv_buffer_size(buffer)
        .context("setting the receive buffer size")?;
    socket
        .set_send_buffer_size(buffer)
        .context("setting the send buffer size")?;
    socket
        .set_nonblocking(true)
        .context("making the socket non-blocking")?;
    socket
        .bind(&bind.into())
        .with_context(|| format!("binding UDP {bind}"))?;
    if let Some(peer) = connect {
        socket
            .connect(&peer.into())
            .with_context(|| format!("connecting UDP to {peer}"))?;
    }
    let (rcv, snd) = (socket.recv_buffer_size(), socket.send_buffer_size());
    tracing::trace!(%bind, ?rcv, ?snd, "udp socket buffers");
    UdpSocket::from_std(socket.into()).context("registering the socket with tokio")
}

/// The unspecified address of `peer`'s family, port 0: where to bind a
/// socket that talks to `peer`.
pub(crate) fn any_for(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}

/// Largest UDP payload, and the size of every receive buffer.
pub(crate) const MAX_DATAGRAM: usize = 65_536;
