//! Identifiers. Every id that crosses an API is a newtype, never a bare integer.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id!(
    /// A room: one host's live stream and everything that happens in it.
    RoomId(u64),
    "room:"
);
id!(
    /// A user of the app (host, guest or viewer).
    UserId(u64),
    "user:"
);
id!(
    /// One client session. A session outlives connections: a client that moves
    /// to another relay keeps its session, and with it its action ids.
    SessionId(u64),
    "session:"
);
id!(
    /// A PK battle, chosen by the origin. Both rooms of a battle carry the same id.
    BattleId(u64),
    "battle:"
);
id!(
    /// A timed engagement event (challenge), chosen by the origin.
    ChallengeId(u64),
    "challenge:"
);
id!(
    /// An item of the gift catalogue.
    GiftId(u32),
    "gift:"
);

/// A position in a room's event log. The first event of a room has `Seq(1)`;
/// `Seq(0)` is the empty room before any event.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub struct Seq(pub u64);

impl Seq {
    /// The sequence number that follows this one.
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The identity of one client action, chosen by the client before its first
/// send and kept across every retry, fallback and failover. The origin applies
/// an id at most once and answers repeats with the original outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub struct ActionId {
    /// The session that sent the action.
    pub session: SessionId,
    /// The session's counter: strictly increasing, starting at 1.
    pub n: u64,
}

impl fmt::Display for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.session, self.n)
    }
}
