//! The plain local mode of the README's "Run the parts yourself": the real
//! `origin` and `relay` binaries, default configuration, in a working
//! directory of their own (only the ports are moved to free ones).
//!
//! - A relay that listens outside loopback without secrets refuses to start
//!   and says what to set; so does one with a 31-byte secret.
//! - The origin killed with SIGKILL and started again: the relay reconnects
//!   by itself (the origin kept its identity) and the client keeps playing.
//! - An origin that comes back with a *new* certificate is trusted too: the
//!   relay re-reads its trust file when it reconnects.
//!
//! The binaries are built on first use (`cargo build -p ringside-origin -p
//! ringside-relay`, into this test's target directory): a test can name only
//! its own package's binaries. `RINGSIDE_TEST_BIN_DIR=dir` uses prebuilt
//! ones instead.

mod common;

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use client_sdk::{Client, Room};
use net::token::from_hex;
use net::Identity;
use protocol::{GiftId, RoomId};

/// The directory holding the `origin` and `relay` binaries, built once per
/// test process with the profile and target directory of this test
/// (`RINGSIDE_TEST_BIN_DIR` names prebuilt ones instead).
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("RINGSIDE_TEST_BIN_DIR") {
            return PathBuf::from(dir);
        }
        // This test runs as <target>/<profile>/deps/local_mode-<hash>.
        let exe = std::env::current_exe().expect("the test's path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("<target>/<profile>/deps/")
            .to_path_buf();
        let target = profile_dir.parent().expect("<target>/<profile>");
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--quiet", "--bins"])
            .args(["-p", "ringside-origin", "-p", "ringside-relay"])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(target);
        // Not the variables cargo sets for this test's run: build scripts that
        // track them (ring's tracks CARGO_MANIFEST_DIR) would rebuild, and
        // the next `cargo test` would rebuild them back.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            let ours = [
                "CARGO_MANIFEST_",
                "CARGO_PKG_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ]
            .iter()
            .any(|p| k.starts_with(p))
                || [
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                ]
                .contains(&k.as_ref());
            if ours {
                cargo.env_remove(k.as_ref());
            }
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("running cargo build");
        assert!(status.success(), "building the origin and relay binaries");
        profile_dir
    })
}

/// A free UDP port on loopback (bound, read, released).
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

/// A working directory of its own, removed at the end.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(name: &str) -> WorkDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "ringside-local-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("work dir");
        WorkDir(dir)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One of the real binaries, running; its output lines arrive on a channel.
