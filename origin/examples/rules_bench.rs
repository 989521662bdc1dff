//! How fast the room rules decide, with no IO: the ceiling of the single
//! writer. `cargo run --release -p ringside-origin --example rules_bench`

use std::time::{Duration, Instant};

use origin::rules::{Authority, Config, Decision};
use protocol::message::{ActionMsg, Actor};
use protocol::room::Grant;
use protocol::{Action, ActionId, GiftId, RoomId, ServerTime, SessionId, UserId};

fn main() {
    // Users here act far faster than the origin's per-user backstop allows
    // (it would throttle, not decide): measure the rules, not the backstop.
    let mut auth = Authority::new(Config {
        user_rate: 0,
        ..Config::default()
    });
    let rooms = 1_000u64;
    let users = 10_000u64;
    let n = 2_000_000u64;
    let mut now = ServerTime(1_000_000_000_000);
    // Every room is open (an operator opens them: viewers cannot).
    for r in 0..rooms {
        let _ = auth.handle_open(now, RoomId(r));
    }
    // A battle in every other room pair, so half the gifts also move scores.
    for r in (0..rooms).step_by(4) {
        let host = Actor {
            user: UserId(1_000_000 + r),
            grant: Grant::Host,
        };
        let id = ActionId {
            session: SessionId(1_000_000 + r),
            n: 1,
        };
        let invite = ActionMsg {
            id,
            room: RoomId(r),
            sent_at: now,
            action: Action::PkInvite {
                to: RoomId(r + 1),
                duration_secs: 600,
            },
        };
        let _ = auth.handle_action(now, host, &invite);
        let battle = auth
            .room(RoomId(r + 1))
            .and_then(|s| s.pk_invite.as_ref())
            .map(|i| i.battle);
        if let Some(battle) = battle {
            let host_b = Actor {
                user: UserId(1_000_000 + r + 1),
                grant: Grant::Host,
            };
            let id = ActionId {
                session: SessionId(1_000_000 + r + 1),
                n: 1,
            };
            let accept = ActionMsg {
                id,
                room: RoomId(r + 1),
                sent_at: now,
                action: Action::PkAccept { battle },
            };
            let _ = auth.handle_action(now, host_b, &accept);
        }
    }
    let mut counters = vec![0u64; users as usize];
    let mut events = 0usize;
    let start = Instant::now();
    for i in 0..n {
        let u = i % users;
        counters[u as usize] += 1;
        let actor = Actor {
            user: UserId(u),
            grant: Grant::Viewer,
        };
        let msg = ActionMsg {
            id: ActionId {
                session: SessionId(u),
                n: counters[u as usize],
            },
            room: RoomId((i * 7) % rooms),
            sent_at: now,
            action: Action::Gift {
                gift: GiftId(1 + (i % 5) as u32),
                count: 1,
            },
        };
        now = now + Duration::from_micros(1);
        if let Decision::Decided(rec) = auth.handle_action(now, actor, &msg) {
            events += rec.events.len();
        }
    }
    let took = start.elapsed();
    println!(
        "{n} gift actions over {rooms} rooms and {users} sessions in {:.2} s: {:.0} actions/s, {:.2} µs each, {events} events",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / n as f64
    );
}
