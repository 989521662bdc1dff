//! The write-ahead log against crashes and damage: records from the real
//! rules round-trip and replay into the same rooms; a torn tail at any byte
//! is cut back to the last whole entry; damage anywhere else stops the open;
//! segments rotate; checkpoints bound what is replayed and survive being
//! interrupted at every step.

use origin::rules::{Authority, Config, Decision, Record};
use origin::wal::{Lsn, Recovered, Wal, WalError, WalOptions, MAX_RECORD};
use protocol::message::{ActionMsg, Actor};
use protocol::room::Grant;
use protocol::{Action, ActionId, Event, EventKind, GiftId, RoomId, ServerTime, SessionId, UserId};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("ringside-wal-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Empty it (for a test that reuses it).
    fn reset(&self) {
        let _ = fs::remove_dir_all(&self.0);
        fs::create_dir_all(&self.0).expect("temp dir is creatable");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `n` records made by the real rules: three rooms, gifts, chat of varying
/// length, likes, PK battles and their timers. Also returns the authority
/// that made them.
fn rules_records(n: usize) -> (Vec<Record>, Authority) {
    let mut auth = Authority::new(Config::default());
    let mut now = ServerTime(1_000_000_000);
    let mut out = Vec::new();
    let mut counter = 0;
    let push = |out: &mut Vec<Record>, rec: Record| {
        if !rec.is_empty() {
            out.push(rec);
        }
    };
    let rooms = [RoomId(1), RoomId(2), RoomId(3)];
    for r in rooms {
        let rec = auth.handle_open(now, r);
        push(&mut out, rec);
    }
    let mut i = 0u64;
    while out.len() < n {
        i += 1;
        now = now + Duration::from_millis(250);
        let room = rooms[(i % 3) as usize];
        let (user, grant, action) = match i % 7 {
            0 => (
                UserId(room.0 * 1000),
                Grant::Host,
                Action::PkInvite {
                    to: rooms[((i + 1) % 3) as usize],
                    duration_secs: 60,
                },
            ),
            1 => {
                // The other room's host accepts whatever is pending there.
                match auth.room(room).and_then(|s| s.pk_invite.as_ref()) {
                    Some(inv) => (
                        UserId(room.0 * 1000),
                        Grant::Host,
                        Action::PkAccept { battle: inv.battle },
                    ),
                    None => (
                        UserId(10 + i % 13),
                        Grant::Viewer,
                        Action::Like { count: 3 },
                    ),
                }
            }
            2 | 5 => (
                UserId(10 + i % 13),
                Grant::Viewer,
                Action::Gift {
                    gift: GiftId(3),
                    count: (i % 4 + 1) as u32,
                },
            ),
            3 => (
                UserId(10 + i % 13),
                Grant::Viewer,
                Action::Chat {
                    text: "gg ".repeat((i % 40) as usize),
                },
            ),
            _ => (
                UserId(10 + i % 13),
                Grant::Viewer,
                Action::Like { count: 1 },
            ),
        };
        counter += 1;
        let msg = ActionMsg {
            id: ActionId {
                session: SessionId(user.0),
                n: counter,
            },
            room,
            sent_at: now,
            action,
        };
        match auth.handle_action(now, Actor { user, grant }, &msg) {
            Decision::Decided(rec) => push(&mut out, rec),
            Decision::Answered { timers, .. } | Decision::Throttled { timers, .. } => {
                push(&mut out, timers)
            }
        }
    }
    out.truncate(n);
    (out, auth)
}

/// Small hand-made records: `n` is visible in the record.
fn record(n: u64) -> Record {
    Record {
        ack: None,
        events: vec![(
            RoomId(n % 3 + 1),
            Event {
                seq: protocol::Seq(n),
                at: ServerTime(n * 1000),
                cause: None,
                kind: EventKind::Likes {
                    from: UserId(n),
                    count: 1,
                    total: n,
                },
            },
        )],
    }
}

fn open(dir: &Path) -> (Wal, Recovered) {
    Wal::open(dir, WalOptions::default()).expect("the log opens")
}

fn open_with(dir: &Path, segment_size: u64) -> (Wal, Recovered) {
    Wal::open(dir, WalOptions { segment_size }).expect("the log opens")
}

/// Append and sync each record on its own: one entry per record.
fn write_each(wal: &mut Wal, records: &[Record]) {
    for r in records {
        let lsn = wal.append(r).expect("appends");
        assert_eq!(wal.sync().expect("syncs"), lsn);
    }
}

/// The segment files, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .expect("lists")
        .map(|e| e.expect("lists").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("wal-") && name.ends_with(".log")
        })
        .collect();
    out.sort();
    out
}

