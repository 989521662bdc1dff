//! The commit thread: group commit on a thread of its own, so an fsync never
//! blocks the async runtime. It takes every item waiting, appends their
//! records, syncs once, and only then passes the batch on, in order.

use protocol::message::ErrorCode;
use tokio::sync::{mpsc, watch};

use super::{Item, Store};
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
) -> Result<(), WalError> {
    let result = commit(wal, &store, items, batches);
    if let Err(e) = &result {
        tracing::error!(error = %e, "write-ahead log failed; the origin stops");
        let _ = failed.send(Some(e.to_string()));
        endpoint.close(ErrorCode::Internal.code().into(), b"write-ahead log failed");
    }
    result
}

fn commit(
    mut wal: Wal,
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
        let mut wrote = false;
        let mut kept = Vec::with_capacity(batch.len());
        for item in batch {
            match item {
                Item::Record { ref record, .. } => {
                    wal.append(record)?;
                    wrote = true;
                    kept.push(item);
                }
                // Covers exactly the records before it (it syncs them first).
                Item::Checkpoint(snapshot) => {
                    let lsn = wal.checkpoint(&snapshot)?;
                    tracing::info!(%lsn, bytes = snapshot.len(), "checkpoint written");
                    wrote = false;
                }
                // Never ahead of the durable log: sync what came before it.
                // Written before any later checkpoint (which leaves the room
                // out) is taken, by the order of the items.
                Item::Unload(state) => {
                    if wrote {
                        wal.sync()?;
                        wrote = false;
                    }
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
        if wrote {
            wal.sync()?;
        }
        if batches.blocking_send(batch).is_err() {
            break;
        }
    }
    Ok(())
}
