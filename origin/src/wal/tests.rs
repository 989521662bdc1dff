//! Unit tests that need the log's insides: a small entry cap, a failing disk.

use super::files::parse_segment_name;
use super::*;
use crate::rules::Ack;
use protocol::{ActionId, Outcome, Seq, SessionId, UserId};
use std::sync::atomic::{AtomicU64, Ordering};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "ringside-wal-unit-{name}-{}-{n}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn record(n: u64) -> Record {
    Record {
        ack: Some(Ack {
            id: ActionId {
                session: SessionId(n % 5),
                n,
            },
            user: UserId(n % 5),
            outcome: Outcome::Applied { seq: Seq(n) },
            at: protocol::ServerTime(n),
        }),
        events: Vec::new(),
    }
}

#[test]
fn a_large_batch_becomes_several_entries_each_synced() {
    let dir = TempDir::new("split");
    let (mut wal, rec) = Wal::open_with(&dir.0, WalOptions::default(), 100).expect("opens");
    assert_eq!(rec.next_lsn, Lsn(1));
    let records: Vec<Record> = (1..=50).map(record).collect();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(wal.append(r).expect("appends"), Lsn(i as u64 + 1));
    }
    assert_eq!(wal.pending(), 50);
    assert_eq!(wal.durable_lsn(), Lsn::ZERO);
    assert_eq!(wal.sync().expect("syncs"), Lsn(50));
    assert_eq!(wal.pending(), 0);
    // Nothing waiting: no IO, same answer.
    assert_eq!(wal.sync().expect("syncs"), Lsn(50));
    let len = wal.active.len;
    drop(wal);

    let bytes = fs::read(dir.0.join(segment_name(Lsn(1)))).expect("reads");
    assert_eq!(bytes.len() as u64, len);
    let mut entries = 0;
    let mut at = 0;
    while at < bytes.len() {
        let n = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        assert!(n as usize <= 100);
        at += format::HEADER + n as usize;
        entries += 1;
    }
    assert!(entries >= 4, "{entries} entries");

    let (_, rec) = Wal::open_with(&dir.0, WalOptions::default(), 100).expect("reopens");
    assert_eq!(rec.records, records);
    assert_eq!(rec.next_lsn, Lsn(51));

    // One record that fits no entry is refused, and changes nothing.
    let (mut wal, _) = Wal::open_with(&dir.0, WalOptions::default(), 100).expect("reopens");
    let big = Record {
        ack: None,
        events: vec![(
            protocol::RoomId(1),
            protocol::Event {
                seq: Seq(1),
                at: protocol::ServerTime(1),
                cause: None,
                kind: protocol::EventKind::Chat {
                    from: UserId(1),
                    text: "x".repeat(200),
                },
            },
        )],
    };
    assert!(matches!(
        wal.append(&big),
        Err(WalError::TooLarge { len, .. }) if len > 200
    ));
    assert_eq!(wal.next_lsn(), Lsn(51));
    assert_eq!(wal.append(&record(51)).expect("appends"), Lsn(51));
}

#[cfg(target_os = "linux")]
#[test]
fn a_failed_write_poisons_the_log() {
    let dir = TempDir::new("poison");
    let (mut wal, _) = Wal::open(&dir.0, WalOptions::default()).expect("opens");
    wal.append(&record(1)).expect("appends");
    assert_eq!(wal.sync().expect("syncs"), Lsn(1));
    // Every write to /dev/full fails with ENOSPC.
    wal.active.file = OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full opens");
    wal.append(&record(2)).expect("appends");
    assert!(matches!(wal.sync(), Err(WalError::Io { op: "write", .. })));
    assert_eq!(wal.durable_lsn(), Lsn(1));
    assert!(matches!(wal.append(&record(3)), Err(WalError::Poisoned)));
    assert!(matches!(wal.sync(), Err(WalError::Poisoned)));
    assert!(matches!(wal.checkpoint(b"x"), Err(WalError::Poisoned)));
    drop(wal);

    let (_, rec) = Wal::open(&dir.0, WalOptions::default()).expect("reopens");
    assert_eq!(rec.records, vec![record(1)]);
}

#[test]
fn segment_names_parse_and_sort() {
    assert_eq!(segment_name(Lsn(1)), "wal-00000000000000000001.log");
    assert_eq!(
        parse_segment_name(&segment_name(Lsn(u64::MAX))),
        Some(Lsn(u64::MAX))
    );
    assert_eq!(parse_segment_name("wal-1.log"), None);
    assert_eq!(parse_segment_name("wal-0000000000000000000x.log"), None);
    assert_eq!(parse_segment_name("origin-cert.pem"), None);
    assert_eq!(parse_segment_name("checkpoint"), None);
}
