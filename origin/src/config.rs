//! The origin's configuration: a TOML file plus `RINGSIDE_ORIGIN_*`
//! environment overrides, with defaults that run on one machine.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use protocol::net::Tuning;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::rules;

/// Certificate and key files for a real deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Everything the origin needs to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The origin's name in logs.
    pub name: String,
    /// Where relays connect (UDP).
    pub listen: SocketAddr,
    /// Where the write-ahead log lives.
    pub data_dir: PathBuf,
    /// The secret relays prove membership with.
    pub cluster_secret: String,
    /// Certificate files; without them a self-signed certificate is
    /// generated and written to `data_dir/origin-cert.pem` for relays to trust.
    pub tls: Option<TlsFiles>,
    /// Events kept per room to serve a resubscribing relay without a snapshot.
    pub ring: usize,
    /// Messages queued for one relay before it is cut off as too slow.
    pub relay_queue: usize,
    /// Transport settings for relay connections.
    pub tuning: Tuning,
    /// The room rules.
    pub rules: rules::Config,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "origin".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 4600)),
            data_dir: PathBuf::from("ringside-data/origin"),
            cluster_secret: "ringside-local-cluster-secret".into(),
            tls: None,
            ring: 4096,
            relay_queue: 1 << 17,
            tuning: Tuning::backbone(),
            rules: rules::Config::default(),
        }
    }
}

impl Config {
    /// Defaults, then the TOML file (if given), then `RINGSIDE_ORIGIN_*`
    /// variables (`__` separates levels: `RINGSIDE_ORIGIN_RULES__SEATS=6`).
    pub fn load(file: Option<&Path>) -> Result<Config, Box<figment::Error>> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            fig = fig.merge(Toml::file_exact(f));
        }
        fig.merge(Env::prefixed("RINGSIDE_ORIGIN_").split("__"))
            .extract()
            .map_err(Box::new)
    }
}
