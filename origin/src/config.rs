//! The origin's configuration: a TOML file plus `RINGSIDE_ORIGIN_*`
//! environment overrides, with defaults that run on one machine.

use net::Tuning;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cluster;
use crate::rules;

use net::secret::{SecretError, SecretSource};
pub use net::TlsFiles;

/// Everything the origin needs to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The origin's name in logs.
    pub name: String,
    /// Where relays connect (UDP).
    pub listen: SocketAddr,
    /// Where the write-ahead log lives, with its checkpoint and, under
    /// `rooms/`, the archives of unloaded rooms (a few hundred bytes each).
    pub data_dir: PathBuf,
    /// The secret relays prove membership with, inline (wins over
    /// `cluster_secret_file`); at least 32 bytes.
    pub cluster_secret: Option<String>,
    /// File holding the cluster secret; default `data_dir/cluster-secret`,
    /// generated there (32 random bytes, hex, mode 0600) if missing when the
    /// origin listens on loopback. Outside loopback a missing secret refuses
    /// to start.
    pub cluster_secret_file: Option<PathBuf>,
    /// Certificate files; without them a self-signed identity is kept in
    /// `data_dir/origin-identity.pem` (reused at every start) and its
    /// certificate written to `data_dir/origin-cert.pem` for relays to trust.
    pub tls: Option<TlsFiles>,
    /// Events kept per room to serve a resubscribing relay without a snapshot.
    pub ring: usize,
    /// Messages queued for one relay before it is cut off as too slow.
    pub relay_queue: usize,
    /// Write a checkpoint of every room after this many records, so that a
    /// restart replays at most that many (0: never).
    pub checkpoint_every: u64,
    /// Transport settings for relay connections.
    pub tuning: Tuning,
    /// Threads the origin's tasks run on, besides the commit thread (read
    /// by the `origin` binary, which builds its runtime from it:
    /// `ops::runtime`). 1 (the default): every task on one thread, so a
    /// relay's message, the rules and the reply never wait for a second
    /// thread to wake (`testbed bench`: the link ping 16 µs on one
    /// thread against ~100 µs on two). The rules are one task either way;
    /// `0` (one worker per core) or `n` spreads the relay links and the
    /// publisher over more cores for many relays.
    pub threads: usize,
    /// The room rules.
    pub rules: rules::Config,
    /// Where to serve `/metrics` (Prometheus / OpenMetrics text), `/healthz`
    /// and `/readyz` over plain HTTP, for example `127.0.0.1:9465`
    /// (`RINGSIDE_ORIGIN_METRICS_LISTEN`). Off when unset (the default).
    /// Meant for a private network: it has no authentication. `/readyz`
    /// answers 200 once the log is replayed and relays can connect, 503
    /// before and after the log fails.
    pub metrics_listen: Option<SocketAddr>,
    /// This origin's name on every metric series (the constant label
    /// `node`).
    pub node_name: String,
    /// How long after a battle settles its viewers are checked again for
    /// `ringside_post_event_retained_total`; whole seconds in files.
    #[serde(rename = "retention_window_s", with = "secs")]
    pub retention_window: Duration,
    /// Cluster mode (`[cluster]`): room logs in NATS JetStream, rooms
    /// leased to nodes. Absent (the default): this origin is the only one,
    /// on its local write-ahead log. See [`crate::cluster`].
    pub cluster: Option<cluster::Config>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "origin".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 4600)),
            data_dir: PathBuf::from("ringside-data/origin"),
            cluster_secret: None,
            cluster_secret_file: None,
            tls: None,
            ring: 4096,
            relay_queue: 1 << 17,
            checkpoint_every: 100_000,
            tuning: Tuning::backbone(),
            threads: 1,
            rules: rules::Config::default(),
            metrics_listen: None,
            node_name: "origin".into(),
            retention_window: Duration::from_secs(300),
            cluster: None,
        }
    }
}

impl Config {
    /// Defaults, then the TOML file (if given), then `RINGSIDE_ORIGIN_*`
    /// variables (`__` separates levels: `RINGSIDE_ORIGIN_RULES__SEATS=6`).
    pub fn load(file: Option<&Path>) -> Result<Config, Box<figment::Error>> {
        ops::config::load(file, "RINGSIDE_ORIGIN_")
    }

