//! The commit thread: group commit on a thread of its own, so an fsync never
//! blocks the async runtime. It takes every item waiting, appends their
//! records, syncs once, and only then passes the batch on, in order.
//!
//! It measures each group commit (records, first append to durable, and
//! every `fdatasync` in it) and each checkpoint, into [`Metrics`]: a few
//! histogram observations per commit, off the authority task.

use std::time::Instant;

use protocol::message::ErrorCode;
use tokio::sync::{mpsc, watch};

use super::shared::{Item, Store};
use crate::metrics::Metrics;
use crate::wal::{Wal, WalError};

/// Most items taken into one commit.
const MAX_BATCH: usize = 8192;

/// Run group commits until the pipeline closes. If the log fails, nothing can
/// be acknowledged any more: the origin stops serving (`failed` tells its
/// owner, the endpoint closes so relays go elsewhere or wait) rather than
/// lingering as a zombie that accepts and never answers.
pub(super) fn run(
    wal: Wal,
    store: Store,
    items: mpsc::Receiver<Item>,
    batches: mpsc::Sender<Vec<Item>>,
    endpoint: quinn::Endpoint,
    failed: watch::Sender<Option<String>>,
    metrics: Metrics,
) -> Result<(), WalError> {
    let log = Log {
        wal,
        metrics,
        group: 0,
        started: None,
    };
    let result = commit(log, &store, items, batches);
    if let Err(e) = &result {
        tracing::error!(error = %e, "write-ahead log failed; the origin stops");
        let _ = failed.send(Some(e.to_string()));
        endpoint.close(ErrorCode::Internal.code().into(), b"write-ahead log failed");
    }
    result
}

/// The log and the group commit being gathered.
struct Log {
    wal: Wal,
    metrics: Metrics,
    /// Records appended since the last sync.
    group: u64,
    /// When the first of them was appended.
    started: Option<Instant>,
}

impl Log {
    fn append(&mut self, record: &crate::rules::Record) -> Result<(), WalError> {
        self.started.get_or_insert_with(Instant::now);
        self.wal.append(record)?;
        self.group += 1;
        Ok(())
    }

    /// Make the group durable (if there is one) and measure it.
    fn sync(&mut self) -> Result<(), WalError> {
        if self.group == 0 {
            return Ok(());
        }
        self.wal.sync()?;
        let m = &self.metrics;
        m.wal_group_size.observe(self.group as f64);
        if let Some(t) = self.started.take() {
            m.wal_commit_seconds.observe(t.elapsed().as_secs_f64());
        }
        for d in self.wal.take_sync_times() {
            m.wal_sync_seconds.observe(d.as_secs_f64());
        }
        self.group = 0;
        Ok(())
    }

    fn checkpoint(&mut self, snapshot: &[u8]) -> Result<(), WalError> {
        // The checkpoint would sync the group itself; syncing it here first
        // measures it like any other.
        self.sync()?;
        let start = Instant::now();
        let lsn = self.wal.checkpoint(snapshot)?;
        let took = start.elapsed();
        self.metrics.checkpoint_seconds.observe(took.as_secs_f64());
        // Nothing was waiting: any sync time recorded is the checkpoint's.
        self.wal.take_sync_times();
        tracing::info!(%lsn, bytes = snapshot.len(), ms = took.as_millis() as u64, "checkpoint written");
        Ok(())
    }
}

fn commit(
    mut log: Log,
    store: &Store,
    mut items: mpsc::Receiver<Item>,
    batches: mpsc::Sender<Vec<Item>>,
) -> Result<(), WalError> {
    while let Some(first) = items.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match items.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let mut kept = Vec::with_capacity(batch.len());
        for item in batch {
            match item {
                Item::Record { ref record, .. } => {
                    log.append(record)?;
                    kept.push(item);
                }
                // Covers exactly the records before it (it syncs them first).
                Item::Checkpoint(snapshot) => log.checkpoint(&snapshot)?,
                // Never ahead of the durable log: sync what came before it.
                // Written before any later checkpoint (which leaves the room
                // out) is taken, by the order of the items.
                Item::Unload(state) => {
                    log.sync()?;
                    store.archives.write(&state)?;
                    let mut inflight = match store.inflight.lock() {
                        Ok(m) => m,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    if inflight
                        .get(&state.room)
                        .is_some_and(|s| s.seq == state.seq)
                    {
                        inflight.remove(&state.room);
                    }
                    drop(inflight);
                    kept.push(Item::Unloaded(state.room));
                }
                other => kept.push(other),
            }
        }
        let batch = kept;
        log.sync()?;
        if batches.blocking_send(batch).is_err() {
            break;
        }
    }
    Ok(())
}
