//! What the attackers' code shares: the bound on paced loops, the usual
//! dialing, the messages several abuses send, and how they send a batch.

use bytes::Bytes;
use protocol::message::{ActionMsg, ClientMsg};
use protocol::{Action, ActionId, GiftId, RoomId, ServerTime};

use tokio::task::JoinSet;

use crate::attack::hostile::{count_answers, Dialing, Session};

/// Upper bound on the ticks of any paced loop (the stop signal ends them
/// long before).
pub(super) const MAX_TICKS: usize = 1_000_000;

pub(super) fn hello_dialing() -> Dialing {
    Dialing {
        hello: true,
        datagrams: true,
    }
}

pub(super) fn join(room: RoomId) -> ClientMsg {
    ClientMsg::Join { room, since: None }
}

pub(super) fn unknown_room(s: &mut Session) -> RoomId {
    RoomId(1_000_000 + s.rng.next_u64() % 1_000_000_000)
}

pub(super) fn gift(s: &Session, n: u64, room: RoomId) -> ClientMsg {
    ClientMsg::Action(ActionMsg {
        id: ActionId {
            session: s.session,
            n,
        },
        room,
        sent_at: ServerTime::ZERO,
        action: Action::Gift {
            gift: GiftId(1),
            count: 1,
        },
    })
}

/// Send `datagrams`, then `frames` on the control stream; `false` as soon
/// as the connection refuses one (the rest is not sent).
pub(super) async fn send_both(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    datagrams: Vec<Bytes>,
    frames: &[u8],
) -> bool {
    for d in datagrams {
        if conn.send_datagram(d).is_err() {
            return false;
        }
    }
    send.write_all(frames).await.is_ok()
}

/// Take the session's control stream and count the relay's answers on it
/// in a task of `tasks` (which ends with them); its sending half, or `None`
/// without a hello.
pub(super) fn answers_counted(
    s: &mut Session,
    tasks: &mut JoinSet<()>,
) -> Option<quinn::SendStream> {
    let (send, recv) = s.control.take()?;
    tasks.spawn(count_answers(s.conn.clone(), recv, s.answers.clone()));
    Some(send)
}
