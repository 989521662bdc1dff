//! What can go wrong setting up or using a connection.

use thiserror::Error;

use protocol::codec::CodecError;

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
