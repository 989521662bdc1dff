//! Framed IO on QUIC streams, and the close codes a connection ends with.

use bytes::BytesMut;
use serde::de::DeserializeOwned;
use serde::Serialize;

use protocol::codec::{self, FRAME_HEADER};
use protocol::message::ErrorCode;

use crate::error::NetError;

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
