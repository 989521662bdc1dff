use super::*;
use crate::time::virtual_clock::{at_us as local, us};
use protocol::{Action, GiftId, RoomId, ServerTime, SessionId};

/// A deadline no test reaches: an hour on the virtual clock.
const NEVER: u64 = 3_600_000_000;

/// The next timeout, in µs.
fn next(r: &Retry) -> Option<u64> {
    r.poll_timeout().map(us)
}

fn msg(n: u64, action: Action) -> ActionMsg {
    ActionMsg {
        id: ActionId {
            session: SessionId(1),
            n,
        },
        room: RoomId(1),
        sent_at: ServerTime(0),
        action,
    }
}

fn gift(n: u64) -> ActionMsg {
    msg(
        n,
        Action::Gift {
            gift: GiftId(1),
            count: 1,
        },
    )
}

fn id(n: u64) -> ActionId {
    gift(n).id
}

fn rtt() -> Rtt {
    Rtt::new(
        Duration::from_millis(10),
        Duration::from_secs(1),
        Duration::from_millis(100),
    )
}

/// A path slow enough for every copy to fall due (timeout 100 ms).
fn slow() -> Rtt {
    Rtt::new(
        Duration::from_millis(100),
        Duration::from_secs(1),
        Duration::from_millis(100),
    )
}

fn retry() -> Retry {
    Retry::new(
        Policy {
            copy_delay: Some(Duration::from_millis(4)),
            second_copy_delay: None,
            third_copy_delay: None,
            datagrams: true,
            window: 32,
            seed: 7,
        },
        rtt(),
    )
}

fn paths(t: &[Transmit]) -> Vec<Path> {
    t.iter().map(|t| t.path).collect()
}

#[test]
fn a_gift_goes_twice_then_falls_back_and_keeps_resending_on_the_stream() {
    let mut r = retry();
    r.handle_send(local(0), gift(1), local(NEVER));
    assert_eq!(paths(&r.poll_transmit(local(0))), vec![Path::Datagram]);
    assert_eq!(next(&r), Some(4_000));
    assert!(r.poll_transmit(local(3_999)).is_empty());
    assert_eq!(paths(&r.poll_transmit(local(4_000))), vec![Path::Datagram]);
    assert_eq!(next(&r), Some(100_000));
    let fb = r.poll_transmit(local(100_000));
    assert_eq!(paths(&fb), vec![Path::Stream]);
    assert!(fb[0].fallback);
    // No answer on the stream either (a relay may have dropped it): it
    // goes again, at a backed-off interval, for as long as nothing comes.
    let mut at = 100_000;
    let mut gaps = Vec::new();
    for _ in 0..5 {
        let next = next(&r).expect("a resend is due");
        let sent = r.poll_transmit(local(next));
        assert_eq!(paths(&sent), vec![Path::Stream]);
        assert!(!sent[0].fallback, "only the first is a fallback");
        assert_eq!(sent[0].msg.id, id(1), "same id every time");
        gaps.push(next - at);
        at = next;
    }
    assert_eq!(
        gaps,
        vec![500_000, 1_000_000, 2_000_000, 4_000_000, 4_000_000]
    );
    // An answer ends it.
    r.handle_ack(local(at), id(1));
    assert_eq!(next(&r), None);
}

#[test]
fn a_chat_goes_twice_too() {
    let mut r = retry();
    r.handle_send(
        local(0),
        msg(1, Action::Chat { text: "hi".into() }),
        local(NEVER),
    );
    r.poll_transmit(local(0));
    assert_eq!(next(&r), Some(4_000));
}

#[test]
fn timeouts_back_off_until_a_sample_and_a_new_path_starts_afresh() {
    let mut r = retry();
    r.handle_send(local(0), gift(1), local(NEVER));
    r.poll_transmit(local(0));
    r.handle_ack(local(10_000), id(1));
    let base = r.rtt().rto();
    r.handle_send(local(0), gift(2), local(NEVER));
    r.poll_transmit(local(20_000));
    r.poll_transmit(local(20_000 + base.as_micros() as u64));
    assert_eq!(r.rtt().rto(), base * 2);
    r.handle_send(local(0), gift(3), local(NEVER));
    r.poll_transmit(local(200_000));
    r.handle_ack(local(210_000), id(3));
    assert!(r.rtt().rto() <= base, "a valid sample ends the backoff");
    r.handle_reconnect(local(300_000));
    assert_eq!(
        r.rtt().rto(),
        Duration::from_millis(100),
        "a new path starts from the initial timeout"
    );
}

