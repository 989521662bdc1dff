//! The scenario file: what a scenario says, parsed and checked.
//!
//! Two steps ("parse, don't validate"): serde reads the TOML into `*File`
//! structs that mirror the text exactly (an unknown key is an error naming
//! it), then [`Scenario::from_toml`] checks every range and cross-reference
//! and builds a [`Scenario`] whose fields can be trusted: regions and rooms
//! exist, times fall inside the run, a relay is not killed twice, gifts are
//! in the catalogue. Pure code: no IO apart from [`Scenario::load`] reading
//! the file.
//!
//! The format is documented key by key in `testbed/README.md`.

mod check;
mod cluster;
pub mod error;
mod file;
pub mod gate;
pub mod types;

use std::path::Path;

use figment::providers::{Format, Toml};
use figment::Figment;
use protocol::RoomId;

pub use error::ScenarioError;
pub use gate::{Bound, Gate, Limit};
pub use types::{
    CohostGroup, Edge, GiftChoice, NodeRef, PathKind, Region, RoomSpec, Rules, Scenario, Step,
    StepAction, Traffic, ViewerGroup,
};

impl Scenario {
    /// Read and check a scenario file; its name defaults to the file name
    /// without `.toml`.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        if let Err(source) = std::fs::metadata(path) {
            return Err(ScenarioError::Read {
                path: path.display().to_string(),
                source,
            });
        }
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "scenario".into());
        // From the file, so that errors name it.
        extract(Figment::from(Toml::file_exact(path)), &stem)
    }

    /// Parse and check scenario TOML; `default_name` is used when the file
    /// has no `name`.
    pub fn from_toml(text: &str, default_name: &str) -> Result<Scenario, ScenarioError> {
        extract(Figment::from(Toml::string(text)), default_name)
    }

    /// Every client of the run: hosts, viewers and co-hosts.
    pub fn client_count(&self) -> u32 {
        let v: u32 = self.viewers.iter().map(|g| g.count).sum();
        let c: u32 = self.cohosts.iter().map(|g| g.count).sum();
        self.rooms.len() as u32 + v + c
    }

    /// Battles the timeline asks for (its `pk` steps).
    pub fn battles_asked(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s.action, StepAction::Traffic(Traffic::Pk { .. })))
            .count()
    }

    /// The index of a room in [`Scenario::rooms`].
    pub fn room_index(&self, room: RoomId) -> Option<usize> {
        self.rooms.iter().position(|r| r.id == room)
    }
}

