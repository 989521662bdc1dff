//! The QUIC plumbing every Ringside process shares: TLS material (generated
//! for local runs, loaded from files for real ones), endpoints with tuned
//! transport settings and explicit socket buffers, and framed IO on streams.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use protocol::codec::{self, CodecError, FRAME_HEADER};
use protocol::message::ErrorCode;

pub use quinn;
pub use rustls;

/// What can go wrong setting up or using a connection.
#[derive(Debug, Error)]
pub enum NetError {
    /// A socket or file operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// TLS material is unusable.
    #[error("tls: {0}")]
    Tls(String),
    /// A frame could not be decoded or was too large.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// The stream failed or was reset.
    #[error("stream: {0}")]
    Read(#[from] quinn::ReadExactError),
    /// Writing to the stream failed.
    #[error("stream write: {0}")]
    Write(#[from] quinn::WriteError),
    /// The connection failed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Connecting failed before the handshake.
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
}

/// Certificate and key files for a real deployment (the `tls` setting of
/// the origin and the relay).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: std::path::PathBuf,
    /// PEM private key.
    pub key: std::path::PathBuf,
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// A fresh self-signed certificate for `names` (for local runs and tests;
    /// clients must be told to trust it).
    pub fn self_signed(names: &[&str]) -> Result<Identity, NetError> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert =
            rcgen::generate_simple_self_signed(names).map_err(|e| NetError::Tls(e.to_string()))?;
        let key = PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
        Ok(Identity {
            certs: vec![cert.cert.der().clone()],
            key: key.into(),
        })
    }

    /// The identity a server presents: from its certificate files when it has
    /// them (a deployment); otherwise, for local runs, the self-signed one
    /// kept in `keep` (private key and certificate, PEM, mode 0600), generated
    /// there on first use and reused at every later start, so that peers
    /// trusting its certificate keep trusting it across restarts (without
    /// `keep`, a fresh one every time). The certificate is also written as
    /// PEM to `cert_out` (if given) for peers to trust.
    pub fn from_files_or_generate(
        tls: Option<&TlsFiles>,
        keep: Option<&Path>,
        cert_out: Option<&Path>,
    ) -> Result<Identity, NetError> {
        if let Some(files) = tls {
            return Identity::from_pem_files(&files.cert, &files.key);
        }
        let id = match keep {
            Some(path) if path.exists() => Identity::from_pem_files(path, path)?,
            Some(path) => {
                let fresh = Identity::self_signed(&["localhost", "127.0.0.1"])?;
                let pem = format!("{}{}", fresh.key_pem(), fresh.cert_pem());
                // Another process may have created it first: use the file's.
                crate::secret::create_private(path, pem.as_bytes())?;
                Identity::from_pem_files(path, path)?
            }
            None => Identity::self_signed(&["localhost", "127.0.0.1"])?,
        };
        if let Some(path) = cert_out {
            let pem = id.cert_pem();
            if std::fs::read(path).ok().as_deref() != Some(pem.as_bytes()) {
                crate::secret::replace_file(path, pem.as_bytes())?;
            }
        }
        Ok(id)
    }

