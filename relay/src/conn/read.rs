//! The reading half of a client connection: messages from its datagrams
//! and its control stream, each counted against the user's message rate,
//! checked against its token's grants and the action and request rates,
//! and handed to the hub.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use net::token::{unix_now, Claims, Purpose};
use net::{self, NetError};
use protocol::codec::{self, CodecError};
use protocol::message::{ActionMsg, Actor, ClientMsg, ErrorCode, ServerMsg};
use protocol::room::Reason;
use protocol::{ActionId, Class, Outcome, SessionId};
use tokio::sync::mpsc;

use crate::admission::{ActionVerdict, Following, Requests};
use crate::hub::{self, ClientId, Out};
use crate::hub_driver::HubIn;
use crate::metrics;
use crate::queue::OutTx;
use crate::sched;
use crate::shared::Shared;

use super::close::{close, codec_code, refuse, token_code};

/// Copies of one action (the SDK's three copy datagrams and its first
/// stream fallback) forwarded without spending the user's rate; further
/// copies count as new actions.
const FREE_COPIES: u8 = 4;

/// Frames from the control stream, handed to [`read_loop`].
pub(super) async fn read_stream(
    conn: quinn::Connection,
    mut recv: quinn::RecvStream,
    tx: mpsc::Sender<ClientMsg>,
    shared: Arc<Shared>,
) {
    let mut buf = Vec::new();
    loop {
        match net::read_frame::<ClientMsg>(&mut recv, &mut buf).await {
            Ok(Some(m)) => {
                if tx.send(m).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(NetError::Codec(e)) => {
                tracing::warn!(remote = %conn.remote_address(), error = %e, "bad frame from client; closing");
                refuse(&shared, &conn, codec_code(&e), &e.to_string());
                return;
            }
            Err(_) => return,
        }
    }
}

/// The ids this connection forwarded lately (bounded), with the copies of
/// each seen since, so that copies of an action are recognised.
#[derive(Debug, Default)]
struct Recent {
    order: VecDeque<ActionId>,
    copies: BTreeMap<ActionId, u8>,
}

impl Recent {
    const CAP: usize = 1024;

    /// A copy of a forwarded action: `Some(true)` if it is still free.
    fn copy(&mut self, id: ActionId) -> Option<bool> {
        let n = self.copies.get_mut(&id)?;
        *n = n.saturating_add(1);
        Some(*n <= FREE_COPIES)
    }

    /// A forwarded action: remembered once (a copy forwarded again keeps
    /// its count, so copies are charged past the free ones).
    fn insert(&mut self, id: ActionId) {
        if let std::collections::btree_map::Entry::Vacant(v) = self.copies.entry(id) {
            v.insert(0);
            self.order.push_back(id);
            if self.order.len() > Self::CAP {
                if let Some(old) = self.order.pop_front() {
                    self.copies.remove(&old);
                }
            }
        }
    }
}

/// When a token expiring at `expires` (Unix seconds) runs out, as an instant.
fn expiry(expires: u64) -> tokio::time::Instant {
    let left = expires.saturating_sub(unix_now());
    tokio::time::Instant::now() + Duration::from_secs(left)
}

/// What one message from the client comes to.
enum Step {
    /// Something for the hub.
    Hub(HubIn),
    /// Nothing more (answered here, or ignored).
    Done,
    /// A renewed token, expiring then (Unix seconds).
    Renewed(u64),
    /// The connection ends, for this reason (closed already if it must be).
    End(&'static str),
}

/// One connection's reader: what it keeps between messages.
struct Reader<'a> {
    conn: &'a quinn::Connection,
    shared: &'a Shared,
    out: &'a OutTx,
    client: ClientId,
    session: SessionId,
    /// What the token grants (replaced by a renewal).
    claims: Claims,
    /// Actions forwarded lately, to recognise their copies.
    forwarded: Recent,
    /// The budget for joins and resyncs.
    requests: Requests,
    /// The rooms it follows, and its budget for actions elsewhere.
    following: Following,
    /// When a client report last counted.
    last_report: Option<Instant>,
}

/// Read the client's messages until the connection ends; why it ended.
pub(super) async fn read_loop(
    conn: &quinn::Connection,
    client: ClientId,
    session: SessionId,
    claims: Claims,
    shared: &Shared,
    out: &OutTx,
    mut stream: mpsc::Receiver<ClientMsg>,
) -> &'static str {
    let user = claims.user;
    let expires = tokio::time::sleep_until(expiry(claims.expires));
    tokio::pin!(expires);
    let mut reader = Reader {
        conn,
        shared,
        out,
        client,
        session,
        claims,
        forwarded: Recent::default(),
        requests: Requests::new(&shared.config.limits, Instant::now()),
        following: Following::new(&shared.config.limits, Instant::now()),
        last_report: None,
    };
    loop {
        let (msgs, via_stream): (Vec<Result<ClientMsg, CodecError>>, bool) = tokio::select! {
            d = conn.read_datagram() => match d {
                Ok(d) => (codec::unpack::<ClientMsg>(&d).collect(), false),
                // Its `Bye` may still be on its way through the stream
                // reader: a client closing with `Normal` said goodbye.
                Err(e) if net::close_code(&e) == Some(ErrorCode::Normal) => return "bye",
                Err(_) => return "connection closed",
            },
            m = stream.recv() => match m {
                Some(m) => (vec![Ok(m)], true),
                None => return "control stream ended",
            },
            () = &mut expires => {
                tracing::debug!(client, %user, "token expired; closing");
                close(shared, conn, ErrorCode::TokenExpired, "token expired");
                return "token expired";
            }
        };
        for m in msgs {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(client, error = %e, "malformed datagram from client; closing");
                    refuse(shared, conn, codec_code(&e), &e.to_string());
                    return "malformed datagram";
                }
            };
            let now = Instant::now();
            if !shared.admit(|a| a.handle_message(now, user)) {
                tracing::warn!(client, %user, "client flooding; closing");
                refuse(shared, conn, ErrorCode::Flood, "too many messages");
                return "flood";
            }
            match reader.handle(now, m, via_stream) {
                Step::Hub(cmd) => {
                    if shared.hub.send(cmd).await.is_err() {
                        return "relay stopping";
                    }
                }
                Step::Done => {}
                Step::Renewed(at) => expires.as_mut().reset(expiry(at)),
                Step::End(why) => return why,
            }
        }
    }
}

