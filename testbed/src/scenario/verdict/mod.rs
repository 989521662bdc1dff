//! Judging a run: its figures, its invariants and its release gates.

pub mod analysis;
pub mod gates;
pub mod invariants;
pub mod stats;
