//! Requests a cluster node parks while it wins their room (a subscription,
//! an action or an open for a room the placement gives this node but that
//! it does not hold yet): bounded in all, per room and in time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use protocol::RoomId;

use super::shared::Input;

/// Most requests parked in all, and per room, while rooms are won.
const PARK_MAX: usize = 8192;
const PARK_ROOM_MAX: usize = 1024;
/// How long a request waits for its room to be won here.
const PARK_FOR: Duration = Duration::from_secs(3);
/// Requests waiting for their room to be won here.
#[derive(Default)]
pub(super) struct Parked {
    by_room: BTreeMap<RoomId, Vec<(Instant, Input)>>,
    count: usize,
}

impl Parked {
    /// Park `input` until `room` is won; `Err` gives it back when full.
    pub(super) fn park(&mut self, now: Instant, room: RoomId, input: Input) -> Result<(), Input> {
        let waiting = self.by_room.entry(room).or_default();
        if self.count >= PARK_MAX || waiting.len() >= PARK_ROOM_MAX {
            return Err(input);
        }
        waiting.push((now + PARK_FOR, input));
        self.count += 1;
        Ok(())
    }

    /// The requests waiting for `rooms`, in arrival order per room.
    pub(super) fn take(&mut self, rooms: &[RoomId]) -> Vec<Input> {
        let mut out = Vec::new();
        for room in rooms {
            if let Some(waiting) = self.by_room.remove(room) {
                self.count -= waiting.len();
                out.extend(waiting.into_iter().map(|(_, i)| i));
            }
        }
        out
    }

    /// The requests that waited too long.
    pub(super) fn expired(&mut self, now: Instant) -> Vec<Input> {
        let mut out = Vec::new();
        for waiting in self.by_room.values_mut() {
            let (gone, kept): (Vec<_>, Vec<_>) = waiting.drain(..).partition(|(t, _)| *t <= now);
            *waiting = kept;
            out.extend(gone.into_iter().map(|(_, i)| i));
        }
        self.by_room.retain(|_, w| !w.is_empty());
        self.count -= out.len();
        out
    }

    pub(super) fn next_expiry(&self) -> Option<Instant> {
        (self.by_room.values())
            .filter_map(|w| w.first().map(|(t, _)| *t))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn open(room: RoomId) -> (Input, oneshot::Receiver<bool>) {
        let (reply, rx) = oneshot::channel();
        (Input::Open { room, reply }, rx)
    }

    fn room_of(input: &Input) -> RoomId {
        match input {
            Input::Open { room, .. } => *room,
            _ => panic!("an open"),
        }
    }

    #[test]
    fn parked_requests_are_bounded_per_room_and_in_time() {
        let mut p = Parked::default();
        let t = Instant::now();
        let (a, b) = (RoomId(1), RoomId(2));
        for _ in 0..PARK_ROOM_MAX {
            assert!(p.park(t, a, open(a).0).is_ok());
        }
        let refused = p.park(t, a, open(a).0).expect_err("room full");
        assert_eq!(room_of(&refused), a);
        assert!(p.park(t, b, open(b).0).is_ok(), "another room still parks");
        assert_eq!(p.next_expiry(), Some(t + PARK_FOR));
        assert!(p
            .expired(t + PARK_FOR - Duration::from_millis(1))
            .is_empty());
        let later = t + Duration::from_millis(10);
        assert!(p.park(later, b, open(b).0).is_ok());
        let won = p.take(&[a]);
        assert_eq!(won.len(), PARK_ROOM_MAX);
        assert!(won.iter().all(|i| room_of(i) == a));
        let gone = p.expired(t + PARK_FOR);
        assert_eq!(gone.len(), 1, "only the one parked at t");
        assert_eq!(p.next_expiry(), Some(later + PARK_FOR));
        assert_eq!(p.take(&[b]).len(), 1);
        assert_eq!((p.count, p.by_room.len()), (0, 0));
    }
}
