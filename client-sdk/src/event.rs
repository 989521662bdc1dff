//! What the client tells the app: client-wide events, an action's answer,
//! the relay it is on, and counters of what it had to do to keep up.

use std::net::SocketAddr;
use std::time::Duration;

use protocol::ActionId;

use crate::error::Error;
use crate::outcome::Outcome;

/// Which relay the client is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayInfo {
    /// Its address.
    pub addr: SocketAddr,
    /// Its name.
    pub name: String,
    /// Its region.
    pub region: String,
}

/// Whether a move between relays lost nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// Every room resumed with the events it missed, one by one.
    GapFree,
    /// At least one room was rebuilt from a snapshot.
    Rebuilt,
}

/// Things that happen to the client as a whole.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// First connection made.
    Connected {
        /// The relay.
        relay: RelayInfo,
    },
    /// The relay failed (`goaway: false`) or asked us to move (`goaway: true`).
    Moving {
        /// The relay being left.
        from: RelayInfo,
        /// Whether it was a goaway.
        goaway: bool,
    },
    /// Resumed on another relay.
    Reconnected {
        /// The new relay.
        relay: RelayInfo,
        /// Gap-free, or rebuilt from a snapshot.
        continuity: Continuity,
        /// From noticing the failure (or the goaway) to every room resumed.
        took: Duration,
    },
    /// Whether the relay can reach the origin (while it cannot, actions wait).
    Upstream {
        /// Reachable or not.
        connected: bool,
    },
    /// The session was refused for good (a bad token, or an expired one and
    /// no token provider to renew it): every waiting action failed
    /// ([`Error::Unresolved`] with this error as its cause) and nothing
    /// reconnects. The app gets a fresh token and builds a new client.
    Failed {
        /// Why.
        error: Error,
    },
}

/// An action's authoritative outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// The action's id.
    pub id: ActionId,
    /// Applied (with its seq), rejected (with a reason), or unknown (the
    /// origin no longer remembers it: do not resend).
    pub outcome: Outcome,
    /// From the call to the ack.
    pub latency: Duration,
}

/// Counters of what the client had to do to keep up (for reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Actions resent on the reliable stream after their datagrams went
    /// unanswered.
    pub fallbacks: u64,
    /// Gap repairs asked of the relay.
    pub resyncs: u64,
    /// Snapshots received (joins and rebuilds).
    pub snapshots: u64,
    /// Moves to another relay.
    pub moves: u64,
    /// Sends the relay held back (`Throttled`: over the user's rate); the
    /// relay's duplicate answers count once.
    pub throttled: u64,
    /// Fresh tokens handed to the relay (`Renew`).
    pub renewals: u64,
}
