//! The abuses, one function each. Every attacker runs one of them until the
//! attack's stop signal; [`persistent`](super::hostile::persistent) dials again whenever the relay cuts
//! it off, so each abuse lasts as long as the attacker likes, as a real one
//! would. Where an abuse has two forms (as fast as possible, or just under
//! the relay's default rate so as not to be cut off for flooding), even
//! attackers take one and odd attackers the other.
//!
//! - `kit` — what the attackers' code shares (the tick bound, the usual
//!   dialing, the messages).
//! - `streams` — stream exhaustion and bogus frames.
//! - `messages` — floods of well-formed messages, and the slow reader.
//! - `refused` — malformed input and bad tokens.
//! - `transport` — junk UDP, handshake, half-open and connection floods.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use super::hostile::{Attacker, Target};
use super::plan::Attack;

mod kit;
mod messages;
mod refused;
mod streams;
#[cfg(test)]
mod tests;
mod transport;

pub use transport::{capture_initials, INITIALS_EACH};

/// What an attack needs prepared before it starts (outside the measured
/// window): replayable Initials, a shared endpoint.
#[derive(Default)]
pub struct Prepared {
    /// Real QUIC Initials for the relay, one per connection attempt.
    pub initials: Vec<Bytes>,
    /// One endpoint (one source address) every attacker shares.
    pub shared: Option<quinn::Endpoint>,
}

/// Prepare what `attack` needs for `attackers` attackers.
pub async fn prepare(
    attack: Attack,
    target: &Target,
    attackers: usize,
) -> anyhow::Result<Prepared> {
    let mut p = Prepared::default();
    match attack {
        Attack::HalfOpen => {
            p.initials = capture_initials(target, attackers * INITIALS_EACH).await?
        }
        Attack::ConnFlood => {
            let bind = SocketAddr::from(([127, 0, 0, 2], 0));
            let ep = net::client_endpoint(bind, &net::Tuning::default())?;
            p.shared = Some(ep);
        }
        _ => {}
    }
    Ok(p)
}

/// Run `attack` as attacker `att` until the stop signal.
pub async fn run(
    attack: Attack,
    att: &mut Attacker,
    target: Arc<Target>,
    prepared: Arc<Prepared>,
) -> anyhow::Result<()> {
    match attack {
        Attack::Streams => streams::streams(att, &target).await,
        Attack::Frames => streams::frames(att, &target).await,
        Attack::Joins => messages::joins(att, target, false).await,
        Attack::SnapshotStall => messages::joins(att, target, true).await,
        Attack::Rooms => messages::rooms(att, target).await,
        Attack::Sessions => messages::sessions(att, target).await,
        Attack::Actions => messages::actions(att, target).await,
        Attack::SlowReader => messages::slow_reader(att, target).await,
        Attack::Malformed => refused::malformed(att, &target).await,
        Attack::Tokens => refused::tokens(att, &target).await,
        Attack::JunkUdp => transport::junk_udp(att, &target).await,
        Attack::Handshakes => transport::handshakes(att, &target).await,
        Attack::HalfOpen => transport::half_open(att, &target, &prepared.initials).await,
        Attack::ConnFlood => transport::conn_flood(att, &target, prepared.shared.clone()).await,
    }
}
