//! The lease on a virtual clock: two nodes and a model of the bucket
//! (a key's revision and value, compare-and-set), time only ever advanced
//! by the test.

use super::*;

const TIMING: Timing = Timing {
    ttl: Duration::from_millis(3000),
    margin: Duration::from_millis(500),
};

/// The key in the bucket, as JetStream would keep it: the latest revision
/// comes from one counter shared by every key.
#[derive(Default)]
struct Bucket {
    next_revision: u64,
    key: Option<(u64, Claim)>,
}

enum Answer {
    Read(Seen),
    Written(u64),
    Refused,
}

impl Bucket {
    fn execute(&mut self, command: Command) -> Answer {
        match command {
            Command::Read => Answer::Read(match &self.key {
                None => Seen::Absent,
                Some((revision, claim)) => Seen::Held {
                    claim: claim.clone(),
                    revision: *revision,
                },
            }),
            Command::Create(claim) if self.key.is_none() => self.write(claim),
            Command::Update { revision, claim }
                if self.key.as_ref().is_some_and(|k| k.0 == revision) =>
            {
                self.write(claim)
            }
            Command::Release { revision } if self.key.as_ref().is_some_and(|k| k.0 == revision) => {
                self.key = None;
                Answer::Written(0)
            }
            _ => Answer::Refused,
        }
    }

    fn write(&mut self, claim: Claim) -> Answer {
        self.next_revision += 1;
        self.key = Some((self.next_revision, claim));
        Answer::Written(self.next_revision)
    }
}

/// Run every command `lease` has at `now` against the bucket (bounded).
fn drive(lease: &mut Lease, bucket: &mut Bucket, now: Instant) {
    for _ in 0..10 {
        let Some(command) = lease.poll_command(now) else {
            return;
        };
        match bucket.execute(command) {
            Answer::Read(seen) => lease.handle_read(now, seen),
            Answer::Written(revision) => lease.handle_written(now, revision),
            Answer::Refused => lease.handle_refused(now),
        }
    }
    panic!("a lease kept issuing commands at one instant");
}

/// Step both nodes' clocks by `step` until `until`, driving `alive` nodes.
fn run(nodes: &mut [(&mut Lease, bool)], bucket: &mut Bucket, from: Instant, until: Instant) {
    let step = Duration::from_millis(100);
    let mut now = from;
    while now <= until {
        for (lease, alive) in nodes.iter_mut() {
            if *alive {
                drive(lease, bucket, now);
            }
        }
        now += step;
    }
}

#[test]
fn a_free_room_is_won_at_once_and_kept_by_renewing() {
    let t0 = Instant::now();
    let mut bucket = Bucket::default();
    let mut a = Lease::new("a", TIMING);
    a.handle_want(t0);
    drive(&mut a, &mut bucket, t0);
    let epoch = a.owned(t0).expect("won at once");
    assert_eq!(epoch, 1, "the epoch is the winning revision");
    // Ten lease lifetimes of renewals: still owned, same epoch, newer revisions.
    let end = t0 + TIMING.ttl * 10;
    run(&mut [(&mut a, true)], &mut bucket, t0, end);
    assert_eq!(a.owned(end), Some(epoch));
    let (revision, claim) = bucket.key.clone().expect("held");
    assert!(revision > 20, "renewed every ttl/4: revision {revision}");
    assert_eq!(claim.epoch, Some(epoch), "renewals keep the epoch");
}

#[test]
fn a_live_owner_is_never_taken_over() {
    let t0 = Instant::now();
    let mut bucket = Bucket::default();
    let (mut a, mut b) = (Lease::new("a", TIMING), Lease::new("b", TIMING));
    a.handle_want(t0);
    drive(&mut a, &mut bucket, t0);
    b.handle_want(t0);
    let end = t0 + TIMING.ttl * 10;
    run(&mut [(&mut a, true), (&mut b, true)], &mut bucket, t0, end);
    assert!(a.owned(end).is_some());
    assert_eq!(b.owned(end), None);
    assert_eq!(bucket.key.map(|k| k.1.node), Some("a".into()));
}