fn extract(figment: Figment, default_name: &str) -> Result<Scenario, ScenarioError> {
    let file: file::ScenarioFile = figment
        .extract()
        .map_err(|e| ScenarioError::Parse(Box::new(e)))?;
    check::scenario(file, default_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const GOOD: &str = r#"
        seed = 7
        duration_s = 20
        [[region]]
        name = "eu"
        client_rtt_ms = 40
        origin_rtt_ms = 10
        clients = { loss = 0.05 }
        [[region]]
        name = "us"
        client_rtt_ms = 30
        [[room]]
        id = 1
        host_region = "eu"
        [[room]]
        id = 2
        host_region = "us"
        [[viewers]]
        room = 1
        region = "eu"
        count = 5
        gifts_per_s = 1
        gift_mix = [{ gift = 3, weight = 2, count = 2 }]
        [[cohosts]]
        room = 2
        region = "us"
        count = 2
        [[step]]
        at_s = 2
        pk = { rooms = [1, 2], duration_s = 10 }
        [[step]]
        at_s = 5
        kill_relay = "eu"
        [[step]]
        at_s = 6
        [step.impair]
        region = "us"
        path = "clients"
        for_s = 3
        [step.impair.profile]
        loss = 0.1
        [step.impair.profile.down]
        delay_ms = 5
    "#;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::from_toml(text, "test")
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("must be refused").to_string()
    }

    #[test]
    fn a_full_scenario_parses() {
        let s = parse(GOOD).expect("parses");
        assert_eq!(s.name, "test");
        assert_eq!(s.seed, 7);
        assert_eq!(s.regions.len(), 2);
        assert_eq!(s.regions[0].clients.up.loss, 0.05);
        assert_eq!(s.viewers[0].gift_mix[0].count, 2);
        assert_eq!(s.client_count(), 2 + 5 + 2);
        assert_eq!(s.steps.len(), 3);
        match &s.steps[2].action {
            StepAction::Impair {
                region,
                path,
                profile,
                for_,
            } => {
                assert_eq!((*region, *path), (1, PathKind::Clients));
                assert_eq!(profile.up.loss, 0.1);
                assert_eq!(profile.down.delay_ms, 5.0);
                assert_eq!(*for_, Some(Duration::from_secs(3)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn typos_name_the_key() {
        let e = err(&GOOD.replace("gifts_per_s", "gift_per_s"));
        assert!(e.contains("gift_per_s"), "{e}");
        let e = err(&GOOD.replace("kill_relay", "kil_relay"));
        assert!(e.contains("kil_relay"), "{e}");
        let e = err(&GOOD.replace("clients = { loss", "clients = { los"));
        assert!(e.contains("los"), "{e}");
    }

    #[test]
    fn bad_references_say_what_exists() {
        let e = err(&GOOD.replace(r#"kill_relay = "eu""#, r#"kill_relay = "asia""#));
        assert!(e.contains("asia") && e.contains("eu, us"), "{e}");
        let e = err(&GOOD.replace("rooms = [1, 2]", "rooms = [1, 3]"));
        assert!(e.contains("no room with id 3"), "{e}");
        let e = err(&GOOD.replace("gift = 3,", "gift = 99,"));
        assert!(e.contains("catalogue"), "{e}");
    }

    #[test]
    fn times_must_fit_the_run() {
        let e = err(&GOOD.replace("duration_s = 10", "duration_s = 30"));
        assert!(e.contains("pk.duration_s"), "{e}");
        let e = err(&GOOD.replace("at_s = 5", "at_s = 25"));
        assert!(e.contains("at_s must be in"), "{e}");
    }

    #[test]
    fn one_action_per_step() {
        let e = err(&GOOD.replace(
            r#"kill_relay = "eu""#,
            "kill_relay = \"eu\"\ndrain_relay = \"us\"",
        ));
        assert!(e.contains("kill_relay and drain_relay"), "{e}");
        let e = err(&GOOD.replace(r#"kill_relay = "eu""#, ""));
        assert!(e.contains("no action"), "{e}");
    }

    #[test]
    fn the_last_relay_is_never_removed() {
        let e = err(&GOOD.replace(
            "[[step]]\n        at_s = 6",
            "[[step]]\n        at_s = 7\n        drain_relay = \"us\"\n        [[step]]\n        at_s = 6",
        ));
        assert!(e.contains("last one standing"), "{e}");
        let e = err(&GOOD.replace(
            "[[step]]\n        at_s = 6",
            "[[step]]\n        at_s = 7\n        blackhole = { region = \"eu\", for_s = 1 }\n        [[step]]\n        at_s = 6",
        ));
        assert!(e.contains("already gone"), "{e}");
    }

    #[test]
    fn gates_parse_in_a_fixed_order() {
        let s = parse(&format!(
            "{GOOD}\n        [gates]\n        recovery_p99_s = 4\n        gift_ack_p99_ms = 250.5\n        start_success_min = 1\n"
        ))
        .expect("parses");
        assert_eq!(
            s.gates,
            [
                Limit {
                    gate: Gate::GiftAckP99Ms,
                    value: 250.5
                },
                Limit {
                    gate: Gate::StartSuccessMin,
                    value: 1.0
                },
                Limit {
                    gate: Gate::RecoveryP99S,
                    value: 4.0
                },
            ]
        );
        assert_eq!(s.battles_asked(), 1);
        assert!(parse(GOOD).expect("parses").gates.is_empty());
    }

    #[test]
    fn bad_gates_are_refused_by_name() {
        let with = |gates: &str| err(&format!("{GOOD}\n[gates]\n{gates}\n"));
        let e = with("gift_ack_p99 = 100");
        assert!(e.contains("gift_ack_p99"), "{e}");
        let e = with("delivery_p99_ms = \"fast\"");
        assert!(e.contains("delivery_p99_ms"), "{e}");
        let e = with("delivery_p99_ms = 0");
        assert!(
            e.contains("gates.delivery_p99_ms must be a number above 0"),
            "{e}"
        );
        let e = with("start_success_min = 1.5");
        assert!(
            e.contains("gates.start_success_min must be in [0, 1]"),
            "{e}"
        );
        // A gate the scenario has no sample for.
        let e = with("chat_ack_p99_ms = 100");
        assert!(
            e.contains("gates.chat_ack_p99_ms") && e.contains("chats_per_s"),
            "{e}"
        );
        let no_pk = GOOD.replace(
            "pk = { rooms = [1, 2], duration_s = 10 }",
            "gift_burst = { room = 1, gifts = 10 }",
        );
        let e = err(&format!("{no_pk}\n[gates]\ntimer_drift_p99_ms = 10\n"));
        assert!(
            e.contains("gates.timer_drift_p99_ms") && e.contains("a pk step"),
            "{e}"
        );
    }

    #[test]
    fn defaults_fill_in() {
        let s = parse(
            r#"
            duration_s = 5
            [[region]]
            name = "a"
            client_rtt_ms = 10
            [[room]]
            id = 1
            host_region = "a"
            [[viewers]]
            room = 1
            region = "a"
            count = 1
            "#,
        )
        .expect("parses");
        assert_eq!(s.seed, 1);
        assert_eq!(s.viewers[0].gift_mix, check::default_mix());
        assert_eq!(s.rules.pk_grace, Duration::from_secs(1));
        assert!(s.steps.is_empty());
    }
}
