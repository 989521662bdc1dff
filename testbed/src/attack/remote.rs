//! The attackers' own process, so their handshakes and floods compete with
//! the relay for the machine's cores as any client would, but never with
//! the honest clients' tasks inside one runtime.
//!
//! For each attack the run spawns `testbed serve-attack` (hidden), giving
//! it the relay's address, the certificate's path, the attack, the counts,
//! the duration and the seed as arguments and the token secret through
//! `RINGSIDE_ATTACK_TOKEN_SECRET` (never on a command line, where `ps`
//! would show it). The exchange, one line each way at a time:
//!
//! - the child prepares (outside the measured window: captured Initials, a
//!   shared endpoint) and prints `ready`, or `error<TAB>why` and exits;
//! - the parent opens its window and writes `go`; the child starts its
//!   attackers;
//! - the attack ends after the duration or when the parent writes `stop`
//!   (or closes stdin: a dead parent stops it too); the child winds its
//!   attackers down (at most [`WIND_DOWN`]) and prints its [`Tally`] as
//!   lines (`count`, `first`, `ends`, `life`, `note`), then `end`, and exits.
//!
//! The tally is written in this small line format rather than JSON: the
//! crate has no JSON parser, and every field is a number, an [`End`] or a
//! short text (escaped: tabs and newlines cannot break a line).

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use net::rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::bench::stats::Latencies;

use super::attacks;
use super::honest::ROOMS;
use super::hostile::{Attacker, End, Tally, Target};
use super::plan::Attack;
use super::secrets::Secrets;

/// How long attackers get to wind down after the stop signal.
pub const WIND_DOWN: Duration = Duration::from_secs(5);
/// How long the child may take to prepare an attack (capturing thousands of
/// Initials for the half-open flood takes a few seconds).
const PREPARE_PATIENCE: Duration = Duration::from_secs(120);
/// Messages per second a "flooding" attacker sends.
pub const FLOOD_RATE: f64 = 20_000.0;
/// The environment variable carrying the token secret to the child.
pub const TOKEN_SECRET_ENV: &str = "RINGSIDE_ATTACK_TOKEN_SECRET";

/// What the attackers' process is told to do.
#[derive(Debug, Clone)]
pub struct Order {
    /// The relay.
    pub relay: SocketAddr,
    /// Its certificate, PEM file.
    pub cert: PathBuf,
    /// The attack.
    pub attack: Attack,
    /// Hostile connections.
    pub attackers: usize,
    /// Distinct users among them.
    pub users: usize,
    /// How long the attack lasts at most once started.
    pub duration: Duration,
    /// Seed of the attackers' random choices.
    pub seed: u64,
}

/// The target every attacker of a run aims at: the relay, its
/// certificate, the run's token secret, the battle's rooms, and the rates
/// (paced at 90 % of the relay's default limits, floods at [`FLOOD_RATE`]).
pub fn target(
    relay: SocketAddr,
    roots: Vec<CertificateDer<'static>>,
    secrets: Secrets,
    users: usize,
) -> Target {
    let (paced_messages, paced_actions) = Target::paced_defaults();
    Target {
        relay,
        roots,
        secrets,
        busy: ROOMS,
        users,
        paced_messages,
        paced_actions,
        flood: FLOOD_RATE,
    }
}

// ---------------------------------------------------------------------------
// The tally's line format.

fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '\t' => o.push_str("\\t"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            c => o.push(c),
        }
    }
    o
}

fn unescape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            o.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => o.push('\t'),
            Some('n') => o.push('\n'),
            Some('r') => o.push('\r'),
            Some(c) => o.push(c),
            None => o.push('\\'),
        }
    }
    o
}

/// An [`End`] as two fields: kind and argument.
fn end_fields(e: &End) -> (&'static str, String) {
    match e {
        End::Code(c) => ("code", c.to_string()),
        End::Transport(t) => ("transport", escape(t)),
        End::TimedOut => ("timeout", String::new()),
        End::Refused(r) => ("refused", escape(r)),
        End::Done => ("done", String::new()),
        End::Open => ("open", String::new()),
    }
}

