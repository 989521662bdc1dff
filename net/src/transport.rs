//! Transport settings per role ([`Tuning`]), UDP sockets with explicit
//! buffers, and endpoints built from them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::error::NetError;
use crate::tls::provider;
use crate::tls::Identity;

/// Transport settings. The defaults suit the SDK's side of a client↔relay
/// link: cheap keep-alives (one every 15 s, so 10,000 idle clients cost a
/// relay about 1,300 packets a second, not 100,000; under the 30 s after
/// which the stingiest NATs forget a UDP flow) with an idle timeout of
/// three keep-alives, so lost packets never end a connection.
/// A dead relay is noticed faster than that by other means: the origin's
/// link to it goes silent within [`Tuning::backbone`]'s idle timeout, and
/// the SDK's warm standby connection to a second relay hears of it from
/// there (`ServerMsg::RelayGone`). Also capped
/// datagram buffers (quinn's 1 MiB default grew a 1,000-client relay to
/// 574 MB), and 4 MiB socket buffers (the kernel default dropped handshakes
/// under load).
///
/// Streams and windows bound what a peer can make us hold. Each side allows
/// only the streams it actually reads (quinn closes a peer that opens more
/// with `STREAM_LIMIT_ERROR`), and the windows cap what the peer may have
/// in flight to us: at most `conn_window` bytes of stream data over all its
/// streams, plus `datagram_recv_buffer` bytes of datagrams we have not read
/// yet. What we send is capped by `send_window` (stream data not yet
/// acknowledged) plus `datagram_send_buffer`. quinn's defaults (100 streams
/// each way, 1.25 MB per stream, no connection-wide cap) let one peer with a
/// valid token make a server hold over a gigabyte.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tuning {
    /// Keep-alive PING interval, milliseconds (0: send none; the peer's
    /// keep-alives and our acks of them keep the connection alive).
    pub keep_alive_ms: u64,
    /// Idle timeout: a peer silent this long is gone, milliseconds.
    pub idle_timeout_ms: u64,
    /// Outgoing datagram buffer per connection, bytes.
    pub datagram_send_buffer: usize,
    /// Incoming datagram buffer per connection, bytes.
    pub datagram_recv_buffer: usize,
    /// UDP socket send and receive buffers, bytes.
    pub socket_buffer: usize,
    /// RTT assumed before the first sample, milliseconds.
    pub initial_rtt_ms: u64,
    /// Bidirectional streams the peer may open (at once).
    pub peer_bidi_streams: u32,
    /// Unidirectional streams the peer may open (at once).
    pub peer_uni_streams: u32,
    /// Stream data the peer may send ahead of our reading, per stream, bytes.
    pub stream_window: u32,
    /// Stream data the peer may send ahead of our reading, over all its
    /// streams, bytes.
    pub conn_window: u32,
    /// Stream data we send ahead of the peer's acknowledgements, bytes.
    pub send_window: u64,
    /// The peer acknowledges at least every this many packets (QUIC's
    /// ack-frequency extension, which quinn speaks at both ends); 2 or less
    /// is QUIC's default (every other packet) and sends no ACK_FREQUENCY
    /// frame. A gap still gets an immediate ack.
    pub peer_ack_every: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            keep_alive_ms: 15_000,
            idle_timeout_ms: 45_000,
            datagram_send_buffer: 64 * 1024,
            datagram_recv_buffer: 256 * 1024,
            socket_buffer: 4 * 1024 * 1024,
            initial_rtt_ms: 50,
            // The SDK reads snapshots on streams the relay opens, one at a
            // time, and opens the control stream itself.
            peer_bidi_streams: 0,
            peer_uni_streams: 4,
            stream_window: 1024 * 1024,
            conn_window: 2 * 1024 * 1024,
            send_window: 1024 * 1024,
            peer_ack_every: 2,
        }
    }
}

impl Tuning {
    /// Settings for a server's side of client connections: clients send the
    /// keep-alives (their acks keep both ends' idle timers fresh), so a
    /// thousand idle clients do not cost a thousand timers' worth of pings
    /// each way. The idle timeout is the longest a client may ask for (QUIC
    /// takes the smaller of both ends'); the SDK's is 45 s. A client may open the one control stream and nothing else;
    /// it may have 64 KiB of stream data and 64 KiB of datagrams in flight
    /// to us, and we keep at most 256 KiB of stream data unacknowledged.
    pub fn client_facing() -> Tuning {
        Tuning {
            keep_alive_ms: 0,
            idle_timeout_ms: 60_000,
            datagram_recv_buffer: 64 * 1024,
            peer_bidi_streams: 1,
            peer_uni_streams: 0,
            stream_window: 64 * 1024,
            conn_window: 64 * 1024,
            send_window: 256 * 1024,
            // Asking clients for an ack every 10 packets instead saved
            // little relay CPU in the fan-out bench (5.2 -> 5.0 us per
            // delivery, within the noise) and slows the sender's view of
            // losses and of its congestion window: not worth it.
            peer_ack_every: 2,
            ..Tuning::default()
        }
    }

    /// Settings for the relay↔origin link: a busier, longer-lived connection
    /// with larger buffers. Its liveness is what tells clients fast that a
    /// relay died (the origin tells the other relays, which tell the
    /// clients' standby connections), so it is short: a keep-alive every
    /// 100 ms, gone after 600 ms of silence (six keep-alives in a row lost on
    /// a clean backbone: never; a relay's death: noticed in 0.5–0.6 s). There
    /// are a few such links, so their keep-alives cost nothing that matters.
    /// The relay opens one control stream; the origin opens none.
    pub fn backbone() -> Tuning {
        Tuning {
            keep_alive_ms: 100,
            idle_timeout_ms: 600,
            datagram_send_buffer: 1024 * 1024,
            datagram_recv_buffer: 4 * 1024 * 1024,
            peer_bidi_streams: 1,
            peer_uni_streams: 0,
            stream_window: 4 * 1024 * 1024,
            conn_window: 8 * 1024 * 1024,
            send_window: 8 * 1024 * 1024,
            ..Tuning::default()
        }
    }

