//! Server processes for the benchmark, spawned from the testbed binary
//! itself through hidden subcommands (`serve-origin`, `serve-relay`,
//! `serve-echo`).
//!
//! The contract, both sides:
//! - the child binds (port 0 is fine) and prints `listening ADDR` as its
//!   first line on stdout; the parent waits for that line, with a timeout;
//! - the child's stdin is a pipe from the parent: when it closes — the parent
//!   stopping it, or the parent dying in any way, even `SIGKILL` — the child
//!   shuts down ([`stop_signal`]);
//! - the parent's [`Server`] guard kills the child when dropped, on error
//!   and panic paths too; [`Server::stop`] is the polite way.
//!
//! Child logs go to a file (`RUST_LOG=warn` unless the parent's environment
//! says otherwise); the parent shows the tail when a child fails.

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// The line a child prints once it listens.
pub const READY_PREFIX: &str = "listening ";

/// How to start one server process.
#[derive(Debug, Clone)]
pub struct Spawn {
    /// For messages.
    pub name: String,
    /// The executable (the testbed binary).
    pub exe: PathBuf,
    /// Its arguments (the hidden subcommand first).
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Where its stderr goes.
    pub log: PathBuf,
    /// How long it may take to print its address.
    pub ready_timeout: Duration,
}

impl Spawn {
    /// `exe args` with `env`, its stderr in `dir/<name>.log`, ready within
    /// 20 s: how the bench and the attack start their server processes.
    pub fn child(
        exe: &std::path::Path,
        dir: &std::path::Path,
        name: &str,
        args: Vec<String>,
        env: Vec<(&str, String)>,
    ) -> Spawn {
        Spawn {
            name: name.into(),
            exe: exe.to_path_buf(),
            args,
            env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            log: dir.join(format!("{name}.log")),
            ready_timeout: Duration::from_secs(20),
        }
    }
}

/// A running server process; killed when dropped.
#[derive(Debug)]
pub struct Server {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// Start it and wait for its address.
    pub async fn spawn(spec: Spawn) -> anyhow::Result<Server> {
        let log = std::fs::File::create(&spec.log)
            .with_context(|| format!("creating {}", spec.log.display()))?;
        let mut cmd = Command::new(&spec.exe);
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {} ({})", spec.name, spec.exe.display()))?;
        let stdout = child.stdout.take();
        let stdin = child.stdin.take();
        // The guard exists from here on: any early return kills the child.
        let mut server = Server {
            name: spec.name.clone(),
            child,
            stdin,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            log: spec.log.clone(),
        };
        let Some(stdout) = stdout else {
            bail!("{}: no stdout pipe", spec.name);
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("{}-stdout", spec.name))
            .spawn(move || {
                let mut r = std::io::BufReader::new(stdout);
                let mut line = String::new();
                let first = r.read_line(&mut line).map(|_| line);
                let _ = tx.send(first);
                // Keep the pipe drained so the child never blocks on it.
                let _ = std::io::copy(&mut r, &mut std::io::sink());
            })
            .context("starting a stdout reader thread")?;
        let line = match tokio::time::timeout(spec.ready_timeout, rx).await {
            Ok(Ok(Ok(line))) if !line.is_empty() => line,
            Ok(Ok(Err(e))) => bail!("{}: reading its stdout: {e}", spec.name),
            Err(_) => bail!(
                "{} did not announce its address within {:?}; its log:\n{}",
                spec.name,
                spec.ready_timeout,
                server.log_tail(20)
            ),
            _ => {
                // Give it a moment to finish writing its error.
                tokio::time::sleep(Duration::from_millis(50)).await;
                bail!(
                    "{} exited before listening; its log:\n{}",
                    spec.name,
                    server.log_tail(20)
                )
            }
        };
        server.addr = parse_ready(&line)
            .with_context(|| format!("{}: unexpected first line {line:?}", spec.name))?;
        Ok(server)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Ask it to stop (its stdin closes), wait up to `grace`, then kill it.
    /// Returns whether it stopped by itself.
    pub async fn stop(mut self, grace: Duration) -> bool {
        self.stdin.take();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_running() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false // Drop kills it.
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stdin.take();
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The address in a `listening ADDR` line.
pub fn parse_ready(line: &str) -> Option<SocketAddr> {
    line.trim().strip_prefix(READY_PREFIX)?.trim().parse().ok()
}

/// The last `lines` lines of a file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Child side: print the ready line.
pub fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{READY_PREFIX}{addr}");
    let _ = out.flush();
}

/// Child side: resolves when stdin closes (the parent stopped us or died),
/// or at Ctrl-C or SIGTERM.
pub async fn stop_signal() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 256];
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = tx.send(());
        });
    let stdin_closed = async {
        match watcher {
            Ok(_) => {
                let _ = rx.await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = stdin_closed => {}
        () = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_parses() {
        assert_eq!(
            parse_ready("listening 127.0.0.1:4242\n"),
            Some(SocketAddr::from(([127, 0, 0, 1], 4242)))
        );
        assert_eq!(parse_ready("hello"), None);
        assert_eq!(parse_ready("listening nowhere"), None);
    }
}
