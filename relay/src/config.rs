//! The relay's configuration: a TOML file plus `RINGSIDE_RELAY_*`
//! environment overrides, with defaults that run on one machine.

use net::Tuning;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use net::secret::{SecretError, SecretSource};
pub use net::TlsFiles;

/// Everything a relay needs to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The relay's name (in logs, in `Welcome`).
    pub name: String,
    /// Its region.
    pub region: String,
    /// Where clients connect (UDP).
    pub listen: SocketAddr,
    /// The origin's address (embedded mode: one origin for every room).
    pub origin: SocketAddr,
    /// Cluster mode: the addresses of every origin node (when not empty it
    /// replaces `origin`). The relay keeps a link to each and routes each
    /// room's traffic to the node serving it (rendezvous placement over the
    /// nodes it is connected to, corrected by the nodes' `Moved` and
    /// `Redirect` answers). Default: empty (embedded mode). In TOML
    /// `origins = ["10.0.0.1:4600", "10.0.0.2:4600"]`; in the environment
    /// `RINGSIDE_RELAY_ORIGINS=[10.0.0.1:4600,10.0.0.2:4600]`. List every
    /// node: a room whose owner is not listed waits (retrying) until the
    /// placement gives it to a listed one.
    pub origins: Vec<SocketAddr>,
    /// The origin's TLS server name (in cluster mode, every node's).
    pub origin_server_name: String,
    /// PEM file with the certificate to trust for the origin (local runs:
    /// the origin's `data_dir/origin-cert.pem`); in cluster mode it may hold
    /// several certificates (a bundle: each node's, or their CA's).
    pub origin_cert: Option<PathBuf>,
    /// The secret relays prove membership to the origin with, inline (wins
    /// over `cluster_secret_file`); at least 32 bytes.
    pub cluster_secret: Option<String>,
    /// File holding the cluster secret (surrounding whitespace ignored). By
    /// default the local origin's, which generates it on loopback
    /// (`ringside-data/origin/cluster-secret`); a relay never generates it.
    pub cluster_secret_file: Option<PathBuf>,
    /// The secret client tokens are signed with, inline (wins over
    /// `token_secret_file`); at least 32 bytes.
    pub token_secret: Option<String>,
    /// File holding the token secret (surrounding whitespace ignored). A
    /// relay listening on loopback generates it if missing (32 random bytes,
    /// hex, mode 0600); the default is shared by every local relay and by
    /// `relay mint-token`. A relay listening elsewhere refuses to start
    /// without a configured secret.
    pub token_secret_file: Option<PathBuf>,
    /// Client-facing certificate files; without them a self-signed
    /// certificate is used (kept in `identity_file`) and written to `cert_out`.
    pub tls: Option<TlsFiles>,
    /// Where a generated certificate is written for clients to trust.
    pub cert_out: Option<PathBuf>,
    /// Where a generated identity (private key and certificate, PEM, mode
    /// 0600) is kept and reused across restarts; `None`: a new one at every
    /// start.
    pub identity_file: Option<PathBuf>,
    /// Other relays (`host:port`) named in goaway messages when draining.
    pub peers: Vec<String>,
    /// Events kept per room to serve joins and gap repairs.
    pub ring: usize,
    /// Bytes queued for one client before ambient traffic is shed and, past
    /// that, the client is cut off as too slow.
    pub client_budget: usize,
    /// Send critical messages twice this far apart (microseconds); 0 = once.
    pub redundancy_us: u64,
    /// A client woken for room events less than this long ago
    /// (microseconds) gets the next ones this long after that wake, several
    /// to a datagram; a client with nothing for that long gets them at once.
    /// Answers to the client itself (acks, pongs) never wait. 0: every event
    /// at once. See `linger.rs`.
    pub fanout_linger_us: u64,
    /// Threads the relay's tasks run on (read by the `relay` binary, which
    /// builds its runtime from it: `ops::runtime`). 0 (the default): one
    /// worker per core. 1: every task on one thread, which spends the least
    /// CPU per delivery, since no task wakes another across threads
    /// (`testbed bench --relay-threads 1`: 2.8–3.0 against 3.5–4.0 µs per
    /// delivery with two, the same fan-out latency, a client's ping through
    /// the relay 15 against ~110 µs), but leaves the relay one core to
    /// share with whatever attacks it: under `testbed attack` the honest
    /// acks' p99 went past twice the baseline in 4 of 14 attacks on one
    /// thread, 2 of 14 with one worker per core (handshakes, which is past
    /// it in most runs either way, and conn-flood once in five runs). So
    /// one thread suits a relay behind other protection, or one relay
    /// process per core.
    pub threads: usize,
    /// What one client (connection, user, address) may make the relay
    /// hold or do: see [`crate::admission::Limits`].
    pub limits: crate::admission::Limits,
    /// How long draining waits for clients to move before exiting, ms.
    pub drain_timeout_ms: u64,
    /// Client-facing transport settings.
    pub tuning: Tuning,
    /// Origin-facing transport settings.
    pub upstream_tuning: Tuning,
    /// Where to serve `/metrics` (Prometheus/OpenMetrics text), `/healthz`
    /// and `/readyz` over HTTP (for example `127.0.0.1:9464`); `None` (the
    /// default): not at all. Put it on a private address: it carries no
    /// secret, but it is for operators.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "relay".into(),
            region: "local".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 4700)),
            origin: SocketAddr::from(([127, 0, 0, 1], 4600)),
            origins: Vec::new(),
            origin_server_name: "localhost".into(),
            origin_cert: Some(PathBuf::from("ringside-data/origin/origin-cert.pem")),
            cluster_secret: None,
            cluster_secret_file: Some(PathBuf::from("ringside-data/origin/cluster-secret")),
            token_secret: None,
            token_secret_file: Some(PathBuf::from("ringside-data/token-secret")),
            tls: None,
            cert_out: Some(PathBuf::from("ringside-data/relay-cert.pem")),
            identity_file: Some(PathBuf::from("ringside-data/relay-identity.pem")),
            peers: Vec::new(),
            ring: 2048,
            client_budget: 256 * 1024,
            redundancy_us: 4_000,
            fanout_linger_us: 2_000,
            threads: 0,
            limits: crate::admission::Limits::default(),
            drain_timeout_ms: 5_000,
            tuning: Tuning::client_facing(),
            upstream_tuning: Tuning::backbone(),
            metrics_listen: None,
        }
    }
}

