//! The Gilbert–Elliott chain's state.

use super::profile::GilbertElliott;
use super::rng::Rng;

/// Where the chain is. It starts Good.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Chain {
    /// `true` while in the Bad state.
    bad: bool,
}

impl Chain {
    /// Steps the chain for one packet, then decides whether that packet is
    /// lost in the new state. Always consumes two draws.
    pub(crate) fn step(&mut self, model: &GilbertElliott, rng: &mut Rng) -> bool {
        let flip = if self.bad { model.r } else { model.p };
        if rng.chance(flip) {
            self.bad = !self.bad;
        }
        let loss = if self.bad {
            model.loss_bad
        } else {
            model.loss_good
        };
        rng.chance(loss)
    }
}
