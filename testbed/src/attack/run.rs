//! The run, phase by phase: start the processes and the honest crowd, the
//! aioquic client if asked, a baseline, then each attack in turn (prepare
//! outside the window, attack for the duration or until the relay passes
//! the abort level, wind down, settle, check the relay still serves)
//! followed by a baseline of its own, and finally every honest gift's
//! outcome. Each attack's honest acks are compared with the two baselines
//! beside it, pooled: the machine (other work on it, the relay's state)
//! drifts over a run, and a comparison with a window minutes away would
//! measure the drift.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use net::Identity;
use protocol::SessionId;

use crate::bench::probe;
use crate::bench::stats::Sampling;
use crate::bench::sys::{self, TempDir};

use super::aioquic;
use super::honest::{Crowd, CrowdPlan, Gifts};
use super::hostile::Target;
use super::meter::Meter;
use super::plan::{Attack, Plan};
use super::remote::{self, AttackProcess, Order};
use super::report::{AioquicReport, AttackReport, Figures, Report};
use super::secrets::Secrets;
use super::servers::{Servers, TlsPaths};

/// Honest gift phases: 0 is "between phases" (losses count, latencies do
/// not), 1 the aioquic client (first, while the relay's memory is as the
/// honest crowd left it), then [`baseline_phase`] and [`attack_phase`]
/// interleaved: baseline 0, attack 0, baseline 1, attack 1, ...,
/// baseline n.
const BETWEEN: usize = 0;
const AIOQUIC: usize = 1;

/// The phase of baseline `k` (the one before attack `k`).
pub fn baseline_phase(k: usize) -> usize {
    2 + 2 * k
}

/// The phase of attack `k`; its baselines are `k` and `k + 1`.
pub fn attack_phase(k: usize) -> usize {
    3 + 2 * k
}

/// Resident memory now, KiB (0 if `/proc` cannot say).
fn rss(pid: u32) -> u64 {
    sys::rss_kb(pid).unwrap_or(0)
}