#[test]
fn a_dead_owner_loses_the_room_after_ttl_and_never_overlaps() {
    let t0 = Instant::now();
    let mut bucket = Bucket::default();
    let (mut a, mut b) = (Lease::new("a", TIMING), Lease::new("b", TIMING));
    a.handle_want(t0);
    b.handle_want(t0);
    let died = t0 + Duration::from_secs(5);
    run(&mut [(&mut a, true), (&mut b, true)], &mut bucket, t0, died);
    assert!(a.owned(died).is_some() && b.owned(died).is_none());
    // A stops (killed, or paused: its clock runs on, nothing is driven).
    let a_last_valid = (0..100)
        .map(|i| died + Duration::from_millis(100 * i))
        .take_while(|t| a.owned(*t).is_some())
        .last()
        .expect("valid at death");
    let mut now = died;
    let mut b_won = None;
    for _ in 0..200 {
        now += Duration::from_millis(100);
        drive(&mut b, &mut bucket, now);
        if b.owned(now).is_some() {
            b_won = Some(now);
            break;
        }
    }
    let b_won = b_won.expect("b takes over");
    assert!(a_last_valid < b_won, "never two owners at one instant");
    let took = b_won - died;
    assert!(
        took <= TIMING.ttl + TIMING.margin + TIMING.renew_every() + Duration::from_millis(200),
        "taken over {took:?} after the death"
    );
    assert!(b.owned(b_won).expect("owned") > 1, "a new, higher epoch");
    // A resumes: its lease has run out on its own clock, and its renewal is
    // refused by the bucket.
    assert_eq!(a.owned(now), None);
    drive(&mut a, &mut bucket, now);
    assert_eq!(a.owned(now), None);
    assert_eq!(bucket.key.map(|k| k.1.node), Some("b".into()));
}

#[test]
fn a_paused_owner_whose_clock_stood_still_is_refused_by_the_bucket() {
    let t0 = Instant::now();
    let mut bucket = Bucket::default();
    let (mut a, mut b) = (Lease::new("a", TIMING), Lease::new("b", TIMING));
    a.handle_want(t0);
    drive(&mut a, &mut bucket, t0);
    b.handle_want(t0);
    let end = t0 + TIMING.ttl * 3;
    run(&mut [(&mut b, true)], &mut bucket, t0, end);
    assert!(b.owned(end).is_some());
    // A's clock never advanced: it believes it owns the room, but its next
    // renewal (a compare-and-set on its old revision) is refused, and from
    // then on it does not.
    let a_now = t0 + TIMING.renew_every();
    assert!(a.owned(a_now).is_some(), "a stale belief");
    drive(&mut a, &mut bucket, a_now);
    assert_eq!(a.owned(a_now), None);
}

#[test]
fn a_renewal_without_an_answer_keeps_the_lease_only_while_it_lasts() {
    let t0 = Instant::now();
    let mut bucket = Bucket::default();
    let mut a = Lease::new("a", TIMING);
    a.handle_want(t0);
    drive(&mut a, &mut bucket, t0);
    let renew = t0 + TIMING.renew_every();
    assert!(matches!(
        a.poll_command(renew),
        Some(Command::Update { .. })
    ));
    assert_eq!(a.poll_command(renew), None, "one renewal in flight");
    let last = t0 + TIMING.ttl - TIMING.margin;
    assert!(a.owned(last - Duration::from_millis(1)).is_some());
    assert_eq!(a.owned(last), None, "valid until sent + ttl - margin");
    assert_eq!(a.poll_timeout(), Some(last));
    // A failed request is retried after a pause, not in a loop.
    let mut b = Lease::new("b", TIMING);
    b.handle_want(t0);
    assert_eq!(b.poll_command(t0), Some(Command::Read));
    b.handle_failed(t0);
    assert_eq!(b.poll_command(t0), None);
    assert_eq!(b.poll_timeout(), Some(t0 + TIMING.margin / 2));
}

#[test]
fn a_released_room_is_won_by_the_next_node_without_waiting() {
    let t0 = Instant::now();
    let mut bucket = Bucket::default();
    let (mut a, mut b) = (Lease::new("a", TIMING), Lease::new("b", TIMING));
    a.handle_want(t0);
    drive(&mut a, &mut bucket, t0);
    a.handle_release();
    assert_eq!(a.owned(t0), None, "stops acting before releasing");
    drive(&mut a, &mut bucket, t0);
    assert_eq!(bucket.key, None);
    b.handle_want(t0);
    drive(&mut b, &mut bucket, t0);
    assert_eq!(b.owned(t0), Some(2));
}

