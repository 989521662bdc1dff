//! `testbed run [SCENARIO.toml]`: play a scenario — datagram-first, then
//! the stream-only baseline with the same seed — print the summary, write
//! the report, and fail if an invariant did not hold or a release gate of
//! the scenario (`[gates]`) was breached.

use std::path::PathBuf;

use anyhow::Context as _;
use testbed::scenario::{self, Mode, Options, Scenario, DEFAULT_SCENARIO};

/// Options of `testbed run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario file (see testbed/scenarios/); without one, a built-in
    /// tour: two regions, mild loss, a PK battle and a relay killed in it.
    scenario: Option<PathBuf>,
    /// Where to write the report [default: target/testbed/<scenario name>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Use this seed instead of the scenario's.
    #[arg(long)]
    seed: Option<u64>,
    /// Skip the stream-only baseline (datagram-first only).
    #[arg(long, conflicts_with = "baseline_only")]
    no_baseline: bool,
    /// Run only the stream-only baseline.
    #[arg(long)]
    baseline_only: bool,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

/// Play the scenario and report.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut s = match &args.scenario {
        Some(path) => {
            Scenario::load(path).with_context(|| format!("scenario {}", path.display()))?
        }
        None => {
            Scenario::from_toml(DEFAULT_SCENARIO, "default").context("the built-in scenario")?
        }
    };
    if let Some(seed) = args.seed {
        s.seed = seed;
    }
    if args.baseline_only && !s.gates.is_empty() {
        eprintln!(
            "testbed run: --baseline-only: the release gates of {} judge the datagram-first run and are not judged",
            s.name
        );
    }
    let modes: Vec<Mode> = if args.no_baseline {
        vec![Mode::DatagramFirst]
    } else if args.baseline_only {
        vec![Mode::StreamOnly]
    } else {
        Mode::BOTH.to_vec()
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/testbed").join(&s.name));
    let labels: Vec<&str> = modes.iter().map(|m| m.label()).collect();
    eprintln!(
        "testbed run: scenario {} · seed {} · {} clients · {:.0} s per run · {}",
        s.name,
        s.seed,
        s.client_count(),
        s.duration.as_secs_f64(),
        labels.join(", then ")
    );
    let report = scenario::run(
        &s,
        &modes,
        &Options {
            progress: !args.quiet,
        },
    )
    .await?;
    println!();
    print!("{}", report.summary());
    let files = report
        .write(&out)
        .with_context(|| format!("writing the report to {}", out.display()))?;
    println!("\nreport written to {}/:", out.display());
    for f in &files {
        if let Some(name) = f.file_name() {
            println!("  {}", name.to_string_lossy());
        }
    }
    let mut problems = Vec::new();
    if !report.ok() {
        problems.push(format!(
            "invariants failed:\n  {}",
            report.failures().join("\n  ")
        ));
    }
    if !report.gates_ok() {
        problems.push(format!(
            "release gates breached:\n  {}",
            report.gate_breaches().join("\n  ")
        ));
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "scenario {} (seed {}): {}",
            s.name,
            s.seed,
            problems.join("\n")
        );
    }
    Ok(())
}
