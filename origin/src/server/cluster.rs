//! Cluster mode's driver: one task in place of the authority task and the
//! commit thread (see [`crate::cluster`] for the design).
//!
//! ```text
//! relay links ──Input──► cluster driver ──Vec<Item>──► publisher ──► relay links
//!                         (one Authority holding every room this node holds;
//!                          decides a batch, appends it to the room logs in
//!                          JetStream (fenced group commit), then passes on
//!                          only what was acknowledged while the lease held)
//! ```
//!
//! The driver steps the node's [`Keeper`] (node lease, member list, room
//! claims), rebuilds a room it wins into its [`Authority`] and lets the
//! publisher serve it (`Item::Won`), and tells a lost room's subscribers
//! where it went (`Item::Moved`). A request for a room the [`Policy`]
//! gives another node is answered `Moved` / `Redirect` with that node's
//! name, never applied; one for a room the policy gives this node but not
//! held yet is parked (bounded in count and time) while the node wins it.
//! Routing and deciding are in `route.rs`.
//!
//! PK battles across nodes: an invitation to a room held elsewhere pins it
//! to the inviter's room (bucket key `pin.<invited>`), asks its holder to
//! release it (a core NATS request to `<subject_prefix>.ctl.node.<holder>.release`,
//! answered once the holder has released it), wins it here and decides the
//! parked invitation; the decisions are [`Pairs`]'s. Every node watches
//! the `pin.>` keys, so its policy follows a pin as soon as it is written
//! (and lists them again whenever a member dies or joins).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::future::join_all;
use futures_util::StreamExt;
use protocol::{RoomId, ServerTime};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::authority::Presence;
use super::outs::{InFlight, Out};
use super::parked::Parked;
use super::pipeline::Pipeline;
use super::shared::{gauge, Input, Item};
use crate::clock::Clock;
use crate::cluster::keeper::{Change, Keeper};
use crate::cluster::lease::Timing;
use crate::cluster::pairs::{Held, Pairs, Step};
use crate::cluster::{self, merge_tail, rebuild_room, Committer, Placement, Policy, RoomLog};
use crate::config::Config;
use crate::kpi::Kpi;
use crate::metrics::Metrics;
use crate::rules::Authority;

/// Room claims and pins are listed this many node-lease renewals apart
/// when no member changed.
const SWEEP_EVERY: u32 = 10;
/// A room dropped for a failed append or fence is wanted again after
/// this, doubling with every failure in a row up to [`REWIN_MAX`].
pub(super) const REWIN_FIRST: Duration = Duration::from_millis(50);
pub(super) const REWIN_MAX: Duration = Duration::from_millis(500);
/// Most inputs decided in one group commit.
const MAX_BATCH: usize = 4096;
/// Most outputs waiting for their appends: beyond it the driver takes no
/// input until appends are answered.
const MAX_WAITING: usize = 16_384;

/// What an origin in cluster mode shows in process.
pub(super) struct View {
    /// The node's name.
    pub name: String,
    /// The policy as the driver last computed it.
    pub policy: watch::Receiver<Policy>,
    /// The driver, awaited on a clean shutdown (it hands its rooms over).
    pub driver: Option<tokio::task::JoinHandle<()>>,
    /// Held so that [`Origin::serve_until`](super::Origin::serve_until)
    /// waits (nothing fails the node as a whole: a failed append drops
    /// only its room).
    pub _failed: watch::Sender<Option<String>>,
}

