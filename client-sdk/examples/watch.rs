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
//! only a host or an operator opens a room.

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
    client.close().await;
    Ok(())
}
