//! The relay's configuration: a TOML file plus `RINGSIDE_RELAY_*`
//! environment overrides, with defaults that run on one machine.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use protocol::net::Tuning;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use protocol::net::TlsFiles;

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
    /// The origin's address.
    pub origin: SocketAddr,
    /// The origin's TLS server name.
    pub origin_server_name: String,
    /// PEM file with the certificate to trust for the origin (local runs:
    /// the origin's `data_dir/origin-cert.pem`).
    pub origin_cert: Option<PathBuf>,
    /// The secret relays prove membership to the origin with.
    pub cluster_secret: String,
    /// The secret client tokens are signed with.
    pub token_secret: String,
    /// Client-facing certificate files; without them a self-signed
    /// certificate is generated and written to `cert_out`.
    pub tls: Option<TlsFiles>,
    /// Where a generated certificate is written for clients to trust.
    pub cert_out: Option<PathBuf>,
    /// Other relays (`host:port`) named in goaway messages when draining.
    pub peers: Vec<String>,
    /// Events kept per room to serve joins and gap repairs.
    pub ring: usize,
    /// Bytes queued for one client before ambient traffic is shed and, past
    /// that, the client is cut off as too slow.
    pub client_budget: usize,
    /// Send critical messages twice this far apart (microseconds); 0 = once.
    pub redundancy_us: u64,
    /// What one client (connection, user, address) may make the relay
    /// hold or do: see [`crate::admission::Limits`].
    pub limits: crate::admission::Limits,
    /// How long draining waits for clients to move before exiting, ms.
    pub drain_timeout_ms: u64,
    /// Client-facing transport settings.
    pub tuning: Tuning,
    /// Origin-facing transport settings.
    pub upstream_tuning: Tuning,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "relay".into(),
            region: "local".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 4700)),
            origin: SocketAddr::from(([127, 0, 0, 1], 4600)),
            origin_server_name: "localhost".into(),
            origin_cert: Some(PathBuf::from("ringside-data/origin/origin-cert.pem")),
            cluster_secret: "ringside-local-cluster-secret".into(),
            token_secret: "ringside-local-token-secret".into(),
            tls: None,
            cert_out: Some(PathBuf::from("ringside-data/relay-cert.pem")),
            peers: Vec::new(),
            ring: 2048,
            client_budget: 256 * 1024,
            redundancy_us: 4_000,
            limits: crate::admission::Limits::default(),
            drain_timeout_ms: 5_000,
            tuning: Tuning::client_facing(),
            upstream_tuning: Tuning::backbone(),
        }
    }
}

impl Config {
    /// Defaults, then the TOML file (if given), then `RINGSIDE_RELAY_*`
    /// variables (`__` separates levels).
    pub fn load(file: Option<&Path>) -> Result<Config, Box<figment::Error>> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            fig = fig.merge(Toml::file_exact(f));
        }
        fig.merge(Env::prefixed("RINGSIDE_RELAY_").split("__"))
            .extract()
            .map_err(Box::new)
    }
}
