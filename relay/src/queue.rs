//! One client's outgoing queue, from the hub's driver to the connection's
//! writer: bounded in bytes, not messages (one message may be a 64 KiB
//! frame), with every client queue's bytes summed in one operator gauge.
//!
//! It wakes the writer once per batch, not once per message: a quiet push
//! into a queue already signalled (a wake sent, or put off by the hub's
//! driver: [`crate::linger`]) signals nothing, and the writer takes
//! everything queued at once. The hub's driver pushes a whole round of
//! outputs first and wakes each client it touched afterwards, or later
//! for a busy room ([`OutTx::push_quiet`], [`OutTx::wake`]), so a burst of
//! events reaches each writer as one batch. A push from the connection's
//! own reader (an answer) always wakes the writer ([`OutTx::push`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use crate::hub::Out;

/// A taken queue keeps at most this many slots of capacity; a larger one
/// (left by a burst) is given back, so an idle client holds little.
const KEEP_SLOTS: usize = 16;

/// What both ends share.
struct Inner {
    state: Mutex<State>,
    /// Wakes the writer (a stored permit when it is not waiting yet).
    notify: Notify,
    /// The most bytes it may hold.
    cap: usize,
    /// Bytes queued for every client together.
    total: Gauge,
}

struct State {
    items: VecDeque<Out>,
    /// Bytes in `items`.
    bytes: usize,
    /// The writer has been signalled since it last took the queue.
    signalled: bool,
    /// Live [`OutTx`] handles; at zero the hub has let go.
    senders: usize,
    /// The writer has gone: pushes fail.
    closed: bool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a queue of whole items and
        // counts updated together with them: carry on with it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The hub's end of one client's outgoing queue.
pub(crate) struct OutTx {
    inner: Arc<Inner>,
}

/// The connection's end of its outgoing queue.
pub(crate) struct OutRx {
    inner: Arc<Inner>,
}

/// A client queue of at most `cap` bytes; `total` counts the bytes of every
/// client queue together (the operator's gauge).
pub(crate) fn out_queue(cap: usize, total: Gauge) -> (OutTx, OutRx) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            items: VecDeque::new(),
            bytes: 0,
            signalled: false,
            senders: 1,
            closed: false,
        }),
        notify: Notify::new(),
        cap,
        total,
    });
    (
        OutTx {
            inner: inner.clone(),
        },
        OutRx { inner },
    )
}

impl Clone for OutTx {
    fn clone(&self) -> Self {
        self.inner.lock().senders += 1;
        OutTx {
            inner: self.inner.clone(),
        }
    }
}

impl Drop for OutTx {
    fn drop(&mut self) {
        let last = {
            let mut s = self.inner.lock();
            s.senders -= 1;
            s.senders == 0
        };
        if last {
            self.inner.notify.notify_one();
        }
    }
}

impl OutTx {
    /// Queue `out` and wake the writer at once (an answer from the
    /// connection's own reader: a pong, a refusal), whether or not it was
    /// signalled: a signalled queue may be one whose wake the hub's driver
    /// put off ([`crate::linger`]). `Err(true)` if the client is too slow
    /// (its queue is full), `Err(false)` if it is gone.
    pub fn push(&self, out: Out) -> Result<(), bool> {
        self.push_quiet(out)?;
        self.wake();
        Ok(())
    }

    /// Queue `out` without waking the writer: `Ok(true)` when the caller
    /// must [`OutTx::wake`] it once it has pushed what it has (the queue
    /// went from taken to waiting). Errors as [`OutTx::push`].
    pub fn push_quiet(&self, out: Out) -> Result<bool, bool> {
        let len = out.len();
        let mut s = self.inner.lock();
        if s.closed {
            return Err(false);
        }
        if s.bytes + len > self.inner.cap && len > 0 {
            return Err(true);
        }
        s.bytes += len;
        s.items.push_back(out);
        let wake = !s.signalled;
        s.signalled = true;
        drop(s);
        self.inner.total.inc_by(len as i64);
        Ok(wake)
    }

    /// Wake the writer (after [`OutTx::push_quiet`] said so).
    pub fn wake(&self) {
        self.inner.notify.notify_one();
    }
}