impl Config {
    /// Defaults, then the TOML file (if given), then `RINGSIDE_RELAY_*`
    /// variables (`__` separates levels).
    pub fn load(file: Option<&Path>) -> Result<Config, Box<figment::Error>> {
        ops::config::load(file, "RINGSIDE_RELAY_")
    }

    /// The token secret's bytes (generated into `token_secret_file` if it is
    /// missing and the relay listens on loopback).
    pub fn token_secret(&self) -> Result<Vec<u8>, SecretError> {
        self.secret_source(
            "token secret",
            "token_secret",
            self.token_secret.as_deref(),
            self.token_secret_file.as_deref(),
            self.listen.ip().is_loopback(),
        )
        .resolve()
    }

    /// The cluster secret's bytes (never generated here: the origin does).
    pub fn cluster_secret(&self) -> Result<Vec<u8>, SecretError> {
        self.secret_source(
            "cluster secret",
            "cluster_secret",
            self.cluster_secret.as_deref(),
            self.cluster_secret_file.as_deref(),
            false,
        )
        .resolve()
    }

    /// Both secrets, or one message naming every setting that is missing.
    pub fn secrets(&self) -> Result<Secrets, SecretError> {
        match (self.token_secret(), self.cluster_secret()) {
            (Ok(token), Ok(cluster)) => Ok(Secrets { token, cluster }),
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
            (Err(a), Err(b)) => Err(SecretError::Missing(format!("{a}\n{b}"))),
        }
    }

    fn secret_source<'a>(
        &self,
        what: &'a str,
        setting: &'a str,
        inline: Option<&'a str>,
        file: Option<&'a Path>,
        generate: bool,
    ) -> SecretSource<'a> {
        let why_not_generated = if setting == "cluster_secret" {
            "a relay never generates it (the local origin does, on loopback: start it first)".into()
        } else {
            format!("the relay listens on {}, outside loopback", self.listen)
        };
        SecretSource {
            what,
            setting,
            env_prefix: "RINGSIDE_RELAY_",
            inline,
            file,
            generate,
            why_not_generated,
        }
    }
}

