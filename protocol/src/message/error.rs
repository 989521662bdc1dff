use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a peer is being closed. One table maps these to QUIC application
/// close codes, in both directions ([`ErrorCode::code`], [`ErrorCode::from_code`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub enum ErrorCode {
    /// A normal close.
    Normal,
    /// A frame or datagram could not be decoded, or came out of order.
    Malformed,
    /// A frame longer than the limit.
    TooLarge,
    /// The token (or relay proof) is missing, forged or for someone else.
    BadToken,
    /// The token has expired.
    TokenExpired,
    /// The peer speaks another protocol version.
    Version,
    /// The peer sent more than its share and was cut off.
    Flood,
    /// The peer did not say hello in time.
    Timeout,
    /// The server is shutting down (after a goaway).
    Shutdown,
    /// An internal error on the server side.
    Internal,
    /// The peer asked for more than a stated limit allows: streams it may
    /// not open, too many rooms, sessions or connections.
    Limit,
    /// The server is at capacity (connections, rooms); try another or later.
    Busy,
}

const TABLE: [(ErrorCode, u32); 12] = [
    (ErrorCode::Normal, 0),
    (ErrorCode::Malformed, 1),
    (ErrorCode::TooLarge, 2),
    (ErrorCode::BadToken, 3),
    (ErrorCode::TokenExpired, 4),
    (ErrorCode::Version, 5),
    (ErrorCode::Flood, 6),
    (ErrorCode::Timeout, 7),
    (ErrorCode::Shutdown, 8),
    (ErrorCode::Internal, 9),
    (ErrorCode::Limit, 10),
    (ErrorCode::Busy, 11),
];

impl ErrorCode {
    /// The QUIC application close code.
    pub fn code(self) -> u32 {
        TABLE
            .iter()
            .find(|(c, _)| *c == self)
            .map_or(9, |(_, n)| *n)
    }

    /// The error for a QUIC application close code (unknown codes are `Internal`).
    pub fn from_code(code: u64) -> ErrorCode {
        (TABLE.iter().find(|(_, n)| u64::from(*n) == code)).map_or(ErrorCode::Internal, |(c, _)| *c)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
