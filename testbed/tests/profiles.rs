//! The example profiles under `testbed/profiles/` parse and say what their
//! names say.

use std::path::Path;

use testbed::impair::{JitterDistribution, LinkProfile};

fn load(name: &str) -> LinkProfile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("profiles")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("profile file");
    let profile = LinkProfile::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    profile.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    profile
}

#[test]
fn every_example_profile_parses_and_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("profiles dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8 name");
        if name.ends_with(".toml") {
            load(&name);
            n += 1;
        }
    }
    assert!(n >= 3, "only {n} profiles");
}

#[test]
fn lossy_40ms_is_5_percent_and_20_ms_each_way() {
    let p = load("lossy-40ms.toml");
    assert_eq!(p.up, p.down);
    assert_eq!((p.up.loss, p.up.delay_ms), (0.05, 20.0));
}

#[test]
fn reference_sets_every_field() {
    let p = load("reference.toml");
    assert_eq!(p.up.loss, 0.01);
    assert_eq!(p.down.loss, 0.02);
    assert_eq!(p.down.delay_ms, 30.0);
    assert_eq!(p.up.jitter_distribution, JitterDistribution::Uniform);
    assert_eq!(p.up.rate_bps, 20_000_000);
    assert_eq!(p.up.blackhole.windows_ms, vec![[10_000.0, 12_000.0]]);
    let burst = p.down.burst.expect("burst both ways");
    assert_eq!((burst.p, burst.r), (0.001, 0.3));
}

#[test]
fn bursty_mobile_loses_about_one_percent() {
    let p = load("bursty-mobile.toml");
    let loss = p.up.burst.expect("burst").stationary_loss();
    assert!((loss - 0.01).abs() < 0.001, "{loss}");
    assert_eq!(p.up.jitter_distribution, JitterDistribution::Normal);
}
