use protocol::message::ErrorCode;
use protocol::room::Reason;
use thiserror::Error;

/// What can go wrong for an app using the SDK.
#[derive(Debug, Clone, Error)]
pub enum Error {
    /// No relay could be reached.
    #[error("no relay reachable: {0}")]
    Unreachable(String),
    /// A relay refused the session (bad or expired token, wrong version).
    #[error("refused by the relay: {code}: {reason}")]
    Refused {
        /// The close code.
        code: ErrorCode,
        /// The relay's words.
        reason: String,
    },
    /// The relay refused to let the user follow the room.
    #[error("join refused: {0}")]
    JoinRefused(Reason),
    /// Too many actions waiting for their outcome; try again shortly.
    #[error("too many actions in flight")]
    Busy,
    /// The client was closed.
    #[error("client closed")]
    Closed,
    /// TLS or socket setup failed.
    #[error("setup: {0}")]
    Setup(String),
}