fn only_segment(dir: &Path) -> PathBuf {
    let segs = segments(dir);
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs[0].clone()
}

/// Where each entry starts, by walking the `[u32 len][u32 crc]` headers.
fn entry_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        starts.push(at);
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        at += 8 + len as usize;
    }
    assert_eq!(at, bytes.len(), "entries end at the end of the file");
    starts
}

#[test]
fn records_from_the_rules_round_trip_and_replay_into_the_same_rooms() {
    let dir = TempDir::new("round-trip");
    let (records, auth) = rules_records(400);
    let (mut wal, rec) = open(dir.path());
    assert_eq!(
        rec,
        Recovered {
            next_lsn: Lsn(1),
            ..Recovered::default()
        }
    );

    // Batches of varying size, as group commit makes them.
    let mut next = 0;
    for size in [1usize, 2, 7, 30, 1, 100, 3].iter().cycle() {
        if next == records.len() {
            break;
        }
        let batch = &records[next..(next + size).min(records.len())];
        for (i, r) in batch.iter().enumerate() {
            assert_eq!(wal.append(r).expect("appends"), Lsn((next + i + 1) as u64));
        }
        next += batch.len();
        assert_eq!(wal.sync().expect("syncs"), Lsn(next as u64));
        assert_eq!(wal.durable_lsn(), Lsn(next as u64));
    }
    drop(wal);

    let (mut wal, rec) = open(dir.path());
    assert_eq!(rec.records, records);
    assert_eq!(rec.next_lsn, Lsn(401));
    assert_eq!(
        (rec.checkpoint, rec.checkpoint_lsn, rec.truncated),
        (None, Lsn::ZERO, 0)
    );
    let mut replayed = Authority::new(Config::default());
    for r in &rec.records {
        replayed.replay(r).expect("the log replays");
    }
    assert!(auth.rooms().count() == 3);
    assert!(
        auth.rooms().eq(replayed.rooms()),
        "replay rebuilds every room"
    );
    assert_eq!(auth.poll_timeout(), replayed.poll_timeout());

    // Appending after a reopen continues the numbering, in the same segment.
    assert_eq!(wal.append(&record(1)).expect("appends"), Lsn(401));
    assert_eq!(wal.sync().expect("syncs"), Lsn(401));
    drop(wal);
    let (_, rec) = open(dir.path());
    assert_eq!(rec.records.len(), 401);
    assert_eq!(rec.records[400], record(1));
    only_segment(dir.path());
}

#[test]
fn a_torn_tail_at_any_byte_is_cut_back_to_the_last_whole_entry() {
    let src = TempDir::new("torn-src");
    let (records, _) = rules_records(12);
    let (mut wal, _) = open(src.path());
    write_each(&mut wal, &records);
    drop(wal);
    let seg = only_segment(src.path());
    let name = seg.file_name().expect("a name").to_owned();
    let bytes = fs::read(&seg).expect("reads");
    let starts = entry_starts(&bytes);
    assert_eq!(starts.len(), 12);
    let last = starts[11];

    let dir = TempDir::new("torn");
    for cut in last..bytes.len() {
        dir.reset();
        let path = dir.path().join(&name);
        fs::write(&path, &bytes[..cut]).expect("writes");
        let (mut wal, rec) = open(dir.path());
        assert_eq!(rec.records, records[..11], "cut at {cut}");
        assert_eq!(rec.truncated, (cut - last) as u64, "cut at {cut}");
        assert_eq!(rec.next_lsn, Lsn(12));
        assert_eq!(fs::metadata(&path).expect("stat").len(), last as u64);

        // The log goes on from there, and what follows survives.
        write_each(&mut wal, &[records[11].clone(), record(99)]);
        drop(wal);
        let (_, rec) = open(dir.path());
        assert_eq!(rec.records.len(), 13, "cut at {cut}");
        assert_eq!(rec.records[..12], records[..]);
        assert_eq!(rec.records[12], record(99));
        assert_eq!(rec.truncated, 0);
    }
}

