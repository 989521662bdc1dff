//! The origin and the relay under attack, each a child process of the
//! testbed binary (`serve-origin`, `serve-relay`), configured through their
//! `RINGSIDE_*` variables with the run's secrets and a certificate written
//! into the run's directory. The relay keeps its default limits: the attack
//! measures what an operator would deploy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bench::child::{Server, Spawn};

use super::secrets::Secrets;

/// The two processes. Field order is drop order: the relay goes first.
#[derive(Debug)]
pub struct Servers {
    /// The relay under attack.
    pub relay: Server,
    /// The origin.
    pub origin: Server,
}

/// Where the TLS files are.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    /// PEM certificate (clients may trust it).
    pub cert: PathBuf,
    /// PEM key.
    pub key: PathBuf,
}

impl Servers {
    /// Start the origin, then the relay pointed at it.
    pub async fn start(
        exe: &Path,
        dir: &Path,
        tls: &TlsPaths,
        secrets: &Secrets,
    ) -> anyhow::Result<Servers> {
        let path = |p: &Path| p.display().to_string();
        let spawn = |name: &str, args: Vec<String>, env: Vec<(&str, String)>| {
            Spawn::child(exe, dir, name, args, env)
        };
        let origin = Server::spawn(spawn(
            "origin",
            vec!["serve-origin".into()],
            vec![
                ("RINGSIDE_ORIGIN_NAME", "attack-origin".into()),
                ("RINGSIDE_ORIGIN_LISTEN", "127.0.0.1:0".into()),
                ("RINGSIDE_ORIGIN_DATA_DIR", path(&dir.join("origin"))),
                ("RINGSIDE_ORIGIN_CLUSTER_SECRET", secrets.cluster.clone()),
                ("RINGSIDE_ORIGIN_TLS__CERT", path(&tls.cert)),
                ("RINGSIDE_ORIGIN_TLS__KEY", path(&tls.key)),
            ],
        ))
        .await?;
        let relay = Server::spawn(spawn(
            "relay",
            vec!["serve-relay".into()],
            vec![
                ("RINGSIDE_RELAY_NAME", "attacked-relay".into()),
                ("RINGSIDE_RELAY_REGION", "attack".into()),
                ("RINGSIDE_RELAY_LISTEN", "127.0.0.1:0".into()),
                ("RINGSIDE_RELAY_ORIGIN", origin.addr().to_string()),
                ("RINGSIDE_RELAY_ORIGIN_CERT", path(&tls.cert)),
                ("RINGSIDE_RELAY_CLUSTER_SECRET", secrets.cluster.clone()),
                ("RINGSIDE_RELAY_TOKEN_SECRET", secrets.token.clone()),
                ("RINGSIDE_RELAY_TLS__CERT", path(&tls.cert)),
                ("RINGSIDE_RELAY_TLS__KEY", path(&tls.key)),
            ],
        ))
        .await?;
        Ok(Servers { relay, origin })
    }

    /// Stop both (relay first); returns a note per process that had to be
    /// killed.
    pub async fn stop(self) -> Vec<String> {
        let mut notes = Vec::new();
        let grace = Duration::from_secs(3);
        for s in [self.relay, self.origin] {
            let name = s.name().to_string();
            if !s.stop(grace).await {
                notes.push(format!(
                    "the {name} process did not stop within {grace:?}; killed"
                ));
            }
        }
        notes
    }
}
