//! Group commit, measured: append gift records (made by the real rules) in
//! batches of 1, 16 and 256, sync once per batch, and print records/s,
//! fsyncs/s and the latency of one sync. About five seconds in all.
//!
//! ```text
//! cargo run --release -p ringside-origin --example wal_bench [-- DIR]
//! ```
//!
//! The log goes in a fresh directory under DIR (default: the system temp
//! dir, which must be on the disk you mean to measure, not a tmpfs) and is
//! removed at the end.

use origin::rules::{Authority, Config, Decision, Record};
use origin::wal::{Wal, WalOptions};
use protocol::message::{ActionMsg, Actor};
use protocol::room::Grant;
use protocol::{Action, ActionId, GiftId, RoomId, ServerTime, SessionId, UserId};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long each batch size runs.
const RUN: Duration = Duration::from_millis(1500);

/// Removes the directory however `main` ends.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `n` gift records from viewers of one room, as the rules make them.
fn gift_records(n: usize) -> Vec<Record> {
    let mut auth = Authority::new(Config::default());
    let room = RoomId(1);
    let mut now = ServerTime(1_000_000_000);
    let mut out = Vec::with_capacity(n);
    // Viewers cannot open a room: an operator does.
    out.push(auth.handle_open(now, room));
    for i in 0..n as u64 {
        now = now + Duration::from_millis(10);
        let user = UserId(100 + i % 997);
        let msg = ActionMsg {
            id: ActionId {
                session: SessionId(user.0),
                n: i + 1,
            },
            room,
            sent_at: now,
            action: Action::Gift {
                gift: GiftId(3),
                count: 1 + (i % 5) as u32,
            },
        };
        let actor = Actor {
            user,
            grant: Grant::Viewer,
        };
        if let Decision::Decided(rec) = auth.handle_action(now, actor, &msg) {
            out.push(rec);
        }
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).copied().unwrap_or_default()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args_os()
        .nth(1)
        .map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = base.join(format!("ringside-wal-bench-{}", std::process::id()));
    let _cleanup = Cleanup(dir.clone());
    let records = gift_records(4096);
    let bytes: usize = records
        .iter()
        .map(|r| protocol::codec::encode(r).map_or(0, |b| b.len()))
        .sum();
    println!(
        "write-ahead log in {} — gift records of {} bytes on average, {:?} per batch size",
        dir.display(),
        bytes / records.len(),
        RUN
    );
    println!(
        "{:>6} {:>12} {:>10} {:>9} {:>12} {:>12}",
        "batch", "records/s", "fsyncs/s", "MB/s", "sync p50", "sync p99"
    );
    for batch in [1usize, 16, 256] {
        let _ = std::fs::remove_dir_all(&dir);
        let (mut wal, _) = Wal::open(&dir, WalOptions::default())?;
        let mut syncs = Vec::new();
        let mut n = 0usize;
        let mut written = 0usize;
        let start = Instant::now();
        while start.elapsed() < RUN {
            for _ in 0..batch {
                wal.append(&records[n % records.len()])?;
                n += 1;
            }
            let t = Instant::now();
            wal.sync()?;
            syncs.push(t.elapsed());
            written += batch;
        }
        let secs = start.elapsed().as_secs_f64();
        syncs.sort();
        println!(
            "{:>6} {:>12.0} {:>10.0} {:>9.2} {:>12.1?} {:>12.1?}",
            batch,
            written as f64 / secs,
            syncs.len() as f64 / secs,
            (written * bytes / records.len()) as f64 / secs / 1e6,
            percentile(&syncs, 0.5),
            percentile(&syncs, 0.99),
        );
    }
    Ok(())
}