#[test]
fn a_torn_batch_loses_only_that_unacknowledged_batch() {
    let dir = TempDir::new("torn-batch");
    let (mut wal, _) = open(dir.path());
    let records: Vec<Record> = (1..=30).map(record).collect();
    write_each(&mut wal, &records[..10]);
    // One sync of 20 records is one entry.
    for r in &records[10..] {
        wal.append(r).expect("appends");
    }
    assert_eq!(wal.sync().expect("syncs"), Lsn(30));
    drop(wal);
    let seg = only_segment(dir.path());
    let bytes = fs::read(&seg).expect("reads");
    let starts = entry_starts(&bytes);
    assert_eq!(starts.len(), 11);
    fs::write(&seg, &bytes[..bytes.len() - 1]).expect("writes");
    let (_, rec) = open(dir.path());
    assert_eq!(rec.records, records[..10]);
    assert_eq!(rec.next_lsn, Lsn(11));
}

#[test]
fn zeros_after_the_last_entry_are_a_torn_tail() {
    let dir = TempDir::new("zeros");
    let (mut wal, _) = open(dir.path());
    let records: Vec<Record> = (1..=5).map(record).collect();
    write_each(&mut wal, &records);
    drop(wal);
    let seg = only_segment(dir.path());
    let mut bytes = fs::read(&seg).expect("reads");
    let len = bytes.len();
    bytes.extend([0u8; 4096]);
    fs::write(&seg, &bytes).expect("writes");
    let (_, rec) = open(dir.path());
    assert_eq!(rec.records, records);
    assert_eq!(rec.truncated, 4096);
    assert_eq!(fs::metadata(&seg).expect("stat").len(), len as u64);
}

#[test]
fn a_bit_flip_in_the_last_entry_cuts_it_off() {
    let src = TempDir::new("flip-last-src");
    let (records, _) = rules_records(6);
    let (mut wal, _) = open(src.path());
    write_each(&mut wal, &records);
    drop(wal);
    let seg = only_segment(src.path());
    let name = seg.file_name().expect("a name").to_owned();
    let bytes = fs::read(&seg).expect("reads");
    let last = entry_starts(&bytes)[5];

    let dir = TempDir::new("flip-last");
    for at in [
        last,
        last + 2,
        last + 3,
        last + 4,
        last + 7,
        last + 8,
        bytes.len() - 1,
    ] {
        for bit in [0x01u8, 0x80] {
            dir.reset();
            let mut flipped = bytes.clone();
            flipped[at] ^= bit;
            fs::write(dir.path().join(&name), &flipped).expect("writes");
            let (_, rec) = open(dir.path());
            assert_eq!(rec.records, records[..5], "flip {bit:#x} at {at}");
            assert!(rec.truncated > 0);
        }
    }
}

