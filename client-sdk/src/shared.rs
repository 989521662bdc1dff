//! What the driver task and the app's handles share: the session id, the
//! counters, the event channels and the app's view of origin time.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use protocol::{ActionId, ServerTime, SessionId};
use tokio::sync::{broadcast, watch};

use crate::event::{ClientEvent, RelayInfo, Stats};

/// [`Stats`] as the handles read them while the driver writes them.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) fallbacks: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) snapshots: AtomicU64,
    pub(crate) moves: AtomicU64,
    pub(crate) throttled: AtomicU64,
    pub(crate) renewals: AtomicU64,
}

impl Counters {
    /// Publish the session's counters.
    pub(crate) fn store(&self, s: &Stats) {
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        set(&self.fallbacks, s.fallbacks);
        set(&self.resyncs, s.resyncs);
        set(&self.snapshots, s.snapshots);
        set(&self.moves, s.moves);
        set(&self.throttled, s.throttled);
        set(&self.renewals, s.renewals);
    }

    /// The counters now.
    pub(crate) fn load(&self) -> Stats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            fallbacks: get(&self.fallbacks),
            resyncs: get(&self.resyncs),
            snapshots: get(&self.snapshots),
            moves: get(&self.moves),
            throttled: get(&self.throttled),
            renewals: get(&self.renewals),
        }
    }
}

/// What the driver and the handles share.
pub(crate) struct Shared {
    /// The session every connection resumes.
    pub session: SessionId,
    /// What the client had to do to keep up (written by the driver).
    pub stats: Counters,
    /// Client-wide events for the app.
    pub events: broadcast::Sender<ClientEvent>,
    /// The relay the client is on.
    pub relay: watch::Sender<Option<RelayInfo>>,
    /// The relay its warm standby connection is open to, if any.
    pub standby: watch::Sender<Option<RelayInfo>>,
    /// The last action counter handed out (ids are chosen by the handles, so
    /// that every error names one).
    next_n: AtomicU64,
    /// `origin - local` (µs) of the best clock exchange so far.
    offset: AtomicI64,
    /// Whether `offset` holds a sample.
    known: AtomicBool,
    /// The instant the driver's local time counts from.
    anchor: OnceLock<Instant>,
    /// Whether the clock has had its first sample (`connect` waits for it).
    synced: watch::Sender<bool>,
}

impl Shared {
    /// Shared state for a session on `relay`.
    pub(crate) fn new(session: SessionId, relay: RelayInfo) -> Shared {
        Shared {
            session,
            stats: Counters::default(),
            events: broadcast::channel(256).0,
            relay: watch::channel(Some(relay)).0,
            standby: watch::channel(None).0,
            next_n: AtomicU64::new(0),
            offset: AtomicI64::new(0),
            known: AtomicBool::new(false),
            anchor: OnceLock::new(),
            synced: watch::channel(false).0,
        }
    }

    /// A fresh action id of this session.
    pub(crate) fn next_action(&self) -> ActionId {
        ActionId {
            session: self.session,
            n: self.next_n.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    /// Watch for the first clock sample.
    pub(crate) fn synced(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

    /// A new offset to origin time, from local time counted from `anchor`.
    pub(crate) fn set_offset(&self, anchor: Instant, offset: i64) {
        let _ = self.anchor.set(anchor);
        self.offset.store(offset, Ordering::Relaxed);
        self.known.store(true, Ordering::Release);
        self.synced
            .send_if_modified(|s| !std::mem::replace(s, true));
    }

    /// The estimate of origin time now, once there is one.
    pub(crate) fn server_time(&self) -> Option<ServerTime> {
        if !self.known.load(Ordering::Acquire) {
            return None;
        }
        let local = self.anchor.get()?.elapsed().as_micros() as i128;
        let t = local + self.offset.load(Ordering::Relaxed) as i128;
        Some(ServerTime(t.clamp(0, u64::MAX as i128) as u64))
    }
}
