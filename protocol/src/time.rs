//! Origin time. The origin's clock is the reference for every deadline; relays
//! and clients estimate their offset to it and never send "N seconds left".

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in origin time: microseconds since the Unix epoch, as the origin
/// counts them.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub struct ServerTime(pub u64);

impl ServerTime {
    /// The epoch itself; useful as "no time yet".
    pub const ZERO: ServerTime = ServerTime(0);

    /// Microseconds since the epoch.
    pub fn as_micros(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, or zero when `earlier` is later.
    pub fn saturating_since(self, earlier: ServerTime) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// `self - d`, clamped at the epoch.
    pub fn saturating_sub(self, d: Duration) -> ServerTime {
        ServerTime(self.0.saturating_sub(micros(d)))
    }

    /// Signed difference `self - other` in microseconds.
    pub fn diff_micros(self, other: ServerTime) -> i64 {
        // Times are far below i64::MAX microseconds (292k years).
        (self.0 as i128 - other.0 as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Add<Duration> for ServerTime {
    type Output = ServerTime;
    fn add(self, d: Duration) -> ServerTime {
        ServerTime(self.0.saturating_add(micros(d)))
    }
}

impl Sub<ServerTime> for ServerTime {
    type Output = Duration;
    /// Saturating: a later `rhs` gives zero.
    fn sub(self, rhs: ServerTime) -> Duration {
        self.saturating_since(rhs)
    }
}

impl fmt::Display for ServerTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}