#[test]
fn a_bit_flip_before_an_intact_entry_is_corruption_and_changes_nothing() {
    let src = TempDir::new("flip-mid-src");
    let (records, _) = rules_records(8);
    let (mut wal, _) = open(src.path());
    write_each(&mut wal, &records);
    drop(wal);
    let seg = only_segment(src.path());
    let name = seg.file_name().expect("a name").to_owned();
    let bytes = fs::read(&seg).expect("reads");
    let starts = entry_starts(&bytes);

    let dir = TempDir::new("flip-mid");
    // Every byte of the third entry (header and payload), and the first
    // byte of the others before the last.
    let targets = (starts[2]..starts[3]).chain([0, starts[1], starts[6]]);
    for at in targets {
        dir.reset();
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x04;
        let path = dir.path().join(&name);
        fs::write(&path, &flipped).expect("writes");
        let entry = starts.iter().rposition(|&s| s <= at).expect("an entry");
        match Wal::open(dir.path(), WalOptions::default()) {
            Err(WalError::Corrupt {
                segment, offset, ..
            }) => {
                assert_eq!(segment, path);
                assert_eq!(offset, starts[entry] as u64, "flip at {at}");
            }
            other => panic!(
                "flip at {at}: expected Corrupt, got {:?}",
                other.map(|r| r.1)
            ),
        }
        // Nothing was cut: the operator still has every byte.
        assert_eq!(fs::read(&path).expect("reads"), flipped);
    }
}

#[test]
fn segments_rotate_and_reopen_across_many() {
    let dir = TempDir::new("rotate");
    let (records, auth) = rules_records(300);
    let (mut wal, _) = open_with(dir.path(), 512);
    let mut next = 0;
    for size in [1usize, 4, 2, 9].iter().cycle() {
        if next == records.len() {
            break;
        }
        let end = (next + size).min(records.len());
        for r in &records[next..end] {
            wal.append(r).expect("appends");
        }
        next = end;
        wal.sync().expect("syncs");
    }
    drop(wal);
    let segs = segments(dir.path());
    assert!(segs.len() > 20, "{} segments", segs.len());
    // Every segment holds whole entries, within the size unless a single
    // entry is larger.
    for seg in &segs {
        let bytes = fs::read(seg).expect("reads");
        let starts = entry_starts(&bytes);
        assert!(bytes.len() <= 512 || starts.len() == 1, "{seg:?}");
    }

    // Reopen with another segment size: the layout on disk does not depend on it.
    let (mut wal, rec) = open(dir.path());
    assert_eq!(rec.records, records);
    let mut replayed = Authority::new(Config::default());
    for r in &rec.records {
        replayed.replay(r).expect("replays");
    }
    assert!(auth.rooms().eq(replayed.rooms()));
    write_each(&mut wal, &[record(1)]);
    drop(wal);
    assert_eq!(segments(dir.path()).len(), segs.len());
    let (_, rec) = open(dir.path());
    assert_eq!(rec.records.len(), 301);
}

#[test]
fn damage_outside_the_last_segment_is_corruption() {
    let src = TempDir::new("old-seg-src");
    let (mut wal, _) = open_with(src.path(), 200);
    let records: Vec<Record> = (1..=40).map(record).collect();
    write_each(&mut wal, &records);
    drop(wal);
    let segs = segments(src.path());
    assert!(segs.len() > 3);

    let copy = |dir: &TempDir| {
        dir.reset();
        for s in &segs {
            fs::copy(s, dir.path().join(s.file_name().expect("a name"))).expect("copies");
        }
    };
    let dir = TempDir::new("old-seg");

    // A torn tail in a segment that is not the last.
    copy(&dir);
    let victim = dir.path().join(segs[1].file_name().expect("a name"));
    let bytes = fs::read(&victim).expect("reads");
    fs::write(&victim, &bytes[..bytes.len() - 3]).expect("writes");
    let err = Wal::open(dir.path(), WalOptions::default()).expect_err("refuses");
    assert!(
        matches!(&err, WalError::Corrupt { segment, .. } if *segment == victim),
        "{err}"
    );
    assert_eq!(fs::read(&victim).expect("reads").len(), bytes.len() - 3);

    // A missing segment in the middle.
    copy(&dir);
    fs::remove_file(dir.path().join(segs[2].file_name().expect("a name"))).expect("removes");
    let err = Wal::open(dir.path(), WalOptions::default()).expect_err("refuses");
    assert!(matches!(err, WalError::Corrupt { .. }), "{err}");

    // The first segment missing.
    copy(&dir);
    fs::remove_file(dir.path().join(segs[0].file_name().expect("a name"))).expect("removes");
    let err = Wal::open(dir.path(), WalOptions::default()).expect_err("refuses");
    assert!(matches!(err, WalError::Corrupt { .. }), "{err}");
}

