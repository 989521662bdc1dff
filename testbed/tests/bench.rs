//! `testbed bench` runs end to end (small counts, debug build): every probe
//! gets its answers. The origin gift probe sends more gifts than a user's
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
            "--clients",
            "20",
            "--rate",
            "10",
            "--duration",
            "1",
            "--drain",
            "2",
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
    let _ = std::fs::remove_dir_all(&dir);
}
