//! Release gates through the real `testbed` binary, as CI runs them: the
//! CI scenario (`scenarios/ci-gated.toml`, a few seconds) passes its shipped
//! gates and exits 0; the same scenario with one impossible gate exits
//! non-zero and names the gate; an unknown gate key is refused by name
//! before anything runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// The two scenario runs take turns: run side by side on two cores, each
/// would inflate the other's latencies.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

fn shipped() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/ci-gated.toml");
    std::fs::read_to_string(path).expect("scenarios/ci-gated.toml")
}

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gates-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// `testbed run --quiet --no-baseline --out DIR/report` on `text`, written
/// to `DIR/ci-gated.toml` (so the scenario keeps its name).
fn run(dir: &Path, text: &str) -> Output {
    let file = dir.join("ci-gated.toml");
    std::fs::write(&file, text).expect("scenario written");
    Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(["run", "--quiet", "--no-baseline", "--out"])
        .arg(dir.join("report"))
        .arg(&file)
        .env_remove("RUST_LOG")
        .output()
        .expect("the testbed binary runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn gates_json(dir: &Path) -> serde_json::Value {
    let json = std::fs::read_to_string(dir.join("report/report.json")).expect("report.json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    v["gates"].clone()
}

#[test]
fn the_ci_scenario_passes_its_shipped_gates() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let text_in = shipped();
    assert!(text_in.contains("[gates]"), "ci-gated.toml declares gates");
    let dir = scratch("pass");
    let out = run(&dir, &text_in);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("release gates, datagram-first run"),
        "{stdout}"
    );
    assert!(stdout.contains("✓ all 7 gates pass"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let gates = gates_json(&dir);
    assert_eq!(gates["ok"], true, "{gates}");
    assert_eq!(gates["run"], "datagram-first", "{gates}");
    let verdicts = gates["verdicts"].as_array().expect("verdicts");
    assert_eq!(verdicts.len(), 7, "{gates}");
    for v in verdicts {
        assert!(v["measured"].is_number(), "{v}");
        assert_eq!(v["pass"], true, "{v}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_impossible_gate_fails_the_run_and_is_named() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let shipped = shipped();
    let mut replaced = 0;
    let impossible: Vec<String> = shipped
        .lines()
        .map(|l| {
            if l.starts_with("gift_ack_p99_ms") {
                replaced += 1;
                "gift_ack_p99_ms = 0.001".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert_eq!(replaced, 1, "ci-gated.toml gates gift_ack_p99_ms");
    let dir = scratch("fail");
    let out = run(&dir, &impossible.join("\n"));
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    // The error names the gate, the figure and the limit...
    assert!(
        stderr.contains("release gates breached")
            && stderr.contains("gift_ack_p99_ms: measured ")
            && stderr.contains("limit ≤ 0.001 ms"),
        "{stderr}"
    );
    // ...and only that gate: the invariants held and the others passed.
    assert!(!stderr.contains("invariants failed"), "{stderr}");
    assert!(!stderr.contains("delivery_p99_ms"), "{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("gift_ack_p99_ms"))
        .unwrap_or_else(|| panic!("a gift_ack_p99_ms row: {stdout}"));
    assert!(row.ends_with("FAIL"), "{row}");
    assert!(stdout.contains("✗ 1 of 7 gates FAILED"), "{stdout}");
    let gates = gates_json(&dir);
    assert_eq!(gates["ok"], false, "{gates}");
    let v = &gates["verdicts"][0];
    assert_eq!(v["gate"], "gift_ack_p99_ms", "{gates}");
    assert_eq!(v["pass"], false, "{gates}");
    assert!(v["measured"].as_f64().is_some_and(|m| m > 0.001), "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unknown_gate_key_is_refused_by_name() {
    let dir = scratch("unknown");
    let out = run(
        &dir,
        &shipped().replace("[gates]\n", "[gates]\ngift_ack_p95_ms = 100\n"),
    );
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("gift_ack_p95_ms"), "{stderr}");
    // Refused before anything ran: no report.
    assert!(!dir.join("report").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
