//! Room logs on NATS JetStream: `shards` streams, a room's log one subject
//! in the stream its id hashes to. Appends
//! are fenced with `Nats-Expected-Last-Subject-Sequence` and grouped: the
//! [`Committer`] sends one message per room per commit, all rooms at once,
//! and awaits their acknowledgements together.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{self, DirectGetErrorKind, Stream};
use async_nats::jetstream::{self, Context};
use async_nats::{header, HeaderMap};
use bytes::Bytes;
use futures_util::future::join_all;
use protocol::codec::{decode, encode};
use protocol::RoomId;

use super::config::Config;
use super::entry::Entry;
use super::error::Error;
use crate::rules::Record;
use protocol::placement::score;

/// Header naming the node that wrote a log message.
pub const HEADER_NODE: &str = "Ringside-Node";
/// Header carrying the epoch (lease revision) a log message was written in.
pub const HEADER_EPOCH: &str = "Ringside-Epoch";
/// Header naming, for a battle's records written whole to one room's log,
/// the other rooms whose events they carry and the epoch the writer held
/// each at (`"152=7,..."`): a rebuild takes a partner's copy of a room's
/// events only if it was decided by that room's rightful writer (see
/// [`Logged::decided_since`]).
pub const HEADER_LINKED: &str = "Ringside-Linked";

/// Most tries to fence a room whose log keeps moving under the reader.
const FENCE_TRIES: usize = 8;

/// The streams of room logs.
#[derive(Clone)]
pub struct RoomLog {
    js: Context,
    /// One per shard, in shard order.
    /// (Shared: each append in flight holds the log to check itself.)
    streams: std::sync::Arc<[Stream]>,
    /// Their names.
    names: std::sync::Arc<[String]>,
    prefix: std::sync::Arc<str>,
}

impl RoomLog {
    /// Connect to NATS and open the stream (created if missing: file
    /// storage, `replicas` copies, direct gets allowed, every room's
    /// subject under `subject_prefix`).
    pub async fn connect(config: &Config) -> Result<(RoomLog, Context), Error> {
        let failed = |reason: String| Error::Connect {
            url: config.nats_url.clone(),
            reason,
        };
        let servers = (config.nats_url.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse::<async_nats::ServerAddr>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| failed(e.to_string()))?;
        let client = async_nats::ConnectOptions::new()
            .name(format!("ringside-origin {}", config.node))
            .request_timeout(Some(config.request_timeout))
            // A connection dead without a word (no FIN, no RST) is noticed
            // after about three pings unanswered, ~1.2 s with the default
            // 800 ms lease, not the client's default 60 s pings: until
            // then a silent bucket would pass for an election, and the
            // node lease be kept blind (`Lease::handle_unanswered`).
            .ping_interval((config.lease_ttl / 2).max(Duration::from_millis(100)))
            .connect(servers)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .build(client);
        let log = RoomLog::open(js.clone(), config).await?;
        Ok((log, js))
    }

