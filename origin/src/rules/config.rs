//! The knobs of the room rules. Durations are in milliseconds in files, under
//! keys ending in `_ms`.

use protocol::{GiftId, ServerTime};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Rules configuration. The defaults suit a real app; tests shorten them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The gift catalogue: id → value of one item. In files, a list of
    /// `{ id = 3, value = 100 }` tables.
    #[serde(with = "catalogue")]
    pub gifts: BTreeMap<GiftId, u64>,
    /// Most items of one gift in one action.
    pub max_gift_count: u32,
    /// Most likes in one action (the SDK coalesces taps).
    pub max_likes: u32,
    /// How long a PK invitation waits for an answer.
    #[serde(rename = "pk_invite_timeout_ms", with = "ms")]
    pub pk_invite_timeout: Duration,
    /// Shortest battle a host may ask for.
    #[serde(rename = "pk_min_duration_ms", with = "ms")]
    pub pk_min_duration: Duration,
    /// Longest battle a host may ask for.
    #[serde(rename = "pk_max_duration_ms", with = "ms")]
    pub pk_max_duration: Duration,
    /// After the bell, how long a gift stamped before it may still arrive and count.
    #[serde(rename = "pk_grace_ms", with = "ms")]
    pub pk_grace: Duration,
    /// How long the punishment phase lasts after settlement (zero: none).
    #[serde(rename = "pk_punishment_ms", with = "ms")]
    pub pk_punishment: Duration,
    /// A sender's stamp earlier than its arrival minus this is not trusted
    /// (the arrival time is used instead). A stamp later than the arrival is
    /// never trusted.
    #[serde(rename = "max_stamp_age_ms", with = "ms")]
    pub max_stamp_age: Duration,
    /// Co-host seats per room.
    pub seats: u8,
    /// How long a seat invitation waits for an answer.
    #[serde(rename = "seat_invite_timeout_ms", with = "ms")]
    pub seat_invite_timeout: Duration,
    /// How long a disconnected guest's seat is held.
    #[serde(rename = "seat_hold_ms", with = "ms")]
    pub seat_hold: Duration,
    /// Most pending seat applications, and most pending seat invitations, per room.
    pub max_seat_queue: usize,
    /// Shortest challenge window.
    #[serde(rename = "challenge_min_window_ms", with = "ms")]
    pub challenge_min_window: Duration,
    /// Longest challenge window.
    #[serde(rename = "challenge_max_window_ms", with = "ms")]
    pub challenge_max_window: Duration,
    /// Action ids remembered per session (older ones answer `Stale`); 24
    /// bytes each.
    pub session_window: usize,
    /// Live sessions remembered at once (the least recently active is
    /// forgotten; its ids then answer `Stale`, never `New`). Each takes at
    /// most `200 + 24 × session_window` bytes and its user about 100 more:
    /// with the defaults the id memory stays under about 0.8 GiB even when
    /// every session is full (see `rules/sessions.rs`).
    pub max_sessions: usize,
    /// Live sessions per user (a user's least recently active one is
    /// forgotten first), so one user cannot crowd out everyone else's.
    pub max_user_sessions: usize,
    /// The origin's backstop on one user's actions across all relays,
    /// sustained per second (0: off). Relays hold users to a tighter limit;
    /// over this one an action is not decided and the relay hears
    /// `Throttled` with when to retry.
    pub user_rate: u32,
    /// The backstop's burst: actions one user may send at once.
    pub user_burst: u32,
    /// Users the backstop tracks at once (about 100 bytes each; the least
    /// recently active is dropped first).
    pub rate_users: usize,
    /// Live rooms at most. An action that would open one more is refused
    /// with `Capacity`; rooms reloaded for their followers are never
    /// refused, but count. A live room costs its state (under a KiB without
    /// seats queues; a few KiB with full ones) plus, in the server, its ring
    /// of recent events (up to the origin's `ring`, about 100 bytes each,
    /// filled only by rooms with traffic); idle rooms leave both.
    pub max_rooms: usize,
    /// A room with no follower, no timer and no one seated is unloaded from
    /// memory (and from checkpoints) after this long without activity; it
    /// comes back, exactly as it was, when it is next followed or acted on.
    #[serde(rename = "room_idle_ms", with = "ms")]
    pub room_idle: Duration,
    /// Closed PK invitations remembered, so a late accept hears `Expired`.
    pub closed_invite_memory: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            gifts: default_catalogue(),
            max_gift_count: 9_999,
            max_likes: 1_000,
            pk_invite_timeout: Duration::from_secs(15),
            pk_min_duration: Duration::from_secs(10),
            pk_max_duration: Duration::from_secs(15 * 60),
            pk_grace: Duration::from_secs(2),
            pk_punishment: Duration::from_secs(30),
            max_stamp_age: Duration::from_secs(3),
            seats: 8,
            seat_invite_timeout: Duration::from_secs(30),
            seat_hold: Duration::from_secs(20),
            max_seat_queue: 64,
            challenge_min_window: Duration::from_secs(5),
            challenge_max_window: Duration::from_secs(60 * 60),
            session_window: 512,
            max_sessions: 65_536,
            max_user_sessions: 8,
            user_rate: 200,
            user_burst: 400,
            rate_users: 100_000,
            max_rooms: 100_000,
            room_idle: Duration::from_secs(10 * 60),
            closed_invite_memory: 4096,
        }
    }
}

/// Rose 1, heart 5, rocket 100, castle 1000, universe 10000.
pub fn default_catalogue() -> BTreeMap<GiftId, u64> {
    [(1, 1), (2, 5), (3, 100), (4, 1_000), (5, 10_000)]
        .into_iter()
        .map(|(id, v)| (GiftId(id), v))
        .collect()
}

/// The catalogue as a list of `{ id, value }` (config formats want string map keys).
mod catalogue {
    use protocol::GiftId;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    #[derive(Serialize, Deserialize)]
    struct Item {
        id: u32,
        value: u64,
    }

    pub fn serialize<S: Serializer>(m: &BTreeMap<GiftId, u64>, s: S) -> Result<S::Ok, S::Error> {
        let items: Vec<Item> = m.iter().map(|(k, v)| Item { id: k.0, value: *v }).collect();
        items.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<GiftId, u64>, D::Error> {
        let items = Vec::<Item>::deserialize(d)?;
        Ok(items.into_iter().map(|i| (GiftId(i.id), i.value)).collect())
    }
}

/// `Duration` as whole milliseconds, for config files.
pub mod ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Serialize as milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Deserialize from milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// The time a gift counts as sent: the sender's stamp when it is plausible
/// (not later than `now`, not older than `config.max_stamp_age`), else `now`.
pub(super) fn trusted_stamp(config: &Config, now: ServerTime, sent_at: ServerTime) -> ServerTime {
    if sent_at > now || sent_at < now.saturating_sub(config.max_stamp_age) {
        now
    } else {
        sent_at
    }
}
