//! The authority task: owns the rules (the single writer), turns inputs into
//! ordered items for the commit thread, and fires timers on time.

use std::collections::{BTreeMap, BTreeSet};

use protocol::message::UpMsg;
use protocol::{RoomId, UserId};
use tokio::sync::mpsc;

use super::{Input, Item, RelayId};
use crate::clock::Clock;
use crate::rules::{Authority, Decision, Record};

/// Presence, aggregated across relays: a user is online in a room while at
/// least one relay says so. Relays report independently, so a client that
/// moves from relay A to relay B is never seen offline in between, whatever
/// order A's "offline" and B's "online" arrive in.
#[derive(Default)]
struct Presence {
    by_user: BTreeMap<(RoomId, UserId), BTreeSet<RelayId>>,
}

impl Presence {
    /// Record a relay's report; returns the user's new overall state if it changed.
    fn report(&mut self, relay: RelayId, room: RoomId, user: UserId, online: bool) -> Option<bool> {
        let relays = self.by_user.entry((room, user)).or_default();
        let was = !relays.is_empty();
        if online {
            relays.insert(relay);
        } else {
            relays.remove(&relay);
        }
        let now = !relays.is_empty();
        if relays.is_empty() {
            self.by_user.remove(&(room, user));
        }
        (was != now).then_some(now)
    }

    /// A relay is gone: every user it reported goes offline there.
    fn relay_gone(&mut self, relay: RelayId) -> Vec<(RoomId, UserId)> {
        let mut offline = Vec::new();
        self.by_user.retain(|key, relays| {
            if relays.remove(&relay) && relays.is_empty() {
                offline.push(*key);
                return false;
            }
            !relays.is_empty()
        });
        offline
    }
}

pub(super) async fn run(
    mut auth: Authority,
    clock: Clock,
    mut inputs: mpsc::Receiver<Input>,
    items: mpsc::Sender<Item>,
    checkpoint_every: u64,
) {
    let mut presence = Presence::default();
    let mut since_checkpoint = 0u64;
    // After a restart nobody is known to be online: relays re-announce their
    // users as they reconnect. A guest seated before the restart whom no
    // relay has announced by then left meanwhile; their seat is held and
    // released like any other absent guest's.
    let settle = auth
        .config()
        .seat_hold
        .min(std::time::Duration::from_secs(10));
    let mut settle_at = Some(std::time::Instant::now() + settle);
    loop {
        if settle_at.is_some_and(|t| t <= std::time::Instant::now()) {
            settle_at = None;
            for rec in absent_guests(&mut auth, &presence, clock.now()) {
                since_checkpoint += 1;
                if send_record(&items, rec, None).await.is_err() {
                    return;
                }
            }
        }
        if checkpoint_every > 0 && since_checkpoint >= checkpoint_every {
            since_checkpoint = 0;
            match protocol::codec::encode(&auth.snapshot()) {
                Ok(bytes) => {
                    if items.send(Item::Checkpoint(bytes)).await.is_err() {
                        break;
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot encode a checkpoint"),
            }
        }
        let deadline = [auth.poll_timeout().map(|t| clock.instant(t)), settle_at]
            .into_iter()
            .flatten()
            .min();
        let input = tokio::select! {
            input = inputs.recv() => match input {
                Some(i) => i,
                None => break,
            },
            () = sleep_until(deadline) => {
                if settle_at.is_some_and(|t| t <= std::time::Instant::now()) {
                    continue;
                }
                let rec = auth.handle_timeout(clock.now());
                since_checkpoint += u64::from(!rec.is_empty());
                if send_record(&items, rec, None).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let out = handle(&mut auth, &mut presence, &clock, input);
        since_checkpoint += out
            .iter()
            .filter(|i| matches!(i, Item::Record { .. }))
            .count() as u64;
        for item in out {
            if items.send(item).await.is_err() {
                return;
            }
        }
    }
}

/// Seated guests no relay has said are online (after a restart).
fn absent_guests(
    auth: &mut Authority,
    presence: &Presence,
    now: protocol::ServerTime,
) -> Vec<Record> {
    let seated: Vec<(RoomId, UserId)> = (auth.rooms())
        .flat_map(|s| {
            (s.seats.seats.iter())
                .filter(|seat| seat.away_since.is_none())
                .filter_map(move |seat| seat.user.map(|u| (s.room, u)))
        })
        .filter(|key| !presence.by_user.contains_key(key))
        .collect();
    (seated.into_iter())
        .map(|(room, user)| auth.handle_presence(now, room, user, false))
        .filter(|r| !r.is_empty())
        .collect()
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

async fn send_record(
    items: &mpsc::Sender<Item>,
    record: Record,
    reply: Option<RelayId>,
) -> Result<(), ()> {
    if record.is_empty() {
        return Ok(());
    }
    items
        .send(Item::Record { record, reply })
        .await
        .map_err(|_| ())
}

fn record(out: &mut Vec<Item>, record: Record, reply: Option<RelayId>) {
    if !record.is_empty() {
        out.push(Item::Record { record, reply });
    }
}

fn handle(auth: &mut Authority, presence: &mut Presence, clock: &Clock, input: Input) -> Vec<Item> {
    let mut out = Vec::new();
    let now = clock.now();
    match input {
        Input::Query { room, reply } => out.push(Item::Query { room, reply }),
        Input::RelayUp {
            relay,
            out: tx,
            conn,
        } => out.push(Item::RelayUp {
            relay,
            out: tx,
            conn,
        }),
        Input::RelayGone { relay } => {
            for (room, user) in presence.relay_gone(relay) {
                record(&mut out, auth.handle_presence(now, room, user, false), None);
            }
            out.push(Item::RelayGone { relay });
        }
        Input::Up { relay, msg } => match msg {
            // Following a room does not create it (that would let anyone with
            // a token fill the log with empty rooms): a room exists from its
            // first action on; until then subscribers see it unopened.
            UpMsg::Subscribe {
                room,
                since,
                history,
            } => {
                out.push(Item::Subscribe {
                    relay,
                    room,
                    since,
                    history,
                });
            }
            UpMsg::Unsubscribe { room } => out.push(Item::Unsubscribe { relay, room }),
            UpMsg::Action { actor, msg } => match auth.handle_action(now, actor, &msg) {
                Decision::Decided(rec) => record(&mut out, rec, Some(relay)),
                Decision::Answered { outcome, timers } => {
                    record(&mut out, timers, None);
                    out.push(Item::Answer {
                        relay,
                        user: actor.user,
                        id: msg.id,
                        outcome,
                    });
                }
            },
            UpMsg::Presence { room, user, online } => {
                if let Some(now_online) = presence.report(relay, room, user, online) {
                    record(
                        &mut out,
                        auth.handle_presence(now, room, user, now_online),
                        None,
                    );
                }
            }
            // The link answers these itself.
            UpMsg::Hello { .. } | UpMsg::Ping { .. } => {}
        },
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_moving_between_relays_never_goes_offline() {
        let mut p = Presence::default();
        let (room, user) = (RoomId(1), UserId(7));
        assert_eq!(p.report(1, room, user, true), Some(true));
        // Relay 2's "online" arrives before relay 1's "offline".
        assert_eq!(p.report(2, room, user, true), None);
        assert_eq!(p.report(1, room, user, false), None);
        assert_eq!(p.relay_gone(2), vec![(room, user)]);
        assert!(p.by_user.is_empty());
    }
}