#[test]
fn the_timeout_follows_measured_round_trips_but_not_retransmissions() {
    let mut r = retry();
    r.handle_send(local(0), gift(1), local(NEVER));
    r.poll_transmit(local(0));
    assert_eq!(r.handle_ack(local(20_000), id(1)), Some(local(0)));
    // srtt 20 ms, rttvar 10 ms: rto 20 + max(40, 5, 5) = 60 ms.
    assert_eq!(r.rtt().rto(), Duration::from_millis(60));
    r.handle_send(local(0), gift(2), local(NEVER));
    r.poll_transmit(local(100_000));
    r.poll_transmit(local(1_000_000));
    // The timeout backs off; the ack of a retransmitted action is no
    // sample (Karn), so it neither skews the estimate nor ends the backoff.
    assert_eq!(r.rtt().rto(), Duration::from_millis(120));
    r.handle_ack(local(2_000_000), id(2));
    assert_eq!(r.rtt().rto(), Duration::from_millis(120));
}

#[test]
fn a_throttled_action_waits_its_turn_then_goes_again_with_the_same_id() {
    let mut r = Retry::new(
        Policy {
            copy_delay: None,
            second_copy_delay: Some(Duration::from_millis(20)),
            ..Policy::default()
        },
        rtt(),
    );
    r.handle_send(local(0), gift(1), local(NEVER));
    r.poll_transmit(local(0));
    assert!(r.handle_throttled(local(1_000), id(1), Duration::from_millis(20)));
    // No fallback: it waits, and so does everything else.
    r.handle_send(local(0), gift(2), local(NEVER));
    assert!(r.poll_transmit(local(4_000)).is_empty());
    let due = next(&r).expect("it goes again");
    assert!(
        (21_000..=26_000).contains(&due),
        "retry-after plus at most a quarter of jitter, got {due}"
    );
    assert!(r.poll_transmit(local(due - 1)).is_empty());
    let sent = r.poll_transmit(local(due));
    assert_eq!(sent.len(), 1, "paced: one at a time");
    assert_eq!(sent[0].msg.id, id(1), "the oldest first, same id");
    // The next one a token interval later, give or take a tenth.
    let next = next(&r).expect("the next one");
    assert!((due + 20_000..=due + 22_000).contains(&next), "{next}");
    assert_eq!(r.poll_transmit(local(next))[0].msg.id, id(2));
    // Once nothing waits and the relay stays quiet, bursts are free again.
    r.handle_ack(local(next + 1_000), id(1));
    r.handle_ack(local(next + 1_000), id(2));
    let later = next + PACE_QUIET.as_micros() as u64;
    r.handle_send(local(later), gift(3), local(NEVER));
    r.handle_send(local(later), gift(4), local(NEVER));
    assert_eq!(r.poll_transmit(local(later)).len(), 2);
    assert!(!r.is_pacing());
}

#[test]
fn the_window_bounds_what_is_on_the_wire() {
    let mut r = Retry::new(
        Policy {
            window: 4,
            copy_delay: Some(Duration::from_millis(4)),
            second_copy_delay: None,
            ..Policy::default()
        },
        rtt(),
    );
    for n in 1..=10 {
        r.handle_send(local(0), gift(n), local(NEVER));
    }
    let first = r.poll_transmit(local(0));
    assert_eq!(first.len(), 4);
    assert_eq!(r.on_wire(), 4);
    // Copies are not new actions: they do not take room in the window.
    assert_eq!(r.poll_transmit(local(4_000)).len(), 4);
    r.handle_ack(local(5_000), id(2));
    let next = r.poll_transmit(local(5_000));
    assert_eq!(next.iter().map(|t| t.msg.id).collect::<Vec<_>>(), [id(5)]);
    // A Throttled answer frees its place too.
    r.handle_throttled(local(6_000), id(1), Duration::from_millis(5));
    assert!(r.poll_transmit(local(6_000)).is_empty(), "held");
}

#[test]
fn every_action_leaves_at_its_deadline_saying_why() {
    let mut r = retry();
    r.handle_send(local(0), gift(1), local(1_000_000));
    r.handle_send(local(0), gift(2), local(1_000_000));
    r.handle_send(local(0), gift(3), local(2_000_000));
    r.poll_transmit(local(0));
    r.handle_throttled(local(1_000), id(2), Duration::from_secs(5));
    assert_eq!(next(&r), Some(4_000), "the copies are first");
    r.poll_transmit(local(4_000));
    // Nothing answers gift 1; gift 2 is held past its deadline.
    let mut seen = Vec::new();
    for _ in 0..20 {
        let Some(t) = next(&r) else { break };
        r.poll_transmit(local(t));
        seen.extend(r.poll_expired(local(t)).into_iter().map(|(i, w)| (t, i, w)));
    }
    assert_eq!(
        seen,
        vec![
            (1_000_000, id(1), Expiry::NoAnswer),
            (1_000_000, id(2), Expiry::Throttled),
            (2_000_000, id(3), Expiry::NoAnswer),
        ]
    );
    assert!(r.is_empty());
    assert_eq!(next(&r), None);
}