/// The driver's state.
pub(super) struct Driver {
    pub(super) name: String,
    pub(super) auth: Authority,
    pub(super) clock: Clock,
    pub(super) keeper: Keeper,
    pub(super) committer: Committer,
    timing: Timing,
    /// Rooms won, rebuilt and served.
    pub(super) held: BTreeSet<RoomId>,
    /// Origin time never goes below the last event of a room won.
    pub(super) floor: ServerTime,
    pub(super) presence: Presence,
    pub(super) pairs: Pairs,
    pub(super) parked: Parked,
    /// Appends per room and the outputs waiting for them.
    pub(super) pipeline: Pipeline<Out>,
    /// Appends sent, their answers to come.
    pub(super) inflight: InFlight,
    /// Items a failed send left to pass on with the next ones.
    pub(super) pending_items: Vec<Item>,
    /// `Moved` of battle partners dropped with a room
    /// ([`Driver::retry`]): they go after everything released so far,
    /// which may hold the partner's last events.
    pub(super) pending_moved: Vec<Item>,
    /// The policy over the live members and the pins, as of the last look.
    pub(super) policy: Policy,
    policy_tx: watch::Sender<Policy>,
    next_sweep: Instant,
    alive: Vec<String>,
    pub(super) batches: mpsc::Sender<Vec<Item>>,
    pub(super) nats: async_nats::Client,
    pub(super) ctl: String,
    pub(super) fetched_tx: mpsc::Sender<RoomId>,
    /// Rooms dropped for a failed append or fence, to win again at the
    /// instant (after their release ran), and how many tries in a row
    /// failed (the wait doubles: a stream electing a leader fails every
    /// try for seconds).
    pub(super) rewin: BTreeMap<RoomId, Instant>,
    /// Failed tries in a row per room (cleared by an acknowledged append).
    pub(super) failures: BTreeMap<RoomId, u32>,
    /// Fetches under way (aborted with the driver).
    pub(super) fetches: JoinSet<()>,
    pub(super) request_timeout: Duration,
    pub(super) metrics: Metrics,
    /// The interaction KPIs of the rooms served here: fed what is
    /// published, refused starts and presence; a room won is followed from
    /// its state, a room lost forgotten uncounted (its next node goes on).
    pub(super) kpi: Kpi,
}

/// A node connected and joined, before it serves: its driver and what
/// the driver listens to.
pub(super) struct Joined {
    pub driver: Driver,
    /// Release requests addressed to this node.
    pub releases: async_nats::Subscriber,
    /// The pins as they change.
    pub pins: kv::Watch,
    fetched: mpsc::Receiver<RoomId>,
}

/// What the driver passes on (for the publisher), and its policy (for
/// [`View`]).
pub(super) type Outputs = (mpsc::Receiver<Vec<Item>>, watch::Receiver<Policy>);

/// Connect to NATS, open the streams and the bucket, take the node lease
/// and look at the bucket once: the node then serves from its first
/// request on.
pub(super) async fn connect(
    config: &Config,
    cluster: &cluster::Config,
    clock: Clock,
    metrics: Metrics,
) -> Result<(Joined, Outputs), cluster::Error> {
    let (log, js) = RoomLog::connect(cluster).await?;
    let placement = Placement::open(&js, cluster).await?;
    let nats = js.client();
    let ctl = format!("{}.ctl", cluster.subject_prefix);
    // Both of this node's control subjects: `release` and `take`.
    let releases = (nats
        .subscribe(format!("{ctl}.node.{}.*", cluster.node))
        .await)
        .map_err(|e| cluster::Error::Bucket(format!("cannot subscribe: {e}")))?;
    let pins = placement.watch_pins().await?;
    let timing = Timing {
        ttl: cluster.lease_ttl,
        margin: cluster.lease_margin,
    };
    let (batch_tx, batches) = mpsc::channel(1 << 10);
    let (fetched_tx, fetched) = mpsc::channel(1 << 10);
    let (policy_tx, policy) = watch::channel(Policy::default());
    let mut driver = Driver {
        name: cluster.node.clone(),
        auth: {
            let mut auth = Authority::new(config.rules.clone());
            auth.seed_ids(clock.now().0);
            auth
        },
        clock,
        keeper: Keeper::new(cluster.node.clone(), timing, placement),
        committer: Committer::new(log, cluster.node.clone()),
        timing,
        held: BTreeSet::new(),
        floor: ServerTime(0),
        presence: Presence::default(),
        pairs: Pairs::new(),
        parked: Parked::default(),
        pipeline: Pipeline::default(),
        inflight: InFlight::default(),
        pending_items: Vec::new(),
        pending_moved: Vec::new(),
        policy: Policy::default(),
        policy_tx,
        next_sweep: Instant::now(),
        alive: Vec::new(),
        batches: batch_tx,
        nats,
        ctl,
        fetched_tx,
        fetches: JoinSet::new(),
        rewin: BTreeMap::new(),
        failures: BTreeMap::new(),
        request_timeout: cluster.request_timeout,
        kpi: Kpi::new(metrics.clone(), config.retention_window),
        metrics,
    };
    driver.join().await?;
    let joined = Joined {
        driver,
        releases,
        pins,
        fetched,
    };
    Ok((joined, (batches, policy)))
}

