//! `testbed bench` runs end to end (small counts, debug build): every probe
//! gets its answers, every viewer sees every gift, every target row prints. The origin gift probe sends more gifts than a user's
//! burst at the origin, so a bench that forgot to lift the per-user rate
//! backstop for its timing runs fails here, not on a release machine.

use std::process::Command;

#[test]
fn a_small_bench_runs_end_to_end_and_writes_its_json() {
    let dir = std::env::temp_dir().join(format!("ringside-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let json = dir.join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args([
            "bench",
            "--fanout-clients",
            "20",
            "--rate",
            "50",
            "--duration",
            "1",
            "--drain",
            "2",
            "--burst-clients",
            "40",
            "--bursts",
            "3",
            "--clients",
            "60",
            "--per-endpoint",
            "25",
            "--idle",
            "1",
            "--warmup",
            "10",
            "--echo-samples",
            "200",
            "--probe-samples",
            "600",
            "--fsync-samples",
            "20",
            "--ack-samples",
            "200",
            "--dir",
        ])
        .arg(&dir)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("the testbed binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("relay link → origin gift → ack"),
        "{stdout}"
    );
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON file")).expect("JSON");
    assert!(figures.is_object(), "{figures}");
    // Every viewer saw every gift of the fan-out and of the single gifts,
    // and the memory and idle rows measured the whole audience.
    let fan = &figures["fanout"][0];
    assert_eq!(fan["audience"], 20, "{fan}");
    assert!(fan["applied"].as_u64().is_some_and(|n| n > 0), "{fan}");
    assert_eq!(fan["missing"], 0, "{fan}");
    assert!(
        fan["origin_delivery"]["samples"].as_u64() == fan["deliveries"].as_u64(),
        "{fan}"
    );
    assert_eq!(figures["bursts"]["audience"], 40, "{figures}");
    assert_eq!(figures["bursts"]["complete"], 3, "{figures}");
    assert_eq!(figures["memory"]["clients"], 60, "{figures}");
    assert_eq!(figures["idle"]["clients"], 60, "{figures}");
    assert_eq!(figures["viewer_endpoints"], 3, "{figures}");
    for goal in [
        "origin stamp → client",
        "send → last client",
        "RSS per connected client",
        "idle clients, relay CPU",
        "SDK gift ack",
    ] {
        assert!(stdout.contains(goal), "no {goal:?} row:\n{stdout}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
