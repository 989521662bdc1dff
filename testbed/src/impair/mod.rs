//! The impairment engine: decides, for each packet of one direction of a
//! link, whether it is dropped and when it is released.
//!
//! Pure code: no sockets, no tasks, no clock. The caller passes `now` (time
//! since the link started) with every packet and gets a [`Verdict`] back;
//! randomness comes from a seeded [`Rng`], so the same seed, profile and
//! arrivals give the same verdicts on every run. The UDP proxy in
//! [`crate::link`] is one driver; a simulation can be another.
//!
//! # Using it
//!
//! ```
//! use std::time::Duration;
//! use testbed::impair::{Impairment, Profile, Verdict};
//!
//! let profile = Profile { loss: 0.05, delay_ms: 20.0, jitter_ms: 5.0, ..Profile::default() };
//! let mut link = Impairment::new(profile, 42).expect("valid profile");
//! match link.handle_packet(Duration::from_millis(3), 1200) {
//!     Verdict::Deliver(d) => for at in d.times() { /* send a copy at `at` */ },
//!     Verdict::Drop(reason) => { /* count it */ }
//! }
//! ```
//!
//! # The pipeline
//!
//! Each packet meets the stages in this order; the first that drops it ends
//! its journey, and later stages neither see it nor draw randomness for it.
//!
//! 1. **blackhole** — dropped if `now` is in a dark period.
//! 2. **burst loss** — the Gilbert–Elliott chain steps once per packet that
//!    gets here.
//! 3. **loss** — independent loss with probability `loss`.
//! 4. **bottleneck** — with a `rate_bps`, the packet waits for the link to be
//!    free and then for its own serialisation time; it is dropped if the
//!    drop-tail queue is full. Its departure is when its last bit has left.
//! 5. **delay and jitter** — release = departure + `delay_ms` + jitter
//!    (clamped so the delay is never negative). Unless `jitter_reorders`,
//!    a release is never earlier than the previous packet's.
//! 6. **reorder** — with probability `reorder`, the release moves
//!    `reorder_delay_ms` later, and the next packets do not wait for it.
//! 7. **duplicate** — with probability `duplicate`, a copy is released
//!    `duplicate_delay_ms` after the original (copies take no bottleneck
//!    time).
//!
//! Each random stage draws from its own stream derived from the seed, so
//! turning on duplication does not change which packets are lost.
//!
//! [`Impairment::set_profile`] changes the profile between two packets; the
//! state (queue contents, Gilbert–Elliott state, order, counters, random
//! streams) carries over. Blackhole windows stay in link time.

mod counters;
mod loss;
mod profile;
mod rate;
pub mod rng;
mod verdict;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use counters::Counters;
pub use profile::{
    Blackhole, GilbertElliott, JitterDistribution, LinkProfile, Profile, ProfileError,
};
pub use rng::Rng;
pub use verdict::{Delivery, Direction, DropReason, Verdict};

use loss::Chain;
use profile::Model;
use rate::Bottleneck;

/// Sub-stream ids for [`rng::derive_seed`], one per random stage.
mod stream {
    /// Independent loss.
    pub(super) const LOSS: u64 = 1;
    /// Gilbert–Elliott chain.
    pub(super) const BURST: u64 = 2;
    /// Jitter.
    pub(super) const JITTER: u64 = 3;
    /// Explicit reordering.
    pub(super) const REORDER: u64 = 4;
    /// Duplication.
    pub(super) const DUPLICATE: u64 = 5;
}

/// The impairment of one direction of a link.
///
/// Feed it packets in arrival order with [`handle_packet`](Self::handle_packet);
/// read what it did with [`counters`](Self::counters); change what it does
/// with [`set_profile`](Self::set_profile).
#[derive(Clone, Debug)]
pub struct Impairment {
    /// The profile as given, for [`profile`](Self::profile).
    profile: Profile,
    /// The same, checked and in engine units.
    model: Model,
    /// The seed the streams were derived from.
    seed: u64,
    /// Random stream of the independent loss stage.
    loss_rng: Rng,
    /// Random stream of the Gilbert–Elliott chain.
    burst_rng: Rng,
    /// Random stream of the jitter stage.
    jitter_rng: Rng,
    /// Random stream of the reorder stage.
    reorder_rng: Rng,
    /// Random stream of the duplicate stage.
    duplicate_rng: Rng,
    /// Gilbert–Elliott state; kept across profile changes.
    chain: Chain,
    /// The rate limiter's queue.
    bottleneck: Bottleneck,
    /// Latest `now` seen; an earlier `now` is treated as this one.
    last_now: Duration,
    /// Latest release of a packet not held back: keep-order releases never
    /// go before it.
    last_release: Duration,
    /// Latest release of any original packet: a release before it overtakes.
    max_release: Duration,
    /// What happened so far.
    counters: Counters,
}

