//! `testbed bench --cluster`: cluster mode's durable acks and throughput
//! beside the embedded origin and the quinn floor
//! ([`testbed::bench::cluster`]).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use testbed::bench::cluster::{self, ClusterPlan};
use testbed::bench::stats::Sampling;

/// The `--cluster` options of `testbed bench`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Measure cluster mode instead (see below).
    #[arg(long)]
    pub cluster: bool,
    /// --cluster: rooms of the throughput runs (one sender each).
    #[arg(long, default_value_t = 48)]
    pub cluster_rooms: usize,
    /// --cluster: gifts each sender keeps in flight.
    #[arg(long, default_value_t = 8)]
    pub cluster_window: usize,
    /// --cluster: how long each throughput run sends, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub cluster_secs: f64,
}

/// Run the cluster measurements, print them (and write `json`).
pub async fn run(
    args: &ClusterArgs,
    acks: Sampling,
    echo: Sampling,
    echo_size: usize,
    json: Option<&Path>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.cluster_rooms > 0 && args.cluster_window > 0,
        "--cluster-rooms and --cluster-window must be positive"
    );
    let plan = ClusterPlan {
        acks,
        echo,
        echo_size,
        nats_servers: 3,
        replicas: 3,
        rooms: args.cluster_rooms,
        window: args.cluster_window,
        for_: Duration::try_from_secs_f64(args.cluster_secs)
            .with_context(|| format!("--cluster-secs {}: not a duration", args.cluster_secs))?,
    };
    let progress = |s: &str| eprintln!("[bench] {s}");
    let report = tokio::select! {
        r = cluster::run(&plan, &progress) => r?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    };
    print!("{}", cluster::render(&report, &plan));
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report).context("the report as JSON")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}
