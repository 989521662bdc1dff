//! An upstream link: one QUIC connection to the origin carrying every room
//! (embedded mode), or to one origin node carrying the rooms routed to it
//! (cluster mode: one link per node, see `cluster/mod.rs`). It reconnects
//! by itself, with exponential backoff and jitter so that the relays of a
//! region do not stampede a restarted origin, and it keeps the estimate of
//! origin time ([`OriginEstimate`]) fresh (in cluster mode, one link at a
//! time does: the nodes keep their clocks in step).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use net::token::TokenKey;
use net::{self, NetError};
use protocol::codec;
use protocol::message::{DownMsg, UpMsg};
use protocol::time::{ClockSample, OffsetEstimator};
use tokio::sync::{mpsc, watch};

use crate::hub_driver::HubIn;
use crate::origin_estimate::OriginEstimate;

/// What the links tell cluster mode's router (in `cluster/mod.rs`).
pub(crate) enum RouterIn {
    /// Link `link` is up to the node that welcomed it as `name`.
    Up { link: usize, name: String },
    /// Link `link` is down.
    Down { link: usize },
    /// A routing answer (`Moved`, `Redirect`) from link `link`'s node.
    Answer { link: usize, msg: DownMsg },
}

/// No link sets the origin estimate (see [`Link::clock`]).
pub(crate) const NO_CLOCK: usize = usize::MAX;

/// What the link needs.
pub(crate) struct Link {
    /// The relay's name.
    pub name: String,
    /// This link's number among the relay's links (0 in embedded mode).
    pub index: usize,
    pub endpoint: quinn::Endpoint,
    /// Whom to trust as the origin, refreshed from its file at each connect
    /// (shared by every link of a cluster).
    pub trust: Arc<std::sync::Mutex<Trust>>,
    /// Origin-facing transport settings (to rebuild the client config).
    pub tuning: net::Tuning,
    pub origin: std::net::SocketAddr,
    pub server_name: String,
    pub cluster: TokenKey,
    /// The estimate of origin time this link keeps fresh.
    pub origin_estimate: OriginEstimate,
    /// The index of the link whose pongs set `origin_estimate` (the first
    /// to connect keeps it while it is up), or [`NO_CLOCK`].
    pub clock: Arc<AtomicUsize>,
    pub hub: mpsc::Sender<HubIn>,
    /// Cluster mode: the router, told when this link is up or down and of
    /// the node's routing answers (`Moved`, `Redirect`); everything else
    /// goes to the hub as in embedded mode.
    pub router: Option<mpsc::Sender<RouterIn>>,
    pub metrics: crate::metrics::Metrics,
}

impl Link {
    /// The link is up to the node named `origin`: tell the hub (embedded)
    /// or the router (cluster). `false` when the relay is stopping.
    async fn report_up(&self, origin: String) -> bool {
        match &self.router {
            Some(router) => (router.send(RouterIn::Up {
                link: self.index,
                name: origin,
            }))
            .await
            .is_ok(),
            None => {
                self.metrics.upstream_connected.set(1);
                self.metrics.origin_links_up.set(1);
                self.hub.send(HubIn::UpstreamUp).await.is_ok()
            }
        }
    }

