//! Fan-out's shared parts: the viewers' tokens, the sender's steady gifts
//! and its acks, and the reports (how an audience connected, what a
//! fan-out measured). The audience itself is the load generator's
//! (`loadgen.rs`), run in stages (`stages.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use client_sdk::{Outcome, Room};
use net::token::{unix_now, Claims, Purpose, TokenKey};
use protocol::{GiftId, UserId};
use tokio::task::JoinSet;

use super::stats::{Latencies, Summary};

/// Sign a viewer token for `user`.
pub fn viewer_token(secret: &str, user: u64) -> Vec<u8> {
    TokenKey::new(secret.as_bytes()).mint(&Claims {
        purpose: Purpose::Client,
        user: UserId(user),
        rooms: None,
        host_of: Vec::new(),
        operator: false,
        expires: unix_now() + 24 * 3600,
    })
}

/// How the audience connected.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConnectReport {
    /// Clients asked for.
    pub wanted: usize,
    /// Clients connected and in the room.
    pub connected: usize,
    /// Clients that failed twice (connect or join).
    pub failed: usize,
    /// Connect attempts that failed and were retried.
    pub retried: usize,
    /// Clients per batch.
    pub batch: usize,
    /// The whole phase.
    #[serde(rename = "took_s", serialize_with = "super::stats::secs")]
    pub took: Duration,
    /// Each client's `connect()` (relay probe, handshake, hello, welcome).
    pub connect: Summary,
    /// Each client's `join()` (until the room's state arrived).
    pub join: Summary,
    /// The first errors seen, for the report.
    pub errors: Vec<String>,
}

/// What the fan-out measured.
#[derive(Debug, Clone, Default)]
pub struct FanoutReport {
    /// Clients in the room (besides the sender).
    pub audience: usize,
    /// Gifts per second asked for.
    pub rate: f64,
    /// Gifts planned (rate × duration).
    pub planned: u64,
    /// Gifts sent.
    pub issued: u64,
    /// Gifts applied by the origin.
    pub applied: u64,
    /// Gifts rejected.
    pub rejected: u64,
    /// Gifts that failed (SDK error, or no ack in time).
    pub errors: u64,
    /// The first few failures, for humans.
    pub error_text: Vec<String>,
    /// From the first send to the last.
    pub send_took: Duration,
    /// applied × audience.
    pub expected: u64,
    /// Sightings of applied gifts.
    pub delivered: u64,
    /// expected − delivered.
    pub missing: u64,
    /// Sightings of gifts whose ack never came.
    pub unmatched: u64,
    /// Updates a client's receiver missed because it fell behind.
    pub lagged: u64,
    /// Snapshots clients got instead of events (after a gap).
    pub snapshots: u64,
    /// Whether every expected delivery happened before the drain limit.
    pub drained: bool,
    /// How long after the last ack the deliveries took to complete.
    pub drained_in: Duration,
    /// Gifts seen by every client.
    pub complete_events: u64,
    /// Send → a client saw it, over every (client, gift).
    pub delivery: Summary,
    /// The origin's stamp on the event → a client saw it (empty when the
    /// audience does not record stamps).
    pub origin_delivery: Summary,
    /// The relay's CPU over the run per delivery, µs.
    pub relay_us_per_delivery: Option<f64>,
    /// The clients' (this process's) CPU over the run per delivery, µs.
    pub clients_us_per_delivery: Option<f64>,
    /// The same, for the gifts sent in each second of the run (a queue that
    /// grows shows as rising figures).
    pub by_second: Vec<Summary>,
    /// Send → the last client saw it, per gift.
    pub all_clients: Summary,
    /// The sender's ack latency while the fan-out runs.
    pub ack: Summary,
    /// From the first send to the last sighting.
    pub span: Duration,
    /// delivered / span.
    pub deliveries_per_sec: f64,
}

/// Gift `total` times at `rate` per second, each gift in a task of its
/// own; stop early 5 s after `end`. Returns the tasks and how many there
/// are.
pub(crate) async fn send_gifts(
    room: &Arc<Room>,
    rate: f64,
    total: u64,
    end: Instant,
) -> (JoinSet<GiftResult>, u64) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut gifts = JoinSet::new();
    let hard_stop = end + Duration::from_secs(5);
    let mut issued = 0u64;
    for _ in 0..total {
        tick.tick().await;
        if Instant::now() > hard_stop {
            break;
        }
        let room = room.clone();
        gifts.spawn(async move {
            let t0 = Instant::now();
            let r = room.gift(GiftId(1), 1).await;
            (t0, r)
        });
        issued += 1;
    }
    (gifts, issued)
}

/// A gift task's result: when it was called, and what came back.
pub(crate) type GiftResult = (Instant, Result<client_sdk::Acked, client_sdk::Error>);

/// The sender's acks.
pub(crate) struct Acks {
    /// Applied gifts: action number → when `gift` was called.
    pub(crate) sent: HashMap<u64, Instant>,
    /// Their ack latency.
    pub(crate) acks: Latencies,
    pub(crate) rejected: u64,
    pub(crate) errors: u64,
    /// The first few failures.
    pub(crate) error_text: Vec<String>,
}

impl Acks {
    /// Wait for every gift task until `deadline`; the ones still out then
    /// count as errors.
    pub(crate) async fn collect(
        gifts: &mut JoinSet<GiftResult>,
        issued: u64,
        deadline: Instant,
    ) -> Acks {
        let mut sent: HashMap<u64, Instant> = HashMap::with_capacity(issued as usize);
        let mut acks = Latencies::new();
        let (mut rejected, mut errors) = (0u64, 0u64);
        let mut error_text = Vec::new();
        loop {
            let next = tokio::time::timeout_at(deadline.into(), gifts.join_next()).await;
            match next {
                Ok(Some(Ok((t0, Ok(acked))))) => match acked.outcome {
                    Outcome::Applied { .. } => {
                        acks.record(acked.latency);
                        sent.insert(acked.id.n, t0);
                    }
                    Outcome::Rejected { reason } => {
                        rejected += 1;
                        if error_text.len() < 3 {
                            error_text.push(format!("rejected: {reason:?}"));
                        }
                    }
                    Outcome::Unknown => {
                        rejected += 1;
                        if error_text.len() < 3 {
                            error_text.push("unknown (stale)".into());
                        }
                    }
                },
                Ok(Some(Ok((_, Err(e))))) => {
                    errors += 1;
                    if error_text.len() < 3 {
                        error_text.push(e.to_string());
                    }
                }
                Ok(Some(Err(e))) => {
                    errors += 1;
                    if error_text.len() < 3 {
                        error_text.push(format!("task: {e}"));
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    errors += gifts.len() as u64;
                    error_text.push(format!("{} gifts unacked at the deadline", gifts.len()));
                    gifts.abort_all();
                    break;
                }
            }
        }

        Acks {
            sent,
            acks,
            rejected,
            errors,
            error_text,
        }
    }
}
