//! The lease bucket: a JetStream key-value bucket, key `room.<id>`, value
//! a JSON [`Claim`]. It executes a [`lease::Command`](super::lease::Command)
//! and says what came of it, for the lease state machine.

use async_nats::connection::State;
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::{stream, Context};
use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::StreamExt;
use protocol::RoomId;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::config::Config;
use super::error::Error;
pub use super::lease::Claim;
use super::lease::{Command, Seen};
use super::members::Listed;

/// What came of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A read's answer: feed [`Lease::handle_read`](super::lease::Lease::handle_read).
    Read(Seen),
    /// Written (or deleted) at this revision: `handle_written`.
    Written(u64),
    /// Refused (the key is not at the revision expected): `handle_refused`.
    Refused,
    /// No answer, or an error: `handle_failed`.
    Failed(String),
}

/// The room leases.
#[derive(Clone)]
pub struct Placement {
    kv: kv::Store,
    /// The connection the bucket is reached over (for
    /// [`Placement::connected`]).
    client: async_nats::Client,
    /// The configured blind hold of the node lease ([`Config::blind_hold`]).
    blind_hold: Duration,
    /// Set when a request to the bucket failed, cleared when a write was
    /// answered (shared by the clones): while set, listings fail at once.
    silent: Arc<AtomicBool>,
}

