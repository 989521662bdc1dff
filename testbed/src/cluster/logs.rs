//! Reading every room log back from JetStream after a run: each shard
//! stream (`<stream>_<k>`, subjects `<subject_prefix>.<k>.<room>`) with an
//! ordered consumer from its first message to its last, every message's
//! headers (`Ringside-Node`, `Ringside-Epoch`), store time and
//! [`Entry`](origin::cluster::Entry) (postcard, as the origin wrote it).
//! Bounded: each stream is read up to the last sequence its info gave, and
//! each message is waited for at most [`MESSAGE_WITHIN`]. A stream whose
//! leader died a moment ago answers nothing until it has elected another
//! (JetStream's Raft waits seconds): a failed read is tried again, up to
//! [`TRIES`] times a second apart.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt as _;
use origin::cluster::{HEADER_EPOCH, HEADER_NODE};
use protocol::codec::decode;
use protocol::RoomId;

use super::writers::LogMessage;

/// Longest wait for one message of a stream being read.
pub const MESSAGE_WITHIN: Duration = Duration::from_secs(10);
/// Tries to read one stream.
pub const TRIES: usize = 20;

/// Every message of every room log in the cluster at `urls` (any servers
/// of it) that `config` names (its `stream`, `subject_prefix`, `shards`).
/// A stream that does not exist holds nothing.
pub async fn read_all(
    urls: &[String],
    config: &origin::cluster::Config,
) -> anyhow::Result<Vec<LogMessage>> {
    let client =
        (super::nats::connect(urls).await).context("connecting to NATS to read the room logs")?;
    let js = jetstream::new(client);
    let mut out = Vec::new();
    for k in 0..config.shards.max(1) {
        let name = format!("{}_{k}", config.stream);
        for attempt in 1..=TRIES {
            match read_one(&js, &name).await {
                Ok(messages) => {
                    out.extend(messages);
                    break;
                }
                Err(e) if attempt == TRIES => {
                    return Err(e.context(format!("{TRIES} tries")));
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
    Ok(out)
}

/// Of the room log streams and the placement bucket's stream that
/// `config` names, those whose Raft leader is the server called `server`
/// (`n<i>`), by name: what a server's death pauses until their elections.
/// Each stream's info is asked for once, within [`MESSAGE_WITHIN`]; one
/// that does not answer is left out.
pub async fn led_by(
    urls: &[String],
    config: &origin::cluster::Config,
    server: &str,
) -> anyhow::Result<(Vec<String>, usize)> {
    let client = (super::nats::connect(urls).await).context("connecting to NATS")?;
    let js = jetstream::new(client);
    let mut names: Vec<String> = (0..config.shards.max(1))
        .map(|k| format!("{}_{k}", config.stream))
        .collect();
    names.push(format!("KV_{}", config.bucket));
    let mut led = Vec::new();
    for name in &names {
        let info = tokio::time::timeout(MESSAGE_WITHIN, async {
            js.get_stream(name).await.ok()?.info().await.ok().cloned()
        });
        let leader = info.await.ok().flatten().and_then(|i| i.cluster?.leader);
        if leader.as_deref() == Some(server) {
            led.push(name.clone());
        }
    }
    Ok((led, names.len()))
}

/// Every message of stream `name` (none if it does not exist).
async fn read_one(js: &jetstream::Context, name: &str) -> anyhow::Result<Vec<LogMessage>> {
    let mut out = Vec::new();
    let mut s = match js.get_stream(name).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            return Ok(out);
        }
        Err(e) => return Err(anyhow::anyhow!("stream {name}: {e}")),
    };
    let last = s.info().await.context("stream info")?.state.last_sequence;
    if last > 0 {
        read_stream(&s, name, last, &mut out).await?;
    }
    Ok(out)
}

async fn read_stream(
    s: &stream::Stream,
    name: &str,
    last: u64,
    out: &mut Vec<LogMessage>,
) -> anyhow::Result<()> {
    let c = s
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .with_context(|| format!("a consumer of {name}"))?;
    let mut messages = c.messages().await.context("reading")?;
    // Each message has a greater sequence: at most `last` of them.
    for _ in 0..last {
        let m = tokio::time::timeout(MESSAGE_WITHIN, messages.next())
            .await
            .with_context(|| format!("{name}: no message within {MESSAGE_WITHIN:?}"))?
            .with_context(|| format!("{name} ended before sequence {last}"))?
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let info = m.info().map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let (seq, at_ns) = (info.stream_sequence, info.published.unix_timestamp_nanos());
        let room = (m.subject.as_str().rsplit('.').next())
            .and_then(|r| r.parse().ok())
            .map(RoomId)
            .with_context(|| format!("{name}: subject {} names no room", m.subject))?;
        let header = |h: &str| {
            (m.headers.as_ref())
                .and_then(|hs| hs.get(h))
                .map(|v| v.as_str().to_owned())
        };
        let entry = decode(&m.payload).with_context(|| format!("{name} seq {seq}"))?;
        out.push(LogMessage {
            room,
            seq,
            node: header(HEADER_NODE).unwrap_or_default(),
            epoch: header(HEADER_EPOCH)
                .and_then(|e| e.parse().ok())
                .unwrap_or(0),
            at_ns,
            entry,
        });
        if seq >= last {
            break;
        }
    }
    Ok(())
}
