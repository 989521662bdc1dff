//! What goes into the session and what comes out: the app's commands, the
//! connections as the session knows them, the orders to the driver
//! ([`Transmit`]) and the news for the app ([`Event`]).

use std::net::SocketAddr;
use std::time::Duration;

use protocol::message::{ClientMsg, ErrorCode};
use protocol::{Action, ActionId, RoomId, RoomState, SessionId};

use crate::error::Error;
use crate::event::{Acked, ClientEvent, RelayInfo};
use crate::mirror::Update;

/// What the app asks of the session.
#[derive(Debug, Clone)]
pub enum Command {
    /// Follow a room (answered by [`Event::Joined`] or a first
    /// [`Event::Room`]).
    Join {
        /// The room.
        room: RoomId,
    },
    /// Stop following a room.
    Leave {
        /// The room.
        room: RoomId,
    },
    /// Send an action (answered by [`Event::Answer`]).
    Act {
        /// Its id (chosen by the app's handle).
        id: ActionId,
        /// Its room.
        room: RoomId,
        /// What it does.
        action: Action,
        /// How long it may wait for its outcome; `None`: the client's.
        deadline: Option<Duration>,
    },
    /// Say goodbye and stop: every waiting action is answered, the
    /// connections close; the session takes no more input.
    Close,
}

/// A connection the driver holds, as the session knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its generation (from [`Transmit::Connect`], or the first one's).
    pub gen: u64,
    /// The relay at its end.
    pub relay: RelayInfo,
}

/// What the driver must do on the network.
#[derive(Debug, Clone, PartialEq)]
pub enum Transmit {
    /// Send `msg` as a datagram on connection `gen` (consecutive ones may
    /// share a packet).
    Datagram {
        /// The connection.
        gen: u64,
        /// The message.
        msg: ClientMsg,
    },
    /// Send `msg` on connection `gen`'s reliable control stream.
    Reliable {
        /// The connection.
        gen: u64,
        /// The message.
        msg: ClientMsg,
    },
    /// Open connection `gen`: try `relays` in order (stopping at a refusal
    /// every relay would make, [`Error::refused_everywhere`]), say hello
    /// with `token`, and report the result to [`Session::handle_connected`](super::Session::handle_connected).
    Connect {
        /// The new connection's generation.
        gen: u64,
        /// Relays, best first.
        relays: Vec<SocketAddr>,
        /// The token to present.
        token: Vec<u8>,
    },
    /// Give up the connection attempt in progress.
    StopConnecting,
    /// Open standby connection `gen` (see `session/standby.rs`): like
    /// [`Transmit::Connect`], but the session stays live where it is; the
    /// result goes to [`Session::handle_standby_connected`](super::Session::handle_standby_connected).
    /// One such attempt at a time, beside a [`Transmit::Connect`].
    ConnectStandby {
        /// The standby's generation.
        gen: u64,
        /// Relays, best first (never the live one).
        relays: Vec<SocketAddr>,
        /// The token to present.
        token: Vec<u8>,
    },
    /// Close connection `gen` and forget it.
    Close {
        /// The connection.
        gen: u64,
        /// The close code.
        code: ErrorCode,
        /// The close reason.
        reason: &'static str,
        /// Finish the control stream first (lets a `Bye` just written
        /// reach the relay).
        finish: bool,
    },
    /// Ask the token provider for a fresh token; the answer goes to
    /// [`Session::handle_token`](super::Session::handle_token).
    FetchToken,
    /// Forget the fetch in progress.
    StopFetching,
}

/// What the session tells the app.
#[derive(Debug, Clone)]
pub enum Event {
    /// A client-wide event.
    Client(ClientEvent),
    /// The client is on this relay now.
    Relay(RelayInfo),
    /// An action's answer: its outcome, or why it has none.
    Answer {
        /// The action.
        id: ActionId,
        /// Its outcome, or the error.
        result: Result<Acked, Error>,
    },
    /// A room's mirrored state moved: its new state and the updates that
    /// led there, in order. Whoever waits to join it is answered with it.
    Room {
        /// The room.
        room: RoomId,
        /// Its state now.
        state: Box<RoomState>,
        /// What changed.
        updates: Vec<Update>,
    },
    /// Whoever waits to join `room` is answered: `Ok` with the room as it
    /// stands (it already has a state), or the error.
    Joined {
        /// The room.
        room: RoomId,
        /// Joined, or why not.
        result: Result<(), Error>,
    },
    /// The room is no longer followed (left, or the join was refused): its
    /// channels can go.
    Forget {
        /// The room.
        room: RoomId,
    },
    /// A new estimate of `origin - local` (µs), local time counted from the
    /// session's start (the `now` it was created at).
    Offset(i64),
    /// The standby connection is open to this relay now (`None`: there is
    /// none).
    Standby(Option<RelayInfo>),
}

/// How a session starts: on a connection already open.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The session id.
    pub session: SessionId,
    /// The token the first connection was opened with.
    pub token: Vec<u8>,
    /// Relays, best first.
    pub ranking: Vec<SocketAddr>,
    /// The first connection.
    pub first: Link,
    /// The wall clock (since the Unix epoch) at `now`: only to read how
    /// long a token has left.
    pub unix_now: Duration,
}