impl OutRx {
    /// Wait until something is queued and move all of it to the back of
    /// `into` (which keeps its order); `false` when the hub has let go and
    /// nothing is left. Cancel safe: nothing is taken before it returns.
    pub async fn take(&mut self, into: &mut VecDeque<Out>) -> bool {
        loop {
            {
                let mut s = self.inner.lock();
                s.signalled = false;
                if !s.items.is_empty() {
                    let bytes = std::mem::take(&mut s.bytes);
                    if into.is_empty() {
                        std::mem::swap(into, &mut s.items);
                    } else {
                        into.append(&mut s.items);
                    }
                    if s.items.capacity() > KEEP_SLOTS {
                        s.items.shrink_to(KEEP_SLOTS);
                    }
                    drop(s);
                    self.inner.total.dec_by(bytes as i64);
                    return true;
                }
                if s.senders == 0 {
                    return false;
                }
            }
            self.inner.notify.notified().await;
        }
    }
}

impl Drop for OutRx {
    fn drop(&mut self) {
        // What is still queued leaves the total; pushes from now on fail.
        let mut s = self.inner.lock();
        s.closed = true;
        let bytes = std::mem::take(&mut s.bytes);
        s.items = VecDeque::new();
        drop(s);
        self.inner.total.dec_by(bytes as i64);
    }
}

/// Give back the capacity a burst left in a drained batch buffer.
pub(crate) fn trim(batch: &mut VecDeque<Out>) {
    if batch.is_empty() && batch.capacity() > KEEP_SLOTS {
        batch.shrink_to(KEEP_SLOTS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::future::Future as _;

    fn frame(n: usize) -> Out {
        Out::Reliable(Bytes::from(vec![0u8; n]))
    }

    /// Poll `take` once without a runtime: `Some(open)` if it was ready.
    fn take_now(rx: &mut OutRx, into: &mut VecDeque<Out>) -> Option<bool> {
        let fut = rx.take(into);
        let mut fut = std::pin::pin!(fut);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(open) => Some(open),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn one_wake_per_batch_and_the_batch_comes_whole() {
        let total = Gauge::default();
        let (tx, mut rx) = out_queue(1_000, total.clone());
        assert_eq!(tx.push_quiet(frame(10)), Ok(true), "first: wake");
        assert_eq!(tx.push_quiet(frame(10)), Ok(false), "signalled already");
        assert_eq!(tx.push_quiet(frame(10)), Ok(false));
        assert_eq!(total.get(), 30);
        let mut batch = VecDeque::new();
        assert_eq!(take_now(&mut rx, &mut batch), Some(true));
        assert_eq!(batch.len(), 3);
        assert_eq!(total.get(), 0);
        // Taken: the next push wakes again.
        assert_eq!(tx.push_quiet(frame(10)), Ok(true));
    }

    #[test]
    fn an_answer_wakes_a_writer_whose_wake_was_put_off() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(Default::default()));
        let waker = std::task::Waker::from(count.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let woken = || count.0.load(std::sync::atomic::Ordering::SeqCst);
        let (tx, mut rx) = out_queue(1_000, Gauge::default());
        let mut batch = VecDeque::new();
        {
            let fut = rx.take(&mut batch);
            let mut fut = std::pin::pin!(fut);
            assert!(fut.as_mut().poll(&mut cx).is_pending(), "the writer waits");
            // The hub's driver queues a room event and puts the wake off.
            assert_eq!(tx.push_quiet(frame(10)), Ok(true));
            assert_eq!(woken(), 0);
            // The reader answers a ping: the writer wakes now, not later.
            tx.push(frame(10)).expect("fits");
            assert_eq!(woken(), 1);
            assert!(fut.as_mut().poll(&mut cx).is_ready());
        }
        assert_eq!(batch.len(), 2, "the event goes with the answer");
    }

    #[test]
    fn the_byte_bound_holds_and_a_gone_writer_refuses() {
        let (tx, rx) = out_queue(100, Gauge::default());
        tx.push(frame(60)).expect("fits");
        assert_eq!(tx.push(frame(60)), Err(true), "over the bound");
        tx.push(Out::Close(protocol::message::ErrorCode::Normal, "x"))
            .expect("a close holds no bytes");
        drop(rx);
        assert_eq!(tx.push(frame(1)), Err(false));
    }

    #[test]
    fn the_writer_learns_when_the_hub_lets_go() {
        let (tx, mut rx) = out_queue(100, Gauge::default());
        let tx2 = tx.clone();
        let mut batch = VecDeque::new();
        assert_eq!(take_now(&mut rx, &mut batch), None, "nothing yet");
        tx.push(frame(5)).expect("fits");
        drop(tx);
        drop(tx2);
        assert_eq!(
            take_now(&mut rx, &mut batch),
            Some(true),
            "what is left first"
        );
        assert_eq!(take_now(&mut rx, &mut batch), Some(false), "then the end");
    }
}
