//! Cluster mode: what a decided batch leaves behind until its appends are
//! answered (shared by the driver, `cluster.rs`, and the deciding,
//! `route.rs`).

use futures_util::future::BoxFuture;
use protocol::message::{ActionMsg, Actor};
use protocol::RoomId;

use super::shared::{Item, RelayId};
use crate::cluster;
use crate::rules::Record;

/// What leaves once the batch is appended.
pub(super) enum Out {
    /// Whatever happens to the appends.
    Item(Item),
    /// A decided record: it leaves if every room in `rooms` was appended
    /// and is held; `reply` is the action to hand back otherwise.
    Record {
        record: Record,
        rooms: Vec<RoomId>,
        /// The room the action was addressed to, if the record has an ack:
        /// the action is committed if that room's append was acknowledged.
        /// (A partner's copy counts only if a rebuild takes it, which
        /// records the ack again.)
        home: Option<RoomId>,
        reply: Option<(RelayId, Actor, ActionMsg)>,
    },
    /// An answer from the id memory: it leaves if `room` was appended (or
    /// had nothing to append) and is held.
    Answer {
        room: RoomId,
        item: Item,
        redirect: (RelayId, Actor, ActionMsg),
    },
}

/// An append's answer, as the driver hears it.
pub(super) struct Appended {
    pub room: RoomId,
    /// The pipeline's ticket for it.
    pub ticket: u64,
    pub epoch: u64,
    pub expected: u64,
    pub result: Result<u64, cluster::Error>,
}

/// Appends awaiting their answers.
pub(super) type InFlight = futures_util::stream::FuturesUnordered<BoxFuture<'static, Appended>>;

impl Out {
    /// The rooms whose appends it waits for.
    pub fn rooms(&self) -> Vec<RoomId> {
        match self {
            Out::Item(_) => Vec::new(),
            Out::Record { rooms, .. } => rooms.clone(),
            Out::Answer { room, .. } => vec![*room],
        }
    }
}