    /// The quinn transport configuration.
    pub fn transport(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        t.keep_alive_interval(
            (self.keep_alive_ms > 0).then(|| Duration::from_millis(self.keep_alive_ms)),
        );
        t.max_idle_timeout(
            quinn::IdleTimeout::try_from(Duration::from_millis(self.idle_timeout_ms)).ok(),
        );
        t.datagram_send_buffer_size(self.datagram_send_buffer);
        t.datagram_receive_buffer_size(Some(self.datagram_recv_buffer));
        t.initial_rtt(Duration::from_millis(self.initial_rtt_ms));
        t.max_concurrent_uni_streams(self.peer_uni_streams.into());
        t.max_concurrent_bidi_streams(self.peer_bidi_streams.into());
        t.stream_receive_window(self.stream_window.into());
        t.receive_window(self.conn_window.into());
        t.send_window(self.send_window);
        if self.peer_ack_every > 2 {
            let mut ack = quinn::AckFrequencyConfig::default();
            ack.ack_eliciting_threshold(quinn::VarInt::from_u32(self.peer_ack_every - 1));
            t.ack_frequency_config(Some(ack));
        }
        t
    }
}

/// A UDP socket with explicit buffer sizes.
pub fn udp_socket(bind: SocketAddr, buffer: usize) -> Result<std::net::UdpSocket, NetError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at its configured maximum.
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.bind(&bind.into())?;
    Ok(socket.into())
}

/// An endpoint on a fresh socket at `bind`; a server when `server` is given.
fn endpoint(
    bind: SocketAddr,
    server: Option<quinn::ServerConfig>,
    tuning: &Tuning,
) -> Result<quinn::Endpoint, NetError> {
    let socket = udp_socket(bind, tuning.socket_buffer)?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime"))?;
    let socket = runtime.wrap_udp_socket(socket)?;
    let config = quinn::EndpointConfig::default();
    Ok(quinn::Endpoint::new_with_abstract_socket(
        config, server, socket, runtime,
    )?)
}

/// As [`endpoint`], on a socket whose plug can be pulled.
#[cfg(feature = "fault")]
fn plugged_endpoint(
    bind: SocketAddr,
    server: Option<quinn::ServerConfig>,
    tuning: &Tuning,
) -> Result<(quinn::Endpoint, crate::plug::Plug), NetError> {
    let socket = udp_socket(bind, tuning.socket_buffer)?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime"))?;
    let (socket, plug) = crate::plug::pluggable(runtime.wrap_udp_socket(socket)?);
    let config = quinn::EndpointConfig::default();
    let endpoint = quinn::Endpoint::new_with_abstract_socket(config, server, socket, runtime)?;
    Ok((endpoint, plug))
}

/// The server side of QUIC: presenting `identity`, speaking `alpn`, TLS 1.3
/// only, no 0-RTT.
fn server_config(
    identity: &Identity,
    alpn: &[&[u8]],
    tuning: &Tuning,
) -> Result<quinn::ServerConfig, NetError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(identity.certs.clone(), identity.key.clone_key())
        .map_err(|e| NetError::Tls(e.to_string()))?;
    tls.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| NetError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(tuning.transport()));
    Ok(config)
}

/// A server endpoint presenting `identity`, speaking `alpn`.
pub fn server_endpoint(
    bind: SocketAddr,
    identity: &Identity,
    alpn: &[&[u8]],
    tuning: &Tuning,
) -> Result<quinn::Endpoint, NetError> {
    endpoint(bind, Some(server_config(identity, alpn, tuning)?), tuning)
}

/// As [`server_endpoint`], with the plug that can cut it off (feature
/// `fault`: the testbed's killed and partitioned parts).
#[cfg(feature = "fault")]
pub fn server_endpoint_plugged(
    bind: SocketAddr,
    identity: &Identity,
    alpn: &[&[u8]],
    tuning: &Tuning,
) -> Result<(quinn::Endpoint, crate::plug::Plug), NetError> {
    plugged_endpoint(bind, Some(server_config(identity, alpn, tuning)?), tuning)
}

/// A client configuration trusting `roots`, speaking `alpn`.
pub fn client_config(
    roots: &[CertificateDer<'static>],
    alpn: &[u8],
    tuning: &Tuning,
) -> Result<quinn::ClientConfig, NetError> {
    let mut store = rustls::RootCertStore::empty();
    for cert in roots {
        store
            .add(cert.clone())
            .map_err(|e| NetError::Tls(e.to_string()))?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| NetError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(tuning.transport()));
    Ok(config)
}

/// A client-only endpoint.
pub fn client_endpoint(bind: SocketAddr, tuning: &Tuning) -> Result<quinn::Endpoint, NetError> {
    endpoint(bind, None, tuning)
}

/// As [`client_endpoint`], with the plug that can cut it off (feature
/// `fault`).
#[cfg(feature = "fault")]
pub fn client_endpoint_plugged(
    bind: SocketAddr,
    tuning: &Tuning,
) -> Result<(quinn::Endpoint, crate::plug::Plug), NetError> {
    plugged_endpoint(bind, None, tuning)
}