#[test]
fn synced_records_survive_a_drop_without_sync() {
    let dir = TempDir::new("unsynced");
    let (mut wal, _) = open(dir.path());
    let records: Vec<Record> = (1..=15).map(record).collect();
    for r in &records[..10] {
        wal.append(r).expect("appends");
    }
    assert_eq!(wal.sync().expect("syncs"), Lsn(10));
    for r in &records[10..] {
        wal.append(r).expect("appends");
    }
    assert_eq!(wal.pending(), 5);
    drop(wal);

    // Appended-but-unsynced records may or may not survive (here they are
    // only in memory, so they do not); synced ones always do, and whatever
    // survives is a prefix of what was appended.
    let (wal, rec) = open(dir.path());
    assert!(rec.records.len() >= 10 && rec.records.len() <= 15);
    assert_eq!(rec.records[..], records[..rec.records.len()]);
    assert_eq!(wal.next_lsn(), Lsn(rec.records.len() as u64 + 1));
}

#[test]
fn a_checkpoint_bounds_replay_and_deletes_what_it_covers() {
    let dir = TempDir::new("checkpoint");
    // Other files share the data directory (the origin's certificate).
    fs::create_dir_all(dir.path()).expect("creates");
    fs::write(dir.path().join("origin-cert.pem"), b"not ours").expect("writes");
    let (records, _) = rules_records(120);
    let (mut wal, _) = open_with(dir.path(), 1024);
    write_each(&mut wal, &records[..60]);
    for r in &records[60..70] {
        wal.append(r).expect("appends");
    }
    assert!(segments(dir.path()).len() > 2);

    // The checkpoint covers the unsynced records too (it syncs them first).
    assert_eq!(
        wal.checkpoint(b"snapshot one").expect("checkpoints"),
        Lsn(70)
    );
    assert_eq!(wal.durable_lsn(), Lsn(70));
    let seg = only_segment(dir.path());
    assert!(seg.ends_with("wal-00000000000000000071.log"), "{seg:?}");
    write_each(&mut wal, &records[70..100]);
    drop(wal);

    let (mut wal, rec) = open_with(dir.path(), 1024);
    assert_eq!(rec.checkpoint.as_deref(), Some(&b"snapshot one"[..]));
    assert_eq!(rec.checkpoint_lsn, Lsn(70));
    assert_eq!(rec.records, records[70..100]);
    assert_eq!(rec.next_lsn, Lsn(101));

    // A second checkpoint replaces the first; a third with nothing new since
    // keeps the (empty) segment.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(wal.checkpoint(&big).expect("checkpoints"), Lsn(100));
    assert_eq!(
        wal.checkpoint(b"snapshot three").expect("checkpoints"),
        Lsn(100)
    );
    let seg = only_segment(dir.path());
    assert!(seg.ends_with("wal-00000000000000000101.log"), "{seg:?}");
    write_each(&mut wal, &records[100..]);
    drop(wal);

    let (_, rec) = open(dir.path());
    assert_eq!(rec.checkpoint.as_deref(), Some(&b"snapshot three"[..]));
    assert_eq!(rec.checkpoint_lsn, Lsn(100));
    assert_eq!(rec.records, records[100..]);
    assert_eq!(rec.next_lsn, Lsn(121));
    assert_eq!(
        fs::read(dir.path().join("origin-cert.pem")).expect("left alone"),
        b"not ours"
    );
}

