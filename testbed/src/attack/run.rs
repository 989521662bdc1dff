//! The run, phase by phase: start the processes and the honest crowd,
//! measure a baseline, then the aioquic client if asked, then each attack
//! in turn (prepare outside the window, attack for the duration or until
//! the relay passes the abort level, wind down, settle, check the relay
//! still serves), and finally every honest gift's outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use protocol::net::Identity;
use protocol::SessionId;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::bench::probe;
use crate::bench::stats::Sampling;
use crate::bench::sys::{self, TempDir};

use super::aioquic;
use super::attacks;
use super::honest::{Crowd, CrowdPlan, Gifts, ROOMS};
use super::hostile::{Attacker, Tally, Target};
use super::meter::Meter;
use super::plan::{Attack, Plan};
use super::report::{AioquicReport, Figures, Report};
use super::secrets::Secrets;
use super::servers::{Servers, TlsPaths};

/// Honest gift phases: 0 is "between phases" (losses count, latencies do
/// not), 1 the baseline, 2 the aioquic client (first, while the relay's
/// memory is as the baseline left it), 3 + k attack k.
const BETWEEN: usize = 0;
const BASELINE: usize = 1;
/// How long attackers get to wind down after the stop signal.
const WIND_DOWN: Duration = Duration::from_secs(5);

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
    at: Instant,
}

impl Window {
    fn open(servers: &Servers, meter: &mut Meter) -> Window {
        meter.window();
        Window {
            before: (rss(servers.relay.pid()), rss(servers.origin.pid())),
            cpu: sys::cpu_time(servers.relay.pid()).unwrap_or_default(),
            at: Instant::now(),
        }
    }

    /// CPU and wall time so far.
    fn cpu(&self, servers: &Servers) -> (Duration, Duration) {
        let now = sys::cpu_time(servers.relay.pid()).unwrap_or_default();
        (now.saturating_sub(self.cpu), self.at.elapsed())
    }

    fn close(self, servers: &Servers, meter: &Meter, busy: (Duration, Duration)) -> Figures {
        let peaks = meter.peaks();
        Figures {
            relay_before_kb: self.before.0,
            relay_peak_kb: peaks.relay_kb,
            relay_after_kb: rss(servers.relay.pid()),
            origin_before_kb: self.before.1,
            origin_peak_kb: peaks.origin_kb,
            origin_after_kb: rss(servers.origin.pid()),
            relay_cpu: busy.0,
            wall: busy.1,
        }
    }
}

