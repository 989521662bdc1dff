use serde::{Deserialize, Serialize};

use crate::class::Class;
use crate::id::{ActionId, RoomId, Seq, SessionId};
use crate::room::Action;
use crate::time::ServerTime;

/// One action on its way to the origin, as the client stamped it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub struct ActionMsg {
    /// Chosen once, before the first send; kept across every resend.
    pub id: ActionId,
    /// The room it is for.
    pub room: RoomId,
    /// The sender's estimate of origin time when the user acted. Trusted only
    /// within bounds (see the origin's rules).
    pub sent_at: ServerTime,
    /// What to do.
    pub action: Action,
}

/// The first message of a client connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub struct Hello {
    /// [`super::PROTOCOL_VERSION`] of the client.
    pub version: u16,
    /// The signed token that says who the user is and what it may do.
    pub token: Vec<u8>,
    /// The client's session. A resuming client presents the same one.
    pub session: SessionId,
    /// Whether the client takes datagrams. Without them (the stream-only
    /// baseline, or a path that drops UDP datagrams), everything the relay
    /// sends goes on the reliable control stream.
    pub datagrams: bool,
}

/// Client → relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub enum ClientMsg {
    /// Open the session (first message on the control stream).
    Hello(Hello),
    /// Follow a room. With `since`, the client already holds the state at that
    /// seq and wants only what follows (resume); otherwise a snapshot.
    Join {
        /// The room.
        room: RoomId,
        /// The client's last applied seq, when resuming.
        since: Option<Seq>,
    },
    /// Stop following a room.
    Leave {
        /// The room.
        room: RoomId,
    },
    /// An action for the origin.
    Action(ActionMsg),
    /// Fill a gap: send events from `from` on (or a snapshot).
    Resync {
        /// The room.
        room: RoomId,
        /// The first missing seq.
        from: Seq,
    },
    /// Clock exchange; the relay answers with a `Pong` carrying origin time.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// A fresh token for the same user, sent before the current one expires
    /// (the relay closes a connection whose token has expired with
    /// `TokenExpired`). A token for another user closes the connection.
    Renew {
        /// The new signed token.
        token: Vec<u8>,
    },
    /// The client is leaving this relay on purpose (after a move or at exit).
    Bye,
    /// What the client felt since its last report (every few seconds, never
    /// per action): the relay turns it into its operators' metrics.
    Report(Report),
    /// This connection is the session's warm standby: its live connection
    /// is on the relay named `primary` (its `Welcome` name). The relay tells
    /// it at once ([`super::ServerMsg::RelayGone`]) when the origin loses
    /// that relay, so the client resumes here without waiting for an idle
    /// timeout or a handshake. Sent again when the primary changes.
    Standby {
        /// The name of the relay the session is live on.
        primary: String,
    },
}

/// Upper bounds (µs) of the buckets a client counts its ack times in: the
/// relay's `ringside_client_ack_seconds` buckets, then one for anything
/// slower (its bound stands for "over 10 s").
pub const ACK_BUCKETS_US: [u64; 19] = [
    500, 1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 25_000, 50_000, 75_000, 100_000,
    150_000, 250_000, 500_000, 1_000_000, 2_500_000, 10_000_000, 60_000_000,
];

/// The bucket of [`ACK_BUCKETS_US`] an ack time falls in.
pub fn ack_bucket(us: u64) -> u8 {
    let i = ACK_BUCKETS_US
        .iter()
        .position(|b| us <= *b)
        .unwrap_or(ACK_BUCKETS_US.len() - 1);
    // At most 18: fits.
    i as u8
}

/// A client's periodic report of its own experience.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub struct Report {
    /// Its bound on its clock's error against origin time (µs): half its
    /// best clock-exchange round trip plus how far its offset moved since
    /// the last report. `None` before the first exchange.
    pub clock_error_us: Option<u32>,
    /// Its acks since the last report, counted per class in the buckets of
    /// [`ACK_BUCKETS_US`] (only classes and buckets with acks).
    pub acks: Vec<AckCounts>,
}

/// Acks of one class, as `(bucket, count)` pairs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub struct AckCounts {
    /// The class of the actions.
    pub class: Class,
    /// `(index into ACK_BUCKETS_US, acks in it)`.
    pub counts: Vec<(u8, u32)>,
}

impl ClientMsg {
    /// Priority class.
    pub fn class(&self) -> Class {
        match self {
            ClientMsg::Action(a) => a.action.class(),
            _ => Class::Session,
        }
    }
}
