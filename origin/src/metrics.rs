//! The origin's Prometheus metrics: the interaction KPIs it alone can see
//! (starts, completions, gifts by window, conversion, retention) and its
//! operations figures (write-ahead log, rooms, checkpoints, relays).
//!
//! Every handle is an atomic (counters, gauges) or a histogram observed off
//! the hot path (the commit thread, once per group commit). Labels take a
//! handful of fixed values each: never a user id or a room id. Every label
//! combination the origin can produce in normal operation is created at
//! start ([`Metrics::register`]), so a series exists at 0 before its first
//! event and `rate()` and ratios work from the first scrape; a start that
//! fails for a reason not listed in [`expected_failures`] still gets its
//! series on first use (the reasons are a closed enum: bounded).
//!
//! The names are the contract with the alerts and the dashboard (see the
//! operators' section of the README).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use protocol::Reason;
use std::borrow::Cow;
use std::fmt::Write as _;

/// An interaction kind.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A PK battle between two rooms.
    Pk,
    /// A timed engagement event (gift goal) in one room.
    Challenge,
}

impl Kind {
    /// Both kinds.
    pub const ALL: [Kind; 2] = [Kind::Pk, Kind::Challenge];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pk => "pk",
            Kind::Challenge => "challenge",
        }
    }
}

/// How an interaction ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Completion {
    /// It ran to its end (a battle's settlement, a challenge's end,
    /// whether or not its goal was reached).
    Settled,
    /// A host gave up (battles only).
    Forfeited,
    /// It vanished without ending (see `kpi.rs`).
    Aborted,
}

impl Completion {
    /// Every outcome.
    pub const ALL: [Completion; 3] = [
        Completion::Settled,
        Completion::Forfeited,
        Completion::Aborted,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Completion::Settled => "settled",
            Completion::Forfeited => "forfeited",
            Completion::Aborted => "aborted",
        }
    }
}

/// When a gift was sent, as far as interactions go.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Window {
    /// It counted in a PK battle.
    Pk,
    /// It was sent while its room ran a challenge (and did not count in a battle).
    Challenge,
    /// Neither.
    None,
}

impl Window {
    /// Every window.
    pub const ALL: [Window; 3] = [Window::Pk, Window::Challenge, Window::None];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Pk => "pk",
            Window::Challenge => "challenge",
            Window::None => "none",
        }
    }
}

/// A label value written as its `as_str`.
macro_rules! label_value {
    ($t:ty) => {
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    };
}
label_value!(Kind);
label_value!(Completion);
label_value!(Window);

/// `ringside_interaction_starts_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StartLabels {
    /// Battle or challenge.
    pub kind: Kind,
    /// `started` or `failed`.
    pub outcome: &'static str,
    /// `none` when started, else the refusal in snake_case ([`reason_label`]).
    pub reason: &'static str,
}

/// `ringside_interaction_completions_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CompletionLabels {
    /// Battle or challenge.
    pub kind: Kind,
    /// How it ended.
    pub outcome: Completion,
}

/// Labels of the per-kind counters (viewers, gifters).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Battle or challenge.
    pub kind: Kind,
}

/// Labels of the gift counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WindowLabels {
    /// The interaction window the gift fell in.
    pub window: Window,
}

/// A refusal as a label value: its name in snake_case. The reasons are a
/// closed enum, so the label stays bounded.
pub fn reason_label(reason: Reason) -> &'static str {
    match reason {
        Reason::NotAllowed => "not_allowed",
        Reason::BadArgument => "bad_argument",
        Reason::UnknownGift => "unknown_gift",
        Reason::TooLong => "too_long",
        Reason::SameRoom => "same_room",
        Reason::Busy => "busy",
        Reason::NoInvite => "no_invite",
        Reason::Expired => "expired",
        Reason::NoBattle => "no_battle",
        Reason::BattleOver => "battle_over",
        Reason::NoSuchSeat => "no_such_seat",
        Reason::SeatTaken => "seat_taken",
        Reason::SeatLocked => "seat_locked",
        Reason::SeatsFull => "seats_full",
        Reason::AlreadySeated => "already_seated",
        Reason::NotSeated => "not_seated",
        Reason::WrongMode => "wrong_mode",
        Reason::NoApplication => "no_application",
        Reason::TooMany => "too_many",
        Reason::ChallengeRunning => "challenge_running",
        Reason::Stale => "stale",
        Reason::NoGrant => "no_grant",
        Reason::Internal => "internal",
        Reason::NoRoom => "no_room",
        Reason::Capacity => "capacity",
    }
}

