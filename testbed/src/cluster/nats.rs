//! A NATS cluster for a topology: `n` nats-server child processes,
//! clustered (routes between all of them), JetStream on each, loopback
//! only, every port chosen free (bound and let go: nats-server takes no
//! port 0, so another process could in principle take one in between),
//! data in a temporary directory of its own. [`NatsCluster::start`] waits
//! (bounded) until each server says it is ready and then until JetStream
//! places a stream replicated on every server; a server can be killed
//! (SIGKILL) and started again on the same ports and data; everything is
//! killed and removed on drop.
//!
//! Getting the server: `nats-server` on `PATH`, then `/usr/sbin`,
//! `/usr/local/sbin`, `/usr/local/bin` ([`crate::bench::nats::find_server`]).
//! On Debian and Ubuntu: `apt-get install nats-server` (it installs
//! `/usr/sbin/nats-server`, not on every user's `PATH`).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream::{self, stream};

use crate::bench::nats::find_server;

/// What to do when nats-server is missing.
pub const INSTALL: &str = "nats-server not found on PATH nor in /usr/sbin, /usr/local/sbin, \
     /usr/local/bin: install it with `apt-get install nats-server` (Debian/Ubuntu; it goes to \
     /usr/sbin) or put nats-server 2.9+ on PATH";

/// How long one server may take to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(20);
/// How long the cluster may take until JetStream places a replicated stream.
const JETSTREAM_WITHIN: Duration = Duration::from_secs(30);
/// The name of the stream created (and deleted) to see JetStream ready.
const PROBE: &str = "RINGSIDE_TESTBED_PROBE";
/// Log lines kept per server, for the error when the cluster does not form.
const LOG_TAIL: usize = 12;

/// A server's last [`LOG_TAIL`] log lines.
type Tail = Arc<Mutex<VecDeque<String>>>;

/// One server of the cluster.
struct Server {
    /// `n0`, `n1`, ...
    name: String,
    client_port: u16,
    conf: PathBuf,
    /// Running, or `None` once killed.
    child: Option<Child>,
    /// Its latest log lines.
    tail: Tail,
}

/// A running NATS cluster; every server killed and its data removed on
/// drop.
pub struct NatsCluster {
    binary: PathBuf,
    dir: PathBuf,
    servers: Vec<Server>,
}

/// A client of the servers at `urls` (any of them; it fails over between
/// them).
pub async fn connect(urls: &[String]) -> anyhow::Result<async_nats::Client> {
    let servers = (urls.iter())
        .map(|u| u.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .context("a NATS server URL")?;
    async_nats::ConnectOptions::new()
        .connect(servers)
        .await
        .context("connecting to NATS")
}

/// The nats-server binary, or an error saying how to install it.
pub fn binary() -> anyhow::Result<PathBuf> {
    find_server(None, std::env::var_os("PATH").as_deref()).context(INSTALL)
}

fn temp_dir() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "ringside-nats-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).context("binding a probe port")?;
    Ok(l.local_addr()?.port())
}

