//! A real nats-server for a test: JetStream on, loopback only, a port it
//! chose free itself (`-p -1`, read back from its log), data in a directory
//! of its own that goes with it.
//!
//! Without `nats-server` on PATH the tests that need it say so and pass,
//! unless `RINGSIDE_REQUIRE_NATS=1` (CI sets it), when they fail.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// How to install the server, for the skip message.
const INSTALL: &str = "apt-get install nats-server (Debian), or put nats-server 2.9+ on PATH";

/// A running nats-server, stopped (SIGKILL) and its data removed on drop.
pub struct Nats {
    child: Child,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    dir: PathBuf,
}

/// Start a server, or `None` (after saying why) when nats-server is not
/// installed and not required.
pub fn start(test: &str) -> Option<Nats> {
    if !present(test) {
        return None;
    }
    let dir = temp_dir();
    let mut command = Command::new("nats-server");
    command
        .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
        .arg(&dir);
    let (child, port, _) = spawn(command);
    Some(Nats {
        child,
        url: format!("nats://127.0.0.1:{port}"),
        dir,
    })
}

/// Whether nats-server can be run; panics if it cannot and is required.
fn present(test: &str) -> bool {
    let required = std::env::var("RINGSIDE_REQUIRE_NATS").is_ok_and(|v| v == "1");
    let found = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            !required,
            "{test}: nats-server is not on PATH and RINGSIDE_REQUIRE_NATS=1: {INSTALL}"
        );
        // Straight to the file descriptor: the test harness captures
        // `eprintln!` of passing tests, and a skip must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: nats-server is not on PATH ({INSTALL}; set RINGSIDE_REQUIRE_NATS=1 to make this a failure)"
        );
    }
    found
}

fn temp_dir() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ringside-nats-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("nats data dir");
    dir
}

/// Start a server, wait until it is ready; returns it, its client port,
/// and its log's lines from then on (drained on a thread of their own, so
/// the server never blocks on a full pipe).
fn spawn(mut command: Command) -> (Child, u16, mpsc::Receiver<String>) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nats-server");
    // Its log, read on a thread so the wait below is bounded.
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Nobody listens any more: keep draining so the server
                // never blocks on a full pipe.
                continue;
            }
        }
    });
    let mut port = None;
    loop {
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                panic!("nats-server did not become ready ({e}); port seen: {port:?}");
            }
        };
        if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
            port = rest
                .rsplit(':')
                .next()
                .and_then(|p| p.trim().parse::<u16>().ok());
        }
        if line.contains("Server is ready") {
            break;
        }
    }
    let port = port.expect("nats-server said where it listens");
    (child, port, rx)
}

impl Nats {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three clustered servers (routes on ports chosen free: bound, released,
/// then given to the server, so another process could in principle take
/// one in between), JetStream on each, stopped on drop.
pub struct Cluster {
    /// The servers, in order; `None` once killed.
    pub servers: Vec<Option<Nats>>,
    /// Every server's client URL, comma-separated (what a node is given).
    pub urls: String,
}

/// Start a three-server cluster, or `None` as [`start`] does.
pub fn start_cluster(test: &str) -> Option<Cluster> {
    if !present(test) {
        return None;
    }
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let route_list = (routes.iter())
        .map(|p| format!("nats-route://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut servers = Vec::new();
    let (all_tx, all_rx) = mpsc::channel::<String>();
    for (i, route) in routes.iter().enumerate() {
        let dir = temp_dir();
        let conf = dir.join("server.conf");
        std::fs::write(
            &conf,
            format!(
                "server_name: n{i}\nlisten: 127.0.0.1:-1\n\
                 jetstream {{ store_dir: {:?} }}\n\
                 cluster {{ name: ringside-test, listen: 127.0.0.1:{route}, routes: [{route_list}] }}\n",
                dir.join("js")
            ),
        )
        .expect("config");
        let mut command = Command::new("nats-server");
        command.arg("-c").arg(&conf);
        let (child, port, rx) = spawn(command);
        let tx = all_tx.clone();
        std::thread::spawn(move || {
            for line in rx {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        servers.push(Some(Nats {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            dir,
        }));
    }
    // JetStream takes requests once the servers elected a metadata leader.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = (all_rx.recv_timeout(left))
            .expect("the NATS cluster elected a metadata leader within 30 s");
        if line.contains("metadata leader") {
            break;
        }
    }
    let urls = (servers.iter().flatten())
        .map(|s| s.url.clone())
        .collect::<Vec<_>>()
        .join(",");
    Some(Cluster { servers, urls })
}

impl Cluster {
    /// SIGKILL the server named `name` (`n0`, `n1`, `n2`).
    pub fn kill(&mut self, name: &str) {
        let i: usize = name.trim_start_matches('n').parse().expect("a server name");
        self.servers[i] = None;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