/// The refusals of a `PkAccept` or a `ChallengeStart` that count as a
/// failed start (not `NotAllowed`, `BadArgument`, `NoGrant` or `Stale`:
/// those were never attempts): their series exist from the start.
pub fn expected_failures(kind: Kind) -> &'static [Reason] {
    match kind {
        Kind::Pk => &[
            Reason::NoInvite,
            Reason::Expired,
            Reason::NoRoom,
            Reason::Capacity,
            Reason::Internal,
        ],
        Kind::Challenge => &[
            Reason::ChallengeRunning,
            Reason::NoRoom,
            Reason::Capacity,
            Reason::Internal,
        ],
    }
}

/// Every metric of the origin. Cheap to clone: each field is a handle on
/// shared atomics.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// `ringside_interaction_starts_total{kind, outcome, reason}`.
    pub starts: Family<StartLabels, Counter>,
    /// `ringside_interaction_completions_total{kind, outcome}`.
    pub completions: Family<CompletionLabels, Counter>,
    /// `ringside_gifts_total{window}` (items: a gift's `count`).
    pub gifts: Family<WindowLabels, Counter>,
    /// `ringside_gift_value_total{window}` (catalogue value).
    pub gift_value: Family<WindowLabels, Counter>,
    /// `ringside_interaction_viewers_total{kind}`: viewers present during
    /// interactions, added when each ends.
    pub viewers: Family<KindLabels, Counter>,
    /// `ringside_interaction_gifters_total{kind}`: of those, the ones who
    /// gifted in it.
    pub gifters: Family<KindLabels, Counter>,
    /// `ringside_post_event_viewers_total`: viewers present when a battle settled.
    pub post_event_viewers: Counter,
    /// `ringside_post_event_retained_total`: of those, the ones still in
    /// their room `retention_window` later.
    pub post_event_retained: Counter,
    /// `ringside_wal_group_size`: records per group commit.
    pub wal_group_size: Histogram,
    /// `ringside_wal_commit_seconds`: a group commit, first append to durable.
    pub wal_commit_seconds: Histogram,
    /// `ringside_wal_sync_seconds`: one `fdatasync`.
    pub wal_sync_seconds: Histogram,
    /// `ringside_rooms_live`: rooms in memory.
    pub rooms_live: Gauge,
    /// `ringside_checkpoint_seconds`: writing one checkpoint.
    pub checkpoint_seconds: Histogram,
    /// `ringside_origin_applied_total`: actions applied.
    pub applied: Counter,
    /// `ringside_origin_relays`: relays connected.
    pub relays: Gauge,
    /// Handles resolved once for what happens often (a family lookup takes
    /// a lock; these are bare atomics).
    hot: Hot,
}

/// Series resolved at start, indexed like [`Window::ALL`].
#[derive(Clone, Debug)]
struct Hot {
    gifts: [Counter; 3],
    gift_value: [Counter; 3],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Create a series at 0.
fn touch<L>(family: &Family<L, Counter>, labels: &L)
where
    L: Clone + std::hash::Hash + Eq,
{
    drop(family.get_or_create(labels));
}

fn start_labels(kind: Kind, reason: Option<Reason>) -> StartLabels {
    StartLabels {
        kind,
        outcome: if reason.is_some() {
            "failed"
        } else {
            "started"
        },
        reason: reason.map_or("none", reason_label),
    }
}

impl Metrics {
    /// Fresh handles, registered nowhere (see [`Metrics::register`]), with
    /// every expected label combination created at 0.
    pub fn new() -> Metrics {
        let gifts: Family<WindowLabels, Counter> = Family::default();
        let gift_value: Family<WindowLabels, Counter> = Family::default();
        let by_window = |f: &Family<WindowLabels, Counter>| {
            Window::ALL.map(|window| f.get_or_create(&WindowLabels { window }).clone())
        };
        let hot = Hot {
            gifts: by_window(&gifts),
            gift_value: by_window(&gift_value),
        };
        let m = Metrics {
            starts: Family::default(),
            completions: Family::default(),
            gifts,
            gift_value,
            viewers: Family::default(),
            gifters: Family::default(),
            post_event_viewers: Counter::default(),
            post_event_retained: Counter::default(),
            wal_group_size: ops::buckets::histogram(&ops::buckets::COUNT),
            wal_commit_seconds: ops::buckets::histogram(&ops::buckets::LATENCY_SECONDS),
            wal_sync_seconds: ops::buckets::histogram(&ops::buckets::LATENCY_SECONDS),
            rooms_live: Gauge::default(),
            checkpoint_seconds: ops::buckets::histogram(&ops::buckets::LATENCY_SECONDS),
            applied: Counter::default(),
            relays: Gauge::default(),
            hot,
        };
        // Touch every expected series, so it exists at 0.
        for kind in Kind::ALL {
            touch(&m.starts, &start_labels(kind, None));
            for reason in expected_failures(kind) {
                touch(&m.starts, &start_labels(kind, Some(*reason)));
            }
            // A challenge has nobody to forfeit it.
            let outcomes = Completion::ALL.into_iter();
            for outcome in outcomes.filter(|o| kind == Kind::Pk || *o != Completion::Forfeited) {
                touch(&m.completions, &CompletionLabels { kind, outcome });
            }
            touch(&m.viewers, &KindLabels { kind });
            touch(&m.gifters, &KindLabels { kind });
        }
        m
    }

