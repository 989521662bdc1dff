//! Follow a room and print every update as it arrives, with the origin time
//! the client's clock estimates (so countdowns agree with the origin's).
//!
//! ```text
//! cargo run -p ringside-client --example watch -- \
//!     --relay 127.0.0.1:4700 --cert ringside-data/relay-cert.pem \
//!     --token $(cargo run -q -p ringside-relay -- mint-token --user 8) --room 1
//! ```
//!
//! With `--open 1` and a host's token it opens the room first (goes live):
//! only a host or an operator opens a room. A host can then start a PK
//! battle: `--invite 2 --pk-secs 30` invites room 2's host, and a watcher
//! of room 2 started with `--accept 1` (its host's token) accepts the first
//! invitation it sees. When it stops it prints the room's totals and its
//! last battle's scores (`final ...`).

mod common;

use client_sdk::{ClientEvent, Update};
use protocol::RoomId;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = common::Args::parse();
    let client = args.connect().await?;
    let room = client.join(RoomId(args.num("room", 1))).await?;
    if args.num("open", 0) == 1 {
        let acked = room.open().await?;
        println!("opened {}: {:?}", room.id(), acked.outcome);
    }
    let invite = args.num("invite", 0);
    if invite > 0 {
        let secs = u32::try_from(args.num("pk-secs", 30)).unwrap_or(30);
        let acked = room.pk_invite(RoomId(invite), secs).await?;
        println!("invited room {invite}: {:?}", acked.outcome);
    }
    let mut accept = args.num("accept", 0) == 1;
    println!("following {} from {}", room.id(), room.state().seq);
    let mut updates = room.updates();
    let mut events = client.events();
    let limit = args.num("seconds", 3600);
    let stop = tokio::time::sleep(std::time::Duration::from_secs(limit));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            u = updates.recv() => match u {
                Ok(Update::Event(e)) => println!("{} {} {:?}", e.seq, e.at, e.kind),
                Ok(Update::Snapshot(s)) => println!("rebuilt from a snapshot at {}", s.seq),
                Err(e) => println!("(updates: {e})"),
            },
            e = events.recv() => if let Ok(e) = e {
                if let ClientEvent::Reconnected { relay, continuity, took } = e {
                    println!("moved to {} ({continuity:?}) in {took:?}", relay.name);
                } else {
                    println!("{e:?}");
                }
            },
            () = &mut stop => break,
        }
        if accept {
            if let Some(i) = room.state().pk_invite {
                accept = false;
                let acked = room.pk_accept(i.battle).await?;
                println!("accepted battle {}: {:?}", i.battle, acked.outcome);
            }
        }
        if let Some(t) = client.server_time() {
            if let Some(b) = room.state().battle {
                let left = b.ends_at.saturating_since(t);
                println!(
                    "   battle {} {}:{} — {:.1} s to the bell",
                    b.id,
                    b.scores[0],
                    b.scores[1],
                    left.as_secs_f64()
                );
            }
        }
    }
    let s = room.state();
    let last = (s.battle.and_then(|b| b.result)).or(s.last_result);
    println!(
        "final {}: {} gifts worth {}; last battle {:?}",
        s.room,
        s.gift_count,
        s.gift_value,
        last.map(|r| (r.battle, r.scores))
    );
    client.close().await;
    Ok(())
}
