//! The gift ack tail as multiples of the gift's round trip, beside the
//! goals issue 11 set for lossy client paths. Pure.
//!
//! A gift's ack cannot come sooner than one network round trip from the
//! client to the origin and back (client ↔ relay, relay ↔ origin): that
//! round trip is the "RTT" the goals are multiples of. The goals:
//! - bursty loss (Gilbert–Elliott) on the client paths: p99 ≤ 1.3 × RTT and
//!   p99.9 ≤ 2 × RTT;
//! - independent loss only: p99.9 ≤ 1.5 × RTT.
//!
//! The figure is shown only where it means one thing: every region's
//! round trip is the same (a client on another region's relay pays more,
//! and its gifts count too: they are few) and the client paths lose
//! packets.

use serde::Serialize;

use crate::scenario::spec::Scenario;
use crate::scenario::verdict::analysis::RunFigures;

/// The round trip the tail is measured in, and the goals for it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TailGoal {
    /// The gift's network round trip (client ↔ relay ↔ origin), ms.
    pub rtt_ms: f64,
    /// Goal for the gift ack p99, × RTT (none for independent loss).
    pub p99: Option<f64>,
    /// Goal for the gift ack p99.9, × RTT.
    pub p999: f64,
}

/// One run's gift ack tail, × RTT.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tail {
    /// Gift ack p99 / RTT.
    pub p99: f64,
    /// Gift ack p99.9 / RTT.
    pub p999: f64,
    /// Whether both goals are met.
    pub met: bool,
}

impl TailGoal {
    /// The goal for scenario `s`: `None` unless its client paths lose
    /// packets and every region has the same round trip.
    pub fn of(s: &Scenario) -> Option<TailGoal> {
        let first = s.regions.first()?;
        let rtt_ms = first.client_rtt_ms + first.origin_rtt_ms;
        let same = (s.regions.iter()).all(|r| r.client_rtt_ms + r.origin_rtt_ms == rtt_ms);
        let profiles =
            || (s.regions.iter()).flat_map(|r| [&r.clients.up, &r.clients.down].into_iter());
        let bursty = profiles().any(|p| p.burst.is_some());
        let lossy = profiles().any(|p| p.loss > 0.0);
        if !same || rtt_ms <= 0.0 {
            return None;
        }
        match (bursty, lossy) {
            (true, _) => Some(TailGoal {
                rtt_ms,
                p99: Some(1.3),
                p999: 2.0,
            }),
            (false, true) => Some(TailGoal {
                rtt_ms,
                p99: None,
                p999: 1.5,
            }),
            (false, false) => None,
        }
    }

    /// The gift ack tail of `run` against this goal; `None` without gifts.
    pub fn judge(&self, run: &RunFigures) -> Option<Tail> {
        let s = run.class(protocol::Class::Gift)?.summary?;
        let x = |us: u64| us as f64 / 1000.0 / self.rtt_ms;
        let (p99, p999) = (x(s.p99), x(s.p999));
        Some(Tail {
            p99,
            p999,
            met: self.p99.is_none_or(|g| p99 <= g) && p999 <= self.p999,
        })
    }

    /// The goals for people: `≤ 1.3 × / ≤ 2 ×`.
    pub fn text(&self) -> String {
        let p99 = self.p99.map_or("—".to_owned(), |g| format!("≤ {g} ×"));
        format!("{p99} / ≤ {} ×", self.p999)
    }
}

impl Tail {
    /// The figures for people: `1.21 × / 1.87 × ✓`.
    pub fn text(&self) -> String {
        format!(
            "{:.2} × / {:.2} ×  {}",
            self.p99,
            self.p999,
            if self.met { "✓" } else { "✗" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(clients: &str) -> Scenario {
        let toml = format!(
            r#"
            seed = 1
            duration_s = 5
            [[region]]
            name = "a"
            client_rtt_ms = 40
            origin_rtt_ms = 10
            {clients}
            [[room]]
            id = 1
            host_region = "a"
            [[viewers]]
            room = 1
            region = "a"
            count = 1
            gifts_per_s = 1
            "#
        );
        Scenario::from_toml(&toml, "t").expect("a valid scenario")
    }

    #[test]
    fn goals_follow_the_kind_of_loss_and_the_round_trip() {
        let bursty = scenario("[region.clients.burst]\np = 0.01\nr = 0.2");
        assert_eq!(
            TailGoal::of(&bursty),
            Some(TailGoal {
                rtt_ms: 50.0,
                p99: Some(1.3),
                p999: 2.0
            })
        );
        let random = scenario("clients = { loss = 0.05 }");
        let goal = TailGoal::of(&random).expect("a goal");
        assert_eq!((goal.p99, goal.p999), (None, 1.5));
        assert_eq!(goal.text(), "— / ≤ 1.5 ×");
        assert_eq!(TailGoal::of(&scenario("")), None, "a clean path has none");
    }
}
