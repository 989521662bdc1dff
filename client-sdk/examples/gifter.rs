//! Send gifts to a room and print each authoritative outcome.
//!
//! ```text
//! cargo run -p ringside-client --example gifter -- \
//!     --relay 127.0.0.1:4700 --cert ringside-data/relay-cert.pem \
//!     --token $(cargo run -q -p ringside-relay -- mint-token --user 7) \
//!     --room 1 --gifts 10
//! ```

mod common;

use std::time::Duration;

use protocol::{GiftId, RoomId};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = common::Args::parse();
    let client = args.connect().await?;
    println!(
        "connected to {:?} as session {}",
        client.relay(),
        client.session()
    );
    let room = client.join(RoomId(args.num("room", 1))).await?;
    println!("joined {} at {}", room.id(), room.state().seq);
    for i in 0..args.num("gifts", 10) {
        let gift = GiftId(1 + (i % 3) as u32);
        let acked = room.gift(gift, 1).await?;
        println!(
            "{gift} → {:?} in {:.2} ms",
            acked.outcome,
            acked.latency.as_secs_f64() * 1000.0
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = room.state();
    println!(
        "room total {} from {} gifts; battle {:?}",
        s.gift_value,
        s.gift_count,
        s.battle.map(|b| b.scores)
    );
    client.close().await;
    Ok(())
}
