//! Connections to relays: dial one (or the first of a list that answers),
//! open the session on it (hello, welcome), and read what it sends (one
//! task per datagram flow, control stream and incoming stream), tagged with
//! the connection's generation. Bytes and handshakes only: the decisions
//! are the session's ([`crate::session`]).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use net::{self, NetError};
use protocol::message::{ClientMsg, ErrorCode, Hello, ServerMsg, PROTOCOL_VERSION};
use protocol::SessionId;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::event::RelayInfo;

/// From a connection's reader tasks to the driver.
pub(crate) enum Incoming {
    /// A datagram (one or more packed messages).
    Datagram(Bytes),
    /// A message on the control stream.
    Control(ServerMsg),
    /// A message on a stream of its own.
    Stream(ServerMsg),
    /// The connection closed: why, and the relay's close code if any.
    Closed(String, Option<ErrorCode>),
}

/// What a reader task sends: the connection's generation and what came.
pub(crate) type Received = mpsc::Receiver<(u64, Incoming)>;

/// One live connection to a relay.
pub(crate) struct Live {
    /// Its generation.
    pub(crate) gen: u64,
    pub(crate) conn: quinn::Connection,
    /// The control stream's sending half.
    pub(crate) ctrl: quinn::SendStream,
    pub(crate) relay: RelayInfo,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Live {
    /// Close the connection and stop its readers.
    pub(crate) fn close(self, code: ErrorCode, reason: &str) {
        net::close(&self.conn, code, reason);
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Write one message on a stream.
pub(crate) async fn send_frame(
    send: &mut quinn::SendStream,
    msg: &ClientMsg,
) -> Result<(), NetError> {
    net::write_frame(send, msg).await
}

/// Try `relays` in order; the first that opens the session wins. A refusal
/// every relay would make stops the round.
pub(crate) async fn connect_any(
    dial: Dial,
    relays: Vec<SocketAddr>,
    gen: u64,
) -> Result<(Live, Received), Error> {
    let mut last = String::from("no relay configured");
    for addr in relays {
        match connect(&dial, addr, gen).await {
            Ok(c) => return Ok(c),
            // A refused token is refused everywhere: stop here.
            Err(e) if e.refused_everywhere() => return Err(e),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(Error::Unreachable(last))
}

/// Everything needed to open a session on a relay.
#[derive(Clone)]
pub(crate) struct Dial {
    pub endpoint: quinn::Endpoint,
    pub cfg: quinn::ClientConfig,
    pub server_name: String,
    pub token: Vec<u8>,
    pub session: SessionId,
    pub timeout: Duration,
    pub datagrams: bool,
}

/// Connect to one relay and open the session.
pub(crate) async fn connect(
    dial: &Dial,
    addr: SocketAddr,
    gen: u64,
) -> Result<(Live, Received), Error> {
    let attempt = async {
        let conn = dial
            .endpoint
            .connect_with(dial.cfg.clone(), addr, &dial.server_name)
            .map_err(|e| Error::Unreachable(e.to_string()))?
            .await
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        open_session(dial, conn, gen).await
    };
    match tokio::time::timeout(dial.timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(Error::Unreachable(format!("{addr}: timed out"))),
    }
}

/// Open the session on a connection that is already up (say hello, await
/// the welcome, start the readers).
pub(crate) async fn open_session(
    dial: &Dial,
    conn: quinn::Connection,
    gen: u64,
) -> Result<(Live, Received), Error> {
    let addr = conn.remote_address();
    let attempt = async {
        let (mut ctrl, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        let hello = ClientMsg::Hello(Hello {
            version: PROTOCOL_VERSION,
            token: dial.token.clone(),
            session: dial.session,
            datagrams: dial.datagrams,
        });
        send_frame(&mut ctrl, &hello)
            .await
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        let mut buf = Vec::new();
        let welcome = match net::read_frame::<ServerMsg>(&mut recv, &mut buf).await {
            Ok(Some(ServerMsg::Welcome(w))) => w,
            Ok(_) => return Err(Error::Unreachable("no welcome".into())),
            Err(NetError::Connection(e))
            | Err(NetError::Read(quinn::ReadExactError::ReadError(
                quinn::ReadError::ConnectionLost(e),
            ))) => {
                return Err(match net::close_code(&e) {
                    Some(code) => Error::Refused {
                        code,
                        reason: e.to_string(),
                    },
                    None => Error::Unreachable(e.to_string()),
                });
            }
            Err(e) => return Err(Error::Unreachable(e.to_string())),
        };
        let relay = RelayInfo {
            addr,
            name: welcome.relay,
            region: welcome.region,
        };
        let (tx, rx) = mpsc::channel(4096);
        let tasks = spawn_readers(gen, conn.clone(), recv, tx);
        Ok((
            Live {
                gen,
                conn,
                ctrl,
                relay,
                tasks,
            },
            rx,
        ))
    };
    match tokio::time::timeout(dial.timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(Error::Unreachable(format!("{addr}: timed out"))),
    }
}

fn spawn_readers(
    gen: u64,
    conn: quinn::Connection,
    mut recv: quinn::RecvStream,
    tx: mpsc::Sender<(u64, Incoming)>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let (c, t) = (conn.clone(), tx.clone());
    tasks.push(tokio::spawn(async move {
        loop {
            match c.read_datagram().await {
                Ok(d) => {
                    if t.send((gen, Incoming::Datagram(d))).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let code = net::close_code(&e);
                    let _ = t.send((gen, Incoming::Closed(e.to_string(), code))).await;
                    return;
                }
            }
        }
    }));
    let t = tx.clone();
    tasks.push(tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Ok(Some(m)) = net::read_frame::<ServerMsg>(&mut recv, &mut buf).await {
            if t.send((gen, Incoming::Control(m))).await.is_err() {
                return;
            }
        }
    }));
    tasks.push(tokio::spawn(async move {
        while let Ok(mut uni) = conn.accept_uni().await {
            let t = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if let Ok(Some(m)) = net::read_frame::<ServerMsg>(&mut uni, &mut buf).await {
                    let _ = t.send((gen, Incoming::Stream(m))).await;
                }
            });
        }
    }));
    tasks
}
