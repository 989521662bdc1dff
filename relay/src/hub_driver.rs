//! The hub's driver: the one task that owns the [`Hub`], feeds it what
//! connections and the upstream link report ([`HubIn`]), wakes it when it
//! has something due, and carries its outputs to each client's queue and to
//! the upstream link.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use protocol::message::{ActionMsg, Actor, DownMsg, ErrorCode, UpMsg};
use protocol::net;
use protocol::room::Reason;
use protocol::{RoomId, Seq, SessionId, UserId};
use tokio::sync::mpsc;

use crate::hub::{ClientId, Hub, Output};
use crate::queue::OutTx;

/// Inputs of the hub's driver.
pub(crate) enum HubIn {
    ClientUp {
        client: ClientId,
        session: SessionId,
        user: UserId,
        out: OutTx,
        conn: quinn::Connection,
    },
    Join {
        client: ClientId,
        room: RoomId,
        since: Option<Seq>,
    },
    RefuseJoin {
        client: ClientId,
        room: RoomId,
        reason: Reason,
    },
    Leave {
        client: ClientId,
        room: RoomId,
    },
    Action {
        client: ClientId,
        actor: Actor,
        msg: ActionMsg,
        via_stream: bool,
    },
    Resync {
        client: ClientId,
        room: RoomId,
        from: Seq,
    },
    UpstreamUp,
    UpstreamDown,
    Down(DownMsg),
    ClientGone {
        client: ClientId,
        /// It said goodbye (a move, an exit) rather than vanishing.
        clean: bool,
    },
    /// Tell every client to move (goaway), then report when all have gone.
    Drain {
        alternatives: Vec<String>,
        done: mpsc::Sender<usize>,
    },
}

/// What the driver holds of one connection.
struct ClientLink {
    out: OutTx,
    conn: quinn::Connection,
}

/// Drive the hub: feed it inputs and a tick, deliver its outputs.
pub(crate) async fn run_hub(mut hub: Hub, mut rx: mpsc::Receiver<HubIn>, up: mpsc::Sender<UpMsg>) {
    let mut clients: BTreeMap<ClientId, ClientLink> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drain: Option<mpsc::Sender<usize>> = None;
    loop {
        let wants_up = hub.has_upstream();
        tokio::select! {
            input = rx.recv() => {
                let Some(input) = input else { return };
                let now = Instant::now();
                match input {
                    HubIn::ClientUp { client, session, user, out, conn } => {
                        clients.insert(client, ClientLink { out, conn });
                        hub.handle_client_up(now, client, session, user);
                    }
                    HubIn::Join { client, room, since } => hub.handle_join(now, client, room, since),
                    HubIn::RefuseJoin { client, room, reason } => hub.refuse_join(client, room, reason),
                    HubIn::Leave { client, room } => hub.handle_leave(now, client, room),
                    HubIn::Action { client, actor, msg, via_stream } => hub.handle_action(now, client, actor, msg, via_stream),
                    HubIn::Resync { client, room, from } => hub.handle_resync(now, client, room, from),
                    HubIn::ClientGone { client, clean } => {
                        clients.remove(&client);
                        hub.handle_client_gone(now, client, clean);
                    }
                    HubIn::UpstreamUp => hub.handle_upstream_up(now),
                    HubIn::UpstreamDown => hub.handle_upstream_down(now),
                    HubIn::Down(msg) => hub.handle_down(now, msg),
                    HubIn::Drain { alternatives, done } => {
                        hub.handle_drain(&alternatives);
                        drain = Some(done);
                    }
                }
            }
            // Membership changes and actions go up as fast as the link takes
            // them; nothing is dropped when it is slow.
            permit = up.reserve(), if wants_up => {
                let Ok(permit) = permit else { return };
                if let Some(msg) = hub.poll_upstream() {
                    permit.send(msg);
                }
            }
            _ = tick.tick() => hub.handle_tick(Instant::now()),
        }
        while let Some(output) = hub.poll_output() {
            match output {
                Output::Client(id, out) => {
                    let Some(link) = clients.get(&id) else {
                        continue;
                    };
                    if let Err(true) = link.out.push(out) {
                        tracing::warn!(client = id, "client queue full; cutting it off");
                        net::close(&link.conn, ErrorCode::Flood, "client too slow");
                        hub.metrics().closed_with(ErrorCode::Flood);
                        clients.remove(&id);
                        hub.handle_client_gone(Instant::now(), id, false);
                    }
                }
            }
        }
        if let Some(done) = &drain {
            if clients.is_empty() {
                let _ = done.try_send(0);
                drain = None;
            }
        }
    }
}
