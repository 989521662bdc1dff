//! One client's outgoing queue, from the hub's driver to the connection's
//! writer: bounded in bytes, not messages (one message may be a 64 KiB
//! frame), with every client queue's bytes summed in one operator gauge.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;

use crate::hub::Out;

/// The hub's end of one client's outgoing queue.
#[derive(Clone)]
pub(crate) struct OutTx {
    tx: mpsc::UnboundedSender<Out>,
    /// Bytes queued now (both ends count it).
    bytes: Arc<AtomicUsize>,
    /// The most bytes it may hold.
    cap: usize,
    /// Bytes queued for every client together.
    total: Gauge,
}

/// The connection's end of its outgoing queue.
pub(crate) struct OutRx {
    rx: mpsc::UnboundedReceiver<Out>,
    bytes: Arc<AtomicUsize>,
    total: Gauge,
}

/// A client queue of at most `cap` bytes; `total` counts the bytes of every
/// client queue together (the operator's gauge).
pub(crate) fn out_queue(cap: usize, total: Gauge) -> (OutTx, OutRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let bytes = Arc::new(AtomicUsize::new(0));
    (
        OutTx {
            tx,
            bytes: bytes.clone(),
            cap,
            total: total.clone(),
        },
        OutRx { rx, bytes, total },
    )
}

impl OutTx {
    /// Queue `out`; `Err(true)` if the client is too slow (its queue is
    /// full), `Err(false)` if it is gone.
    pub fn push(&self, out: Out) -> Result<(), bool> {
        let len = out.len();
        if self.bytes.load(Ordering::Relaxed) + len > self.cap && len > 0 {
            return Err(true);
        }
        // Counted before it is sent: the receiver may take it at once.
        self.bytes.fetch_add(len, Ordering::Relaxed);
        self.total.inc_by(len as i64);
        self.tx.send(out).map_err(|e| {
            // Gone: nothing will take it out again.
            self.bytes.fetch_sub(e.0.len(), Ordering::Relaxed);
            self.total.dec_by(e.0.len() as i64);
            false
        })
    }
}

impl OutRx {
    fn took(&self, out: &Out) {
        self.bytes.fetch_sub(out.len(), Ordering::Relaxed);
        self.total.dec_by(out.len() as i64);
    }

    /// The next message; `None` when the hub has let go.
    pub async fn recv(&mut self) -> Option<Out> {
        let out = self.rx.recv().await?;
        self.took(&out);
        Some(out)
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<Out> {
        let out = self.rx.try_recv().ok()?;
        self.took(&out);
        Some(out)
    }
}

impl Drop for OutRx {
    fn drop(&mut self) {
        // What is still queued leaves the total; pushes from now on fail
        // and take their own bytes back.
        self.rx.close();
        while let Ok(out) = self.rx.try_recv() {
            self.total.dec_by(out.len() as i64);
        }
    }
}
