//! Scenarios: topologies behind impaired links, timelines, invariants and
//! reports (being written).
