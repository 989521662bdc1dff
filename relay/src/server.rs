//! The relay process: its endpoints and tasks, and the handle to run,
//! drain, stop or kill it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use net::token::TokenKey;
use net::{self, rustls, Identity, NetError};
use protocol::message::{ErrorCode, ALPN_CLIENT, ALPN_RELAY};
use rustls::pki_types::CertificateDer;
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::admission::{self, Admission};
use crate::cluster;
use crate::config::Config;
use crate::hub::{Hub, Settings};
use crate::hub_driver::{run_hub, HubIn};
use crate::metrics::{Metrics, OutcomeLabel};
use crate::origin_estimate::OriginEstimate;
use crate::shared::Shared;
use crate::upstream::{self, Link};

/// Why a relay could not start.
#[derive(Debug, Error)]
pub enum Error {
    /// Network or TLS setup failed.
    #[error("network: {0}")]
    Net(#[from] NetError),
    /// A file could not be read or written.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A secret is missing or too short (the message says what to set).
    #[error("{0}")]
    Secret(#[from] net::secret::SecretError),
}

/// The plugs that cut the relay's sockets off (feature `fault`).
#[cfg(feature = "fault")]
struct Plugs {
    /// The client-facing endpoint's.
    client: net::Plug,
    /// The upstream endpoint's.
    upstream: net::Plug,
}

/// A running relay.
pub struct Relay {
    addr: SocketAddr,
    identity: Identity,
    endpoint: quinn::Endpoint,
    #[cfg(feature = "fault")]
    plugs: Plugs,
    tasks: JoinSet<()>,
    shutdown: watch::Sender<bool>,
    shared: Arc<Shared>,
    metrics_listener: Option<ops::Listener>,
}

impl Relay {
    /// Start a relay from its configuration: its secrets first (a relay
    /// outside loopback without them refuses to start), then certificates
    /// from files, or a generated identity kept in `identity_file` and
    /// written to `cert_out`; the origin's certificate from `origin_cert`
    /// (read again whenever the link reconnects and it has changed).
    pub async fn start(config: Config) -> Result<Relay, Error> {
        config.secrets()?;
        let identity = Identity::from_files_or_generate(
            config.tls.as_ref(),
            config.identity_file.as_deref(),
            config.cert_out.as_deref(),
        )?;
        let roots = match &config.origin_cert {
            Some(p) => net::load_certs(p)?,
            None => Vec::new(),
        };
        Relay::start_with(config, identity, roots).await
    }

    /// Start with a given identity and origin trust roots (in-process use).
    /// The secrets come from the configuration as in [`Relay::start`].
    pub async fn start_with(
        config: Config,
        identity: Identity,
        origin_roots: Vec<CertificateDer<'static>>,
    ) -> Result<Relay, Error> {
        let secrets = config.secrets()?;
        let bind = SocketAddr::new(config.listen.ip(), 0);
        #[cfg(feature = "fault")]
        let (endpoint, up_endpoint, plugs) = {
            let (endpoint, client) = net::server_endpoint_plugged(
                config.listen,
                &identity,
                &[ALPN_CLIENT],
                &config.tuning,
            )?;
            let (up, upstream) = net::client_endpoint_plugged(bind, &config.upstream_tuning)?;
            (endpoint, up, Plugs { client, upstream })
        };
        #[cfg(not(feature = "fault"))]
        let (endpoint, up_endpoint) = (
            net::server_endpoint(config.listen, &identity, &[ALPN_CLIENT], &config.tuning)?,
            net::client_endpoint(bind, &config.upstream_tuning)?,
        );
        let addr = endpoint.local_addr()?;
        let client_config = net::client_config(&origin_roots, ALPN_RELAY, &config.upstream_tuning)?;
        // What the trust file held when `origin_roots` were read from it.
        let trusted = (config.origin_cert.as_ref()).and_then(|p| std::fs::read(p).ok());

        let (hub_tx, hub_rx) = mpsc::channel(1 << 14);
        // Small: the hub keeps what must be sent and hands it over as the
        // link takes it.
        let (up_tx, up_rx) = mpsc::channel(1 << 10);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let origin_estimate = OriginEstimate::new();
        let metrics = Metrics::default();
        let shared = Arc::new(Shared {
            metrics: metrics.clone(),
            tokens: TokenKey::new(&secrets.token),
            hub: hub_tx.clone(),
            origin_estimate: origin_estimate.clone(),
            next_client: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            admission: Mutex::new(Admission::new(
                config.limits.clone(),
                std::time::Instant::now(),
            )),
            config: config.clone(),
        });
        let mut tasks = JoinSet::new();
        let settings = Settings {
            ring: config.ring,
            rooms_per_client: config.limits.rooms_per_connection,
            pending_per_client: config.limits.pending_per_connection,
            pending_total: config.limits.pending_total,
            ..Settings::default()
        };
        let metrics_listener = match config.metrics_listen {
            Some(at) => Some(serve_metrics(at, &shared).await?),
            None => None,
        };
        tasks.spawn(run_hub(
            Hub::with_metrics(settings, metrics.clone()),
            hub_rx,
            up_tx,
            Duration::from_micros(config.fanout_linger_us),
        ));
        let trust = Arc::new(Mutex::new(upstream::Trust {
            file: config.origin_cert.clone(),
            pem: trusted,
            client_config,
        }));
        let cluster = TokenKey::new(&secrets.cluster);
        let clock = Arc::new(AtomicUsize::new(upstream::NO_CLOCK));
        let link = |index, origin, router| {
            Arc::new(Link {
                name: config.name.clone(),
                index,
                endpoint: up_endpoint.clone(),
                trust: trust.clone(),
                tuning: config.upstream_tuning.clone(),
                origin,
                server_name: config.origin_server_name.clone(),
                cluster: cluster.clone(),
                origin_estimate: origin_estimate.clone(),
                clock: clock.clone(),
                hub: hub_tx.clone(),
                router,
                metrics: metrics.clone(),
            })
        };
        if config.origins.is_empty() {
            let link = link(0, config.origin, None);
            tasks.spawn(upstream::run(link, up_rx, shutdown_rx.clone()));
        } else {
            let link = |index, origin, router| link(index, origin, Some(router));
            let (hub, metrics) = (hub_tx.clone(), metrics.clone());
            cluster::spawn(
                &mut tasks,
                &config.origins,
                link,
                up_rx,
                hub,
                metrics,
                &shutdown_rx,
            );
        }
        tasks.spawn(accept(endpoint.clone(), shared.clone(), shutdown_rx));
        tracing::info!(relay = %config.name, region = %config.region, %addr, "relay listening");
        Ok(Relay {
            addr,
            identity,
            endpoint,
            #[cfg(feature = "fault")]
            plugs,
            tasks,
            shutdown,
            shared,
            metrics_listener,
        })
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served, when
    /// `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .map(ops::Listener::local_addr)
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The certificate clients must trust, as PEM.
    pub fn cert_pem(&self) -> String {
        self.identity.cert_pem()
    }

    /// The relay's name.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Cut (or heal) the link to the origin, as a network partition would:
    /// packets stop both ways and the link notices by its idle timeout.
    #[cfg(feature = "fault")]
    pub fn partition_upstream(&self, cut: bool) {
        if cut {
            self.plugs.upstream.pull();
        } else {
            self.plugs.upstream.restore();
        }
    }

    /// Drain: refuse new clients, tell every client to move to one of
    /// `alternatives` (or the configured peers), wait until they have gone or
    /// the drain timeout passes, then shut down. Returns how many clients
    /// were still connected at the end.
    pub async fn drain(self, alternatives: Vec<String>) -> usize {
        self.shared
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.shared.metrics.draining.set(1);
        let alternatives = if alternatives.is_empty() {
            self.shared.config.peers.clone()
        } else {
            alternatives
        };
        let (done_tx, mut done_rx) = mpsc::channel(1);
        let _ = self
            .shared
            .hub
            .send(HubIn::Drain {
                alternatives,
                done: done_tx,
            })
            .await;
        let timeout = Duration::from_millis(self.shared.config.drain_timeout_ms);
        let left = match tokio::time::timeout(timeout, done_rx.recv()).await {
            Ok(Some(n)) => n,
            _ => usize::MAX,
        };
        self.shutdown().await;
        left
    }

    /// Stop: close every connection with `Shutdown` and end all tasks.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.endpoint
            .close(ErrorCode::Shutdown.code().into(), b"relay shutting down");
        self.tasks.shutdown().await;
    }

    /// Die as a crashed host would: not one more packet in or out, no
    /// goodbye to anyone. Clients notice only by their idle timeout.
    #[cfg(feature = "fault")]
    pub async fn abort(mut self) {
        self.plugs.client.pull();
        self.plugs.upstream.pull();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The operator's listener: the relay's metrics under its `region` and
/// `relay` labels; ready while the link to the origin is up and the relay
/// is not draining.
async fn serve_metrics(at: SocketAddr, shared: &Arc<Shared>) -> Result<ops::Listener, Error> {
    let labels = [
        ("region".into(), shared.config.region.clone().into()),
        ("relay".into(), shared.config.name.clone().into()),
    ];
    let mut registry = prometheus_client::registry::Registry::with_labels(labels.into_iter());
    shared.metrics.register(&mut registry);
    let ready = {
        let shared = shared.clone();
        move || {
            if shared.draining.load(Ordering::Relaxed) {
                Err("draining".to_string())
            } else if shared.metrics.upstream_connected.get() == 0 {
                Err("no link to the origin".to_string())
            } else {
                Ok(())
            }
        }
    };
    let endpoint = ops::Endpoint::new(registry, ready);
    Ok(ops::Listener::bind(at, Arc::new(endpoint)).await?)
}

async fn accept(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => return,
            },
            _ = shutdown.changed() => return,
        };
        let addr = incoming.remote_address();
        let validated = incoming.remote_address_validated();
        let verdict =
            shared.admit(|a| a.handle_incoming(std::time::Instant::now(), addr.ip(), validated));
        let handshakes = &shared.metrics.handshakes;
        let outcome = |outcome| handshakes.get_or_create(&OutcomeLabel { outcome }).inc();
        match verdict {
            admission::Incoming::Accept => {
                outcome("accepted");
                tokio::spawn(crate::conn::serve(incoming, shared.clone()));
            }
            admission::Incoming::Retry if incoming.may_retry() => {
                outcome("retry");
                let _ = incoming.retry();
            }
            // A validated peer cannot be asked again; it is over the rate.
            admission::Incoming::Retry | admission::Incoming::Refuse => {
                outcome("refused");
                tracing::debug!(%addr, "connection refused: at the limit");
                incoming.refuse();
            }
        }
    }
}
