//! Just enough of a relay for the origin's tests: one link (the real
//! relay-to-origin hello, `net::handshake`), frames in and out; and a data
//! directory that cleans up after itself.

#![allow(dead_code)]

use std::time::Duration;

use net::token::TokenKey;
use net::Tuning;
use origin::Origin;
use protocol::message::{ActionMsg, Actor, DownMsg, UpMsg, ALPN_RELAY};
use protocol::room::Grant;
use protocol::{Action, ActionId, Outcome, RoomId, RoomState, SessionId, UserId};

/// A scratch data directory of this test process, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// A fresh, empty `ringside-<name>-<pid>` under the system temp dir.
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("ringside-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One relay link to an origin.
pub struct Link {
    _endpoint: quinn::Endpoint,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: Vec<u8>,
    counter: u64,
}

impl Link {
    /// Connect to `origin` and say hello with a proof signed with `secret`.
    pub async fn connect(origin: &Origin, secret: &str) -> Link {
        let roots = net::parse_certs(&origin.cert_pem()).expect("cert");
        let tuning = Tuning::backbone();
        let client = net::client_config(&roots, ALPN_RELAY, &tuning).expect("client config");
        let mut endpoint =
            net::client_endpoint("127.0.0.1:0".parse().expect("addr"), &tuning).expect("endpoint");
        endpoint.set_default_client_config(client);
        let conn = endpoint
            .connect(origin.addr(), "localhost")
            .expect("connect")
            .await
            .expect("handshake");
        let cluster = TokenKey::new(secret.as_bytes());
        let (send, recv) =
            net::handshake::relay_hello(&conn, "test", &cluster, Duration::from_secs(10))
                .await
                .expect("welcomed");
        Link {
            _endpoint: endpoint,
            send,
            recv,
            buf: Vec::new(),
            counter: 0,
        }
    }

    /// Split into its sending half and a channel of every message down
    /// (read on a task of its own, so waiting on it with a timeout never
    /// cuts a frame in half); the channel ends with the link.
    pub fn into_wire(self) -> Wire {
        let Link {
            _endpoint,
            send,
            mut recv,
            mut buf,
            ..
        } = self;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            // Bounded by the link's life: a read error ends it.
            while let Ok(Some(msg)) = net::read_frame::<DownMsg>(&mut recv, &mut buf).await {
                if tx.send(msg).is_err() {
                    break;
                }
            }
        });
        Wire {
            _endpoint,
            send,
            down: rx,
        }
    }

    /// Send a message up.
    pub async fn up(&mut self, msg: UpMsg) {
        net::write_frame(&mut self.send, &msg).await.expect("write");
    }

    /// The next message down (within 10 s).
    pub async fn down(&mut self) -> DownMsg {
        let next = net::read_frame::<DownMsg>(&mut self.recv, &mut self.buf);
        tokio::time::timeout(Duration::from_secs(10), next)
            .await
            .expect("the origin answers")
            .expect("read")
            .expect("a frame")
    }

    /// Skip messages until `f` picks one (bounded).
    pub async fn until<T>(&mut self, mut f: impl FnMut(&DownMsg) -> Option<T>) -> T {
        for _ in 0..1000 {
            let m = self.down().await;
            if let Some(t) = f(&m) {
                return t;
            }
        }
        panic!("no such message in 1000");
    }

    /// `user` acts in `room`; returns the action's id (not waiting).
    pub async fn send(
        &mut self,
        room: RoomId,
        user: u64,
        grant: Grant,
        action: Action,
    ) -> ActionId {
        self.counter += 1;
        let id = ActionId {
            session: SessionId(user),
            n: self.counter,
        };
        let msg = ActionMsg {
            id,
            room,
            sent_at: protocol::ServerTime(0),
            action,
        };
        let actor = Actor {
            user: UserId(user),
            grant,
        };
        self.up(UpMsg::Action { actor, msg }).await;
        id
    }

    /// The outcome of action `id`.
    pub async fn outcome(&mut self, id: ActionId) -> Outcome {
        self.until(|m| match m {
            DownMsg::Ack { id: i, outcome, .. } if *i == id => Some(*outcome),
            _ => None,
        })
        .await
    }

    /// `user` acts in `room`; returns its outcome.
    pub async fn act(&mut self, room: RoomId, user: u64, grant: Grant, action: Action) -> Outcome {
        let id = self.send(room, user, grant, action).await;
        self.outcome(id).await
    }

    /// Say `user` is online in `room`.
    pub async fn online(&mut self, room: RoomId, user: u64) {
        let user = UserId(user);
        self.up(UpMsg::Presence {
            room,
            user,
            online: true,
        })
        .await;
    }

    /// Follow `room`: its snapshot.
    pub async fn snapshot(&mut self, room: RoomId) -> RoomState {
        self.up(UpMsg::Subscribe {
            room,
            since: None,
            history: None,
        })
        .await;
        self.until(|m| match m {
            DownMsg::Snapshot { room: r, state, .. } if *r == room => Some((**state).clone()),
            _ => None,
        })
        .await
    }
}

/// A link split for waiting with timeouts ([`Link::into_wire`]).
pub struct Wire {
    _endpoint: quinn::Endpoint,
    send: quinn::SendStream,
    down: tokio::sync::mpsc::UnboundedReceiver<DownMsg>,
}

impl Wire {
    /// Send a message up (`false` if the link is gone).
    pub async fn up(&mut self, msg: UpMsg) -> bool {
        net::write_frame(&mut self.send, &msg).await.is_ok()
    }

    /// The next message down within `within`, if any.
    pub async fn next(&mut self, within: Duration) -> Option<DownMsg> {
        tokio::time::timeout(within, self.down.recv())
            .await
            .ok()
            .flatten()
    }

    /// Skip messages until `f` picks one, for at most `within` in all.
    pub async fn until<T>(
        &mut self,
        within: Duration,
        mut f: impl FnMut(&DownMsg) -> Option<T>,
    ) -> Option<T> {
        let end = tokio::time::Instant::now() + within;
        // Bounded by the deadline: each wait is at most what is left.
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            let msg = self.next(left).await?;
            if let Some(t) = f(&msg) {
                return Some(t);
            }
        }
    }
}