    /// The cluster secret's bytes (generated into its file if missing and
    /// the origin listens on loopback).
    pub fn cluster_secret(&self) -> Result<Vec<u8>, SecretError> {
        let file = (self.cluster_secret_file.clone())
            .unwrap_or_else(|| self.data_dir.join("cluster-secret"));
        SecretSource {
            what: "cluster secret",
            setting: "cluster_secret",
            env_prefix: "RINGSIDE_ORIGIN_",
            inline: self.cluster_secret.as_deref(),
            file: Some(&file),
            generate: self.listen.ip().is_loopback(),
            why_not_generated: format!("the origin listens on {}, outside loopback", self.listen),
        }
        .resolve()
    }
}

/// `Duration` as whole seconds, for config files (sub-second parts are
/// dropped when written).
mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::GiftId;

    #[test]
    fn a_file_and_the_environment_override_the_defaults() {
        let dir = std::env::temp_dir().join(format!("ringside-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("origin.toml");
        std::fs::write(
            &file,
            r#"
name = "origin-eu"
listen = "127.0.0.1:5600"
retention_window_s = 60
[rules]
seats = 6
pk_grace_ms = 1500
gifts = [{ id = 1, value = 2 }, { id = 9, value = 500 }]
[cluster]
node = "node-2"
replicas = 3
lease_ttl_ms = 2000
"#,
        )
        .expect("write");
        // Only this test sets RINGSIDE_ORIGIN_* variables.
        std::env::set_var("RINGSIDE_ORIGIN_RULES__MAX_LIKES", "77");
        std::env::set_var("RINGSIDE_ORIGIN_METRICS_LISTEN", "127.0.0.1:9465");
        let c = Config::load(Some(&file)).expect("loads");
        std::env::remove_var("RINGSIDE_ORIGIN_RULES__MAX_LIKES");
        std::env::remove_var("RINGSIDE_ORIGIN_METRICS_LISTEN");
        assert_eq!(
            c.metrics_listen,
            Some("127.0.0.1:9465".parse().expect("addr"))
        );
        assert_eq!(c.retention_window, Duration::from_secs(60));
        assert_eq!(c.node_name, "origin");
        assert_eq!(Config::default().metrics_listen, None, "off by default");
        assert_eq!(c.name, "origin-eu");
        assert_eq!(c.listen.port(), 5600);
        assert_eq!(c.rules.seats, 6);
        assert_eq!(c.rules.pk_grace, Duration::from_millis(1500));
        assert_eq!(c.rules.gifts.get(&GiftId(9)), Some(&500));
        assert_eq!(c.rules.max_likes, 77);
        assert_eq!(c.ring, Config::default().ring);
        assert_eq!(Config::default().cluster, None, "embedded by default");
        assert_eq!(
            c.cluster.as_ref().map(|k| (k.node.as_str(), k.lease_ttl)),
            Some(("node-2", Duration::from_millis(2000)))
        );
        assert_eq!(c.cluster.map(|k| k.replicas), Some(3));
        std::fs::write(&file, "nmae = \"typo\"").expect("write");
        assert!(
            Config::load(Some(&file)).is_err(),
            "unknown keys are refused"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_cluster_secret_is_generated_locally_and_required_in_public() {
        let dir =
            std::env::temp_dir().join(format!("ringside-origin-secret-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let local = Config {
            data_dir: dir.clone(),
            ..Config::default()
        };
        assert_eq!(local.cluster_secret, None, "no secret in the source");
        let s = local.cluster_secret().expect("generated");
        assert_eq!(local.cluster_secret().expect("reused"), s);
        assert!(dir.join("cluster-secret").exists());
        let public = Config {
            listen: "0.0.0.0:0".parse().expect("address"),
            data_dir: dir.join("elsewhere"),
            ..Config::default()
        };
        let msg = public.cluster_secret().expect_err("refused").to_string();
        assert!(
            msg.contains("RINGSIDE_ORIGIN_CLUSTER_SECRET_FILE="),
            "{msg}"
        );
        let short = Config {
            cluster_secret: Some("s".repeat(31)),
            ..public
        };
        assert!(short.cluster_secret().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