/// Killed (SIGKILL) when dropped.
struct Proc {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(bin: &str, cwd: &Path, env: &[(&str, String)], args: &[&str]) -> Proc {
        let mut cmd = Command::new(bin_dir().join(bin));
        cmd.current_dir(cwd)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawning the binary");
        let (tx, lines) = mpsc::channel();
        let out = child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>);
        let err = child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>);
        for pipe in [out, err].into_iter().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Proc {
            name: bin.into(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Wait for the next output line containing `pattern`; panics with the
    /// output so far if `within` passes first.
    fn wait_for(&mut self, pattern: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(pattern);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!(
                    "{}: no line with {pattern:?} within {within:?}; its output:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Wait for the process to exit by itself; its status and whole output,
    /// or `None` (and it is killed) if it is still running after `within`.
    fn exit(mut self, within: Duration) -> Option<(std::process::ExitStatus, String)> {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            if Instant::now() >= deadline {
                return None;
            }
            // The output channel closes when the process exits: wait on it.
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if let Ok(status) = self.child.wait() {
                        break status;
                    }
                }
            }
        };
        // The rest of its output (the readers end with the pipes).
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        Some((status, self.seen.join("\n")))
    }

    /// SIGKILL: no goodbye, nothing flushed.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A relay that would otherwise start: the origin's certificate is there.
fn relay_env_with_origin_cert(dir: &Path) -> Vec<(&'static str, String)> {
    let id = Identity::self_signed(&["localhost"]).expect("certificate");
    let cert = dir.join("origin-cert.pem");
    std::fs::write(&cert, id.cert_pem()).expect("write the certificate");
    vec![
        ("RINGSIDE_RELAY_LISTEN", "0.0.0.0:0".into()),
        ("RINGSIDE_RELAY_ORIGIN_CERT", cert.display().to_string()),
    ]
}

#[test]
fn a_public_relay_without_secrets_refuses_to_start_and_says_what_to_set() {
    let dir = WorkDir::new("public");
    let env = relay_env_with_origin_cert(&dir.0);
    let relay = Proc::spawn("relay", &dir.0, &env, &[]);
    let (status, out) = relay
        .exit(Duration::from_secs(20))
        .expect("the relay refuses to start instead of running");
    assert!(!status.success(), "{out}");
    assert!(out.contains("RINGSIDE_RELAY_TOKEN_SECRET_FILE="), "{out}");
    assert!(out.contains("RINGSIDE_RELAY_CLUSTER_SECRET_FILE="), "{out}");
    assert!(out.contains("outside loopback"), "{out}");
    assert!(
        !dir.0.join("ringside-data").join("token-secret").exists(),
        "no secret is generated for a public relay"
    );

    // Secrets given, but one of 31 bytes: refused too, naming it.
    let mut env = env;
    env.push(("RINGSIDE_RELAY_TOKEN_SECRET", "t".repeat(31)));
    env.push(("RINGSIDE_RELAY_CLUSTER_SECRET", "c".repeat(32)));
    let relay = Proc::spawn("relay", &dir.0, &env, &[]);
    let (status, out) = relay
        .exit(Duration::from_secs(20))
        .expect("the relay refuses a 31-byte secret");
    assert!(!status.success(), "{out}");
    assert!(out.contains("31 bytes"), "{out}");
    assert!(out.contains("RINGSIDE_RELAY_TOKEN_SECRET"), "{out}");
}

/// A client of the relay at `addr` (certificate `pem`) with `token`.
async fn connect(addr: SocketAddr, pem: &str, token: Vec<u8>) -> Client {
    Client::builder()
        .relay(addr)
        .token(token)
        .trust_pem(pem)
        .expect("pem")
        .connect()
        .await
        .expect("the client connects")
}

/// A gift that must be applied within `within`.
async fn gift_applied(room: &Room, within: Duration) {
    let acked = tokio::time::timeout(within, room.gift(GiftId(1), 1))
        .await
        .expect("the gift resolves in time")
        .expect("an outcome");
    assert!(acked.outcome.is_applied(), "{acked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_reconnects_to_a_sigkilled_and_restarted_origin_by_itself() {
    common::init_tracing();
    let dir = WorkDir::new("restart");
    let (origin_port, relay_port) = (free_port(), free_port());
    let origin_addr = SocketAddr::from(([127, 0, 0, 1], origin_port));
    let origin_env = [("RINGSIDE_ORIGIN_LISTEN", origin_addr.to_string())];
    let relay_env = [
        ("RINGSIDE_RELAY_LISTEN", format!("127.0.0.1:{relay_port}")),
        ("RINGSIDE_RELAY_ORIGIN", origin_addr.to_string()),
    ];

    let origin = tokio::task::block_in_place(|| {
        let mut o = Proc::spawn("origin", &dir.0, &origin_env, &[]);
        o.wait_for("origin listening", Duration::from_secs(60));
        o
    });
    let mut relay = tokio::task::block_in_place(|| {
        let mut r = Proc::spawn("relay", &dir.0, &relay_env, &[]);
        r.wait_for("upstream connected", Duration::from_secs(30));
        r
    });
    // Tokens minted the README's way: every local relay accepts them.
    let mint = |args: &[&str]| {
        tokio::task::block_in_place(|| {
            let out = Command::new(bin_dir().join("relay"))
                .current_dir(&dir.0)
                .env("RINGSIDE_RELAY_LISTEN", format!("127.0.0.1:{relay_port}"))
                .arg("mint-token")
                .args(args)
                .output()
                .expect("relay mint-token");
            assert!(out.status.success(), "{out:?}");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            from_hex(text.lines().last().unwrap_or_default()).expect("a hex token")
        })
    };
    let pem = std::fs::read_to_string(dir.0.join("ringside-data/relay-cert.pem"))
        .expect("the relay's certificate");
    let relay_addr = SocketAddr::from(([127, 0, 0, 1], relay_port));
    let host = connect(relay_addr, &pem, mint(&["--user", "7", "--host-of", "1"])).await;
    let hosted = host.join(RoomId(1)).await.expect("the host joins");
    assert!(hosted
        .chat("hello")
        .await
        .expect("outcome")
        .outcome
        .is_applied());
    let viewer = connect(relay_addr, &pem, mint(&["--user", "8"])).await;
    let room = viewer.join(RoomId(1)).await.expect("the viewer joins");
    gift_applied(&room, Duration::from_secs(10)).await;

    // SIGKILL, then the same command again.
    origin.kill();
    let origin = tokio::task::block_in_place(|| {
        let mut o = Proc::spawn("origin", &dir.0, &origin_env, &[]);
        o.wait_for("origin listening", Duration::from_secs(30));
        // Backoff is capped at 3 s: the relay is back well within this.
        relay.wait_for("upstream connected", Duration::from_secs(20));
        o
    });
    for _ in 0..3 {
        gift_applied(&room, Duration::from_secs(10)).await;
    }
    // Acks can overtake their events: wait for the fourth gift's.
    room.wait_for(Duration::from_secs(10), |s| s.gift_count == 4)
        .await
        .expect("all four gifts counted");
    viewer.close().await;
    host.close().await;
    drop(relay);
    drop(origin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_back_with_a_new_certificate_is_trusted_from_the_file() {
    common::init_tracing();
    let dir = WorkDir::new("newcert");
    let secret = net::secret::generate_hex().expect("random");
    let trust = dir.0.join("origin-cert.pem");
    let origin_config = origin::Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: dir.0.join("origin"),
        cluster_secret: Some(secret.clone()),
        ..origin::Config::default()
    };
    let first = Identity::self_signed(&["localhost"]).expect("certificate");
    std::fs::write(&trust, first.cert_pem()).expect("write");
    let o = origin::Origin::start_with(origin_config.clone(), first)
        .await
        .expect("origin starts");
    let origin_config = origin::Config {
        listen: o.addr(),
        ..origin_config
    };
    let relay = relay::Relay::start(relay::Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        origin: o.addr(),
        origin_cert: Some(trust.clone()),
        cluster_secret: Some(secret.clone()),
        token_secret: Some(secret.clone()),
        cert_out: None,
        identity_file: None,
        ..relay::Config::default()
    })
    .await
    .expect("relay starts");
    let key = net::token::TokenKey::new(secret.as_bytes());
    let token = |user: u64, host_of: Vec<RoomId>| {
        key.mint(&net::token::Claims::client(
            protocol::UserId(user),
            host_of,
            net::token::unix_now() + 600,
        ))
    };
    let pem = relay.cert_pem();
    let host = connect(relay.addr(), &pem, token(7, vec![RoomId(1)])).await;
    let hosted = host.join(RoomId(1)).await.expect("the host joins");
    assert!(hosted
        .chat("hello")
        .await
        .expect("outcome")
        .outcome
        .is_applied());
    let viewer = connect(relay.addr(), &pem, token(8, Vec::new())).await;
    let room = viewer.join(RoomId(1)).await.expect("the viewer joins");
    gift_applied(&room, Duration::from_secs(10)).await;

    // The origin dies and comes back on the same port with a new identity,
    // as a local origin whose data directory lost it would.
    o.abort().await;
    let second = Identity::self_signed(&["localhost"]).expect("certificate");
    std::fs::write(&trust, second.cert_pem()).expect("write");
    let o = origin::Origin::start_with(origin_config, second)
        .await
        .expect("origin restarts");
    gift_applied(&room, Duration::from_secs(20)).await;
    viewer.close().await;
    host.close().await;
    relay.shutdown().await;
    let _ = o.shutdown().await;
}