impl Reader<'_> {
    /// One message from the client.
    fn handle(&mut self, now: Instant, m: ClientMsg, via_stream: bool) -> Step {
        let client = self.client;
        match m {
            ClientMsg::Ping { nonce } => {
                if let Some(origin_time) = self.shared.origin_estimate.origin_at(now) {
                    let pong = ServerMsg::Pong { nonce, origin_time };
                    let _ = self.out.push(Out::Datagram(sched::Item {
                        class: Class::Session,
                        payload: hub::payload(&pong),
                        coalesce: None,
                        copies: sched::Copies::Once,
                    }));
                }
                Step::Done
            }
            ClientMsg::Join { room, since } => {
                let granted = self.claims.grant(room).is_some();
                match self.requests.handle_join(now, granted) {
                    Ok(()) => {
                        self.following.handle_join(room);
                        Step::Hub(HubIn::Join {
                            client,
                            room,
                            since,
                        })
                    }
                    // Answered here: a flood of refused joins costs the
                    // hub's one task nothing.
                    Err(reason) => {
                        let refused = ServerMsg::JoinFailed { room, reason };
                        let _ = self.out.push(Out::Reliable(hub::out::frame(&refused)));
                        Step::Done
                    }
                }
            }
            ClientMsg::Leave { room } => {
                self.following.handle_leave(room);
                Step::Hub(HubIn::Leave { client, room })
            }
            ClientMsg::Resync { room, from } => {
                // Over budget: nothing; the client's repair timer asks again.
                if !self.requests.take(now) {
                    return Step::Done;
                }
                Step::Hub(HubIn::Resync { client, room, from })
            }
            ClientMsg::Action(msg) => self.action(now, msg, via_stream),
            ClientMsg::Renew { token } => self.renew(&token),
            ClientMsg::Bye => Step::End("bye"),
            ClientMsg::Report(report) => {
                // At most one report per interval counts; it is the
                // client's word about itself, bounded in what it moves.
                let due = (self.last_report)
                    .is_none_or(|t| now.duration_since(t) >= metrics::REPORT_EVERY_MIN);
                if due {
                    self.last_report = Some(now);
                    self.shared.metrics.observe_report(&report);
                } else {
                    self.shared.metrics.reports_ignored.inc();
                }
                Step::Done
            }
            ClientMsg::Standby { primary } => Step::Hub(HubIn::Standby { client, primary }),
            ClientMsg::Hello(_) => {
                refuse(self.shared, self.conn, ErrorCode::Malformed, "second hello");
                Step::End("second hello")
            }
        }
    }

    /// An action: of this session, granted by the token, within the user's
    /// action rate (copies of one already forwarded are free up to a point).
    fn action(&mut self, now: Instant, msg: ActionMsg, via_stream: bool) -> Step {
        let (client, user) = (self.client, self.claims.user);
        if msg.id.session != self.session {
            tracing::warn!(client, %user, "action of another session; closing");
            refuse(
                self.shared,
                self.conn,
                ErrorCode::Malformed,
                "action of another session",
            );
            return Step::End("action of another session");
        }
        let Some(grant) = self.claims.grant(msg.room) else {
            let ack = ServerMsg::Ack {
                id: msg.id,
                outcome: Outcome::Rejected {
                    reason: Reason::NoGrant,
                },
            };
            answer(self.out, &ack, via_stream);
            return Step::Done;
        };
        // Copies of an action already forwarded (the datagram copies, the
        // stream fallback) are free up to a point; past it they cost what a
        // new action costs.
        let free = self.forwarded.copy(msg.id) == Some(true);
        if !free {
            // A room it does not follow first: a spray over room ids is
            // answered here without spending the user's action rate.
            let verdict = match self.following.handle_action(now, msg.room, grant) {
                ActionVerdict::Forward => self.shared.admit(|a| a.handle_action(now, user)),
                throttled => throttled,
            };
            if let ActionVerdict::Throttle(wait) = verdict {
                // Not forwarded, and the sender is told so (not an outcome:
                // nothing happened) with when to retry.
                let retry_after_ms = u32::try_from(wait.as_millis().max(1)).unwrap_or(u32::MAX);
                tracing::debug!(client, id = %msg.id, retry_after_ms, "action over the rate; throttled");
                let msg = ServerMsg::Throttled {
                    id: msg.id,
                    retry_after_ms,
                };
                answer(self.out, &msg, via_stream);
                return Step::Done;
            }
        }
        self.forwarded.insert(msg.id);
        let actor = Actor { user, grant };
        Step::Hub(HubIn::Action {
            client,
            actor,
            msg,
            via_stream,
        })
    }

    /// A fresh token: it must be the same user's.
    fn renew(&mut self, token: &[u8]) -> Step {
        let (client, user) = (self.client, self.claims.user);
        match self
            .shared
            .tokens
            .verify(token, Purpose::Client, unix_now())
        {
            Ok(fresh) if fresh.user == user => {
                let expires = fresh.expires;
                self.claims = fresh;
                Step::Renewed(expires)
            }
            Ok(_) => {
                tracing::warn!(client, %user, "renewal with another user's token; closing");
                refuse(
                    self.shared,
                    self.conn,
                    ErrorCode::BadToken,
                    "token of another user",
                );
                Step::End("renewed as another user")
            }
            Err(e) => {
                tracing::warn!(client, %user, error = %e, "bad renewal token; closing");
                close(self.shared, self.conn, token_code(&e), &e.to_string());
                Step::End("bad renewal")
            }
        }
    }
}

/// A session-class answer to the client (see [`hub::answer`]).
fn answer(out: &OutTx, msg: &ServerMsg, via_stream: bool) {
    for o in hub::answer(msg, via_stream) {
        let _ = out.push(o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_free_only_up_to_a_point() {
        // Finding 13: once the original was acked, its copies went to the
        // origin without costing anything, at any rate.
        let id = ActionId {
            session: SessionId(1),
            n: 1,
        };
        let mut r = Recent::default();
        assert_eq!(r.copy(id), None, "not forwarded yet: a new action");
        r.insert(id);
        // As the reader does: every copy forwarded is inserted again, which
        // must not give it back its free copies.
        let free = (0..10)
            .filter(|_| {
                let free = r.copy(id) == Some(true);
                r.insert(id);
                free
            })
            .count();
        assert_eq!(free, usize::from(FREE_COPIES));
    }
}