    /// Load a PEM certificate chain and a PEM private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Identity, NetError> {
        let certs = load_certs(cert)?;
        let key_pem = std::fs::read(key)?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_slice())?
            .ok_or_else(|| NetError::Tls(format!("no private key in {}", key.display())))?;
        Ok(Identity { certs, key })
    }

    /// The private key as PEM (PKCS#8), to hand to a server process.
    pub fn key_pem(&self) -> String {
        let label = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        pem_encode(label, self.key.secret_der())
    }

    /// The leaf certificate as PEM, for a client to trust.
    pub fn cert_pem(&self) -> String {
        let der = self.certs.first().map(|c| c.as_ref()).unwrap_or_default();
        pem_encode("CERTIFICATE", der)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_identity_round_trips_through_pem_files() {
        let id = Identity::self_signed(&["localhost"]).expect("generate");
        let dir = std::env::temp_dir().join(format!("ringside-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, id.cert_pem()).expect("write");
        std::fs::write(&key, id.key_pem()).expect("write");
        let back = Identity::from_pem_files(&cert, &key).expect("load");
        assert_eq!(back.certs, id.certs);
        assert_eq!(back.key.secret_der(), id.key.secret_der());
        assert_eq!(parse_certs(&id.cert_pem()).expect("parse"), id.certs);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_kept_identity_is_reused_at_the_next_start() {
        let dir = std::env::temp_dir().join(format!("ringside-keep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (keep, cert) = (dir.join("id.pem"), dir.join("out").join("cert.pem"));
        let first = Identity::from_files_or_generate(None, Some(&keep), Some(&cert)).expect("gen");
        let again = Identity::from_files_or_generate(None, Some(&keep), Some(&cert)).expect("load");
        assert_eq!(again.certs, first.certs, "the same certificate");
        assert_eq!(
            again.key.secret_der(),
            first.key.secret_der(),
            "the same key"
        );
        assert_eq!(load_certs(&cert).expect("written"), first.certs);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&keep).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the key is private");
        }
        // A lost certificate file is written again from the kept identity.
        std::fs::remove_file(&cert).expect("rm");
        Identity::from_files_or_generate(None, Some(&keep), Some(&cert)).expect("load");
        assert_eq!(load_certs(&cert).expect("rewritten"), first.certs);
        // Without a place to keep it, every start is a new identity.
        let fresh = Identity::from_files_or_generate(None, None, None).expect("gen");
        assert_ne!(fresh.certs, first.certs);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let pem = std::fs::read(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice()).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(NetError::Tls(format!(
            "no certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// Every certificate in PEM text.
pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(NetError::Tls("no certificate in PEM text".into()));
    }
    Ok(certs)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                b64.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Transport settings. The defaults suit the SDK's side of a client↔relay
/// link: fast failure detection (about a second, not QUIC's 30 s), capped
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
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            keep_alive_ms: 200,
            idle_timeout_ms: 1_000,
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
        }
    }
}

impl Tuning {
    /// Settings for a server's side of client connections: clients send the
    /// keep-alives (their acks keep both ends' idle timers fresh), so a
    /// thousand idle clients do not cost a thousand timers' worth of pings
    /// each way. A client may open the one control stream and nothing else;
    /// it may have 64 KiB of stream data and 64 KiB of datagrams in flight
    /// to us, and we keep at most 256 KiB of stream data unacknowledged.
    pub fn client_facing() -> Tuning {
        Tuning {
            keep_alive_ms: 0,
            datagram_recv_buffer: 64 * 1024,
            peer_bidi_streams: 1,
            peer_uni_streams: 0,
            stream_window: 64 * 1024,
            conn_window: 64 * 1024,
            send_window: 256 * 1024,
            ..Tuning::default()
        }
    }

    /// Settings for the relay↔origin link: a busier, longer-lived connection
    /// with larger buffers and a little more patience. The relay opens one
    /// control stream; the origin opens none.
    pub fn backbone() -> Tuning {
        Tuning {
            keep_alive_ms: 250,
            idle_timeout_ms: 1_500,
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
        t
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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

fn endpoint(
    bind: SocketAddr,
    server: Option<quinn::ServerConfig>,
    tuning: &Tuning,
) -> Result<(quinn::Endpoint, Plug), NetError> {
    let socket = udp_socket(bind, tuning.socket_buffer)?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime"))?;
    let plug = Plug::default();
    let socket = Arc::new(Pluggable {
        inner: runtime.wrap_udp_socket(socket)?,
        plug: plug.clone(),
    });
    let _ = plug.0.socket.set(Arc::downgrade(&socket));
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        server,
        socket,
        runtime,
    )?;
    Ok((endpoint, plug))
}

/// A server endpoint presenting `identity`, speaking `alpn`, with the plug
/// that can cut it off.
pub fn server_endpoint(
    bind: SocketAddr,
    identity: &Identity,
    alpn: &[&[u8]],
    tuning: &Tuning,
) -> Result<(quinn::Endpoint, Plug), NetError> {
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
    endpoint(bind, Some(config), tuning)
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

/// A client-only endpoint, with the plug that can cut it off.
pub fn client_endpoint(
    bind: SocketAddr,
    tuning: &Tuning,
) -> Result<(quinn::Endpoint, Plug), NetError> {
    endpoint(bind, None, tuning)
}

/// Read one frame; `Ok(None)` when the peer finished the stream cleanly
/// between frames. The length is checked before the body is read.
pub async fn read_frame<M: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    buf: &mut Vec<u8>,
) -> Result<Option<M>, NetError> {
    let mut header = [0u8; FRAME_HEADER];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = codec::frame_len(header)?;
    buf.clear();
    buf.resize(len, 0);
    recv.read_exact(buf).await?;
    Ok(Some(codec::decode(buf)?))
}

/// Write one frame.
pub async fn write_frame<M: Serialize>(
    send: &mut quinn::SendStream,
    msg: &M,
) -> Result<(), NetError> {
    let mut out = BytesMut::new();
    codec::write_frame(msg, &mut out)?;
    send.write_all(&out).await?;
    Ok(())
}

/// Close a connection with a protocol error code and a reason for the logs.
pub fn close(conn: &quinn::Connection, code: ErrorCode, reason: &str) {
    conn.close(code.code().into(), reason.as_bytes());
}

/// The error code a closed connection carried, if the peer closed it on purpose.
pub fn close_code(err: &quinn::ConnectionError) -> Option<ErrorCode> {
    match err {
        quinn::ConnectionError::ApplicationClosed(c) => {
            Some(ErrorCode::from_code(c.error_code.into_inner()))
        }
        _ => None,
    }
}