/// A relay's resolved secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets {
    /// What client tokens are signed with.
    pub token: Vec<u8>,
    /// What the relay proves membership to the origin with.
    pub cluster: Vec<u8>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ringside-relay-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// A relay configuration whose secret files live in `dir`.
    fn in_dir(dir: &Path, listen: &str) -> Config {
        Config {
            listen: listen.parse().expect("address"),
            cluster_secret_file: Some(dir.join("origin").join("cluster-secret")),
            token_secret_file: Some(dir.join("token-secret")),
            ..Config::default()
        }
    }

    #[test]
    fn no_default_secret_is_printed_in_the_source() {
        let c = Config::default();
        assert_eq!(c.token_secret, None);
        assert_eq!(c.cluster_secret, None);
    }

    #[test]
    fn a_public_relay_without_secrets_refuses_naming_what_to_set() {
        let dir = temp("public");
        let msg = in_dir(&dir, "0.0.0.0:0")
            .secrets()
            .expect_err("refused")
            .to_string();
        assert!(msg.contains("RINGSIDE_RELAY_TOKEN_SECRET_FILE="), "{msg}");
        assert!(msg.contains("RINGSIDE_RELAY_CLUSTER_SECRET_FILE="), "{msg}");
        assert!(msg.contains("outside loopback"), "{msg}");
        assert!(!dir.join("token-secret").exists(), "nothing generated");
        // Not even with no file setting at all.
        let bare = Config {
            listen: "0.0.0.0:0".parse().expect("address"),
            token_secret_file: None,
            ..Config::default()
        };
        assert!(bare.token_secret().is_err());
        // Inline secrets of 32 bytes are enough; 31 are not.
        let ok = Config {
            token_secret: Some("t".repeat(32)),
            cluster_secret: Some("c".repeat(32)),
            ..in_dir(&dir, "0.0.0.0:0")
        };
        assert!(ok.secrets().is_ok());
        let short = Config {
            token_secret: Some("t".repeat(31)),
            ..ok.clone()
        };
        let msg = short.secrets().expect_err("31 bytes").to_string();
        assert!(
            msg.contains("31 bytes") && msg.contains("RINGSIDE_RELAY_TOKEN_SECRET"),
            "{msg}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn local_relays_share_one_generated_token_secret() {
        let dir = temp("local");
        let a = in_dir(&dir, "127.0.0.1:0");
        let b = Config {
            name: "another".into(),
            ..in_dir(&dir, "127.0.0.1:0")
        };
        let ta = a.token_secret().expect("generated");
        assert!(ta.len() >= 64);
        assert_eq!(b.token_secret().expect("reused"), ta);
        // The cluster secret is the origin's: missing until it generates it.
        assert!(a.cluster_secret().is_err());
        std::fs::create_dir_all(dir.join("origin")).expect("dir");
        std::fs::write(dir.join("origin").join("cluster-secret"), "x".repeat(64)).expect("write");
        assert_eq!(
            a.cluster_secret().expect("read"),
            "x".repeat(64).into_bytes()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn cluster_mode_lists_its_origin_nodes_in_toml_or_the_environment() {
        assert!(Config::default().origins.is_empty(), "embedded by default");
        let dir = temp("origins");
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("relay.toml");
        std::fs::write(
            &file,
            "origins = [\"127.0.0.1:4601\", \"127.0.0.1:4602\"]\n",
        )
        .expect("write");
        let c = Config::load(Some(&file)).expect("loads");
        let want: Vec<SocketAddr> = vec![
            "127.0.0.1:4601".parse().expect("addr"),
            "127.0.0.1:4602".parse().expect("addr"),
        ];
        assert_eq!(c.origins, want);
        // `RINGSIDE_RELAY_ORIGINS=[127.0.0.1:4601,127.0.0.1:4602]` is read
        // as this value.
        let env: figment::value::Value = "[127.0.0.1:4601,127.0.0.1:4602]".parse().expect("parses");
        let from_env: Vec<SocketAddr> = env.deserialize().expect("addresses");
        assert_eq!(from_env, want);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
