//! Message classes and their priority order.

use serde::{Deserialize, Serialize};

/// The class of a message decides its priority in every send queue and what
/// happens when a datagram carrying it is lost. Highest priority first; the
/// derived `Ord` follows that order (`Session < Authority < … < Ambient`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub enum Class {
    /// Hello, clock pings, acks, goaway: retried or re-asked when lost.
    Session,
    /// PK, seat and timer transitions: repaired by seq gap.
    Authority,
    /// Gifts and score changes: repaired by seq gap.
    Gift,
    /// Comments: repaired by seq gap.
    Chat,
    /// Likes, viewer counts, presence: coalesced; the latest wins.
    Ambient,
}

impl Class {
    /// Every class, highest priority first.
    pub const ALL: [Class; 5] = [
        Class::Session,
        Class::Authority,
        Class::Gift,
        Class::Chat,
        Class::Ambient,
    ];

    /// Position in [`Class::ALL`]: 0 is the most urgent.
    pub fn rank(self) -> usize {
        self as usize
    }

    /// Whether a lost datagram of this class is worth sending twice up front
    /// (the origin's dedupe and the seq order make copies harmless).
    pub fn is_critical(self) -> bool {
        matches!(self, Class::Session | Class::Authority | Class::Gift)
    }
}