impl Joined {
    /// Run the driver on a task of its own until the inputs end or
    /// `shutdown` (then it hands its rooms over first).
    pub(super) fn spawn(
        self,
        inputs: mpsc::Receiver<Input>,
        shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let Joined {
            driver,
            releases,
            pins,
            fetched,
        } = self;
        // Every line the driver logs names its node (a testbed runs three
        // in one process).
        let span = tracing::info_span!("node", name = %driver.name);
        tokio::spawn(
            driver
                .run(inputs, (releases, pins), fetched, shutdown)
                .instrument(span),
        )
    }
}

impl Driver {
    /// Become a member (bounded: a few leases' time) and look at the
    /// bucket once, so the node serves from its first request on.
    async fn join(&mut self) -> Result<(), cluster::Error> {
        let until = Instant::now() + self.timing.ttl * 10;
        while !self.keeper.is_member(Instant::now()) {
            if Instant::now() > until {
                return Err(cluster::Error::Bucket("cannot take the node lease".into()));
            }
            let changes = self.keeper.step(Instant::now()).await;
            self.apply(changes).await;
            let next = (self.keeper.poll_timeout()).unwrap_or_else(Instant::now);
            tokio::time::sleep_until(next.max(Instant::now()).into()).await;
        }
        self.look_around().await;
        Ok(())
    }

