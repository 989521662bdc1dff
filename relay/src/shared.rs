//! What every connection task shares: the configuration, the token key,
//! the way into the hub's driver, the estimate of origin time, admission
//! and the metrics.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Mutex;

use net::token::TokenKey;
use tokio::sync::mpsc;

use crate::admission::Admission;
use crate::config::Config;
use crate::hub_driver::HubIn;
use crate::metrics::Metrics;
use crate::origin_estimate::OriginEstimate;

/// What client tasks share.
pub(crate) struct Shared {
    /// The relay's configuration.
    pub config: Config,
    /// Verifies client tokens.
    pub tokens: TokenKey,
    /// Inputs to the hub's driver.
    pub hub: mpsc::Sender<HubIn>,
    /// Origin time, to answer a client's ping at once.
    pub origin_estimate: OriginEstimate,
    /// The next connection's [`crate::hub::ClientId`].
    pub next_client: AtomicU64,
    /// Set when the relay drains: new clients are turned away.
    pub draining: AtomicBool,
    /// Connection, session and rate limits across all connections (short
    /// critical sections only: a decision, never IO, under the lock).
    pub admission: Mutex<Admission>,
    /// What the operator sees.
    pub metrics: Metrics,
}

impl Shared {
    /// Ask the admission state something.
    pub fn admit<R>(&self, f: impl FnOnce(&mut Admission) -> R) -> R {
        // A panic while holding the lock would be a bug in `Admission`; its
        // state is still counts, so carry on with it.
        let mut a = self
            .admission
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut a)
    }
}
