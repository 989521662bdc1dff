//! The authority task: owns the rules (the single writer), turns inputs into
//! ordered items for the commit thread, and fires timers on time. It also
//! tracks which relays follow which rooms, unloads idle rooms on a periodic
//! sweep (their archives go through the commit thread, in order) and loads
//! them back before a follower or an action needs them. It drives the KPI
//! tracker ([`crate::kpi`]) with everything the rules decide and every
//! presence change, and wakes for its timers too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use protocol::message::{ActionMsg, UpMsg};
use protocol::{Outcome, Reason, RoomId, ServerTime, UserId};
use tokio::sync::mpsc;

use super::shared::{gauge, Input, Item, RelayId, Store};
use crate::clock::Clock;
use crate::kpi::{Kpi, Present};
use crate::metrics::Metrics;
use crate::rules::{Authority, Decision, Record};

/// Which relays follow which rooms (not durable: relays resubscribe).
#[derive(Default)]
struct Followers {
    by_room: BTreeMap<RoomId, BTreeSet<RelayId>>,
    by_relay: BTreeMap<RelayId, BTreeSet<RoomId>>,
}

impl Followers {
    /// Returns whether the room just gained its first follower.
    fn add(&mut self, relay: RelayId, room: RoomId) -> bool {
        self.by_relay.entry(relay).or_default().insert(room);
        let relays = self.by_room.entry(room).or_default();
        let first = relays.is_empty();
        relays.insert(relay);
        first
    }

    /// Returns whether the room just lost its last follower.
    fn remove(&mut self, relay: RelayId, room: RoomId) -> bool {
        if let Some(rooms) = self.by_relay.get_mut(&relay) {
            rooms.remove(&room);
            if rooms.is_empty() {
                self.by_relay.remove(&relay);
            }
        }
        let Some(relays) = self.by_room.get_mut(&room) else {
            return false;
        };
        if !relays.remove(&relay) {
            return false;
        }
        if relays.is_empty() {
            self.by_room.remove(&room);
            return true;
        }
        false
    }

    /// A relay left: the rooms that lost their last follower.
    fn relay_gone(&mut self, relay: RelayId) -> Vec<RoomId> {
        let rooms = self.by_relay.remove(&relay).unwrap_or_default();
        let mut unfollowed = Vec::new();
        for room in rooms {
            if let Some(relays) = self.by_room.get_mut(&room) {
                relays.remove(&relay);
                if relays.is_empty() {
                    self.by_room.remove(&room);
                    unfollowed.push(room);
                }
            }
        }
        unfollowed
    }
}

/// What the task keeps besides the rules.
struct Ctx {
    store: Store,
    presence: Presence,
    followers: Followers,
    kpi: Kpi,
    metrics: Metrics,
}

impl Ctx {
    /// Show the KPI tracker what the rules stored.
    fn observe(&mut self, now: ServerTime, items: &[Item]) {
        for item in items {
            if let Item::Record { record, .. } = item {
                self.kpi.handle_record(now, record, &self.presence);
            }
        }
    }
}

/// The task's knobs.
pub(super) struct Settings {
    /// Checkpoint after this many records (0: never).
    pub checkpoint_every: u64,
    /// Retention is checked this long after a battle settles.
    pub retention_window: Duration,
    /// Where the KPIs and the rooms gauge count.
    pub metrics: Metrics,
}

/// Make sure `room` is live if it was unloaded: load its archive into the
/// rules and tell the publisher. `Err` when the archive cannot be read (the
/// room must then not be decided on: it would look unknown).
fn ensure_loaded(
    auth: &mut Authority,
    store: &Store,
    now: ServerTime,
    room: RoomId,
    out: &mut Vec<Item>,
) -> Result<(), ()> {
    if auth.room(room).is_some() {
        return Ok(());
    }
    match store.load(room) {
        Ok(Some(state)) => {
            tracing::debug!(%room, seq = %state.seq, "room reloaded from its archive");
            auth.handle_load(now, state.clone());
            out.push(Item::Load(state));
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => {
            tracing::error!(%room, error = %e, "cannot read a room's archive");
            Err(())
        }
    }
}

/// How often idle rooms are looked for: a quarter of the idle time, within
/// 10 ms and 30 s.
fn sweep_every(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(30))
}