    /// Open (or create) the streams on an existing JetStream context, one
    /// per shard (`<stream>_<k>`, subjects `<subject_prefix>.<k>.>`).
    pub async fn open(js: Context, config: &Config) -> Result<RoomLog, Error> {
        let shards = config.shards.max(1);
        let (mut streams, mut names) = (Vec::new(), Vec::new());
        for k in 0..shards {
            let name = format!("{}_{k}", config.stream);
            let stream = js
                .get_or_create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![format!("{}.{k}.>", config.subject_prefix)],
                    storage: stream::StorageType::File,
                    num_replicas: config.replicas,
                    allow_direct: true,
                    ..Default::default()
                })
                .await
                .map_err(|e| Error::Setup {
                    what: format!("stream {name}"),
                    reason: e.to_string(),
                })?;
            streams.push(stream);
            names.push(name);
        }
        Ok(RoomLog {
            js,
            streams: streams.into(),
            names: names.into(),
            prefix: config.subject_prefix.as_str().into(),
        })
    }

    /// The shard `room`'s log is in: a stable hash of its id (the same on
    /// every node and build) modulo the number of streams.
    pub fn shard(&self, room: RoomId) -> usize {
        shard_of(room, self.streams.len())
    }

    /// The name of the stream holding `room`'s log.
    pub fn stream_name(&self, room: RoomId) -> &str {
        &self.names[self.shard(room)]
    }

    /// The names of every stream, in shard order.
    pub fn stream_names(&self) -> &[String] {
        &self.names
    }

    fn stream(&self, room: RoomId) -> &Stream {
        &self.streams[self.shard(room)]
    }

    /// The subject of `room`'s log.
    pub fn subject(&self, room: RoomId) -> String {
        format!("{}.{}.{}", self.prefix, self.shard(room), room.0)
    }

    /// The stream sequence of the last message in `room`'s log (0: empty).
    pub async fn last_seq(&self, room: RoomId) -> Result<u64, Error> {
        match self
            .stream(room)
            .direct_get_last_for_subject(self.subject(room))
            .await
        {
            Ok(m) => Ok(m.sequence),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(0),
            Err(e) => Err(request("read", room, e)),
        }
    }

    /// Check that the append at stream sequence `seq` is the first message
    /// of `room`'s log after `expected`: JetStream checks the
    /// expected-last-subject-sequence header before it replicates, and two
    /// concurrent appends with the same expectation can both be accepted
    /// (nats-server#4320, in 2.9 and around leader changes since). One
    /// direct get: a replica that has the append has everything before it.
    /// Anything else in between: [`Error::Fenced`] (this writer was cut off
    /// or raced; its append is to be treated as failed).
    pub async fn follows(&self, room: RoomId, expected: u64, seq: u64) -> Result<(), Error> {
        follows(self.stream(room), self.subject(room), room, expected, seq).await
    }

    /// Every entry of `room`'s log up to the last message a replica knows
    /// of, oldest first, with its stream sequence and writer. Direct gets
    /// only: no round trip through the stream's leader, so it answers while
    /// the JetStream API is electing one. (Reading up to the leader's last
    /// message instead made rooms wait seconds longer after a NATS server's
    /// death and lost no fewer gifts.) A lagging replica gives a shorter
    /// log: good enough for a fence, which expects the last sequence read
    /// and is refused if the log goes on; a replica that stops answering
    /// mid-read is an error, never a shorter log.
    pub async fn read(&self, room: RoomId) -> Result<Vec<Logged>, Error> {
        let last = self.last_seq(room).await?;
        self.read_to(room, last).await
    }

    async fn read_to(&self, room: RoomId, last: u64) -> Result<Vec<Logged>, Error> {
        let subject = self.subject(room);
        let mut out = Vec::new();
        let mut from = 1;
        // Each get returns a message at a later sequence: at most one loop
        // per stream sequence up to `last`.
        while from <= last {
            let m = match (self.stream(room))
                .direct_get_next_for_subject(subject.as_str(), Some(from))
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => {
                    let lag =
                        format!("a replica lags: nothing from #{from}, the leader has #{last}");
                    return Err(request("read", room, lag));
                }
                Err(e) => return Err(request("read", room, e)),
            };
            if m.sequence > last {
                break;
            }
            let entry = decode(&m.payload).map_err(|source| Error::Decode {
                room,
                seq: m.sequence,
                source,
            })?;
            let text = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned());
            out.push(Logged {
                seq: m.sequence,
                node: text(HEADER_NODE).unwrap_or_default(),
                epoch: text(HEADER_EPOCH).and_then(|e| e.parse().ok()).unwrap_or(0),
                linked: text(HEADER_LINKED).map_or_else(Vec::new, |v| parse_linked(&v)),
                entry,
            });
            from = m.sequence + 1;
        }
        Ok(out)
    }

    /// Append `entry` to `room`'s log if its last message is still at
    /// `expected` (0: the log is empty); returns the new message's sequence.
    pub async fn append(
        &self,
        room: RoomId,
        entry: &Entry,
        node: &str,
        epoch: u64,
        expected: u64,
    ) -> Result<u64, Error> {
        let ack = self.send(room, entry, node, epoch, expected, &[]).await?;
        let seq = finish(room, expected, ack.await)?;
        self.follows(room, expected, seq).await?;
        Ok(seq)
    }

    /// Publish without awaiting the acknowledgement.
    async fn send(
        &self,
        room: RoomId,
        entry: &Entry,
        node: &str,
        epoch: u64,
        expected: u64,
        linked: &[(RoomId, u64)],
    ) -> Result<jetstream::context::PublishAckFuture, Error> {
        let payload = Bytes::from(encode(entry).map_err(Error::Encode)?);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected.to_string().as_str(),
        );
        headers.insert(HEADER_NODE, node);
        headers.insert(HEADER_EPOCH, epoch.to_string().as_str());
        if !linked.is_empty() {
            let value: Vec<String> = (linked.iter())
                .map(|(room, epoch)| format!("{}={epoch}", room.0))
                .collect();
            headers.insert(HEADER_LINKED, value.join(",").as_str());
        }
        self.js
            .publish_with_headers(self.subject(room), headers, payload)
            .await
            .map_err(|e| publish_error(room, expected, e))
    }
}