#[test]
fn paced_an_action_too_close_to_its_deadline_is_not_started() {
    let mut r = retry();
    r.handle_send(local(0), gift(1), local(NEVER));
    r.handle_send(local(0), gift(2), local(100_000));
    r.poll_transmit(local(0));
    r.handle_throttled(local(1_000), id(1), Duration::from_millis(20));
    r.handle_throttled(local(1_000), id(2), Duration::from_millis(20));
    // Gift 1 goes again; gift 2's turn comes with less than the 100 ms
    // timeout left before its deadline: it is not sent again.
    let mut sent = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let Some(t) = next(&r) else { break };
        assert!(t <= 100_000, "no wake-up after the last deadline: {t}");
        sent.extend(r.poll_transmit(local(t)).into_iter().map(|x| x.msg.id));
        seen.extend(r.poll_expired(local(t)));
        if !seen.is_empty() {
            break;
        }
    }
    assert_eq!(sent.first(), Some(&id(1)));
    assert!(!sent.contains(&id(2)), "{sent:?}");
    assert_eq!(seen, vec![(id(2), Expiry::Throttled)]);
}

#[test]
fn a_reconnect_sends_what_was_on_the_wire_again_on_the_stream() {
    let mut r = Retry::new(
        Policy {
            window: 2,
            ..Policy::default()
        },
        rtt(),
    );
    for n in 1..=3 {
        r.handle_send(local(0), gift(n), local(NEVER));
    }
    r.poll_transmit(local(0));
    r.handle_reconnect(local(50_000));
    let again = r.poll_transmit(local(50_000));
    assert_eq!(
        again.iter().map(|t| (t.msg.id, t.path)).collect::<Vec<_>>(),
        vec![(id(1), Path::Stream), (id(2), Path::Stream)],
        "once each, oldest first, within the window"
    );
    r.handle_ack(local(51_000), id(1));
    // One that never went out goes as a datagram, as usual.
    assert_eq!(paths(&r.poll_transmit(local(51_000))), vec![Path::Datagram]);
}

/// A relay's rate limit in miniature: a token bucket per client, copies
/// of a forwarded action are free, an ack `ack_us` after forwarding, a
/// Throttled (with the bucket's wait) `ack_us / 2` after a refusal.
struct Relay {
    rate: f64,
    tokens: f64,
    burst: f64,
    at: u64,
    forwarded: std::collections::BTreeSet<ActionId>,
    answers: BTreeMap<(u64, u64), (ActionId, Option<Duration>)>,
    seq: u64,
    messages: u64,
    throttles: u64,
}

impl Relay {
    fn new(rate: f64, burst: f64) -> Relay {
        Relay {
            rate,
            tokens: burst,
            burst,
            at: 0,
            forwarded: Default::default(),
            answers: BTreeMap::new(),
            seq: 0,
            messages: 0,
            throttles: 0,
        }
    }

    fn handle(&mut self, now: u64, t: &Transmit) {
        const ACK_US: u64 = 2_000;
        self.messages += 1;
        self.seq += 1;
        let id = t.msg.id;
        if self.forwarded.contains(&id) {
            self.answers.insert((now + ACK_US, self.seq), (id, None));
            return;
        }
        self.tokens = (self.tokens + (now - self.at) as f64 / 1e6 * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.forwarded.insert(id);
            self.answers.insert((now + ACK_US, self.seq), (id, None));
        } else {
            self.throttles += 1;
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
            self.answers.insert(
                (now + ACK_US / 2, self.seq),
                (id, Some(wait.max(Duration::from_millis(1)))),
            );
        }
    }
}