#[test]
fn a_lease_seen_before_it_was_wanted_is_taken_over_from_that_sighting() {
    let t0 = Instant::now();
    let mut bucket = Bucket::default();
    let mut a = Lease::new("a", TIMING);
    a.handle_want(t0);
    drive(&mut a, &mut bucket, t0);
    let (revision, _) = bucket.key.clone().expect("held");
    // B listed the bucket at t0 and saw that revision; A dies; B wants the
    // room only at t0 + 1 s.
    let mut b = Lease::new("b", TIMING);
    b.handle_seen(revision, t0);
    let wanted = t0 + Duration::from_secs(1);
    b.handle_want(wanted);
    drive(&mut b, &mut bucket, wanted);
    assert_eq!(b.owned(wanted), None);
    assert_eq!(b.poll_timeout(), Some(wanted + TIMING.renew_every()));
    let due = t0 + TIMING.ttl + TIMING.margin;
    drive(&mut b, &mut bucket, due - Duration::from_millis(1));
    assert_eq!(
        b.owned(due),
        None,
        "not before ttl + margin from the sighting"
    );
    drive(&mut b, &mut bucket, due);
    assert!(b.owned(due).is_some());
    // A sighting of another revision counts for nothing.
    let mut c = Lease::new("c", TIMING);
    c.handle_seen(revision + 100, t0);
    c.handle_want(wanted);
    drive(&mut c, &mut bucket, wanted);
    drive(&mut c, &mut bucket, due);
    assert_eq!(c.owned(due), None);
}

const HOLD: Duration = Duration::from_secs(15);

/// Run every command `lease` has at `now` against a bucket that answers
/// nothing: each fails, on a live connection (`connected`) or not.
fn drive_silent(lease: &mut Lease, now: Instant, connected: bool) {
    for _ in 0..10 {
        if lease.poll_command(now).is_none() {
            return;
        }
        match connected {
            true => lease.handle_unanswered(now),
            false => lease.handle_failed(now),
        }
    }
    panic!("a lease kept issuing commands at one instant");
}

/// A lease won at `t0` with a blind hold, and the bucket it is in.
fn held_lease(t0: Instant) -> (Lease, Bucket) {
    let mut bucket = Bucket::default();
    let mut a = Lease::new("a", TIMING).with_blind_hold(HOLD);
    a.handle_want(t0);
    drive(&mut a, &mut bucket, t0);
    assert!(a.owned(t0).is_some());
    (a, bucket)
}

/// Drive `lease` against a silent bucket every 100 ms from `from` to
/// `until` (inclusive); the instants at which it was not owned.
fn silent(lease: &mut Lease, from: Instant, until: Instant, connected: bool) -> Vec<Instant> {
    let mut lost = Vec::new();
    let mut now = from;
    while now <= until {
        drive_silent(lease, now, connected);
        if lease.owned(now).is_none() {
            lost.push(now);
        }
        now += Duration::from_millis(100);
    }
    lost
}

#[test]
fn a_lease_is_held_through_a_nine_second_bucket_election_and_renewed_after() {
    let t0 = Instant::now();
    let (mut a, mut bucket) = held_lease(t0);
    let epoch = a.owned(t0);
    let down = t0 + Duration::from_secs(2);
    run(&mut [(&mut a, true)], &mut bucket, t0, down);
    let up = down + Duration::from_secs(9);
    let lost = silent(&mut a, down, up, true);
    assert!(lost.is_empty(), "held blind: lost at {:?}", lost.first());
    assert!(a.is_blind(up), "past its validity, kept by the hold only");
    // Retried every margin / 2, not in a loop.
    let next = a.poll_timeout().expect("a retry due");
    assert!(
        next > up && next <= up + TIMING.margin / 2,
        "{:?}",
        next - up
    );
    // The bucket answers again: the next renewal is accepted.
    let back = up + Duration::from_millis(100);
    run(&mut [(&mut a, true)], &mut bucket, back, back + TIMING.ttl);
    assert_eq!(a.owned(back + TIMING.ttl), epoch, "the same epoch");
    assert!(!a.is_blind(back + TIMING.ttl));
    assert!(a.take_back_from_blind(), "claims worth reading again");
    assert!(!a.take_back_from_blind(), "once");
    assert_eq!(bucket.key.map(|k| k.1.node), Some("a".into()));
}