/// `"152=7,153=9"` → `[(152, 7), (153, 9)]`; what does not parse is
/// left out.
fn parse_linked(value: &str) -> Vec<(RoomId, u64)> {
    (value.split(','))
        .filter_map(|pair| {
            let (room, epoch) = pair.split_once('=')?;
            Some((
                RoomId(room.trim().parse().ok()?),
                epoch.trim().parse().ok()?,
            ))
        })
        .collect()
}

/// [`RoomLog::follows`] on `room`'s stream and subject.
async fn follows(
    stream: &Stream,
    subject: String,
    room: RoomId,
    expected: u64,
    seq: u64,
) -> Result<(), Error> {
    // A replica that has the append has everything before it: its answer
    // settles it. One that has not applied it yet (JetStream acknowledges
    // after a quorum; a lagging replica may answer) finds nothing: ask the
    // stream's leader then.
    let direct = stream
        .direct_get_next_for_subject(subject.as_str(), Some(expected + 1))
        .await;
    let first = match direct {
        Ok(m) => m.sequence,
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => {
            let asked = (stream.raw_message_builder())
                .sequence(expected + 1)
                .next_by_subject(subject)
                .send()
                .await;
            asked.map_err(|e| request("check", room, e))?.sequence
        }
        Err(e) => return Err(request("check", room, e)),
    };
    match first {
        f if f == seq => Ok(()),
        f if f < seq => Err(Error::Fenced { room, expected }),
        f => Err(request(
            "check",
            room,
            format!("#{f} read where #{seq} was appended"),
        )),
    }
}

fn finish(
    room: RoomId,
    expected: u64,
    acked: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
) -> Result<u64, Error> {
    acked
        .map(|ack| ack.sequence)
        .map_err(|e| publish_error(room, expected, e))
}

fn publish_error(room: RoomId, expected: u64, e: jetstream::context::PublishError) -> Error {
    match e.kind() {
        PublishErrorKind::WrongLastSequence => Error::Fenced { room, expected },
        _ => request("append", room, e),
    }
}

fn request(op: &'static str, room: RoomId, e: impl std::fmt::Display) -> Error {
    Error::Request {
        op,
        room,
        reason: e.to_string(),
    }
}