    /// A registry whose every series carries `node="<node>"`.
    pub fn registry(node: &str) -> Registry {
        Registry::with_labels(std::iter::once((
            Cow::Borrowed("node"),
            Cow::Owned(node.to_owned()),
        )))
    }

    /// Register every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry;
        r.register(
            "ringside_interaction_starts",
            "Interactions started, or refused at their start (reason)",
            self.starts.clone(),
        );
        r.register(
            "ringside_interaction_completions",
            "Interactions ended: settled, forfeited or aborted",
            self.completions.clone(),
        );
        r.register(
            "ringside_gifts",
            "Gift items, by the interaction window they fell in",
            self.gifts.clone(),
        );
        r.register(
            "ringside_gift_value",
            "Gift value (catalogue units), by interaction window",
            self.gift_value.clone(),
        );
        r.register(
            "ringside_interaction_viewers",
            "Viewers present during interactions (counted when each ends)",
            self.viewers.clone(),
        );
        r.register(
            "ringside_interaction_gifters",
            "Viewers who gifted during the interaction they watched",
            self.gifters.clone(),
        );
        r.register(
            "ringside_post_event_viewers",
            "Viewers present in a room when its battle settled",
            self.post_event_viewers.clone(),
        );
        r.register(
            "ringside_post_event_retained",
            "Of those, viewers still in the room retention_window_s later",
            self.post_event_retained.clone(),
        );
        r.register(
            "ringside_wal_group_size",
            "Records made durable by one group commit",
            self.wal_group_size.clone(),
        );
        r.register(
            "ringside_wal_commit_seconds",
            "One group commit, first append to durable",
            self.wal_commit_seconds.clone(),
        );
        r.register(
            "ringside_wal_sync_seconds",
            "One fdatasync of the write-ahead log",
            self.wal_sync_seconds.clone(),
        );
        r.register(
            "ringside_rooms_live",
            "Rooms in memory",
            self.rooms_live.clone(),
        );
        r.register(
            "ringside_checkpoint_seconds",
            "Writing one checkpoint",
            self.checkpoint_seconds.clone(),
        );
        r.register(
            "ringside_origin_applied",
            "Actions applied by the rules",
            self.applied.clone(),
        );
        r.register(
            "ringside_origin_relays",
            "Relays connected",
            self.relays.clone(),
        );
    }

    /// Count a started interaction.
    pub fn started(&self, kind: Kind) {
        self.starts.get_or_create(&start_labels(kind, None)).inc();
    }

    /// Count an interaction refused at its start.
    pub fn failed(&self, kind: Kind, reason: Reason) {
        self.starts
            .get_or_create(&start_labels(kind, Some(reason)))
            .inc();
    }

    /// Count an interaction's end.
    pub fn completed(&self, kind: Kind, outcome: Completion) {
        let labels = CompletionLabels { kind, outcome };
        self.completions.get_or_create(&labels).inc();
    }

    /// Count a gift of `count` items worth `value` in `window` (atomics only).
    pub fn gift(&self, window: Window, count: u32, value: u64) {
        let i = match window {
            Window::Pk => 0,
            Window::Challenge => 1,
            Window::None => 2,
        };
        self.hot.gifts[i].inc_by(u64::from(count));
        self.hot.gift_value[i].inc_by(value);
    }

    /// Add one interaction's audience: `viewers` present, `gifters` of them gifted.
    pub fn conversion(&self, kind: Kind, viewers: u64, gifters: u64) {
        let labels = KindLabels { kind };
        self.viewers.get_or_create(&labels).inc_by(viewers);
        self.gifters.get_or_create(&labels).inc_by(gifters);
    }
}