/// Presence, aggregated across relays: a user is online in a room while at
/// least one relay says so. Relays report independently, so a client that
/// moves from relay A to relay B is never seen offline in between, whatever
/// order A's "offline" and B's "online" arrive in.
#[derive(Default)]
pub(super) struct Presence {
    by_user: BTreeMap<(RoomId, UserId), BTreeSet<RelayId>>,
}

impl Presence {
    /// Record a relay's report; returns the user's new overall state if it changed.
    pub(super) fn report(
        &mut self,
        relay: RelayId,
        room: RoomId,
        user: UserId,
        online: bool,
    ) -> Option<bool> {
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

    /// The users present in `room`.
    fn users_in(&self, room: RoomId) -> impl Iterator<Item = UserId> + '_ {
        let range = (room, UserId(u64::MIN))..=(room, UserId(u64::MAX));
        self.by_user.range(range).map(|((_, user), _)| *user)
    }

    /// A relay is gone: every user it reported goes offline there.
    pub(super) fn relay_gone(&mut self, relay: RelayId) -> Vec<(RoomId, UserId)> {
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

impl Present for Presence {
    fn for_each_in(&self, room: RoomId, f: &mut dyn FnMut(UserId)) {
        self.users_in(room).for_each(f);
    }

    fn is_present(&self, room: RoomId, user: UserId) -> bool {
        self.by_user.contains_key(&(room, user))
    }
}

pub(super) async fn run(
    mut auth: Authority,
    store: Store,
    clock: Clock,
    mut inputs: mpsc::Receiver<Input>,
    items: mpsc::Sender<Item>,
    settings: Settings,
) {
    let Settings {
        checkpoint_every,
        retention_window,
        metrics,
    } = settings;
    let mut kpi = Kpi::new(metrics.clone(), retention_window);
    kpi.seed(clock.now(), auth.rooms());
    let mut ctx = Ctx {
        store,
        presence: Presence::default(),
        followers: Followers::default(),
        kpi,
        metrics,
    };
    let sweep = sweep_every(auth.config().room_idle);
    let mut next_sweep = std::time::Instant::now() + sweep;
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
        ctx.kpi.handle_timeout(clock.now(), &ctx.presence);
        if settle_at.is_some_and(|t| t <= std::time::Instant::now()) {
            settle_at = None;
            let now = clock.now();
            for rec in absent_guests(&mut auth, &ctx.presence, now) {
                ctx.kpi.handle_record(now, &rec, &ctx.presence);
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
        if next_sweep <= std::time::Instant::now() {
            next_sweep = std::time::Instant::now() + sweep;
            let now = clock.now();
            for state in auth.handle_idle(now) {
                tracing::debug!(room = %state.room, seq = %state.seq, "idle room unloaded");
                ctx.kpi.handle_unloaded(now, state.room);
                match ctx.store.inflight.lock() {
                    Ok(mut m) => m.insert(state.room, state.clone()),
                    Err(poisoned) => poisoned.into_inner().insert(state.room, state.clone()),
                };
                if items.send(Item::Unload(state)).await.is_err() {
                    return;
                }
            }
            ctx.metrics.rooms_live.set(gauge(auth.room_count()));
        }
        let deadline = [
            auth.poll_timeout().map(|t| clock.instant(t)),
            ctx.kpi.poll_timeout().map(|t| clock.instant(t)),
            settle_at,
            Some(next_sweep),
        ]
        .into_iter()
        .flatten()
        .min();
        let input = tokio::select! {
            input = inputs.recv() => match input {
                Some(i) => i,
                None => break,
            },
            () = sleep_until(deadline) => {
                let now = std::time::Instant::now();
                if settle_at.is_some_and(|t| t <= now) || next_sweep <= now {
                    continue;
                }
                let now = clock.now();
                let rec = auth.handle_timeout(now);
                ctx.kpi.handle_record(now, &rec, &ctx.presence);
                since_checkpoint += u64::from(!rec.is_empty());
                if send_record(&items, rec, None).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let now = clock.now();
        let out = handle(&mut auth, &mut ctx, now, input);
        ctx.observe(now, &out);
        ctx.metrics.rooms_live.set(gauge(auth.room_count()));
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

fn handle(auth: &mut Authority, ctx: &mut Ctx, now: ServerTime, input: Input) -> Vec<Item> {
    let mut out = Vec::new();
    match input {
        Input::Query { room, reply } => {
            // Best effort: an unreadable archive answers as unknown.
            let _ = ensure_loaded(auth, &ctx.store, now, room, &mut out);
            out.push(Item::Query { room, reply });
        }
        Input::Open { room, reply } => {
            let loaded = ensure_loaded(auth, &ctx.store, now, room, &mut out).is_ok();
            if loaded {
                record(&mut out, auth.handle_open(now, room), None);
            }
            let _ = reply.send(loaded && auth.room(room).is_some());
        }
        Input::RelayUp {
            relay,
            name,
            out: tx,
            conn,
        } => out.push(Item::RelayUp {
            relay,
            name,
            out: tx,
            conn,
        }),
        Input::RelayGone { relay, name, lost } => {
            for (room, user) in ctx.presence.relay_gone(relay) {
                ctx.kpi.handle_presence(now, room, user, false);
                record(&mut out, auth.handle_presence(now, room, user, false), None);
            }
            for room in ctx.followers.relay_gone(relay) {
                auth.handle_follow(now, room, false);
            }
            out.push(Item::RelayGone { relay, name, lost });
        }
        Input::Up { relay, msg } => match msg {
            // Following a room does not create it (that would let anyone with
            // a token fill the log with empty rooms): a room exists from its
            // host's first action on; until then subscribers see it
            // unopened. An unloaded room is loaded back first.
            UpMsg::Subscribe {
                room,
                since,
                history,
            } => {
                if ctx.followers.add(relay, room) {
                    auth.handle_follow(now, room, true);
                }
                let _ = ensure_loaded(auth, &ctx.store, now, room, &mut out);
                out.push(Item::Subscribe {
                    relay,
                    room,
                    since,
                    history,
                });
            }
            UpMsg::Unsubscribe { room } => {
                if ctx.followers.remove(relay, room) {
                    auth.handle_follow(now, room, false);
                }
                out.push(Item::Unsubscribe { relay, room });
            }
            UpMsg::Action { actor, msg } => action(auth, ctx, now, relay, actor, &msg, &mut out),
            UpMsg::Presence { room, user, online } => {
                if let Some(now_online) = ctx.presence.report(relay, room, user, online) {
                    ctx.kpi.handle_presence(now, room, user, now_online);
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

/// Load what the action needs, decide it, and queue what it gives.
fn action(
    auth: &mut Authority,
    ctx: &mut Ctx,
    now: ServerTime,
    relay: RelayId,
    actor: protocol::message::Actor,
    msg: &ActionMsg,
    out: &mut Vec<Item>,
) {
    for room in auth.missing(msg) {
        if ensure_loaded(auth, &ctx.store, now, room, out).is_err() {
            out.push(Item::Answer {
                relay,
                user: actor.user,
                id: msg.id,
                outcome: Outcome::Rejected {
                    reason: Reason::Internal,
                },
            });
            return;
        }
    }
    match auth.handle_action(now, actor, msg) {
        Decision::Decided(rec) => {
            match rec.ack.map(|a| a.outcome) {
                Some(Outcome::Applied { .. }) => {
                    ctx.metrics.applied.inc();
                }
                Some(Outcome::Rejected { reason }) => ctx.kpi.handle_refused(&msg.action, reason),
                None => {}
            }
            record(out, rec, Some(relay))
        }
        Decision::Answered { outcome, timers } => {
            record(out, timers, None);
            out.push(Item::Answer {
                relay,
                user: actor.user,
                id: msg.id,
                outcome,
            });
        }
        Decision::Throttled {
            retry_after,
            timers,
        } => {
            record(out, timers, None);
            let ms = retry_after.as_millis().max(1);
            out.push(Item::Throttled {
                relay,
                user: actor.user,
                id: msg.id,
                retry_after_ms: u32::try_from(ms).unwrap_or(u32::MAX),
            });
        }
    }
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

    #[test]
    fn a_room_is_followed_while_any_relay_follows_it() {
        let mut f = Followers::default();
        let (a, b) = (RoomId(1), RoomId(2));
        assert!(f.add(1, a));
        assert!(!f.add(2, a));
        assert!(f.add(1, b));
        assert!(!f.remove(1, a));
        assert!(!f.remove(1, a), "a second unsubscribe changes nothing");
        assert_eq!(f.relay_gone(1), vec![b]);
        assert_eq!(f.relay_gone(2), vec![a]);
        assert!(f.by_room.is_empty() && f.by_relay.is_empty());
    }
}
