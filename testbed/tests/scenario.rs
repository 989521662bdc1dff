//! Scenarios as CI runs them: a short one through the library API — a few
//! clients, a few seconds, loss on every client path, a PK battle and a
//! relay killed in the middle of it — with every invariant asserted; and
//! every shipped scenario file checked to parse and to be light enough.

use std::time::Duration;

use testbed::scenario::{self, Mode, Options, Scenario, DEFAULT_SCENARIO};

const SHORT: &str = r#"
seed = 3
duration_s = 6
cross_region_rtt_ms = 4

[[region]]
name = "a"
client_rtt_ms = 10
origin_rtt_ms = 4
clients = { loss = 0.03 }

[[region]]
name = "b"
client_rtt_ms = 10
origin_rtt_ms = 4
clients = { loss = 0.03 }

[[room]]
id = 1
host_region = "a"

[[room]]
id = 2
host_region = "b"

[[viewers]]
room = 1
region = "a"
count = 3
gifts_per_s = 4
chats_per_s = 1
likes_per_s = 1

[[viewers]]
room = 2
region = "b"
count = 3
gifts_per_s = 4

[[cohosts]]
room = 1
region = "a"
count = 2
sit_s = 1
stand_s = 0.5

[[step]]
at_s = 0.5
pk = { rooms = [1, 2], duration_s = 4 }

[[step]]
at_s = 2
kill_relay = "a"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lossy_scenario_with_a_relay_killed_keeps_every_invariant() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let s = Scenario::from_toml(SHORT, "ci").expect("valid scenario");
    let report = scenario::run(&s, &[Mode::DatagramFirst], &Options::default())
        .await
        .expect("the scenario runs");
    let summary = report.summary();
    assert!(report.ok(), "{summary}");
    assert!(summary.contains("seed 3") && summary.contains("scenario ci"));

    let r = &report.runs[0];
    assert_eq!(r.battles, 1, "{summary}");
    assert!(r.outcomes.applied > 50, "{summary}");
    assert!(r.delivery.is_some(), "{summary}");
    assert!(
        !r.clock_errors.is_empty(),
        "clock readings during the battle"
    );
    assert!(!r.countdown_errors.is_empty(), "countdowns reached zero");
    // The kill: the relay's clients noticed and all resumed.
    assert_eq!(r.recoveries.len(), 1);
    let k = &r.recoveries[0];
    assert!(k.affected > 0, "{k:?}");
    assert_eq!(k.unresumed, 0, "{k:?}");
    let resumed = Duration::from_micros(k.resumed_us.expect("resumed"));
    assert!(resumed < Duration::from_secs(3), "{k:?}");
    assert!(r.client_stats.moves >= k.affected as u64);

    // The report renders, pictures included.
    let dir = std::env::temp_dir().join(format!("ringside-scenario-ci-{}", std::process::id()));
    let files = report.write(&dir).expect("report written");
    assert_eq!(files.len(), 5);
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable");
        assert!(!text.is_empty(), "{}", f.display());
        if f.extension().is_some_and(|e| e == "svg") {
            assert!(text.starts_with("<svg") && text.ends_with("</svg>\n"));
            assert!(text.contains("seed 3"), "{}", f.display());
        }
    }
    let json = std::fs::read_to_string(dir.join("report.json")).expect("json");
    assert!(json.contains("\"seed\": 3") && json.contains("\"ok\": true"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_shipped_scenario_parses_and_is_light_enough() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("scenarios directory") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Two runs of it must fit in two minutes on two cores; a cluster
        // scenario is played once (`--no-baseline`) with a crowd of small
        // rooms.
        assert!(s.duration <= Duration::from_secs(30), "{}", s.name);
        let most = if s.cluster.is_some() { 600 } else { 100 };
        assert!(s.client_count() <= most, "{}", s.name);
        let text = std::fs::read_to_string(&path).expect("readable");
        assert!(
            text.starts_with('#'),
            "{}: say what it does in a comment at the top",
            s.name
        );
        names.push(s.name);
    }
    names.sort();
    for wanted in [
        "bursty-loss",
        "clean",
        "heavy-jitter",
        "loss-5pct-40ms",
        "origin-restart",
        "partition",
        "relay-drained",
        "relay-killed",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing: {names:?}"
        );
    }
    let default = Scenario::from_toml(DEFAULT_SCENARIO, "default").expect("built-in");
    assert!(default.duration <= Duration::from_secs(30));
}
