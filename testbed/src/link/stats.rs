//! Counters of a running link.

use std::fmt;

use crate::impair::{Counters, Direction};

/// A snapshot of a link's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Peers → upstream.
    pub up: DirectionStats,
    /// Upstream → peers.
    pub down: DirectionStats,
    /// The NAT-style session table.
    pub sessions: SessionStats,
}

impl LinkStats {
    /// The counters of one direction.
    pub fn direction(&self, direction: Direction) -> &DirectionStats {
        match direction {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        }
    }

    /// The counters of one direction, to update them.
    pub(crate) fn direction_mut(&mut self, direction: Direction) -> &mut DirectionStats {
        match direction {
            Direction::Up => &mut self.up,
            Direction::Down => &mut self.down,
        }
    }
}

/// One direction: what the engine decided and what the proxy then did.
///
/// Every copy the engine delivers (`engine.delivered + engine.duplicated`)
/// is, at any moment, exactly one of: `held`, `sent`, `send_errors`,
/// `overflow` or `discarded`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// The impairment engine's counters.
    pub engine: Counters,
    /// Copies waiting for their release time.
    pub held: u64,
    /// Copies handed to the socket at their release time.
    pub sent: u64,
    /// Copies the socket refused (buffer full, ICMP unreachable, ...).
    pub send_errors: u64,
    /// Copies dropped because the link already held its maximum of packets.
    pub overflow: u64,
    /// Copies still held when the link shut down.
    pub discarded: u64,
}

/// The session table of a link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Sessions open now.
    pub active: u64,
    /// Sessions opened so far.
    pub opened: u64,
    /// Sessions closed after being idle.
    pub expired: u64,
    /// Sessions closed to make room for a new peer.
    pub evicted: u64,
    /// Packets dropped because no upstream socket could be opened for a peer.
    pub open_errors: u64,
}

impl fmt::Display for DirectionStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} | sent {} held {} overflow {} send_errors {}",
            self.engine, self.sent, self.held, self.overflow, self.send_errors
        )?;
        if self.discarded > 0 {
            write!(f, " discarded {}", self.discarded)?;
        }
        Ok(())
    }
}

impl fmt::Display for SessionStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sessions {} (opened {} expired {} evicted {} open_errors {})",
            self.active, self.opened, self.expired, self.evicted, self.open_errors
        )
    }
}

impl fmt::Display for LinkStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "up:   {}", self.up)?;
        writeln!(f, "down: {}", self.down)?;
        write!(f, "{}", self.sessions)
    }
}
