//! The relay-to-origin handshake, written once: on a fresh connection to
//! the origin, open the control stream, say `Hello` with a cluster proof
//! (a token of purpose `Cluster` signed with the cluster secret), and wait
//! for `Welcome`. Used by the relay's upstream link and by the bench's
//! origin probe.

use std::time::Duration;

use protocol::message::{DownMsg, UpMsg, PROTOCOL_VERSION};

use crate::error::NetError;
use crate::frame::{read_frame, write_frame};
use crate::token::{unix_now, Claims, TokenKey};

/// How long a cluster proof is valid (the origin checks it at hello only).
pub const PROOF_LIFETIME: Duration = Duration::from_secs(3600);

/// Say hello to the origin on `conn` as relay `name`, proving membership
/// with `cluster`; the control stream once the origin welcomed us. `Err`
/// when it answers anything else or nothing within `timeout`.
pub async fn relay_hello(
    conn: &quinn::Connection,
    name: &str,
    cluster: &TokenKey,
    timeout: Duration,
) -> Result<(quinn::SendStream, quinn::RecvStream), NetError> {
    let (send, recv, _) = relay_hello_named(conn, name, cluster, timeout).await?;
    Ok((send, recv))
}

/// [`relay_hello`], also returning the name the origin welcomed us with
/// (in cluster mode, the node's name: relays route by it).
pub async fn relay_hello_named(
    conn: &quinn::Connection,
    name: &str,
    cluster: &TokenKey,
    timeout: Duration,
) -> Result<(quinn::SendStream, quinn::RecvStream, String), NetError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    let proof = cluster.mint(&Claims::cluster(unix_now() + PROOF_LIFETIME.as_secs()));
    let hello = UpMsg::Hello {
        version: PROTOCOL_VERSION,
        relay: name.to_string(),
        proof,
    };
    write_frame(&mut send, &hello).await?;
    let mut buf = Vec::new();
    let welcome = tokio::time::timeout(timeout, read_frame::<DownMsg>(&mut recv, &mut buf))
        .await
        .map_err(|_| NetError::Io(std::io::Error::other("no welcome from the origin")))??;
    match welcome {
        Some(DownMsg::Welcome { origin }) => Ok((send, recv, origin)),
        other => Err(NetError::Io(std::io::Error::other(format!(
            "the origin answered hello with {other:?}"
        )))),
    }
}