fn parse_end(kind: &str, arg: &str) -> anyhow::Result<End> {
    Ok(match kind {
        "code" => End::Code(arg.parse().context("close code")?),
        "transport" => End::Transport(unescape(arg)),
        "timeout" => End::TimedOut,
        "refused" => End::Refused(unescape(arg)),
        "done" => End::Done,
        "open" => End::Open,
        other => bail!("unknown end {other:?}"),
    })
}

/// The tally as lines (without the final `end`).
pub fn encode(t: &Tally) -> Vec<String> {
    let mut lines = vec![format!(
        "count\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        t.attackers,
        t.connections,
        t.bytes_sent,
        t.raw_packets,
        t.messages,
        t.applied,
        t.rejected,
        t.throttled
    )];
    for (e, at) in &t.first_stops {
        let (kind, arg) = end_fields(e);
        lines.push(format!("first\t{kind}\t{arg}\t{}", at.as_nanos()));
    }
    for (e, n) in &t.ends {
        let (kind, arg) = end_fields(e);
        lines.push(format!("ends\t{kind}\t{arg}\t{n}"));
    }
    for (us, n) in &t.lifetimes_us {
        lines.push(format!("life\t{us}\t{n}"));
    }
    for n in &t.notes {
        lines.push(format!("note\t{}", escape(n)));
    }
    lines
}

/// Reads what [`encode`] wrote, line by line.
#[derive(Debug, Default)]
pub struct Decoder {
    tally: Tally,
}

impl Decoder {
    /// Take one line.
    pub fn line(&mut self, line: &str) -> anyhow::Result<()> {
        let f: Vec<&str> = line.split('\t').collect();
        let num = |i: usize| -> anyhow::Result<u64> {
            f.get(i)
                .with_context(|| format!("field {i} missing in {line:?}"))?
                .parse()
                .with_context(|| format!("field {i} of {line:?}"))
        };
        let t = &mut self.tally;
        match f[0] {
            "count" => {
                t.attackers = num(1)?;
                t.connections = num(2)?;
                t.bytes_sent = num(3)?;
                t.raw_packets = num(4)?;
                t.messages = num(5)?;
                t.applied = num(6)?;
                t.rejected = num(7)?;
                t.throttled = num(8)?;
            }
            "first" if f.len() == 4 => {
                let at = Duration::from_nanos(num(3)?);
                t.first_stops.push((parse_end(f[1], f[2])?, at));
            }
            "ends" if f.len() == 4 => {
                *t.ends.entry(parse_end(f[1], f[2])?).or_default() += num(3)?;
            }
            "life" => {
                let (us, n) = (num(1)?, num(2)?);
                *t.lifetimes_us.entry(us).or_default() += n;
            }
            "note" if f.len() == 2 => t.notes.push(unescape(f[1])),
            _ => bail!("unexpected line {line:?}"),
        }
        Ok(())
    }

    /// The tally read, its lifetimes histogram rebuilt.
    pub fn finish(self) -> Tally {
        let mut t = self.tally;
        t.lifetimes = lifetimes_of(&t.lifetimes_us);
        t
    }
}

/// A histogram of lifetimes counted by microsecond.
fn lifetimes_of(us: &BTreeMap<u64, u64>) -> Latencies {
    let mut l = Latencies::new();
    for (&v, &n) in us {
        // Bounded: n is a count of connections the attackers made.
        for _ in 0..n {
            l.record(Duration::from_micros(v));
        }
    }
    l
}

// ---------------------------------------------------------------------------
// The child's side.

/// What the parent said on stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Said {
    Go,
    Stop,
}

