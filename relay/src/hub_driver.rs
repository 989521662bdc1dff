//! The hub's driver: the one task that owns the [`Hub`], feeds it what
//! connections and the upstream link report ([`HubIn`]), wakes it when it
//! has something due, and carries its outputs to each client's queue and to
//! the upstream link (in cluster mode, to the router that hands each
//! message to its room's origin node: `cluster/mod.rs`). When each client's
//! writer is woken for what it was given is [`Linger`]'s rule: at once for a
//! quiet room or an answer, at most once per window for a busy room.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use protocol::message::{ActionMsg, Actor, DownMsg, ErrorCode, UpMsg};
use protocol::{Class, RoomId, Seq, SessionId, UserId};
use tokio::sync::mpsc;

use crate::hub::{ClientId, Hub, Out, Output};
use crate::linger::Linger;
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
    /// The connection is a warm standby for a session live on `primary`.
    Standby {
        client: ClientId,
        primary: String,
    },
    UpstreamUp,
    UpstreamDown,
    /// Cluster mode: the room now goes to another origin node (see
    /// [`Hub::handle_rehome`]).
    Rehome {
        room: RoomId,
        requeue: bool,
    },
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

/// The driver's state around the hub: the connections its outputs go to,
/// and a drain waiting for them all to go.
struct Driver {
    hub: Hub,
    clients: BTreeMap<ClientId, ClientLink>,
    drain: Option<mpsc::Sender<usize>>,
    /// Clients given outputs in this round whose writers must be woken.
    to_wake: Vec<ClientId>,
    /// When each writer is woken.
    linger: Linger,
}

/// Inputs taken in one round before the outputs go out: what queued up
/// while the last round was delivered is handled together, so each writer
/// wakes once for all of it (natural batching: never a wait for more).
const INPUTS_PER_ROUND: usize = 64;

/// Drive the hub: feed it inputs, wake it when it has something due
/// ([`Hub::poll_timeout`]), hand what it has for the origin to the link as
/// fast as the link takes it, and deliver its outputs.
pub(crate) async fn run_hub(
    hub: Hub,
    mut rx: mpsc::Receiver<HubIn>,
    up: mpsc::Sender<UpMsg>,
    linger: Duration,
) {
    let mut d = Driver {
        hub,
        clients: BTreeMap::new(),
        drain: None,
        to_wake: Vec::new(),
        linger: Linger::new(linger),
    };
    loop {
        let wants_up = d.hub.has_upstream();
        let wake = d.hub.poll_timeout();
        let lingered = d.linger.poll_timeout();
        tokio::select! {
            input = rx.recv() => {
                let Some(input) = input else { return };
                let now = Instant::now();
                d.handle(now, input);
                for _ in 1..INPUTS_PER_ROUND {
                    match rx.try_recv() {
                        Ok(input) => d.handle(now, input),
                        Err(_) => break,
                    }
                }
            }
            // Membership changes and actions go up as fast as the link takes
            // them; nothing is dropped when it is slow.
            permit = up.reserve(), if wants_up => {
                let Ok(permit) = permit else { return };
                if let Some(msg) = d.hub.poll_upstream() {
                    permit.send(msg);
                }
            }
            () = sleep_until(wake) => d.hub.handle_timeout(Instant::now()),
            () = sleep_until(lingered) => d.linger.take_due(Instant::now(), &mut d.to_wake),
        }
        d.deliver();
    }
}

/// Sleep until `wake`, or for ever when nothing is due.
pub(crate) async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    /// One input, into the hub.
    fn handle(&mut self, now: Instant, input: HubIn) {
        let hub = &mut self.hub;
        match input {
            HubIn::ClientUp {
                client,
                session,
                user,
                out,
                conn,
            } => {
                self.clients.insert(client, ClientLink { out, conn });
                hub.handle_client_up(now, client, session, user);
            }
            HubIn::Join {
                client,
                room,
                since,
            } => hub.handle_join(now, client, room, since),
            HubIn::Leave { client, room } => hub.handle_leave(now, client, room),
            HubIn::Action {
                client,
                actor,
                msg,
                via_stream,
            } => hub.handle_action(now, client, actor, msg, via_stream),
            HubIn::Resync { client, room, from } => hub.handle_resync(now, client, room, from),
            HubIn::ClientGone { client, clean } => {
                self.clients.remove(&client);
                self.linger.forget(client);
                hub.handle_client_gone(now, client, clean);
            }
            HubIn::Standby { client, primary } => hub.handle_standby(client, primary),
            HubIn::UpstreamUp => hub.handle_upstream_up(now),
            HubIn::UpstreamDown => hub.handle_upstream_down(now),
            HubIn::Rehome { room, requeue } => hub.handle_rehome(now, room, requeue),
            HubIn::Down(msg) => hub.handle_down(now, msg),
            HubIn::Drain { alternatives, done } => {
                hub.handle_drain(&alternatives);
                self.drain = Some(done);
            }
        }
    }

    /// The hub's outputs, to each client's queue: a client whose queue is
    /// full is cut off. Each writer is woken at most once, after the whole
    /// round is queued, or later by the linger rule (busy clients). A drain
    /// is told when the last client has gone.
    fn deliver(&mut self) {
        let now = Instant::now();
        while let Some(output) = self.hub.poll_output() {
            match output {
                Output::Client(id, out) => {
                    let Some(link) = self.clients.get(&id) else {
                        continue;
                    };
                    // Room events may wait for the client's next wake;
                    // answers to the client itself may not.
                    let urgent =
                        !matches!(&out, Out::Datagram(item) if item.class != Class::Session);
                    match link.out.push_quiet(out) {
                        Ok(signal) => {
                            if (signal || urgent) && self.linger.queued(now, id, urgent) {
                                self.to_wake.push(id);
                            }
                        }
                        Err(false) => {}
                        Err(true) => {
                            tracing::warn!(client = id, "client queue full; cutting it off");
                            net::close(&link.conn, ErrorCode::Flood, "client too slow");
                            self.hub.metrics().closed_with(ErrorCode::Flood);
                            self.clients.remove(&id);
                            self.linger.forget(id);
                            self.hub.handle_client_gone(now, id, false);
                        }
                    }
                }
            }
        }
        for id in self.to_wake.drain(..) {
            if let Some(link) = self.clients.get(&id) {
                link.out.wake();
            }
        }
        if self.to_wake.capacity() > 4096 {
            self.to_wake.shrink_to(4096);
        }
        if let Some(done) = &self.drain {
            if self.clients.is_empty() {
                let _ = done.try_send(0);
                self.drain = None;
            }
        }
    }
}