    async fn run(
        mut self,
        mut inputs: mpsc::Receiver<Input>,
        (mut releases, mut pins): (async_nats::Subscriber, kv::Watch),
        mut fetched: mpsc::Receiver<RoomId>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let started = Instant::now();
            let changes = self.keeper.step(started).await;
            let gained = self.apply(changes).await;
            self.note_slow("keeper step", started);
            self.win_again();
            let again = self.parked.take(&gained);
            if !again.is_empty() && self.handle(again).await.is_err() {
                return;
            }
            let now = Instant::now();
            self.refresh_policy(now);
            let alive: Vec<String> = self.policy.nodes().map(str::to_owned).collect();
            if self.next_sweep <= now || alive != self.alive {
                self.alive = alive;
                self.look_around().await;
                self.note_slow("listing the bucket", now);
            }
            if self.fire_timers().await.is_err() {
                return;
            }
            self.kpi.handle_timeout(self.now_t(), &self.presence);
            let expired = self.parked.expired(Instant::now());
            if !expired.is_empty() {
                let items = expired.into_iter().flat_map(|i| self.give_up(i)).collect();
                if self.batches.send(items).await.is_err() {
                    return;
                }
            }
            let deadline = self.deadline();
            let room_for_more = self.pipeline.len() < MAX_WAITING;
            tokio::select! {
                Some(done) = self.inflight.next(), if !self.inflight.is_empty() => {
                    if self.appended(done).await.is_err() {
                        return;
                    }
                }
                input = inputs.recv(), if room_for_more => {
                    let Some(first) = input else { return };
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match inputs.try_recv() {
                            Ok(i) => batch.push(i),
                            Err(_) => break,
                        }
                    }
                    let started = Instant::now();
                    if self.handle(batch).await.is_err() {
                        return;
                    }
                    self.note_slow("deciding and committing a batch", started);
                }
                Some(msg) = releases.next() => self.release_asked(msg).await,
                Some(entry) = pins.next() => {
                    match entry.ok().as_ref().and_then(Placement::pin_change) {
                        Some((room, Some(to))) => self.pairs.handle_pinned(room, to),
                        Some((room, None)) => self.pairs.handle_unpinned(room),
                        None => {}
                    }
                }
                Some(room) = fetched.recv() => self.keeper.want(Instant::now(), room),
                _ = shutdown.changed() => {
                    self.leave().await;
                    return;
                }
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    /// Say so when one piece of the driver's work took longer than a
    /// lease renewal's interval: the node lease is renewed between them.
    fn note_slow(&self, what: &str, since: Instant) {
        let took = since.elapsed();
        if took > self.timing.renew_every() {
            let took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
            tracing::warn!(what, took_ms, "the node's driver was held up");
        }
    }

    fn deadline(&self) -> Instant {
        let timer = (self.auth.poll_timeout()).map(|t| self.clock.instant(t));
        let kpi = (self.kpi.poll_timeout()).map(|t| self.clock.instant(t));
        let rewin = self.rewin.values().min().copied();
        [
            timer,
            kpi,
            self.keeper.poll_timeout(),
            self.parked.next_expiry(),
            rewin,
        ]
        .into_iter()
        .flatten()
        .chain([self.next_sweep])
        .min()
        .unwrap_or(self.next_sweep)
    }

    /// Origin time for deciding: never before the last event of a room won.
    pub(super) fn now_t(&self) -> ServerTime {
        self.clock.now().max(self.floor)
    }

    /// The policy over the live members (this node included while it holds
    /// its membership) and the pins known.
    pub(super) fn refresh_policy(&mut self, now: Instant) {
        let mut policy = Policy::new(self.keeper.members().alive(now).map(str::to_owned));
        if self.keeper.is_member(now) {
            policy.handle_joined(&self.name);
        }
        for (room, to) in self.pairs.pins() {
            policy.handle_pin(*room, Some(*to));
        }
        if policy != self.policy {
            self.policy_tx.send_replace(policy.clone());
            self.policy = policy;
        }
    }

    /// The node the policy gives `room` to, unless it is this one.
    pub(super) fn elsewhere(&self, room: RoomId) -> Option<String> {
        (self.policy.owner_of(room))
            .filter(|o| *o != self.name)
            .map(str::to_owned)
    }

    /// List the pins and room claims (after a member died or joined, and
    /// now and then): let go of pairs whose battle is over, want the rooms
    /// the policy gives this node whose holder's node lease is dead,
    /// release those it gives to another live node.
    async fn look_around(&mut self) {
        let now = Instant::now();
        self.next_sweep = now + self.timing.renew_every() * SWEEP_EVERY;
        let placement = self.keeper.placement().clone();
        match placement.pins().await {
            Ok(pins) => self.pairs.handle_listed(now, pins),
            Err(e) => tracing::warn!(error = %e, "cannot list the pins"),
        }
        let (held, auth) = (&self.held, &self.auth);
        let state = |room: RoomId| match (held.contains(&room), auth.room(room)) {
            (false, _) => Held::Elsewhere,
            (true, Some(s)) if s.battle.is_some() || s.pk_invite.is_some() => Held::Busy,
            (true, _) => Held::Idle,
        };
        for step in self.pairs.poll_unpin(now, state) {
            if let Step::Unpin { room } = step {
                tracing::info!(%room, "battle over: room unpinned");
                if let Err(e) = placement.unpin(room).await {
                    tracing::warn!(%room, error = %e, "cannot unpin");
                }
            }
        }
        self.refresh_policy(Instant::now());
        let rooms = match placement.rooms().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the room claims");
                return;
            }
        };
        let now = Instant::now();
        for (room, claim, revision) in rooms {
            let mine = self.policy.owner_of(room) == Some(self.name.as_str());
            if claim.node == self.name {
                if let Some(owner) = self.policy.owner_of(room).filter(|_| !mine) {
                    self.keeper.release(room);
                    // A claim left behind (its release failed) goes too.
                    self.keeper.release_listed(room, revision);
                    // Its new owner takes it now, not at the next request
                    // for it (relays follow the `Moved` too).
                    let owner = owner.to_owned();
                    self.tell_to_take(room, &owner).await;
                } else if mine && self.keeper.owned(room, now).is_none() {
                    // An earlier incarnation's claim: take it back.
                    self.want(room);
                }
            } else if mine && !(self.keeper.members()).holds(&claim.node, claim.member, now) {
                self.want(room);
            }
        }
    }

    /// Rooms won are fenced, rebuilt and served; rooms lost are dropped and
    /// their subscribers told where they went. Returns the rooms won.
    pub(super) async fn apply(&mut self, changes: Vec<Change>) -> Vec<RoomId> {
        let mut items = Vec::new();
        // What waited for rooms dropped since is settled before any room is
        // rebuilt (the id memory forgets first, see `settle`).
        self.settle(&mut items);
        let mut won = Vec::new();
        // Losses first: a room lost and won again (a new epoch) is
        // dropped, then rebuilt.
        for change in changes {
            match change {
                Change::Lost { room } => self.drop_room(room, &mut items),
                Change::Gained { room, epoch } => won.push((room, epoch)),
            }
        }
        // From here on what leaves is gathered in order in the pending
        // lists (a failed fence or merge drops rooms into them).
        self.pending_items.append(&mut items);
        let mut gained = Vec::new();
        // Per room, the epoch of the last writer that stored records in its
        // log: only decisions by it or a later writer are taken from a
        // partner's log (see `merge_partners`).
        let mut before = BTreeMap::new();
        for (room, fenced) in self.committer.acquire_all(won).await {
            let entries = match fenced {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::warn!(%room, error = %e, "cannot fence a won room");
                    self.retry(room);
                    continue;
                }
            };
            self.auth.remove_room(room);
            if let Err(e) = rebuild_room(&mut self.auth, room, &entries) {
                tracing::error!(%room, error = %e, "room log does not replay");
                self.auth.remove_room(room);
                self.committer.drop_room(room);
                self.keeper.release(room);
                continue;
            }
            before.insert(room, cluster::last_writer(&entries));
            tracing::info!(%room, entries = entries.len(), "room won");
            self.held.insert(room);
            self.pairs.handle_gained(room);
            gained.push(room);
        }
        // A battle's two rooms: what one room's lost append left out is in
        // its partner's log (both hold the pair's records whole).
        self.merge_partners(&gained, &before).await;
        gained.retain(|r| self.held.contains(r));
        let now = self.now_t();
        let states = gained.iter().filter_map(|r| self.auth.room(*r));
        self.kpi.seed(now, states);
        for room in &gained {
            let state = self.auth.room(*room).cloned();
            if let Some(s) = &state {
                self.floor = self.floor.max(s.at);
            }
            items.push(Item::Won { room: *room, state });
        }
        self.metrics.rooms_live.set(gauge(self.held.len()));
        let mut out = std::mem::take(&mut self.pending_items);
        out.append(&mut self.pending_moved);
        out.append(&mut items);
        let items = out;
        if !items.is_empty() {
            let _ = self.batches.send(items).await;
        }
        gained
    }

    /// The rooms `room` is linked to: its PK pin either way, its battle's
    /// or invitation's other room, and (`search`: after a rebuild, when its
    /// own log may have lost the event that says) any held room whose
    /// battle or invitation names it.
    pub(super) fn linked(&self, room: RoomId, search: bool) -> Vec<RoomId> {
        let names = |s: &protocol::RoomState| -> Vec<RoomId> {
            let mut out: Vec<RoomId> = (s.battle.iter()).flat_map(|b| b.rooms).collect();
            out.extend(s.pk_invite.iter().flat_map(|i| [i.from, i.to]));
            out
        };
        let mut out: Vec<RoomId> = (self.pairs.pins().iter())
            .filter_map(|(a, b)| match (*a == room, *b == room) {
                (true, _) => Some(*b),
                (_, true) => Some(*a),
                _ => None,
            })
            .collect();
        if let Some(s) = self.auth.room(room) {
            out.extend(names(s));
        }
        if search {
            for s in self.auth.rooms() {
                if s.room != room && names(s).contains(&room) {
                    out.push(s.room);
                }
            }
        }
        out.retain(|r| *r != room);
        out.sort();
        out.dedup();
        out
    }

    /// Take what each room's partners' logs hold for it past its last
    /// event. The partners' logs are read all at once (one at a time, a
    /// dead node's thirty battle rooms held the driver, and with it the
    /// node's lease renewals, for most of a second).
    ///
    /// Only copies decided by the last writer that stored records in the
    /// room's own log, or by a later one (`before[room]`, an epoch; `None`:
    /// no records yet), are taken: a node that still thought it held a
    /// room another had taken and written could decide events for it on
    /// stale state, and those may sit in a partner's log it did hold.
    async fn merge_partners(&mut self, rooms: &[RoomId], before: &BTreeMap<RoomId, Option<u64>>) {
        let pairs: Vec<(RoomId, RoomId, Option<u64>)> = (rooms.iter())
            .filter_map(|room| before.get(room).map(|epoch| (*room, *epoch)))
            .flat_map(|(room, epoch)| {
                (self.linked(room, true).into_iter()).map(move |p| (room, p, epoch))
            })
            .collect();
        let log = self.committer.log();
        let reads = join_all(pairs.into_iter().map(|(room, partner, epoch)| async move {
            (
                room,
                partner,
                epoch,
                log.read(partner).await.map(cluster::valid),
            )
        }))
        .await;
        for (room, partner, epoch, read) in reads {
            if !self.held.contains(&room) {
                continue; // dropped by an earlier merge's failed append
            }
            let entries = match read {
                Ok(logged) => (logged.into_iter())
                    .filter(|l| l.decided_since(room, epoch))
                    .map(|l| l.entry)
                    .collect::<Vec<_>>(),
                Err(e) => {
                    // Its tail may hold this room's lost events (an acked
                    // gift's): do not serve the room without them.
                    tracing::warn!(%room, %partner, error = %e, "cannot read a partner's log: room dropped");
                    let mut items = Vec::new();
                    self.drop_room(room, &mut items);
                    self.pending_items.append(&mut items);
                    self.retry(room);
                    continue;
                }
            };
            let merged = match merge_tail(&mut self.auth, room, &entries) {
                Ok(merged) => merged,
                Err(e) => {
                    tracing::error!(%room, %partner, error = %e, "partner's records do not apply");
                    continue;
                }
            };
            if merged.is_empty() {
                continue;
            }
            let n = merged.len();
            tracing::warn!(%room, %partner, records = n, "a lost append's records taken from the partner's log");
            // Into the room's own log too, so that it is whole again.
            let parts = merged.into_iter().map(|r| (room, r)).collect();
            if let Some(Err(e)) = self.committer.commit(parts).await.pop().map(|a| a.result) {
                tracing::warn!(%room, error = %e, "cannot append the merged records: room dropped");
                let mut items = Vec::new();
                self.drop_room(room, &mut items);
                self.pending_items.append(&mut items);
                self.retry(room);
            }
        }
    }

    /// Stop serving `room`: its subscribers hear where it went, and what
    /// waited for its appends is settled at once (see [`Driver::settle`]).
    pub(super) fn drop_room(&mut self, room: RoomId, items: &mut Vec<Item>) {
        // What was handed back goes before the `Moved` (the relay holds the
        // actions, then waits for the room's next node).
        let mut moved = Vec::new();
        if self.unserve(room, &mut moved) {
            self.settle(items);
        }
        items.append(&mut moved);
    }

    /// [`Driver::drop_room`] without settling; whether it was served.
    pub(super) fn unserve(&mut self, room: RoomId, items: &mut Vec<Item>) -> bool {
        self.pipeline.handle_dropped(room);
        if !self.held.remove(&room) {
            return false;
        }
        tracing::info!(%room, "room no longer served here");
        self.auth.remove_room(room);
        self.kpi.handle_moved(room);
        self.committer.drop_room(room);
        let owner = self.elsewhere(room);
        items.push(Item::Moved {
            room,
            owner,
            relay: None,
        });
        true
    }

    /// Drain: wait for the appends in flight (each bounded by the request
    /// timeout), hand every room over, leave the membership.
    async fn leave(&mut self) {
        while let Some(done) = self.inflight.next().await {
            if self.appended(done).await.is_err() {
                break;
            }
        }
        // Subscribers hear of the node each room goes to next.
        self.policy.handle_left(&self.name);
        self.keeper.leave();
        let changes = self.keeper.step(Instant::now()).await;
        self.apply(changes).await;
    }
}
