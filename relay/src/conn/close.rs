//! Closing a client connection: the close code for each error, in one
//! place, and a strike against the address when the close is for abuse.

use std::time::Instant;

use net::token::TokenError;
use protocol::codec::CodecError;
use protocol::message::ErrorCode;

use crate::shared::Shared;

/// Close a connection for abuse: the close code, a strike against its
/// address (see [`crate::admission`]'s penalty box).
pub(super) fn refuse(shared: &Shared, conn: &quinn::Connection, code: ErrorCode, reason: &str) {
    close(shared, conn, code, reason);
    let addr = conn.remote_address().ip();
    shared.admit(|a| a.handle_abuse(Instant::now(), addr));
}

/// Close a connection with `code`, counted in `ringside_relay_clients_closed_total`.
pub(super) fn close(shared: &Shared, conn: &quinn::Connection, code: ErrorCode, reason: &str) {
    shared.metrics.closed_with(code);
    net::close(conn, code, reason);
}

/// The close code for a token that does not pass.
pub(super) fn token_code(e: &TokenError) -> ErrorCode {
    match e {
        TokenError::Expired => ErrorCode::TokenExpired,
        _ => ErrorCode::BadToken,
    }
}

/// The close code for a frame that does not decode.
pub(super) fn codec_code(e: &CodecError) -> ErrorCode {
    match e {
        CodecError::TooLarge { .. } => ErrorCode::TooLarge,
        _ => ErrorCode::Malformed,
    }
}