#[test]
fn a_combo_over_the_rate_is_paced_to_it_and_every_action_resolves() {
    // 500 gifts at once against 50 a second with bursts of 100.
    let mut r = Retry::new(Policy::default(), rtt());
    let mut relay = Relay::new(50.0, 100.0);
    let deadline = 30_000_000;
    for n in 1..=500 {
        r.handle_send(local(0), gift(n), local(deadline));
    }
    let (mut now, mut acked, mut expired) = (0u64, 0u64, 0u64);
    let mut steps = 0;
    while !r.is_empty() {
        steps += 1;
        assert!(steps < 100_000, "bounded");
        for t in r.poll_transmit(local(now)) {
            relay.handle(now, &t);
        }
        expired += r.poll_expired(local(now)).len() as u64;
        let answer = relay.answers.keys().next().map(|k| k.0);
        let next = [next(&r), answer].into_iter().flatten().min();
        let Some(next) = next else { break };
        now = now.max(next);
        while let Some(e) = relay.answers.first_entry() {
            if e.key().0 > now {
                break;
            }
            match e.remove() {
                (id, None) => acked += u64::from(r.handle_ack(local(now), id).is_some()),
                (id, Some(wait)) => {
                    r.handle_throttled(local(now), id, wait);
                }
            }
        }
    }
    assert_eq!((acked, expired), (500, 0), "every gift applied, once");
    // 400 beyond the burst at 50 a second: 8 s, and not much more.
    assert!(now < 9_000_000, "finished at {now} µs");
    // Paced, not hammering: a window's worth of refusals when the burst
    // runs out, a few more while the pace is learnt; far below the
    // relay's message limit (400 a second, bursts of 800).
    assert!(relay.throttles < 64, "{} throttled", relay.throttles);
    assert!(relay.messages < 600, "{} messages", relay.messages);
}

#[test]
fn copies_spread_past_a_burst_and_stop_once_answered() {
    let slow = slow();
    let mut r = Retry::new(Policy::default(), slow);
    // The path lost a packet lately: every copy goes.
    r.handle_path_loss(local(0));
    r.handle_send(local(0), gift(1), local(NEVER));
    r.handle_send(local(0), gift(2), local(NEVER));
    assert_eq!(r.poll_transmit(local(0)).len(), 2);
    // The first copies 8 ms later (an isolated loss costs 8 ms)...
    assert_eq!(next(&r), Some(8_000));
    assert_eq!(paths(&r.poll_transmit(local(8_000))), [Path::Datagram; 2]);
    // ...the second 16 ms after the original, past a burst of losses that
    // took the original and the first copy. Gift 1 is answered before it:
    // its later copies are not sent.
    assert_eq!(next(&r), Some(16_000));
    r.handle_ack(local(12_000), id(1));
    let second = r.poll_transmit(local(16_000));
    assert_eq!(paths(&second), [Path::Datagram]);
    assert_eq!(second[0].msg.id, id(2));
    // ...the third 32 ms after, past a long burst.
    assert_eq!(next(&r), Some(32_000));
    let third = r.poll_transmit(local(32_000));
    assert_eq!(paths(&third), [Path::Datagram]);
    assert_eq!(third[0].msg.id, id(2));
    // Then only the timeout: the original and three copies, then the
    // stream (four copies: what the relay forwards free of the user's rate).
    let t = next(&r).expect("the fallback");
    assert!(t >= 100_000, "the timeout: {t}");
    let fb = r.poll_transmit(local(t));
    assert_eq!(paths(&fb), [Path::Stream]);
    assert!(fb[0].fallback);
}

#[test]
fn a_clean_path_gets_one_copy_and_a_lossy_one_every_copy_for_a_while() {
    let slow = slow();
    let copies_of = |r: &mut Retry, t0: u64, n: u64| {
        r.handle_send(local(t0), gift(n), local(t0 + NEVER));
        r.poll_transmit(local(t0));
        let mut copies = 0;
        for _ in 0..8 {
            let Some(t) = next(r) else { break };
            let out = r.poll_transmit(local(t));
            if out.iter().any(|x| x.path == Path::Stream) {
                break;
            }
            copies += out.len();
        }
        r.handle_ack(local(t0 + 900_000), id(n));
        copies
    };
    let mut r = Retry::new(Policy::default(), slow);
    assert_eq!(copies_of(&mut r, 0, 1), 1, "clean: the 8 ms copy only");
    r.handle_path_loss(local(1_000_000));
    assert_eq!(copies_of(&mut r, 1_000_000, 2), 3, "a loss: 8, 16, 32 ms");
    let after = 1_000_000 + LOSSY_FOR.as_micros() as u64;
    assert_eq!(
        copies_of(&mut r, after, 3),
        1,
        "lossless for a while: one again"
    );
}

