//! Which messages of a room's log count: the one rule every rebuild, every
//! partner merge and the testbed's two-writer check read a log with. Pure.

use super::log::Logged;
use super::Entry;

/// The messages of a room's log that count, oldest first: a fence counts
/// if its epoch is at least the last counted fence's (epochs grow along a
/// log), and records count if written at the epoch of the last counted
/// fence (or before any fence, or without an epoch header). What is left
/// out are strays: appends JetStream accepted although another writer's
/// fence or records had taken the sequence they expected (concurrent
/// appends with one expectation, nats-server#4320). Their writer's check
/// ([`RoomLog::follows`](super::RoomLog::follows)) failed, so it acknowledged nothing in them, and
/// no rebuild uses them.
pub fn valid(logged: Vec<Logged>) -> Vec<Logged> {
    let mut current: Option<u64> = None;
    let mut out = Vec::with_capacity(logged.len());
    for l in logged {
        let counts = match l.entry {
            Entry::Fence { epoch, .. } => {
                let newer = current.is_none_or(|c| epoch >= c);
                if newer {
                    current = Some(epoch);
                }
                newer
            }
            Entry::Records(_) => l.epoch == 0 || current.is_none_or(|c| l.epoch == c),
        };
        if counts {
            out.push(l);
        } else {
            tracing::warn!(seq = l.seq, node = %l.node, epoch = l.epoch, "a stray append in a room log, left out");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Entry;

    fn msg(seq: u64, node: &str, epoch: u64, fence: bool) -> Logged {
        let entry = match fence {
            true => Entry::Fence {
                node: node.into(),
                epoch,
            },
            false => Entry::Records(Vec::new()),
        };
        Logged {
            seq,
            node: node.into(),
            epoch,
            linked: Vec::new(),
            entry,
        }
    }

    fn seqs(logged: Vec<Logged>) -> Vec<u64> {
        valid(logged).into_iter().map(|l| l.seq).collect()
    }

    #[test]
    fn strays_past_a_newer_fence_do_not_count() {
        // a writes at 5; b fences at 9 and writes; a's append raced b's
        // fence and was accepted after it (seq 4): a stray.
        let log = vec![
            msg(1, "a", 5, true),
            msg(2, "a", 5, false),
            msg(3, "b", 9, true),
            msg(4, "a", 5, false),
            msg(5, "b", 9, false),
        ];
        assert_eq!(seqs(log), [1, 2, 3, 5]);
    }

    #[test]
    fn a_racing_fence_with_an_older_epoch_does_not_count_nor_its_records() {
        // Two fences expecting the same sequence, both accepted: the newer
        // epoch counts wherever it landed; the older one is a stray.
        let log = vec![
            msg(1, "a", 5, true),
            msg(2, "b", 9, true),
            msg(3, "c", 7, true),
            msg(4, "c", 7, false),
            msg(5, "b", 9, false),
        ];
        assert_eq!(seqs(log), [1, 2, 5]);
        // The same writer fencing twice at one epoch (a room lost and won
        // again under the same claim) counts both times.
        let again = vec![
            msg(1, "a", 5, true),
            msg(2, "a", 5, false),
            msg(3, "a", 5, true),
            msg(4, "a", 5, false),
        ];
        assert_eq!(seqs(again), [1, 2, 3, 4]);
        // Records before any fence, or without an epoch, count.
        assert_eq!(
            seqs(vec![msg(1, "", 0, false), msg(2, "a", 3, false)]),
            [1, 2]
        );
    }
}