/// Run everything in `plan`; `progress` hears what is happening.
pub async fn run(plan: &Plan, progress: &(dyn Fn(&str) + Sync)) -> anyhow::Result<Report> {
    let started = Instant::now();
    let tmp = TempDir::new(plan.dir.as_deref())?;
    let dir = tmp.path().to_path_buf();
    let identity = Identity::self_signed(&["localhost"]).context("generating a certificate")?;
    let (cert, key) = sys::write_identity(&identity, &dir)?;
    let secrets = Secrets::generate()?;
    let mut report = Report {
        plan: plan.clone(),
        release: !cfg!(debug_assertions),
        cores: sys::cores(),
        ..Report::default()
    };

    progress("starting the origin and relay processes");
    let tls = TlsPaths {
        cert: cert.clone(),
        key,
    };
    let mut servers = Servers::start(&plan.exe, &dir, &tls, &secrets).await?;
    report.pids = (servers.relay.pid(), servers.origin.pid());
    report.loadavg.0 = sys::loadavg().unwrap_or_default();
    let machine_start = sys::MachineCpu::now().unwrap_or_default();
    let ours = |servers: &Servers| -> Duration {
        [
            servers.relay.pid(),
            servers.origin.pid(),
            std::process::id(),
        ]
        .iter()
        .map(|p| sys::cpu_time(*p).unwrap_or_default())
        .sum()
    };
    let ours_start = ours(&servers);
    let mut meter = Meter::start(servers.relay.pid(), servers.origin.pid(), plan.rss_abort);
    report.relay_idle_kb = rss(servers.relay.pid());

    let (paced_messages, paced_actions) = Target::paced_defaults();
    let target = Arc::new(Target {
        relay: servers.relay.addr(),
        roots: identity.certs.clone(),
        secrets: secrets.clone(),
        busy: ROOMS,
        users: plan.attacker_users,
        paced_messages,
        paced_actions,
        flood: 20_000.0,
    });

    // The battle lasts the whole run (within the rules' bounds).
    let per_phase = plan.duration + plan.settle + Duration::from_secs(4);
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

    progress(&format!(
        "baseline: {:.1} s without attackers",
        plan.duration.as_secs_f64()
    ));
    let w = Window::open(&servers, &mut meter);
    crowd.set_phase(BASELINE);
    tokio::time::sleep(plan.duration).await;
    crowd.set_phase(BETWEEN);
    let busy = w.cpu(&servers);
    tokio::time::sleep(plan.settle).await;
    report.baseline = w.close(&servers, &meter, busy);

    if plan.aioquic && servers.relay.is_running() {
        progress(&format!(
            "aioquic client: {} connections for {:.1} s",
            plan.aioquic_connections,
            plan.duration.max(Duration::from_secs(7)).as_secs_f64()
        ));
        let phase = 2;
        let w = Window::open(&servers, &mut meter);
        crowd.set_phase(phase);
        let script = aioquic::Script {
            python: plan.python.clone(),
            path: plan.aioquic_script.clone(),
            port: servers.relay.addr().port(),
            cafile: cert.clone(),
            connections: plan.aioquic_connections,
            // Long enough to see a 5 s hello deadline close the idle ones.
            duration: plan.duration.max(Duration::from_secs(7)),
            seed: plan.seed,
        };
        let outcome = aioquic::run(&script, &secrets, &dir).await;
        let busy = w.cpu(&servers);
        crowd.set_phase(BETWEEN);
        tokio::time::sleep(plan.settle).await;
        let figures = w.close(&servers, &meter, busy);
        let alive = servers.relay.is_running();
        let not_serving = if alive {
            serving(&target, 800_999).await.err()
        } else {
            Some("the relay process is gone".into())
        };
        report.aioquic = Some(AioquicReport {
            phase,
            figures,
            outcome: outcome.map_err(|e| format!("{e:#}")),
            gifts: Gifts::default(),
            alive,
            not_serving,
        });
    }

    for (k, attack) in plan.attacks.iter().copied().enumerate() {
        progress(&format!(
            "attack {}/{}: {} ({} attackers, {:.1} s): {}",
            k + 1,
            plan.attacks.len(),
            attack.name(),
            plan.attackers,
            plan.duration.as_secs_f64(),
            attack.what()
        ));
        let mut a = super::report::AttackReport {
            attack,
            phase: 3 + k,
            ..Default::default()
        };
        let prepared = match attacks::prepare(attack, &target, plan.attackers).await {
            Ok(p) => {
                if attack == Attack::HalfOpen {
                    a.tally.notes.push(format!(
                        "{} distinct Initials captured beforehand, {} per attacker at most",
                        p.initials.len(),
                        attacks::INITIALS_EACH
                    ));
                }
                Arc::new(p)
            }
            Err(e) => {
                a.error = Some(format!("preparing: {e:#}"));
                report.attacks.push(a);
                continue;
            }
        };
        let w = Window::open(&servers, &mut meter);
        crowd.set_phase(a.phase);
        let (stop, stop_rx) = watch::channel(false);
        let at = Instant::now();
        let mut set = JoinSet::new();
        for i in 0..plan.attackers {
            let (target, prepared) = (target.clone(), prepared.clone());
            let mut att = Attacker::new(
                i,
                &target,
                plan.seed ^ (k as u64) << 32,
                at,
                stop_rx.clone(),
            );
            set.spawn(async move {
                if let Err(e) = attacks::run(attack, &mut att, target, prepared).await {
                    att.tally.notes.push(format!("{e:#}"));
                }
                att.tally
            });
        }
        let end = at + plan.duration;
        while Instant::now() < end && !meter.aborted() {
            // The meter is a thread: look at its flag every 20 ms.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        a.aborted = meter.aborted();
        let busy = w.cpu(&servers);
        let _ = stop.send(true);
        crowd.set_phase(BETWEEN);
        let mut tally = Tally::default();
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
        let notes = std::mem::take(&mut a.tally.notes);
        a.tally = tally;
        a.tally.notes.splice(0..0, notes);
        tokio::time::sleep(plan.settle).await;
        a.figures = w.close(&servers, &meter, busy);
        a.alive = servers.relay.is_running();
        a.not_serving = if a.alive {
            serving(&target, 800_000 + k as u64).await.err()
        } else {
            Some(format!(
                "the relay process is gone; its log:\n{}",
                servers.relay.log_tail(15)
            ))
        };
        a.honest_connected = crowd.connected();
        let dead = !a.alive;
        report.attacks.push(a);
        if dead {
            report
                .notes
                .push("the relay died: the remaining attacks were skipped".into());
            break;
        }
    }

    progress("waiting for every honest gift's outcome");
    let gifts: Vec<Gifts> = crowd.finish().await;
    report.between = gifts.get(BETWEEN).cloned().unwrap_or_default();
    report.baseline_gifts = gifts.get(BASELINE).cloned().unwrap_or_default();
    for a in report.attacks.iter_mut() {
        a.gifts = gifts.get(a.phase).cloned().unwrap_or_default();
    }
    if let Some(q) = report.aioquic.as_mut() {
        q.gifts = gifts.get(q.phase).cloned().unwrap_or_default();
    }
    let machine = sys::MachineCpu::now()
        .unwrap_or_default()
        .since(&machine_start);
    report.others_cpu = machine
        .tasks
        .saturating_sub(ours(&servers).saturating_sub(ours_start));
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
    report.took = started.elapsed();
    report.judge();
    Ok(report)
}
