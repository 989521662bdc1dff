//! The token the session presents, and the bookkeeping of its renewal.

use std::time::{Duration, Instant};

/// The token and its renewal.
#[derive(Debug)]
pub(super) struct Tokens {
    /// The newest token: every later connection presents it.
    pub(super) token: Vec<u8>,
    /// The wall clock (since the Unix epoch) at a local time: to read how
    /// long a token has left.
    pub(super) wall: (Instant, Duration),
    /// A fetch is in progress.
    pub(super) fetching: bool,
    /// When to fetch the next token.
    pub(super) renew_at: Option<Instant>,
    /// Failed fetches in a row.
    pub(super) failures: u32,
    /// The connection was closed (or refused) for expiry: connect again
    /// once a fresh token has come.
    pub(super) reconnect_after_fetch: bool,
    /// Expiry refusals in a row (a provider handing out spent tokens ends
    /// the session after a few).
    pub(super) expired_refusals: u32,
}

impl Tokens {
    pub(super) fn new(token: Vec<u8>, now: Instant, unix_now: Duration) -> Tokens {
        Tokens {
            token,
            wall: (now, unix_now),
            fetching: false,
            renew_at: None,
            failures: 0,
            reconnect_after_fetch: false,
            expired_refusals: 0,
        }
    }

    /// The wall clock at `now`.
    pub(super) fn unix_at(&self, now: Instant) -> Duration {
        self.wall.1 + now.saturating_duration_since(self.wall.0)
    }
}
