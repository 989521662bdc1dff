//! Cluster mode's driver: one upstream link per origin node (each the
//! embedded mode's link: reconnects, backoff, pings), and the task that
//! owns the [`Router`] — it takes what the hub wants the origin to have,
//! hands each message to its room's node, feeds the router the links' ups
//! and downs and the nodes' routing answers (`Moved`, `Redirect`), and
//! tells the hub when a room moved and when the first link is up or the
//! last one down. Everything else the nodes send goes from each link
//! straight to the hub, as in embedded mode.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::message::{DownMsg, UpMsg};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::hub_driver::{sleep_until, HubIn};
use crate::metrics::Metrics;
use crate::route::{RouteOut, RouteSettings, Router};
use crate::upstream::{self, Link, RouterIn};

#[cfg(test)]
mod tests;

/// Messages waiting for one link (it takes them as fast as its stream
/// does; past this the router waits for it, at most `STALL`).
const LINK_QUEUE: usize = 1 << 12;
/// How long the router waits for a link with a full queue before dropping
/// the message (a link that dead stops being used when it reports down;
/// what it lost is stated again then).
const STALL: Duration = Duration::from_secs(2);
/// Hub messages routed in one round before the outputs go out.
const PER_ROUND: usize = 64;

/// Start one link per address in `origins` (`link` builds each from its
/// index, address and the router's channel) and the router between them
/// and the hub (`from_hub`: what the hub sends upstream).
pub(crate) fn spawn(
    tasks: &mut JoinSet<()>,
    origins: &[SocketAddr],
    link: impl Fn(usize, SocketAddr, mpsc::Sender<RouterIn>) -> Arc<Link>,
    from_hub: mpsc::Receiver<UpMsg>,
    hub: mpsc::Sender<HubIn>,
    metrics: Metrics,
    shutdown: &watch::Receiver<bool>,
) {
    let (events_tx, events) = mpsc::channel(LINK_QUEUE);
    let mut links = Vec::new();
    for (index, addr) in origins.iter().enumerate() {
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        links.push(tx);
        let link = link(index, *addr, events_tx.clone());
        tasks.spawn(upstream::run(link, rx, shutdown.clone()));
    }
    let router = Router::new(RouteSettings::default(), metrics.clone());
    let names = vec![None; links.len()];
    let driver = Driver {
        router,
        names,
        links,
        hub,
        metrics,
    };
    tasks.spawn(driver.run(from_hub, events));
}

/// The router's task state.
struct Driver {
    router: Router,
    /// Each link's node name while it is up.
    names: Vec<Option<String>>,
    links: Vec<mpsc::Sender<UpMsg>>,
    hub: mpsc::Sender<HubIn>,
    metrics: Metrics,
}

impl Driver {
    async fn run(
        mut self,
        mut from_hub: mpsc::Receiver<UpMsg>,
        mut events: mpsc::Receiver<RouterIn>,
    ) {
        loop {
            let wake = self.router.poll_timeout();
            tokio::select! {
                biased;
                event = events.recv() => {
                    let Some(event) = event else { return };
                    self.handle(Instant::now(), event);
                }
                msg = from_hub.recv() => {
                    let Some(msg) = msg else { return };
                    let now = Instant::now();
                    self.router.handle_up(now, msg);
                    for _ in 1..PER_ROUND {
                        match from_hub.try_recv() {
                            Ok(msg) => self.router.handle_up(now, msg),
                            Err(_) => break,
                        }
                    }
                }
                () = sleep_until(wake) => self.router.handle_timeout(Instant::now()),
            }
            if !self.deliver(&mut from_hub).await {
                return;
            }
        }
    }

    fn handle(&mut self, now: Instant, event: RouterIn) {
        match event {
            RouterIn::Up { link, name } => {
                if self
                    .names
                    .iter()
                    .any(|n| n.as_deref() == Some(name.as_str()))
                {
                    tracing::warn!(link, node = %name, "two origin addresses answer as one node; using the first");
                    return;
                }
                if let Some(slot) = self.names.get_mut(link) {
                    *slot = Some(name.clone());
                    self.router.handle_link_up(now, &name);
                }
            }
            RouterIn::Down { link } => {
                if let Some(name) = self.names.get_mut(link).and_then(Option::take) {
                    self.router.handle_link_down(now, &name);
                }
            }
            RouterIn::Answer { link, msg } => {
                let Some(Some(from)) = self.names.get(link).cloned() else {
                    return;
                };
                match msg {
                    DownMsg::Moved { room, owner } => {
                        tracing::debug!(%room, %from, ?owner, "room moved");
                        self.router.handle_moved(now, &from, room, owner);
                    }
                    DownMsg::Redirect { actor, msg, owner } => {
                        self.router.handle_redirect(now, &from, actor, msg, owner);
                    }
                    DownMsg::Serving { rooms } => self.router.handle_serving(now, &from, &rooms),
                    _ => {}
                }
            }
        }
    }

    /// The router's outputs: to the links and the hub. `false` when the
    /// relay is stopping.
    async fn deliver(&mut self, from_hub: &mut mpsc::Receiver<UpMsg>) -> bool {
        while let Some(out) = self.router.poll_output() {
            let to_hub = match out {
                RouteOut::Send(node, msg) => {
                    let at = self.names.iter().position(|n| n.as_deref() == Some(&node));
                    if let Some(tx) = at.and_then(|i| self.links.get(i)) {
                        send_to_link(tx, &node, msg).await;
                    }
                    continue;
                }
                RouteOut::Rehome { room, requeue } => HubIn::Rehome { room, requeue },
                RouteOut::HubUp => {
                    // What the hub sent before its link went down is stale:
                    // it states everything afresh now.
                    while from_hub.try_recv().is_ok() {}
                    self.metrics.upstream_connected.set(1);
                    HubIn::UpstreamUp
                }
                RouteOut::HubDown => {
                    self.metrics.upstream_connected.set(0);
                    HubIn::UpstreamDown
                }
            };
            if self.hub.send(to_hub).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// Hand `msg` to a link: at once if its queue has room, else waiting for
/// it at most [`STALL`] (then the message is dropped and logged: a link
/// that far behind is dying, and its rooms are stated again when it is
/// reported down).
async fn send_to_link(tx: &mpsc::Sender<UpMsg>, node: &str, msg: UpMsg) {
    match tx.try_send(msg) {
        Ok(()) | Err(TrySendError::Closed(_)) => {}
        Err(TrySendError::Full(msg)) => {
            if tx.send_timeout(msg, STALL).await.is_err() {
                tracing::warn!(%node, "origin link stalled; a message to it was dropped");
            }
        }
    }
}