impl Placement {
    /// Open (or create) the bucket: history 1, `replicas` copies, no
    /// `max_age` (a room's claim is written once and must stay while its
    /// holder's node lease lives, however long).
    pub async fn open(js: &Context, config: &Config) -> Result<Placement, Error> {
        let setup = |e: &dyn std::fmt::Display| Error::Setup {
            what: format!("bucket {}", config.bucket),
            reason: e.to_string(),
        };
        if js.get_key_value(config.bucket.as_str()).await.is_err() {
            // The bucket's stream, made the way the client's own
            // `create_key_value` makes it, which first asks for account
            // information that a 2.9 server answers in a shape this client
            // no longer reads.
            js.get_or_create_stream(stream::Config {
                name: format!("KV_{}", config.bucket),
                subjects: vec![format!("$KV.{}.>", config.bucket)],
                max_messages_per_subject: 1,
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(|e| setup(&e))?;
        }
        let kv = (js.get_key_value(config.bucket.as_str()).await).map_err(|e| setup(&e))?;
        Ok(Placement {
            kv,
            client: js.client(),
            blind_hold: config.blind_hold,
            silent: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Whether this node's connection to NATS is up now. A request that
    /// failed without an answer while it is up met a silent bucket (its
    /// stream electing a leader), not a node cut off: see
    /// [`Lease::handle_unanswered`](super::lease::Lease::handle_unanswered).
    /// A connection dead without a word is noticed within about three ping
    /// intervals (`RoomLog::connect` sets them from the lease's ttl).
    pub fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// How long the node lease may be kept past its validity while the
    /// bucket is silent and the connection up ([`Config::blind_hold`]).
    pub fn blind_hold(&self) -> Duration {
        self.blind_hold
    }

    /// The key of `room`'s lease.
    pub fn key(room: RoomId) -> String {
        format!("room.{}", room.0)
    }

    /// The key of node `node`'s own lease (its membership).
    pub fn node_key(node: &str) -> String {
        format!("node.{node}")
    }

    /// Execute one lease command for `room`.
    pub async fn execute(&self, room: RoomId, command: Command) -> Outcome {
        self.execute_key(Placement::key(room), command).await
    }

    /// Every node lease in the bucket now: each node's name, its key's
    /// revision and its lease's epoch (for [`Members`](super::members::Members)).
    pub async fn nodes(&self) -> Result<Vec<Listed>, Error> {
        let names = self.keys_under("node.").await?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Outcome::Read(Seen::Held { claim, revision }) =
                (self.execute_key(Placement::node_key(&name), Command::Read)).await
            {
                out.push(Listed {
                    node: name,
                    revision,
                    epoch: claim.epoch.unwrap_or(revision),
                });
            }
        }
        Ok(out)
    }

    /// The node leases of `names` now (one read each, all at once; a node
    /// whose key is gone is left out): what the keeper reads between full
    /// listings, which cost a pass over every key of the bucket.
    pub async fn node_leases(&self, names: Vec<String>) -> Result<Vec<Listed>, Error> {
        let reads = names.into_iter().map(|name| async move {
            let outcome = (self.execute_key(Placement::node_key(&name), Command::Read)).await;
            (name, outcome)
        });
        let mut out = Vec::new();
        for (name, outcome) in join_all(reads).await {
            match outcome {
                Outcome::Read(Seen::Held { claim, revision }) => out.push(Listed {
                    node: name,
                    revision,
                    epoch: claim.epoch.unwrap_or(revision),
                }),
                Outcome::Read(Seen::Absent) => {}
                Outcome::Failed(why) => return Err(Error::Bucket(why)),
                Outcome::Written(_) | Outcome::Refused => {}
            }
        }
        Ok(out)
    }

    /// The rooms named by the keys under `prefix` (`room.`, `pin.`).
    async fn rooms_under(&self, prefix: &str) -> Result<Vec<RoomId>, Error> {
        let keys = self.keys_under(prefix).await?;
        Ok(keys
            .iter()
            .filter_map(|k| k.parse().ok())
            .map(RoomId)
            .collect())
    }

    /// Every room lease in the bucket now: room, holder, revision.
    pub async fn rooms(&self) -> Result<Vec<(RoomId, Claim, u64)>, Error> {
        let rooms = self.rooms_under("room.").await?;
        // Read a few dozen at once: one at a time, 200 rooms' round trips
        // held the node's driver for too long.
        let reads = futures_util::stream::iter(rooms)
            .map(|room| async move { (room, self.execute(room, Command::Read).await) })
            .buffer_unordered(LIST_READS_AT_ONCE)
            .collect::<Vec<_>>()
            .await;
        let mut out = Vec::with_capacity(reads.len());
        for (room, read) in reads {
            if let Outcome::Read(Seen::Held { claim, revision }) = read {
                out.push((room, claim, revision));
            }
        }
        out.sort_by_key(|(room, _, _)| *room);
        Ok(out)
    }

    /// The keys of the bucket starting with `prefix` (`node.`, `room.`,
    /// `pin.`), that prefix stripped; a deleted key may be among them (its
    /// read then finds it absent). From the bucket stream's subjects (a
    /// stream info request, paged), not the client's `keys()`: that one
    /// runs a consumer which waits for ever when a key is written while it
    /// lists (`max_messages_per_subject` 1 drops the message it counted
    /// on), as the node lease is, every quarter of a lease. Bounded by the
    /// bucket's size; each page waits at most the request timeout.
    ///
    /// While the bucket is silent (a request failed since the last write
    /// was answered: its stream is electing a leader) it fails at once instead of
    /// waiting out the request timeout, which would hold up its caller
    /// (the node's driver, serving every room) for nothing; the node
    /// lease's renewals, retried every `margin / 2`, find the bucket back.
    async fn keys_under(&self, prefix: &str) -> Result<Vec<String>, Error> {
        if self.silent.load(Ordering::Relaxed) {
            return Err(Error::Bucket(
                "silent (its last request went unanswered)".into(),
            ));
        }
        let failed = |e: &dyn std::fmt::Display| {
            self.silent.store(true, Ordering::Relaxed);
            Error::Bucket(e.to_string())
        };
        let filter = format!("{}{prefix}>", self.kv.prefix);
        let mut subjects =
            (self.kv.stream.info_with_subjects(&filter).await).map_err(|e| failed(&e))?;
        let mut keys = Vec::new();
        while let Some(subject) = subjects.next().await {
            let (subject, _) = subject.map_err(|e| failed(&e))?;
            if let Some(key) = subject.strip_prefix(&self.kv.prefix) {
                keys.extend(key.strip_prefix(prefix).map(str::to_owned));
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// The key pinning `room` (a PK battle's invited room) to a partner.
    pub fn pin_key(room: RoomId) -> String {
        format!("pin.{}", room.0)
    }

    /// Every pin in the bucket now: invited room → inviter's room.
    pub async fn pins(&self) -> Result<Vec<(RoomId, RoomId)>, Error> {
        let failed = |e: &dyn std::fmt::Display| Error::Bucket(e.to_string());
        let rooms = self.rooms_under("pin.").await?;
        let mut out = Vec::with_capacity(rooms.len());
        for room in rooms {
            let value = self.kv.get(Placement::pin_key(room)).await;
            let value = value.map_err(|e| failed(&e))?;
            let to = value.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok());
            if let Some(to) = to {
                out.push((room, RoomId(to)));
            }
        }
        Ok(out)
    }

    /// Pin `room` to `to` (both live on `to`'s node from now on).
    pub async fn pin(&self, room: RoomId, to: RoomId) -> Result<(), Error> {
        let value = Bytes::from(to.0.to_string());
        (self.kv.put(Placement::pin_key(room), value).await)
            .map(|_| ())
            .map_err(|e| Error::Bucket(e.to_string()))
    }

    /// Let `room` be placed on its own again.
    pub async fn unpin(&self, room: RoomId) -> Result<(), Error> {
        (self.kv.delete(Placement::pin_key(room)).await).map_err(|e| Error::Bucket(e.to_string()))
    }

    /// The pins as they change from now on (a watch on `pin.>`): read each
    /// with [`Placement::pin_change`].
    pub async fn watch_pins(&self) -> Result<kv::Watch, Error> {
        (self.kv.watch("pin.>").await).map_err(|e| Error::Bucket(e.to_string()))
    }

    /// What a watched entry says: `room` pinned to `Some(partner)`, or
    /// unpinned (`None`); `None` for any other key.
    pub fn pin_change(entry: &kv::Entry) -> Option<(RoomId, Option<RoomId>)> {
        let room = RoomId(entry.key.strip_prefix("pin.")?.parse().ok()?);
        let to = match entry.operation {
            Operation::Put => Some(RoomId(
                std::str::from_utf8(&entry.value).ok()?.parse().ok()?,
            )),
            Operation::Delete | Operation::Purge => None,
        };
        Some((room, to))
    }

    /// Who holds `room`'s claim now, if anyone.
    pub async fn holder(&self, room: RoomId) -> Option<String> {
        match self.execute(room, Command::Read).await {
            Outcome::Read(Seen::Held { claim, .. }) => Some(claim.node),
            _ => None,
        }
    }

    /// Execute one lease command on the lease at `key` (a room's or a
    /// node's).
    pub async fn execute_key(&self, key: String, command: Command) -> Outcome {
        // A read may be answered by a follower (direct gets): only a write
        // answered shows the bucket's leader back.
        let write = command != Command::Read;
        let outcome = self.execute_unmarked(key, command).await;
        match outcome {
            Outcome::Failed(_) => self.silent.store(true, Ordering::Relaxed),
            _ if write => self.silent.store(false, Ordering::Relaxed),
            _ => {}
        }
        outcome
    }

    async fn execute_unmarked(&self, key: String, command: Command) -> Outcome {
        match command {
            Command::Read => match self.kv.entry(key).await {
                Ok(Some(e)) if e.operation == Operation::Put => {
                    match serde_json::from_slice(&e.value) {
                        Ok(claim) => Outcome::Read(Seen::Held {
                            claim,
                            revision: e.revision,
                        }),
                        Err(err) => Outcome::Failed(format!("undecodable lease: {err}")),
                    }
                }
                // Deleted or purged: free.
                Ok(_) => Outcome::Read(Seen::Absent),
                Err(e) => Outcome::Failed(e.to_string()),
            },
            Command::Create(claim) => match self.kv.create(key, value(&claim)).await {
                Ok(revision) => Outcome::Written(revision),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Outcome::Refused,
                Err(e) => Outcome::Failed(e.to_string()),
            },
            Command::Update { revision, claim } => {
                match self.kv.update(key, value(&claim), revision).await {
                    Ok(revision) => Outcome::Written(revision),
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Outcome::Refused,
                    Err(e) => Outcome::Failed(e.to_string()),
                }
            }
            Command::Release { revision } => {
                match self.kv.delete_expect_revision(key, Some(revision)).await {
                    Ok(()) => Outcome::Written(revision),
                    // async-nats reports a wrong revision here as `Other`
                    // carrying JetStream's code for it.
                    Err(e) if e.to_string().contains(WRONG_LAST_SEQUENCE) => Outcome::Refused,
                    Err(e) => Outcome::Failed(e.to_string()),
                }
            }
        }
    }
}

/// How many keys a listing reads at once.
const LIST_READS_AT_ONCE: usize = 32;

/// JetStream's error code for "wrong last sequence" (a compare-and-set
/// that found the key at another revision).
const WRONG_LAST_SEQUENCE: &str = "10071";

fn value(claim: &Claim) -> Bytes {
    // A struct of a string and an optional integer always serialises.
    Bytes::from(serde_json::to_vec(claim).unwrap_or_default())
}