/// Lines from stdin as [`Said`]; closing it is a stop.
fn listen_stdin() -> mpsc::UnboundedReceiver<Said> {
    let (tx, rx) = mpsc::unbounded_channel();
    let spawned = std::thread::Builder::new()
        .name("attack-stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                let Ok(line) = line else { break };
                match line.trim() {
                    "go" => {
                        let _ = tx.send(Said::Go);
                    }
                    "stop" => {
                        let _ = tx.send(Said::Stop);
                    }
                    _ => {}
                }
            }
            let _ = tx.send(Said::Stop);
        });
    if spawned.is_err() {
        // Without a reader the attack still ends after its duration.
        tracing::warn!("could not start the stdin reader");
    }
    rx
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Run the attack the parent ordered (the `serve-attack` child): prepare,
/// say `ready`, wait for `go`, attack until the duration passes or `stop`,
/// wind down, print the tally.
pub async fn serve(order: &Order, secrets: Secrets) -> anyhow::Result<()> {
    let mut said = listen_stdin();
    let roots = net::load_certs(&order.cert)
        .with_context(|| format!("reading {}", order.cert.display()))?;
    let target = Arc::new(target(order.relay, roots, secrets, order.users.max(1)));
    let mut notes = Vec::new();
    let prepared = match attacks::prepare(order.attack, &target, order.attackers).await {
        Ok(p) => {
            if order.attack == Attack::HalfOpen {
                notes.push(format!(
                    "{} distinct Initials captured beforehand, {} per attacker at most",
                    p.initials.len(),
                    attacks::INITIALS_EACH
                ));
            }
            Arc::new(p)
        }
        Err(e) => {
            say(&format!("error\t{}", escape(&format!("{e:#}"))));
            return Ok(());
        }
    };
    say("ready");
    match said.recv().await {
        Some(Said::Go) => {}
        _ => return Ok(()),
    }
    let tally = attack(order, &target, prepared, notes, &mut said).await;
    for line in encode(&tally) {
        say(&line);
    }
    say("end");
    Ok(())
}

/// The attack itself, from `go` to the tally.
async fn attack(
    order: &Order,
    target: &Arc<Target>,
    prepared: Arc<attacks::Prepared>,
    notes: Vec<String>,
    said: &mut mpsc::UnboundedReceiver<Said>,
) -> Tally {
    let (stop, stop_rx) = watch::channel(false);
    let at = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..order.attackers {
        let (target, prepared) = (target.clone(), prepared.clone());
        let mut att = Attacker::new(i, &target, order.seed, at, stop_rx.clone());
        // Addresses of its own for each attack: the relay's penalty box
        // still refuses the previous attack's addresses for a while, and
        // each attack must meet the relay's answer to itself.
        let phase = (super::plan::Attack::ALL.iter())
            .position(|a| *a == order.attack)
            .unwrap_or(0);
        att.bind =
            std::net::SocketAddr::from((super::hostile::attacker_ip(i + 1000 * (phase + 1)), 0));
        let attack = order.attack;
        set.spawn(async move {
            if let Err(e) = attacks::run(attack, &mut att, target, prepared).await {
                att.tally.notes.push(format!("{e:#}"));
            }
            att.tally
        });
    }
    let until_stop = async {
        while let Some(s) = said.recv().await {
            if s == Said::Stop {
                return;
            }
        }
    };
    tokio::select! {
        () = tokio::time::sleep(order.duration) => {}
        () = until_stop => {}
    }
    let _ = stop.send(true);
    let mut tally = Tally {
        notes,
        ..Tally::default()
    };
    let wound = tokio::time::timeout(WIND_DOWN, async {
        while let Some(r) = set.join_next().await {
            if let Ok(t) = r {
                tally.merge(t);
            }
        }
    })
    .await;
    if wound.is_err() {
        tally
            .notes
            .push(format!("{} attackers did not wind down in time", set.len()));
        set.abort_all();
    }
    drop(prepared);
    tally
}

// ---------------------------------------------------------------------------
// The parent's side.

/// The attackers' process of one attack, ready to go; killed when dropped.
#[derive(Debug)]
pub struct AttackProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    log: PathBuf,
}