#[test]
fn a_checkpoint_interrupted_at_any_step_recovers() {
    let src = TempDir::new("ck-crash-src");
    let records: Vec<Record> = (1..=50).map(record).collect();
    let (mut wal, _) = open_with(src.path(), 120);
    write_each(&mut wal, &records[..40]);
    drop(wal);
    let before: Vec<(PathBuf, Vec<u8>)> = segments(src.path())
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).expect("reads");
            (p.file_name().expect("a name").into(), bytes)
        })
        .collect();
    assert!(before.len() > 3);
    let (mut wal, _) = open_with(src.path(), 120);
    wal.checkpoint(b"at 40").expect("checkpoints");
    drop(wal);
    let checkpoint = fs::read(src.path().join("checkpoint")).expect("reads");

    let dir = TempDir::new("ck-crash");
    let restore = |with_checkpoint: bool, with_new_segment: bool, keep_old: usize| {
        dir.reset();
        for (name, bytes) in before.iter().skip(before.len() - keep_old) {
            fs::write(dir.path().join(name), bytes).expect("writes");
        }
        if with_checkpoint {
            fs::write(dir.path().join("checkpoint"), &checkpoint).expect("writes");
        }
        if with_new_segment {
            fs::write(dir.path().join("wal-00000000000000000041.log"), b"").expect("writes");
        }
        // A temporary file from a checkpoint being written.
        fs::write(dir.path().join("checkpoint.tmp"), b"half a snapsh").expect("writes");
    };
    let check = |expect_checkpoint: bool| {
        let (mut wal, rec) = open_with(dir.path(), 120);
        assert_eq!(rec.next_lsn, Lsn(41));
        if expect_checkpoint {
            assert_eq!(rec.checkpoint.as_deref(), Some(&b"at 40"[..]));
            assert!(rec.records.is_empty());
            // Every segment the checkpoint covers is gone (the last one may
            // stay, to append to).
            only_segment(dir.path());
        } else {
            assert_eq!(rec.checkpoint, None);
            assert_eq!(rec.records, records[..40]);
        }
        assert!(!dir.path().join("checkpoint.tmp").exists());
        write_each(&mut wal, &records[40..]);
        drop(wal);
        let (_, rec) = open(dir.path());
        let replayed = if expect_checkpoint { 10 } else { 50 };
        assert_eq!(rec.records, records[50 - replayed..]);
    };
    let all = before.len();
    // Crashed while writing the checkpoint: the old log is whole.
    restore(false, false, all);
    check(false);
    // After the rename, before the new segment.
    restore(true, false, all);
    check(true);
    // After the new segment, before deleting the old ones.
    restore(true, true, all);
    check(true);
    // Part way through deleting them.
    restore(true, true, 2);
    check(true);
}

#[test]
fn a_damaged_checkpoint_is_corruption() {
    let dir = TempDir::new("ck-damage");
    let (mut wal, _) = open(dir.path());
    write_each(&mut wal, &[record(1), record(2)]);
    wal.checkpoint(b"a snapshot").expect("checkpoints");
    drop(wal);
    let path = dir.path().join("checkpoint");
    let good = fs::read(&path).expect("reads");
    for at in [0, 9, 14, 22, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x20;
        fs::write(&path, &bad).expect("writes");
        let err = Wal::open(dir.path(), WalOptions::default()).expect_err("refuses");
        assert!(
            matches!(&err, WalError::Corrupt { segment, .. } if *segment == path),
            "{err}"
        );
    }
    fs::write(&path, &good[..good.len() - 1]).expect("writes");
    assert!(Wal::open(dir.path(), WalOptions::default()).is_err());
    fs::write(&path, &good).expect("writes");
    let (_, rec) = open(dir.path());
    assert_eq!(rec.checkpoint.as_deref(), Some(&b"a snapshot"[..]));
}

#[test]
fn a_record_above_the_limit_is_refused() {
    let dir = TempDir::new("too-large");
    let (mut wal, _) = open(dir.path());
    let mut big = record(1);
    big.events[0].1.kind = EventKind::Chat {
        from: UserId(1),
        text: "x".repeat(MAX_RECORD + 1),
    };
    assert!(matches!(wal.append(&big), Err(WalError::TooLarge { .. })));
    // The log is still usable.
    write_each(&mut wal, &[record(1)]);
    drop(wal);
    assert_eq!(open(dir.path()).1.records, vec![record(1)]);
}
