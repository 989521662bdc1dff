//! The tokio runtime a binary runs on, sized by its `threads` setting.
//!
//! `1` is a current-thread runtime: every task on the thread that runs the
//! binary, so a task waking another never wakes a second thread (a futex
//! and a task switch, ~30 µs on small VMs: MEASURED.md). `0` is one worker
//! per core (tokio's default); `n` is `n` workers.

use std::io;

/// Build the runtime for `threads` (see the module docs).
pub fn build(threads: usize) -> io::Result<tokio::runtime::Runtime> {
    match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_size_runs_a_spawned_task() {
        for threads in [0, 1, 3] {
            let rt = build(threads).expect("runtime");
            let n = rt.block_on(async { tokio::spawn(async { 7 }).await.expect("joins") });
            assert_eq!(n, 7);
            assert_eq!(
                rt.metrics().num_workers(),
                match threads {
                    0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                    n => n,
                },
            );
        }
    }
}