impl AttackProcess {
    /// Spawn `exe serve-attack` for `order` (its stderr to a log in `dir`)
    /// and wait until it has prepared; a failure to prepare is an error.
    pub async fn spawn(
        exe: &Path,
        dir: &Path,
        order: &Order,
        secrets: &Secrets,
    ) -> anyhow::Result<AttackProcess> {
        let log = dir.join(format!("attackers-{}.log", order.attack.name()));
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(exe);
        cmd.arg("serve-attack")
            .args(["--relay", &order.relay.to_string()])
            .arg("--cert")
            .arg(&order.cert)
            .args(["--attack", order.attack.name()])
            .args(["--attackers", &order.attackers.to_string()])
            .args(["--users", &order.users.to_string()])
            .args(["--duration", &order.duration.as_secs_f64().to_string()])
            .args(["--seed", &order.seed.to_string()])
            .env(TOKEN_SECRET_ENV, &secrets.token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning the attackers ({})", exe.display()))?;
        let stdout = child.stdout.take();
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::unbounded_channel();
        // The guard exists from here on: any early return kills the child.
        let mut p = AttackProcess {
            child,
            stdin,
            lines,
            log,
        };
        let Some(stdout) = stdout else {
            bail!("the attackers' process has no stdout pipe");
        };
        std::thread::Builder::new()
            .name("attackers-stdout".into())
            .spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .context("starting the attackers' stdout reader")?;
        match tokio::time::timeout(PREPARE_PATIENCE, p.lines.recv()).await {
            Ok(Some(l)) if l == "ready" => Ok(p),
            Ok(Some(l)) if l.starts_with("error\t") => bail!("{}", unescape(&l[6..])),
            Ok(Some(l)) => bail!("the attackers' process said {l:?} instead of ready"),
            Ok(None) => bail!(
                "the attackers' process exited before it was ready; its log:\n{}",
                p.log_tail(15)
            ),
            Err(_) => bail!("the attackers were not ready within {PREPARE_PATIENCE:?}"),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::bench::child::log_tail(&self.log, lines)
    }

    fn write(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .context("writing to the attackers' process")
    }

    /// Start the attack.
    pub fn go(&mut self) -> anyhow::Result<()> {
        self.write("go")
    }

    /// Stop the attack (if its duration has not already), read the tally,
    /// and reap the process. Also returns the process's CPU time in all.
    pub async fn finish(mut self) -> anyhow::Result<(Tally, Duration)> {
        // It may have stopped by itself already: a failed write is fine.
        let _ = self.write("stop");
        let mut decoder = Decoder::default();
        let read = tokio::time::timeout(WIND_DOWN + Duration::from_secs(10), async {
            while let Some(line) = self.lines.recv().await {
                if line == "end" {
                    return Ok(true);
                }
                decoder.line(&line)?;
            }
            Ok::<_, anyhow::Error>(false)
        })
        .await;
        // A zombie keeps its CPU figures until it is reaped.
        let cpu = crate::bench::sys::cpu_time(self.pid()).unwrap_or_default();
        // It exits right after its tally: reap it here rather than block
        // in `Drop`.
        self.stdin.take();
        for _ in 0..200 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match read {
            Ok(Ok(true)) => Ok((decoder.finish(), cpu)),
            Ok(Ok(false)) => bail!(
                "the attackers' process exited without its tally; its log:\n{}",
                self.log_tail(15)
            ),
            Ok(Err(e)) => Err(e),
            Err(_) => bail!("the attackers' process did not report in time"),
        }
    }
}

impl Drop for AttackProcess {
    fn drop(&mut self) {
        self.stdin.take();
        // [`AttackProcess::finish`] reaped it; on any other path it dies here.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_survives_the_line_format() {
        let mut t = Tally {
            attackers: 3,
            connections: 41,
            bytes_sent: 1 << 40,
            raw_packets: 7,
            messages: 9,
            applied: 2,
            rejected: 1,
            throttled: 5,
            ..Tally::default()
        };
        let odd = End::Refused("tab\there\nand a \\ backslash".into());
        t.first_stops
            .push((End::Code(6), Duration::from_millis(412)));
        t.first_stops.push((odd.clone(), Duration::from_nanos(1)));
        for (e, n) in [
            (End::Code(6), 30),
            (End::Transport("PROTOCOL_VIOLATION".into()), 2),
            (End::TimedOut, 1),
            (odd.clone(), 4),
            (End::Done, 3),
            (End::Open, 1),
        ] {
            t.ends.insert(e, n);
        }
        t.lifetimes_us.insert(1500, 2);
        t.lifetimes_us.insert(90_000, 1);
        t.notes.push("a note\twith\nodd characters".into());

        let mut d = Decoder::default();
        for line in encode(&t) {
            assert!(!line.contains('\n'), "{line:?}");
            d.line(&line).expect("decodes");
        }
        let back = d.finish();
        assert_eq!(back.attackers, 3);
        assert_eq!(back.connections, 41);
        assert_eq!(back.bytes_sent, 1 << 40);
        assert_eq!(
            (
                back.raw_packets,
                back.messages,
                back.applied,
                back.rejected,
                back.throttled
            ),
            (7, 9, 2, 1, 5)
        );
        assert_eq!(back.first_stops, t.first_stops);
        assert_eq!(back.ends, t.ends);
        assert_eq!(back.notes, t.notes);
        assert_eq!(back.lifetimes.len(), 3);
        let s = back.lifetimes.summary();
        assert!((s.max_us - 90_000.0).abs() < 100.0, "{s:?}");
    }

    /// A stand-in for `testbed serve-attack`: a shell script that ignores
    /// its arguments and plays `body`.
    fn fake_child(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let exe = dir.join("fake-serve-attack");
        std::fs::write(&exe, format!("#!/bin/sh\n{body}\n")).expect("script");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        exe
    }

    fn order(dir: &Path) -> Order {
        Order {
            relay: SocketAddr::from(([127, 0, 0, 1], 9)),
            cert: dir.join("cert.pem"),
            attack: Attack::Joins,
            attackers: 2,
            users: 1,
            duration: Duration::from_secs(1),
            seed: 1,
        }
    }

    #[tokio::test]
    async fn the_parent_reads_ready_then_the_tally_after_go_and_stop() {
        let tmp = crate::bench::sys::TempDir::new(None).expect("dir");
        let secrets = Secrets::generate().expect("secrets");
        // Answers only in order: ready, then (after go and stop) the tally.
        let exe = fake_child(
            tmp.path(),
            "echo ready\nread go; [ \"$go\" = go ] || exit 3\nread stop; [ \"$stop\" = stop ] || exit 4\n\
             [ -n \"$RINGSIDE_ATTACK_TOKEN_SECRET\" ] || exit 5\n\
             printf 'count\\t2\\t9\\t0\\t0\\t0\\t0\\t0\\t0\\nends\\tcode\\t6\\t9\\nend\\n'",
        );
        let mut p = AttackProcess::spawn(&exe, tmp.path(), &order(tmp.path()), &secrets)
            .await
            .expect("ready");
        p.go().expect("go");
        let (t, _cpu) = p.finish().await.expect("tally");
        assert_eq!((t.attackers, t.connections), (2, 9));
        assert_eq!(t.ends.get(&End::Code(6)), Some(&9));
    }

    #[tokio::test]
    async fn a_child_that_cannot_prepare_or_dies_is_an_error() {
        let tmp = crate::bench::sys::TempDir::new(None).expect("dir");
        let secrets = Secrets::generate().expect("secrets");
        let exe = fake_child(tmp.path(), "printf 'error\\tno initials\\n'");
        let e = AttackProcess::spawn(&exe, tmp.path(), &order(tmp.path()), &secrets)
            .await
            .expect_err("not ready");
        assert!(e.to_string().contains("no initials"), "{e:#}");
        let exe = fake_child(tmp.path(), "echo ready\nread go\nexit 0");
        let mut p = AttackProcess::spawn(&exe, tmp.path(), &order(tmp.path()), &secrets)
            .await
            .expect("ready");
        p.go().expect("go");
        let e = p.finish().await.expect_err("no tally");
        assert!(e.to_string().contains("without its tally"), "{e:#}");
    }

    #[test]
    fn garbage_lines_are_errors_not_silence() {
        let mut d = Decoder::default();
        assert!(d.line("count\t1\t2").is_err());
        assert!(d.line("ends\tnonsense\t\t3").is_err());
        assert!(d.line("hello").is_err());
    }
}