/// Whether the relay answers a fresh client: hello with a valid token,
/// then pings answered within the probe's limits.
async fn serving(target: &Target, user: u64) -> Result<(), String> {
    let how = Sampling {
        warmup: 0,
        samples: 5,
        limit: Duration::from_secs(3),
        gap: Duration::ZERO,
    };
    let session = SessionId(0x5e7e_0000_0000 + user);
    match probe::relay_pings(
        target.relay,
        &target.roots,
        target.secrets.viewer(user),
        session,
        how,
    )
    .await
    {
        Ok(t) if !t.latencies.is_empty() => Ok(()),
        Ok(_) => Err("no ping answered".into()),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// One measured window: the relay's and origin's figures around `body`.
struct Window {
    before: (u64, u64),
    cpu: Duration,
    origin_cpu: Duration,
    machine: sys::MachineCpu,
    at: Instant,
}

/// CPU in a window: the relay's, the whole machine's (processes and
/// interrupts), and the wall time.
#[derive(Debug, Clone, Copy)]
struct Busy {
    relay: Duration,
    origin: Duration,
    machine: Duration,
    wall: Duration,
}

impl Window {
    fn open(servers: &Servers, meter: &mut Meter) -> Window {
        meter.window();
        Window {
            before: (rss(servers.relay.pid()), rss(servers.origin.pid())),
            cpu: sys::cpu_time(servers.relay.pid()).unwrap_or_default(),
            origin_cpu: sys::cpu_time(servers.origin.pid()).unwrap_or_default(),
            machine: sys::MachineCpu::now().unwrap_or_default(),
            at: Instant::now(),
        }
    }

    /// CPU and wall time so far.
    fn cpu(&self, servers: &Servers) -> Busy {
        let now = sys::cpu_time(servers.relay.pid()).unwrap_or_default();
        let m = sys::MachineCpu::now()
            .unwrap_or_default()
            .since(&self.machine);
        Busy {
            relay: now.saturating_sub(self.cpu),
            origin: (sys::cpu_time(servers.origin.pid()).unwrap_or_default())
                .saturating_sub(self.origin_cpu),
            machine: m.tasks + m.softirq,
            wall: self.at.elapsed(),
        }
    }

    fn close(self, servers: &Servers, meter: &Meter, busy: Busy) -> Figures {
        let peaks = meter.peaks();
        Figures {
            relay_before_kb: self.before.0,
            relay_peak_kb: peaks.relay_kb,
            relay_after_kb: rss(servers.relay.pid()),
            origin_before_kb: self.before.1,
            origin_peak_kb: peaks.origin_kb,
            origin_after_kb: rss(servers.origin.pid()),
            relay_cpu: busy.relay,
            origin_cpu: busy.origin,
            machine_cpu: busy.machine,
            attackers_cpu: Duration::ZERO,
            wall: busy.wall,
        }
    }
}

/// CPU time of the relay, the origin and this process so far.
fn ours(servers: &Servers) -> Duration {
    [
        servers.relay.pid(),
        servers.origin.pid(),
        std::process::id(),
    ]
    .iter()
    .map(|p| sys::cpu_time(*p).unwrap_or_default())
    .sum()
}

/// What every phase works with: the processes, the meter, the honest
/// crowd, and the readings the end of the run compares with.
struct Rig {
    tmp: TempDir,
    dir: PathBuf,
    cert: PathBuf,
    secrets: Secrets,
    servers: Servers,
    meter: Meter,
    /// For the "still serving" probes; the attackers build theirs alike.
    target: Target,
    crowd: Crowd,
    machine_start: sys::MachineCpu,
    ours_start: Duration,
    /// CPU time of every attackers' process in all.
    attackers_total: Duration,
}

/// Run everything in `plan`; `progress` hears what is happening.
pub async fn run(plan: &Plan, progress: &(dyn Fn(&str) + Sync)) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut report = Report {
        plan: plan.clone(),
        release: !cfg!(debug_assertions),
        cores: sys::cores(),
        ..Report::default()
    };
    let mut rig = Rig::start(plan, progress, &mut report).await?;
    if plan.aioquic && rig.servers.relay.is_running() {
        report.aioquic = Some(rig.aioquic(plan, progress).await);
    }
    report.baseline = rig.baseline(plan, progress, 0).await;
    for (k, attack) in plan.attacks.iter().copied().enumerate() {
        let (a, died) = rig.attack(plan, progress, k, attack).await;
        report.attacks.push(a);
        if died {
            report
                .notes
                .push("the relay died: the remaining attacks were skipped".into());
            break;
        }
        rig.baseline(plan, progress, k + 1).await;
    }
    rig.finish(plan, progress, &mut report).await;
    report.took = started.elapsed();
    report.judge();
    Ok(report)
}

impl Rig {
    /// Start the origin and relay processes, the meter and the honest
    /// crowd (in a battle long enough for the whole run).
    async fn start(
        plan: &Plan,
        progress: &(dyn Fn(&str) + Sync),
        report: &mut Report,
    ) -> anyhow::Result<Rig> {
        let tmp = TempDir::new(plan.dir.as_deref())?;
        let dir = tmp.path().to_path_buf();
        let identity = Identity::self_signed(&["localhost"]).context("generating a certificate")?;
        let (cert, key) = sys::write_identity(&identity, &dir)?;
        let secrets = Secrets::generate()?;

        progress("starting the origin and relay processes");
        let tls = TlsPaths {
            cert: cert.clone(),
            key,
        };
        let servers = Servers::start(&plan.exe, &dir, &tls, &secrets).await?;
        report.pids = (servers.relay.pid(), servers.origin.pid());
        report.loadavg.0 = sys::loadavg().unwrap_or_default();
        let machine_start = sys::MachineCpu::now().unwrap_or_default();
        let ours_start = ours(&servers);
        let meter = Meter::start(servers.relay.pid(), servers.origin.pid(), plan.rss_abort);
        report.relay_idle_kb = rss(servers.relay.pid());

        let target = remote::target(
            servers.relay.addr(),
            identity.certs.clone(),
            secrets.clone(),
            plan.attacker_users,
        );

        // The battle lasts the whole run (within the rules' bounds).
        let per_phase = plan.duration + plan.baseline + plan.settle + Duration::from_secs(4);
        let planned = per_phase * (plan.attacks.len() as u32 + 2) + Duration::from_secs(30);
        let battle_secs = planned.as_secs().clamp(10, 900) as u32;
        progress(&format!(
            "{} honest clients: two hosts in a {battle_secs} s PK battle, viewers gifting {}/s each",
            plan.honest, plan.gift_rate
        ));
        let crowd = Crowd::start(
            &CrowdPlan {
                relay: servers.relay.addr(),
                cert_pem: identity.cert_pem(),
                clients: plan.honest,
                gift_rate: plan.gift_rate,
                deadline: plan.action_deadline,
                battle_secs,
                seed: plan.seed,
            },
            &secrets,
        )
        .await
        .with_context(|| {
            format!(
                "starting the honest crowd; the relay's log:\n{}",
                servers.relay.log_tail(15)
            )
        })?;
        report.relay_connected_kb = rss(servers.relay.pid());
        // Let the first clock exchanges and joins settle.
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(Rig {
            tmp,
            dir,
            cert,
            secrets,
            servers,
            meter,
            target,
            crowd,
            machine_start,
            ours_start,
            attackers_total: Duration::ZERO,
        })
    }

    /// Baseline `k`: the honest crowd alone for the plan's baseline time
    /// (it follows the previous attack's settle pause; the next attack's
    /// preparation happens after it, outside both windows).
    async fn baseline(
        &mut self,
        plan: &Plan,
        progress: &(dyn Fn(&str) + Sync),
        k: usize,
    ) -> Figures {
        progress(&format!(
            "baseline {k}: {:.1} s without attackers",
            plan.baseline.as_secs_f64()
        ));
        let w = Window::open(&self.servers, &mut self.meter);
        self.crowd.set_phase(baseline_phase(k));
        tokio::time::sleep(plan.baseline).await;
        self.crowd.set_phase(BETWEEN);
        let busy = w.cpu(&self.servers);
        w.close(&self.servers, &self.meter, busy)
    }

    /// The aioquic client's phase (its honest gifts are filled in at the
    /// end of the run).
    async fn aioquic(&mut self, plan: &Plan, progress: &(dyn Fn(&str) + Sync)) -> AioquicReport {
        progress(&format!(
            "aioquic client: {} connections for {:.1} s",
            plan.aioquic_connections,
            plan.duration.max(Duration::from_secs(7)).as_secs_f64()
        ));
        let phase = AIOQUIC;
        let w = Window::open(&self.servers, &mut self.meter);
        self.crowd.set_phase(phase);
        let script = aioquic::Script {
            python: plan.python.clone(),
            path: plan.aioquic_script.clone(),
            port: self.servers.relay.addr().port(),
            cafile: self.cert.clone(),
            connections: plan.aioquic_connections,
            // Long enough to see a 5 s hello deadline close the idle ones.
            duration: plan.duration.max(Duration::from_secs(7)),
            seed: plan.seed,
        };
        let outcome = aioquic::run(&script, &self.secrets, &self.dir).await;
        let busy = w.cpu(&self.servers);
        self.crowd.set_phase(BETWEEN);
        tokio::time::sleep(plan.settle).await;
        let figures = w.close(&self.servers, &self.meter, busy);
        let alive = self.servers.relay.is_running();
        let not_serving = if alive {
            serving(&self.target, 800_999).await.err()
        } else {
            Some("the relay process is gone".into())
        };
        AioquicReport {
            phase,
            figures,
            outcome: outcome.map_err(|e| format!("{e:#}")),
            gifts: Gifts::default(),
            alive,
            not_serving,
        }
    }

    /// Attack `k` of the plan: prepare its process outside the window,
    /// attack for the duration or until the relay passes the abort level,
    /// wind down, settle, check the relay still serves. Also returns
    /// whether the relay died (the remaining attacks are then skipped).
    async fn attack(
        &mut self,
        plan: &Plan,
        progress: &(dyn Fn(&str) + Sync),
        k: usize,
        attack: Attack,
    ) -> (AttackReport, bool) {
        progress(&format!(
            "attack {}/{}: {} ({} attackers, {:.1} s): {}",
            k + 1,
            plan.attacks.len(),
            attack.name(),
            plan.attackers,
            plan.duration.as_secs_f64(),
            attack.what()
        ));
        let mut a = AttackReport {
            attack,
            phase: attack_phase(k),
            ..Default::default()
        };
        let order = Order {
            relay: self.servers.relay.addr(),
            cert: self.cert.clone(),
            attack,
            attackers: plan.attackers,
            users: plan.attacker_users,
            duration: plan.duration,
            seed: plan.seed ^ ((k as u64) << 32),
        };
        let mut attackers =
            match AttackProcess::spawn(&plan.exe, &self.dir, &order, &self.secrets).await {
                Ok(p) => p,
                Err(e) => {
                    a.error = Some(format!("preparing: {e:#}"));
                    return (a, false);
                }
            };
        let w = Window::open(&self.servers, &mut self.meter);
        let attackers_cpu = sys::cpu_time(attackers.pid()).unwrap_or_default();
        self.crowd.set_phase(a.phase);
        if let Err(e) = attackers.go() {
            self.crowd.set_phase(BETWEEN);
            a.error = Some(format!("starting: {e:#}"));
            return (a, false);
        }
        let end = Instant::now() + plan.duration;
        while Instant::now() < end && !self.meter.aborted() {
            // The meter is a thread: look at its flag every 20 ms.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        a.aborted = self.meter.aborted();
        let busy = w.cpu(&self.servers);
        let attackers_busy = sys::cpu_time(attackers.pid())
            .unwrap_or_default()
            .saturating_sub(attackers_cpu);
        self.crowd.set_phase(BETWEEN);
        match attackers.finish().await {
            Ok((tally, cpu)) => {
                a.tally = tally;
                self.attackers_total += cpu;
            }
            Err(e) => a.error = Some(format!("the attackers' process: {e:#}")),
        }
        tokio::time::sleep(plan.settle).await;
        a.figures = w.close(&self.servers, &self.meter, busy);
        a.figures.attackers_cpu = attackers_busy;
        a.alive = self.servers.relay.is_running();
        a.not_serving = if a.alive {
            serving(&self.target, 800_000 + k as u64).await.err()
        } else {
            Some(format!(
                "the relay process is gone; its log:\n{}",
                self.servers.relay.log_tail(15)
            ))
        };
        a.honest_connected = self.crowd.connected();
        let died = !a.alive;
        (a, died)
    }

    /// Wait for every honest gift's outcome, file them by phase, read the
    /// machine's figures, and stop the processes.
    async fn finish(self, plan: &Plan, progress: &(dyn Fn(&str) + Sync), report: &mut Report) {
        let Rig {
            tmp,
            mut servers,
            meter,
            crowd,
            machine_start,
            ours_start,
            attackers_total,
            ..
        } = self;
        progress("waiting for every honest gift's outcome");
        let gifts: Vec<Gifts> = crowd.finish().await;
        let phase = |i: usize| gifts.get(i).cloned().unwrap_or_default();
        report.between = phase(BETWEEN);
        let mut all = phase(baseline_phase(0));
        for k in 1..=report.attacks.len() {
            all.merge(&phase(baseline_phase(k)));
        }
        report.baseline_gifts = all;
        for (k, a) in report.attacks.iter_mut().enumerate() {
            a.gifts = phase(a.phase);
            a.baseline = phase(baseline_phase(k));
            a.baseline.merge(&phase(baseline_phase(k + 1)));
        }
        if let Some(q) = report.aioquic.as_mut() {
            q.gifts = gifts.get(q.phase).cloned().unwrap_or_default();
        }
        let machine = sys::MachineCpu::now()
            .unwrap_or_default()
            .since(&machine_start);
        report.others_cpu = machine
            .tasks
            .saturating_sub(ours(&servers).saturating_sub(ours_start) + attackers_total);
        report.loadavg.1 = sys::loadavg().unwrap_or_default();
        if !servers.relay.is_running() {
            report.notes.push(format!(
                "the relay exited during the run; its log:\n{}",
                servers.relay.log_tail(15)
            ));
        }
        drop(meter);
        report.notes.extend(servers.stop().await);
        if plan.keep_dir {
            report.notes.push(format!("kept {}", tmp.keep().display()));
        }
    }
}