    /// The link is down. `false` when the relay is stopping.
    async fn report_down(&self) -> bool {
        let _ = (self.clock).compare_exchange(
            self.index,
            NO_CLOCK,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        match &self.router {
            Some(router) => (router.send(RouterIn::Down { link: self.index }))
                .await
                .is_ok(),
            None => {
                self.metrics.upstream_connected.set(0);
                self.metrics.origin_links_up.set(0);
                self.hub.send(HubIn::UpstreamDown).await.is_ok()
            }
        }
    }

    /// Whether this link's pongs set the origin estimate (claiming it if
    /// no link does).
    fn keeps_clock(&self) -> bool {
        let held = (self.clock).compare_exchange(
            NO_CLOCK,
            self.index,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        match held {
            Ok(_) => true,
            Err(owner) => owner == self.index,
        }
    }
}

/// The origin's trust roots and the file they came from: a restarted origin
/// may present a new certificate (a regenerated local one), and the link
/// picks it up at its next connection attempt.
pub(crate) struct Trust {
    /// The origin's certificate file (`origin_cert`), if any.
    pub file: Option<std::path::PathBuf>,
    /// The file's content when `client_config` was built from it.
    pub pem: Option<Vec<u8>>,
    /// The client configuration trusting it.
    pub client_config: quinn::ClientConfig,
}

impl Trust {
    /// The client configuration to connect with: rebuilt first if the trust
    /// file's content changed since it was last read. A file that cannot be
    /// read or parsed leaves the current configuration in place.
    fn refresh(&mut self, tuning: &net::Tuning, relay: &str) -> quinn::ClientConfig {
        if let Some(path) = &self.file {
            match std::fs::read(path) {
                Ok(pem) if self.pem.as_ref() != Some(&pem) => {
                    let rebuilt = std::str::from_utf8(&pem)
                        .map_err(|e| NetError::Tls(e.to_string()))
                        .and_then(net::parse_certs)
                        .and_then(|roots| {
                            net::client_config(&roots, protocol::message::ALPN_RELAY, tuning)
                        });
                    match rebuilt {
                        Ok(config) => {
                            tracing::info!(relay, file = %path.display(), "origin certificate changed; trusting the new one");
                            self.client_config = config;
                            self.pem = Some(pem);
                        }
                        Err(e) => {
                            tracing::warn!(relay, file = %path.display(), error = %e, "unusable origin certificate file; keeping the old one");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(relay, file = %path.display(), error = %e, "origin certificate file unreadable; keeping the old one");
                }
            }
        }
        self.client_config.clone()
    }
}

/// Backoff between reconnection attempts: doubles from `min` to `max`, each
/// wait drawn uniformly from its upper half (jitter).
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    seed: u64,
}

impl Backoff {
    /// A backoff from `min` to `max`; `seed` decorrelates relays.
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            min,
            max,
            next: min,
            seed: seed | 1,
        }
    }

    /// The next wait.
    pub fn next_wait(&mut self) -> Duration {
        // xorshift64: decorrelation, not cryptography.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let full = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = full / 2;
        half + Duration::from_nanos(self.seed % (half.as_nanos() as u64 + 1))
    }

    /// Start again from `min` (after a connection that worked).
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

pub(crate) async fn run(
    link: Arc<Link>,
    mut up: mpsc::Receiver<UpMsg>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(
        Duration::from_millis(50),
        Duration::from_secs(3),
        link.origin_estimate.micros(Instant::now())
            ^ link.name.len() as u64
            ^ 0x9e37_79b9_7f4a_7c15,
    );
    let mut links = 0u64;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let started = Instant::now();
        match connect(&link).await {
            Ok((conn, send, recv, origin)) => {
                tracing::info!(relay = %link.name, origin = %link.origin, node = %origin, "upstream connected");
                // Whatever the old link did not carry is stale: the hub
                // reconciles the new link from its own state on `UpstreamUp`
                // (it sends nothing while it believes the link is down; in
                // cluster mode the router re-homes a lost link's rooms).
                while up.try_recv().is_ok() {}
                if !link.report_up(origin).await {
                    return;
                }
                if links > 0 {
                    link.metrics.upstream_reconnects.inc();
                }
                links += 1;
                let ended = serve(&link, &conn, send, recv, &mut up, &mut shutdown).await;
                if *shutdown.borrow() {
                    tracing::debug!(relay = %link.name, "upstream closed: relay stopping");
                } else {
                    tracing::warn!(relay = %link.name, reason = %ended, "upstream lost");
                }
                if !link.report_down().await {
                    return;
                }
                if started.elapsed() > Duration::from_secs(5) {
                    backoff.reset();
                }
            }
            Err(e) => tracing::debug!(relay = %link.name, error = %e, "upstream connect failed"),
        }
        let wait = backoff.next_wait();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// A connected link: the connection, its control stream both ways, and
/// the origin node's name (its `Welcome`).
type Connected = (
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
    String,
);

async fn connect(link: &Link) -> Result<Connected, NetError> {
    let client_config = match link.trust.lock() {
        Ok(mut trust) => trust.refresh(&link.tuning, &link.name),
        // A panic while refreshing left the last good configuration.
        Err(poisoned) => poisoned.into_inner().client_config.clone(),
    };
    let connecting = link
        .endpoint
        .connect_with(client_config, link.origin, &link.server_name)?;
    let conn = tokio::time::timeout(Duration::from_secs(3), connecting)
        .await
        .map_err(|_| NetError::Io(std::io::Error::other("handshake timed out")))??;
    // Cluster mode routes by the name the node welcomed us with.
    let (send, recv, origin) =
        net::handshake::relay_hello_named(&conn, &link.name, &link.cluster, Duration::from_secs(3))
            .await?;
    Ok((conn, send, recv, origin))
}

/// Carry messages both ways until the connection fails. Returns why.
async fn serve(
    link: &Link,
    conn: &quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    up: &mut mpsc::Receiver<UpMsg>,
    shutdown: &mut watch::Receiver<bool>,
) -> String {
    let (pong_tx, mut pong_rx) = mpsc::channel::<(u64, protocol::ServerTime, u64)>(64);
    let hub = link.hub.clone();
    let router = link.router.clone();
    let index = link.index;
    let origin_estimate = link.origin_estimate.clone();
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        loop {
            match net::read_frame::<DownMsg>(&mut recv, &mut buf).await {
                Ok(Some(DownMsg::Pong { nonce, origin_time })) => {
                    let _ = pong_tx.try_send((
                        nonce,
                        origin_time,
                        origin_estimate.micros(Instant::now()),
                    ));
                }
                Ok(Some(
                    msg @ (DownMsg::Moved { .. }
                    | DownMsg::Redirect { .. }
                    | DownMsg::Serving { .. }),
                )) => {
                    let Some(router) = &router else { continue };
                    if router
                        .send(RouterIn::Answer { link: index, msg })
                        .await
                        .is_err()
                    {
                        return "relay stopping".to_string();
                    }
                }
                Ok(Some(msg)) => {
                    if hub.send(HubIn::Down(msg)).await.is_err() {
                        return "relay stopping".to_string();
                    }
                }
                Ok(None) => return "origin finished the stream".to_string(),
                Err(e) => return e.to_string(),
            }
        }
    });
    let mut estimator = OffsetEstimator::new(16);
    let mut pings: std::collections::VecDeque<(u64, u64)> = Default::default();
    let mut nonce = 0u64;
    let mut ping = tokio::time::interval(Duration::from_millis(200));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reader = reader;
    let mut buf = BytesMut::new();
    let mut path = crate::metrics::PathStats::default();
    let why = loop {
        tokio::select! {
            r = &mut reader => break r.unwrap_or_else(|e| e.to_string()),
            msg = up.recv() => {
                let Some(msg) = msg else { break "relay stopping".into() };
                buf.clear();
                if codec::write_frame(&msg, &mut buf).is_err() {
                    continue;
                }
                // Coalesce whatever else is waiting into the same write.
                while buf.len() < 256 * 1024 {
                    match up.try_recv() {
                        Ok(m) => { let _ = codec::write_frame(&m, &mut buf); }
                        Err(_) => break,
                    }
                }
                if let Err(e) = send.write_all(&buf).await {
                    break e.to_string();
                }
            }
            _ = ping.tick() => {
                path.update(&link.metrics, "upstream", &conn.stats());
                nonce += 1;
                pings.push_back((nonce, link.origin_estimate.micros(Instant::now())));
                if pings.len() > 32 { pings.pop_front(); }
                buf.clear();
                let _ = codec::write_frame(&UpMsg::Ping { nonce }, &mut buf);
                if let Err(e) = send.write_all(&buf).await {
                    break e.to_string();
                }
            }
            Some((n, origin, received)) = pong_rx.recv() => {
                if let Some(&(_, sent)) = pings.iter().find(|(p, _)| *p == n) {
                    estimator.handle_sample(ClockSample { sent, received, origin });
                    if let Some(off) = estimator.offset().filter(|_| link.keeps_clock()) {
                        link.origin_estimate.set_offset(off);
                    }
                }
            }
            _ = shutdown.changed() => break "relay stopping".into(),
        }
    };
    reader.abort();
    path.update(&link.metrics, "upstream", &conn.stats());
    conn.close(0u32.into(), b"relay link closed");
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 42);
        let waits: Vec<Duration> = (0..6).map(|_| b.next_wait()).collect();
        let caps = [100u64, 200, 400, 800, 1000, 1000];
        for (w, cap) in waits.iter().zip(caps) {
            assert!(
                *w >= Duration::from_millis(cap / 2) && *w <= Duration::from_millis(cap),
                "{w:?} vs {cap}"
            );
        }
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(100));
    }

    #[test]
    fn two_relays_do_not_retry_in_step() {
        let mut a = Backoff::new(Duration::from_millis(100), Duration::from_secs(5), 1);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5), 2);
        let same = (0..8).filter(|_| a.next_wait() == b.next_wait()).count();
        assert!(same < 2);
    }
}
