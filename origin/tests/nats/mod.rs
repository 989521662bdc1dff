//! A real nats-server for a test: JetStream on, loopback only, a port it
//! chose free itself (`-p -1`, read back from its log), data in a directory
//! of its own that goes with it.
//!
//! Without `nats-server` on PATH the tests that need it say so and pass,
//! unless `RINGSIDE_REQUIRE_NATS=1` (CI sets it), when they fail.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
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
        eprintln!("SKIPPED {test}: nats-server is not on PATH ({INSTALL}; set RINGSIDE_REQUIRE_NATS=1 to make this a failure)");
        return None;
    }
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ringside-nats-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("nats data dir");
    let mut child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
        .arg(&dir)
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
    Some(Nats {
        child,
        url: format!("nats://127.0.0.1:{port}"),
        dir,
    })
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
