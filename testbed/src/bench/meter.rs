//! One phase's resources: each process's CPU from `/proc`, the machine's
//! softirq time and UDP counters, between a start and a finish.

use std::time::{Duration, Instant};

use super::sys::{self, MachineCpu, UdpCounters};

/// Resources used during one phase.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// Its name.
    pub name: String,
    /// How long it took.
    pub wall: Duration,
    /// CPU time per process, in the report's process order.
    pub cpu: Vec<Duration>,
    /// The machine's interrupt and softirq time.
    pub softirq: Duration,
    /// The machine's UDP counters.
    pub udp: UdpCounters,
}

impl Phase {
    /// Process `i`'s cores on average over the phase.
    pub fn cores(&self, i: usize) -> Option<f64> {
        let cpu = self.cpu.get(i)?;
        (!self.wall.is_zero()).then(|| cpu.as_secs_f64() / self.wall.as_secs_f64())
    }
}

/// Takes the readings a [`Phase`] is made of.
pub(crate) struct Meter {
    at: Instant,
    cpu: Vec<Duration>,
    machine: MachineCpu,
    udp: UdpCounters,
}

impl Meter {
    /// Start reading the processes `pids`.
    pub(crate) fn start(pids: &[u32]) -> Meter {
        Meter {
            at: Instant::now(),
            cpu: pids.iter().map(|p| sys::sample(*p).cpu).collect(),
            machine: MachineCpu::now().unwrap_or_default(),
            udp: UdpCounters::now().unwrap_or_default(),
        }
    }

    /// The phase `name`, from the start to now.
    pub(crate) fn finish(self, name: impl Into<String>, pids: &[u32]) -> Phase {
        let machine = MachineCpu::now().unwrap_or_default().since(&self.machine);
        Phase {
            name: name.into(),
            wall: self.at.elapsed(),
            cpu: pids
                .iter()
                .zip(&self.cpu)
                .map(|(p, before)| sys::sample(*p).cpu.saturating_sub(*before))
                .collect(),
            softirq: machine.softirq,
            udp: UdpCounters::now().unwrap_or_default().since(&self.udp),
        }
    }
}