impl NatsCluster {
    /// Start `n` clustered servers (1 makes a single server, no routes) and
    /// wait until each is ready. Blocking (child processes and their logs):
    /// call it from `spawn_blocking` in async code, then
    /// [`NatsCluster::wait_jetstream`].
    pub fn start(n: usize) -> anyhow::Result<NatsCluster> {
        anyhow::ensure!(n >= 1, "a NATS cluster needs at least one server");
        let binary = binary()?;
        let dir = temp_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut cluster = NatsCluster {
            binary,
            dir,
            servers: Vec::with_capacity(n),
        };
        let routes = (0..n)
            .map(|_| free_port())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let route_list = (routes.iter())
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        for (i, route) in routes.iter().enumerate() {
            let name = format!("n{i}");
            let client_port = free_port()?;
            let store = cluster.dir.join(&name);
            let conf = cluster.dir.join(format!("{name}.conf"));
            let cluster_block = if n > 1 {
                format!(
                    "cluster {{ name: ringside-testbed, listen: 127.0.0.1:{route}, routes: [{route_list}] }}\n"
                )
            } else {
                String::new()
            };
            std::fs::write(
                &conf,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client_port}\n\
                     jetstream {{ store_dir: {:?} }}\n{cluster_block}",
                    store.display().to_string()
                ),
            )
            .with_context(|| format!("writing {}", conf.display()))?;
            cluster.servers.push(Server {
                name,
                client_port,
                conf,
                child: None,
                tail: Tail::default(),
            });
            cluster.launch(i)?;
        }
        Ok(cluster)
    }

    /// Start server `i` from its configuration; wait until it is ready.
    fn launch(&mut self, i: usize) -> anyhow::Result<()> {
        let s = &mut self.servers[i];
        let child = spawn(&self.binary, &s.conf, &s.name, s.tail.clone())?;
        s.child = Some(child);
        Ok(())
    }

    /// Wait until JetStream places a stream with a copy on every running
    /// server (the metadata leader is elected and every server has joined),
    /// bounded by 30 s.
    pub async fn wait_jetstream(&self) -> anyhow::Result<()> {
        let replicas = self.running().count();
        let urls: Vec<String> = (self.urls().into_iter().enumerate())
            .filter(|(i, _)| self.is_running(*i))
            .map(|(_, u)| u)
            .collect();
        let client = connect(&urls).await?;
        let js = jetstream::new(client);
        let deadline = Instant::now() + JETSTREAM_WITHIN;
        let mut last = String::new();
        // Bounded by the deadline.
        while Instant::now() < deadline {
            let made = js
                .create_stream(stream::Config {
                    name: PROBE.into(),
                    subjects: vec![format!("{}.probe", PROBE.to_lowercase())],
                    num_replicas: replicas,
                    storage: stream::StorageType::Memory,
                    ..Default::default()
                })
                .await;
            match made {
                Ok(_) => {
                    let _ = js.delete_stream(PROBE).await;
                    return Ok(());
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let logs = (self.servers.iter())
            .map(|s| {
                let tail = s.tail.lock().map(|t| t.iter().cloned().collect::<Vec<_>>());
                format!("{}:\n  {}", s.name, tail.unwrap_or_default().join("\n  "))
            })
            .collect::<Vec<_>>()
            .join("\n");
        bail!("JetStream not ready within {JETSTREAM_WITHIN:?} on {replicas} servers: {last}; their last log lines:\n{logs}")
    }

    /// How many servers the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether it has no server (never: [`NatsCluster::start`] needs one).
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Every server's client URL (`nats://127.0.0.1:<port>`), killed ones
    /// included, in order.
    pub fn urls(&self) -> Vec<String> {
        (self.servers.iter())
            .map(|s| format!("nats://127.0.0.1:{}", s.client_port))
            .collect()
    }

    /// Every server's client port, in order.
    pub fn ports(&self) -> Vec<u16> {
        self.servers.iter().map(|s| s.client_port).collect()
    }

    /// Server `i`'s name (`n<i>`, what JetStream's cluster info says).
    pub fn name(&self, i: usize) -> &str {
        &self.servers[i].name
    }

    fn running(&self) -> impl Iterator<Item = &Server> {
        self.servers.iter().filter(|s| s.child.is_some())
    }

    /// Whether server `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.servers.get(i).is_some_and(|s| s.child.is_some())
    }

    /// Server `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.servers.get(i)?.child.as_ref().map(Child::id)
    }

    /// SIGKILL server `i` (a crash: no goodbye to its peers or clients).
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let s = self.servers.get_mut(i).context("no such NATS server")?;
        let mut child = s.child.take().context("the NATS server is not running")?;
        child.kill().context("killing nats-server")?;
        let _ = child.wait();
        Ok(())
    }

    /// Start server `i` again on its ports and data (blocking until it is
    /// ready).
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(i < self.servers.len(), "no such NATS server");
        anyhow::ensure!(!self.is_running(i), "the NATS server is running");
        self.launch(i)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            if let Some(mut c) = s.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Start one server with `conf`; wait (bounded) until its log says it is
/// ready. Its log is drained by a thread of its own from then on, so the
/// server never blocks on a full pipe, its last lines kept in `tail`.
fn spawn(binary: &Path, conf: &Path, name: &str, tail: Tail) -> anyhow::Result<Child> {
    let mut child = Command::new(binary)
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let Some(stderr) = child.stderr.take() else {
        let _ = child.kill();
        bail!("nats-server {name}: no log pipe");
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut t) = tail.lock() {
                if t.len() == LOG_TAIL {
                    t.pop_front();
                }
                t.push_back(line.clone());
            }
            // Once nobody listens, keep draining.
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + READY_WITHIN;
    let mut tail: Vec<String> = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("Server is ready") => return Ok(child),
            Ok(line) => {
                tail.push(line);
                if tail.len() > 10 {
                    tail.remove(0);
                }
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "nats-server {name} not ready within {READY_WITHIN:?} ({e}); its log:\n{}",
                    tail.join("\n")
                );
            }
        }
    }
}