impl Impairment {
    /// An engine for `profile` whose random decisions all follow from `seed`.
    pub fn new(profile: Profile, seed: u64) -> Result<Self, ProfileError> {
        let model = Model::compile(&profile)?;
        let rng = |stream| Rng::new(rng::derive_seed(seed, stream));
        Ok(Self {
            profile,
            model,
            seed,
            loss_rng: rng(stream::LOSS),
            burst_rng: rng(stream::BURST),
            jitter_rng: rng(stream::JITTER),
            reorder_rng: rng(stream::REORDER),
            duplicate_rng: rng(stream::DUPLICATE),
            chain: Chain::default(),
            bottleneck: Bottleneck::default(),
            last_now: Duration::ZERO,
            last_release: Duration::ZERO,
            max_release: Duration::ZERO,
            counters: Counters::default(),
        })
    }

    /// Decides the fate of a packet of `len` bytes arriving at `now`.
    ///
    /// `now` should not go backwards; if it does, the latest `now` seen is
    /// used instead.
    pub fn handle_packet(&mut self, now: Duration, len: usize) -> Verdict {
        let now = now.max(self.last_now);
        self.last_now = now;
        let len = len as u64;
        self.counters.packets_in += 1;
        self.counters.bytes_in += len;

        if self.model.blackhole.is_dark(now) {
            return self.drop(DropReason::Blackhole);
        }
        if let Some(ge) = &self.model.burst {
            if self.chain.step(ge, &mut self.burst_rng) {
                return self.drop(DropReason::BurstLoss);
            }
        }
        if self.model.loss > 0.0 && self.loss_rng.chance(self.model.loss) {
            return self.drop(DropReason::Loss);
        }
        let Some(departs) = self.bottleneck.admit(now, len, self.model.rate) else {
            return self.drop(DropReason::QueueOverflow);
        };

        let mut at = departs + self.delay();
        if self.model.keep_order {
            at = at.max(self.last_release);
        }
        if self.model.reorder > 0.0 && self.reorder_rng.chance(self.model.reorder) {
            at += self.model.reorder_delay;
            self.counters.held_back += 1;
        } else {
            self.last_release = self.last_release.max(at);
        }
        if at < self.max_release {
            self.counters.reordered += 1;
        } else {
            self.max_release = at;
        }
        let copy_at = (self.model.duplicate > 0.0
            && self.duplicate_rng.chance(self.model.duplicate))
        .then(|| at + self.model.duplicate_delay);

        self.counters.delivered += 1;
        self.counters.bytes_delivered += len;
        self.counters.duplicated += u64::from(copy_at.is_some());
        Verdict::Deliver(Delivery { at, copy_at })
    }

    /// Replaces the profile from the next packet on. On error nothing changes.
    pub fn set_profile(&mut self, profile: Profile) -> Result<(), ProfileError> {
        self.model = Model::compile(&profile)?;
        self.profile = profile;
        Ok(())
    }

    /// The current profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The seed given to [`new`](Self::new).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// What the engine did so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Bytes in the bottleneck queue (including the packet on the wire) as of
    /// the last packet.
    pub fn queued_bytes(&self) -> u64 {
        self.bottleneck.queued_bytes()
    }

    /// Counts a drop and builds its verdict.
    fn drop(&mut self, reason: DropReason) -> Verdict {
        self.counters.count_drop(reason);
        Verdict::Drop(reason)
    }

    /// Base delay plus one jitter draw, never negative.
    fn delay(&mut self) -> Duration {
        let jitter = self.model.jitter_ns;
        if jitter == 0.0 {
            return self.model.delay;
        }
        let offset = match self.model.jitter_distribution {
            JitterDistribution::Uniform => (2.0 * self.jitter_rng.uniform() - 1.0) * jitter,
            JitterDistribution::Normal => self.jitter_rng.normal() * jitter,
        };
        let nanos = (self.model.delay.as_nanos() as f64 + offset)
            .max(0.0)
            .round();
        Duration::from_nanos(nanos as u64)
    }
}