#[test]
fn a_renewal_refused_after_the_election_drops_the_lease_at_once() {
    let t0 = Instant::now();
    let (mut a, mut bucket) = held_lease(t0);
    let up = t0 + Duration::from_secs(9);
    assert!(silent(&mut a, t0, up, true).is_empty());
    // Someone else wrote the key meanwhile (a node of the same name).
    let (revision, _) = bucket.key.clone().expect("held");
    let claim = Claim {
        node: "a".into(),
        epoch: None,
        member: None,
    };
    assert!(matches!(
        bucket.execute(Command::Update { revision, claim }),
        Answer::Written(_)
    ));
    // The next renewal (due within margin / 2) is refused: dropped then.
    let back = up + Duration::from_millis(100);
    let mut dropped = None;
    for k in 0..10 {
        let now = back + Duration::from_millis(100 * k);
        drive(&mut a, &mut bucket, now);
        if a.owned(now).is_none() {
            dropped = Some(now);
            break;
        }
    }
    let dropped = dropped.expect("dropped");
    assert!(dropped - back <= TIMING.margin / 2, "{:?}", dropped - back);
    assert!(!a.take_back_from_blind());
}

#[test]
fn a_node_cut_off_from_nats_drops_the_lease_at_its_validity() {
    let t0 = Instant::now();
    let (mut a, _bucket) = held_lease(t0);
    let valid_until = t0 + TIMING.ttl - TIMING.margin;
    let lost = silent(&mut a, t0, t0 + Duration::from_secs(9), false);
    assert_eq!(
        lost.first(),
        Some(&valid_until),
        "no hold when disconnected"
    );
    // Blind first, then the connection drops past the validity: the hold
    // ends at that failure.
    let t1 = t0 + Duration::from_secs(20);
    let (mut b, _bucket) = held_lease(t1);
    let valid_until = t1 + TIMING.ttl - TIMING.margin;
    let cut = valid_until + Duration::from_secs(3);
    assert!(silent(&mut b, t1, cut, true).is_empty());
    let lost = silent(&mut b, cut + Duration::from_millis(100), cut + HOLD, false);
    let first = *lost.first().expect("dropped");
    assert!(
        first - cut <= TIMING.margin / 2 + Duration::from_millis(100),
        "dropped at the next failed renewal: {:?}",
        first - cut
    );
}

#[test]
fn the_blind_hold_ends_at_validity_plus_hold_and_zero_disables_it() {
    let t0 = Instant::now();
    let (mut a, _bucket) = held_lease(t0);
    let valid_until = t0 + TIMING.ttl - TIMING.margin;
    let end = valid_until + HOLD;
    let lost = silent(&mut a, t0, end + Duration::from_secs(2), true);
    assert_eq!(lost.first(), Some(&end), "held until validity + hold");
    assert!(
        a.owned(end - Duration::from_millis(1)).is_none(),
        "gone for good"
    );
    // poll_timeout wakes the driver at the hold's end.
    let (mut b, _bucket) = held_lease(t0);
    silent(&mut b, t0, end - Duration::from_millis(300), true);
    let due = b.poll_timeout().expect("a retry due");
    assert!(due < end, "a retry before the hold ends");
    assert!(matches!(b.poll_command(due), Some(Command::Update { .. })));
    assert_eq!(b.poll_timeout(), Some(end), "one renewal in flight");
    // Without a hold, an unanswered renewal is a failure like any other.
    let mut c = Lease::new("c", TIMING);
    let mut bucket = Bucket::default();
    c.handle_want(t0);
    drive(&mut c, &mut bucket, t0);
    let lost = silent(&mut c, t0, t0 + Duration::from_secs(9), true);
    assert_eq!(lost.first(), Some(&valid_until));
}
