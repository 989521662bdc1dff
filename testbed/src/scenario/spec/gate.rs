//! The release gates a scenario may declare (`[gates]`): which figure,
//! which side of the limit passes, and the limit. Judging a run against
//! them is [`crate::scenario::verdict::gates`].

use serde::{Serialize, Serializer};

/// A gated figure; its key in `[gates]` is [`Gate::key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Gate {
    /// p99 ack latency of gifts, ms.
    GiftAckP99Ms,
    /// p99 ack latency of chat messages, ms.
    ChatAckP99Ms,
    /// p99 ack latency of authority actions (PK and seat actions), ms.
    AuthorityAckP99Ms,
    /// p99 delivery latency of every event to every client, ms.
    DeliveryP99Ms,
    /// p99 of the clients' |clock error| against the origin's clock
    /// during battles, ms.
    TimerDriftP99Ms,
    /// Battles that started / battles the timeline asked for, 0 to 1.
    StartSuccessMin,
    /// p99 over affected clients of the time from a failure to the client
    /// resumed, s.
    RecoveryP99S,
    /// Cluster mode: p99 over the rooms an origin node's failure touched
    /// of the time from the failure to the room's fence by its new owner
    /// (served again), s.
    RoomResumeP99S,
}

/// Which side of its limit a figure must stay on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// The figure must be at most the limit.
    AtMost,
    /// The figure must be at least the limit.
    AtLeast,
}

impl Bound {
    /// `≤` or `≥`.
    pub fn symbol(self) -> &'static str {
        match self {
            Bound::AtMost => "≤",
            Bound::AtLeast => "≥",
        }
    }
}

impl Gate {
    /// Every gate, in the order reports list them.
    pub const ALL: [Gate; 8] = [
        Gate::GiftAckP99Ms,
        Gate::ChatAckP99Ms,
        Gate::AuthorityAckP99Ms,
        Gate::DeliveryP99Ms,
        Gate::TimerDriftP99Ms,
        Gate::StartSuccessMin,
        Gate::RecoveryP99S,
        Gate::RoomResumeP99S,
    ];

    /// Its key in a scenario's `[gates]` table.
    pub fn key(self) -> &'static str {
        match self {
            Gate::GiftAckP99Ms => "gift_ack_p99_ms",
            Gate::ChatAckP99Ms => "chat_ack_p99_ms",
            Gate::AuthorityAckP99Ms => "authority_ack_p99_ms",
            Gate::DeliveryP99Ms => "delivery_p99_ms",
            Gate::TimerDriftP99Ms => "timer_drift_p99_ms",
            Gate::StartSuccessMin => "start_success_min",
            Gate::RecoveryP99S => "recovery_p99_s",
            Gate::RoomResumeP99S => "room_resume_p99_s",
        }
    }

    /// Which side of the limit passes.
    pub fn bound(self) -> Bound {
        match self {
            Gate::StartSuccessMin => Bound::AtLeast,
            _ => Bound::AtMost,
        }
    }

    /// The figure's unit, as printed after it ("" for a ratio).
    pub fn unit(self) -> &'static str {
        match self {
            Gate::StartSuccessMin => "",
            Gate::RecoveryP99S | Gate::RoomResumeP99S => "s",
            _ => "ms",
        }
    }
}

impl Serialize for Gate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.key())
    }
}

/// A gate and its limit, as the scenario declares it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// The gate.
    pub gate: Gate,
    /// Its limit, in the gate's unit.
    pub value: f64,
}