#[test]
fn a_copy_needs_the_one_before_it_and_comes_later() {
    let slow = slow();
    // No second copy: no third either.
    let mut r = Retry::new(
        Policy {
            second_copy_delay: None,
            ..Policy::default()
        },
        slow,
    );
    r.handle_path_loss(local(0));
    r.handle_send(local(0), gift(1), local(NEVER));
    r.poll_transmit(local(0));
    assert_eq!(next(&r), Some(8_000));
    r.poll_transmit(local(8_000));
    assert!(next(&r).is_some_and(|t| t >= 100_000), "then the timeout");
    // A third copy due before the second is not sent either.
    let mut r = Retry::new(
        Policy {
            third_copy_delay: Some(Duration::from_millis(10)),
            ..Policy::default()
        },
        slow,
    );
    r.handle_path_loss(local(0));
    r.handle_send(local(0), gift(1), local(NEVER));
    r.poll_transmit(local(0));
    r.poll_transmit(local(8_000));
    assert_eq!(next(&r), Some(16_000));
    assert_eq!(r.poll_transmit(local(16_000)).len(), 1);
    assert!(next(&r).is_some_and(|t| t >= 100_000), "then the timeout");
}

#[test]
fn a_timeout_before_the_second_copy_cancels_it() {
    // A fast path (timeout 10 ms, the floor) times out before a 16 ms copy
    // is due: the stream takes over and no later copy is sent.
    let mut r = Retry::new(Policy::default(), rtt());
    r.handle_send(local(0), gift(1), local(NEVER));
    r.poll_transmit(local(0));
    r.handle_ack(local(2_000), id(1));
    r.handle_send(local(3_000), gift(2), local(NEVER));
    r.poll_transmit(local(3_000));
    assert_eq!(paths(&r.poll_transmit(local(11_000))), [Path::Datagram]);
    let t = next(&r).expect("the fallback");
    assert!(t < 19_000, "the timeout comes first: {t}");
    assert_eq!(paths(&r.poll_transmit(local(t))), [Path::Stream]);
    assert!(r.poll_transmit(local(19_000)).is_empty(), "no late copy");
    assert!(r.poll_transmit(local(35_000)).is_empty(), "no third copy");
}

/// A Gilbert–Elliott chain stepped once per packet, as the testbed's links
/// (and queues overflowing on shared hops) lose packets: 5 % of packets in
/// bursts of 5 on average (p = 0.010526, r = 0.2).
struct Bursts {
    bad: bool,
    rng: u64,
}

impl Bursts {
    fn chance(&mut self, p: f64) -> bool {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// One packet through: whether it is lost.
    fn packet(&mut self) -> bool {
        let flip = if self.bad { 0.2 } else { 0.010_526 };
        if self.chance(flip) {
            self.bad = !self.bad;
        }
        self.bad
    }
}

/// The share of `gifts` whose every datagram (the original and its copies,
/// sent as `policy` says, before the stream fallback) is lost on a bursty
/// link that carries 1.4 other packets per ms (the testbed's busy uplink).
fn all_datagrams_lost(policy: Policy, gifts: u64) -> f64 {
    let mut link = Bursts {
        bad: false,
        rng: 0x9e37_79b9_7f4a_7c15,
    };
    let mut lost = 0;
    for g in 0..gifts {
        // Other traffic between two gifts (a second apart): enough for
        // the chain to forget.
        for _ in 0..200 {
            link.packet();
        }
        let mut r = Retry::new(policy, rtt());
        let t0 = g * 1_000_000;
        // A path losing packets: every copy goes.
        r.handle_path_loss(local(t0));
        r.handle_send(local(t0), gift(1), local(t0 + NEVER));
        let (mut now, mut last, mut all_lost) = (t0, t0, true);
        // Bounded: the original, three copies, then the fallback.
        for _ in 0..8 {
            let out = r.poll_transmit(local(now));
            if out.iter().any(|t| t.path == Path::Stream) {
                break;
            }
            for _ in 0..out.len() {
                for _ in 0..(now - last) * 14 / 10_000 {
                    link.packet();
                }
                last = now;
                all_lost &= link.packet();
            }
            now = next(&r).expect("a copy or the fallback is due");
        }
        lost += u64::from(all_lost);
    }
    lost as f64 / gifts as f64
}

#[test]
fn spread_copies_escape_a_burst_that_takes_a_close_one() {
    let gifts = 20_000;
    let close = Policy {
        copy_delay: Some(Duration::from_millis(4)),
        second_copy_delay: None,
        ..Policy::default()
    };
    // One copy 4 ms later (~6 packets): in the same burst a third of the
    // time, so ~1.5 % of gifts need the stream (a timeout and a round trip).
    let old = all_datagrams_lost(close, gifts);
    // Copies 8, 16 and 32 ms after the original: a small fraction of that.
    let new = all_datagrams_lost(Policy::default(), gifts);
    assert!(old > 0.01, "close copies: {old}");
    assert!(new < 0.001, "spread copies: {new}");
}