/// Read `room`'s log and append `node`'s fence at `epoch` after its last
/// message; returns the fence's sequence and the entries before it.
async fn fence(
    log: &RoomLog,
    node: &str,
    room: RoomId,
    epoch: u64,
) -> Result<(u64, Vec<Entry>), Error> {
    let fence = Entry::Fence {
        node: node.to_owned(),
        epoch,
    };
    for _ in 0..FENCE_TRIES {
        let read = log.read(room).await?;
        // JetStream checks the expected sequence against the log as it is,
        // strays included.
        let expected = read.last().map_or(0, |l| l.seq);
        let entries = super::strays::valid(read);
        // A later epoch in the log: another node won the claim after this
        // one did (this node's view of it is stale). Never fence over it:
        // a room's epochs only grow along its log.
        if let Some(newer) = (entries.iter()).map(|l| l.epoch).find(|e| *e > epoch) {
            return Err(Error::Deposed { room, newer });
        }
        match log.append(room, &fence, node, epoch, expected).await {
            Ok(last) => return Ok((last, entries.into_iter().map(|l| l.entry).collect())),
            // Someone appended between the read and the fence: read again.
            Err(Error::Fenced { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Fenced { room, expected: 0 })
}

/// One message of a room's log, as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    /// Its stream sequence.
    pub seq: u64,
    /// The node that wrote it (header `Ringside-Node`).
    pub node: String,
    /// The epoch it was written in (header `Ringside-Epoch`; 0 if absent).
    pub epoch: u64,
    /// The other rooms whose events it carries, each with the epoch its
    /// writer held that room at (header `Ringside-Linked`).
    pub linked: Vec<(RoomId, u64)>,
    /// What it holds.
    pub entry: Entry,
}

impl Logged {
    /// Whether this message's copy of `room`'s events was decided by a
    /// node writing `room` at `epoch` or later (`None`: at any epoch).
    /// Epochs only grow, so a decision at an earlier one was made by a
    /// writer that had been fenced out since.
    pub fn decided_since(&self, room: RoomId, epoch: Option<u64>) -> bool {
        (self.linked.iter()).any(|(r, e)| *r == room && epoch.is_none_or(|min| *e >= min))
    }
}

/// The shard of `room`'s log among `shards` streams: a stable hash of its
/// id (the same on every node and build) modulo their number.
pub fn shard_of(room: RoomId, shards: usize) -> usize {
    let n = shards.max(1) as u64;
    // The remainder is below the number of streams, a usize.
    usize::try_from(score(room, "shard") % n).unwrap_or(0)
}

/// A room this node writes: its epoch and the sequence its log ends at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Writer {
    epoch: u64,
    last: u64,
}

/// What one room's append in a group commit did.
#[derive(Debug)]
pub struct Appended {
    /// The room.
    pub room: RoomId,
    /// Its records, in the order given.
    pub records: Vec<Record>,
    /// The log message's sequence, or why the room was dropped (its
    /// records are then not durable and must not be acked or published).
    pub result: Result<u64, Error>,
}

/// One append sent, its acknowledgement to come (see
/// [`Committer::start`]). Owns what it needs: it can be awaited anywhere.
pub struct InFlight {
    /// The room.
    pub room: RoomId,
    /// The epoch it was written in.
    pub epoch: u64,
    /// The sequence it must follow.
    pub expected: u64,
    ack: jetstream::context::PublishAckFuture,
    /// The log, to check the append.
    log: RoomLog,
}

impl InFlight {
    /// Wait for JetStream's answer (bounded by the client's request
    /// timeout) and check that the append follows what it expected
    /// ([`RoomLog::follows`]): the message's sequence, or why the append
    /// failed (or may have: its outcome is then unknown).
    pub async fn wait(self) -> Result<u64, Error> {
        let seq = finish(self.room, self.expected, self.ack.await)?;
        self.log.follows(self.room, self.expected, seq).await?;
        Ok(seq)
    }
}

/// This node's writers: fences rooms it won, appends group commits.
pub struct Committer {
    log: RoomLog,
    node: String,
    writers: BTreeMap<RoomId, Writer>,
}

impl Committer {
    /// A committer for node `node`, writing no room yet.
    pub fn new(log: RoomLog, node: impl Into<String>) -> Committer {
        Committer {
            log,
            node: node.into(),
            writers: BTreeMap::new(),
        }
    }

    /// The log it writes to.
    pub fn log(&self) -> &RoomLog {
        &self.log
    }

    /// The rooms other than `room` whose events `records` carry, each with
    /// the epoch this node writes it at (a room it does not write is left
    /// out: its events here were decided by no rightful writer).
    pub fn linked(&self, room: RoomId, records: &[Record]) -> Vec<(RoomId, u64)> {
        let mut out: Vec<(RoomId, u64)> = Vec::new();
        for (r, _) in records.iter().flat_map(|rec| rec.events.iter()) {
            if *r == room || out.iter().any(|(o, _)| o == r) {
                continue;
            }
            if let Some(w) = self.writers.get(r) {
                out.push((*r, w.epoch));
            }
        }
        out
    }

    /// The rooms this node writes.
    pub fn rooms(&self) -> impl Iterator<Item = RoomId> + '_ {
        self.writers.keys().copied()
    }

    /// This node won `room`'s lease at `epoch`: read its log, fence it, and
    /// return what it held before the fence (to rebuild the room from).
    /// From now on no earlier owner can append.
    pub async fn acquire(&mut self, room: RoomId, epoch: u64) -> Result<Vec<Entry>, Error> {
        let mut done = self.acquire_all(vec![(room, epoch)]).await;
        done.pop()
            .map_or(Err(Error::Fenced { room, expected: 0 }), |(_, r)| r)
    }

    /// [`Committer::acquire`] for several rooms at once: their reads and
    /// fences run concurrently (a node taking over a dead node's rooms
    /// fences them all in about the time of one).
    pub async fn acquire_all(
        &mut self,
        rooms: Vec<(RoomId, u64)>,
    ) -> Vec<(RoomId, Result<Vec<Entry>, Error>)> {
        for (room, _) in &rooms {
            self.writers.remove(room);
        }
        let (log, node) = (&self.log, self.node.as_str());
        let fenced = join_all(rooms.into_iter().map(|(room, epoch)| async move {
            (room, epoch, fence(log, node, room, epoch).await)
        }))
        .await;
        let mut out = Vec::with_capacity(fenced.len());
        for (room, epoch, result) in fenced {
            out.push((
                room,
                result.map(|(last, entries)| {
                    self.writers.insert(room, Writer { epoch, last });
                    entries
                }),
            ));
        }
        out
    }

    /// Stop writing `room` (its lease is gone or handed over).
    pub fn drop_room(&mut self, room: RoomId) {
        self.writers.remove(&room);
    }

    /// Send one append of `room`'s records (after its last append, which
    /// must be acknowledged already) without waiting for JetStream's
    /// acknowledgement: await [`InFlight::wait`] for it (on a task of its
    /// own if need be), then report it with [`Committer::complete`].
    /// `linked`: the other rooms whose events the records carry, with the
    /// epoch this node wrote each at when they were decided
    /// ([`Committer::linked`] then).
    pub async fn start(
        &mut self,
        room: RoomId,
        records: Vec<Record>,
        linked: &[(RoomId, u64)],
    ) -> Result<InFlight, Error> {
        let w = (self.writers.get(&room).copied()).ok_or(Error::NotOwner(room))?;
        let entry = Entry::Records(records);
        let ack = (self.log)
            .send(room, &entry, &self.node, w.epoch, w.last, linked)
            .await;
        match ack {
            Ok(ack) => Ok(InFlight {
                log: self.log.clone(),
                room,
                epoch: w.epoch,
                expected: w.last,
                ack,
            }),
            Err(e) => {
                self.writers.remove(&room);
                Err(e)
            }
        }
    }

    /// An append [`Committer::start`]ed for `room` at `epoch` after
    /// `expected` ended with `result`: the room's next append follows it,
    /// or (failed) the room is no longer written here. Ignored if the room
    /// was dropped or won again since.
    pub fn complete(
        &mut self,
        room: RoomId,
        epoch: u64,
        expected: u64,
        result: &Result<u64, Error>,
    ) {
        let Some(w) = self.writers.get_mut(&room) else {
            return;
        };
        if w.epoch != epoch || w.last != expected {
            return;
        }
        match result {
            Ok(seq) => w.last = *seq,
            Err(_) => {
                self.writers.remove(&room);
            }
        }
    }

    /// Group commit: one message per room holding its records (in order),
    /// all rooms' publishes sent before any acknowledgement is awaited. A
    /// room whose append fails is dropped (fenced: another node owns it;
    /// a failed request: the outcome is unknown, so it must be rebuilt
    /// before it is served again); the others are unaffected.
    pub async fn commit(&mut self, records: Vec<(RoomId, Record)>) -> Vec<Appended> {
        let mut by_room: Vec<(RoomId, Vec<Record>)> = Vec::new();
        for (room, record) in records {
            match by_room.iter_mut().find(|(r, _)| *r == room) {
                Some((_, v)) => v.push(record),
                None => by_room.push((room, vec![record])),
            }
        }
        let mut sent = Vec::with_capacity(by_room.len());
        for (room, records) in by_room {
            let Some(w) = self.writers.get(&room).copied() else {
                sent.push((room, records, Err(Error::NotOwner(room)), 0));
                continue;
            };
            let linked = self.linked(room, &records);
            let entry = Entry::Records(records);
            let ack = self
                .log
                .send(room, &entry, &self.node, w.epoch, w.last, &linked)
                .await;
            let records = match entry {
                Entry::Records(records) => records,
                Entry::Fence { .. } => Vec::new(),
            };
            sent.push((room, records, ack, w.last));
        }
        let acks = join_all(
            sent.into_iter()
                .map(|(room, records, ack, expected)| async move {
                    let result = match ack {
                        Ok(ack) => finish(room, expected, ack.await),
                        Err(e) => Err(e),
                    };
                    Appended {
                        room,
                        records,
                        result,
                    }
                }),
        )
        .await;
        for a in &acks {
            match a.result {
                Ok(seq) => {
                    if let Some(w) = self.writers.get_mut(&a.room) {
                        w.last = seq;
                    }
                }
                Err(_) => {
                    self.writers.remove(&a.room);
                }
            }
        }
        acks
    }
}
