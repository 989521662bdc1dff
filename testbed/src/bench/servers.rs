//! The bench's server processes: the echo, the origin and the relay(s),
//! spawned from the testbed binary with this run's fresh secrets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};

use super::child::{Server, Spawn};

/// This run's secrets: fresh random ones, written to files in the run's
/// directory (mode 0600) that the server processes are pointed at.
pub(crate) struct Secrets {
    /// Signs client tokens (hex).
    pub(crate) token: String,
    /// Between relays and the origin (hex).
    pub(crate) cluster: String,
    token_file: PathBuf,
    cluster_file: PathBuf,
}

impl Secrets {
    /// Fresh secrets, written into `dir`.
    pub(crate) fn generate(dir: &Path) -> anyhow::Result<Secrets> {
        let token = net::secret::generate_hex().context("generating the token secret")?;
        let cluster = net::secret::generate_hex().context("generating the cluster secret")?;
        let (token_file, cluster_file) = (dir.join("token-secret"), dir.join("cluster-secret"));
        for (file, secret) in [(&token_file, &token), (&cluster_file, &cluster)] {
            if !net::secret::create_private(file, secret.as_bytes())
                .with_context(|| format!("writing {}", file.display()))?
            {
                bail!("{} exists already", file.display());
            }
        }
        Ok(Secrets {
            token,
            cluster,
            token_file,
            cluster_file,
        })
    }
}

/// The bench's server processes.
pub(crate) struct Servers {
    // Field order is drop order: relays go before the origin.
    /// The audience's relay.
    pub(crate) relay: Server,
    /// The sender's relay, when it has one of its own.
    pub(crate) relay2: Option<Server>,
    /// The origin.
    pub(crate) origin: Server,
    /// The datagram echo.
    pub(crate) echo: Server,
}

impl Servers {
    /// Stop them all (relays first), noting in `notes` any that exited
    /// during the run or did not stop in time.
    pub(crate) async fn stop(self, notes: &mut Vec<String>) {
        let Servers {
            relay,
            relay2,
            origin,
            echo,
        } = self;
        let mut all: Vec<Server> = [Some(relay), relay2, Some(origin), Some(echo)]
            .into_iter()
            .flatten()
            .collect();
        for s in all.iter_mut() {
            if !s.is_running() {
                notes.push(format!(
                    "the {} process exited during the run; its log:\n{}",
                    s.name(),
                    s.log_tail(20)
                ));
            }
        }
        let grace = Duration::from_secs(3);
        for s in all {
            let name = s.name().to_string();
            if !s.stop(grace).await {
                notes.push(format!(
                    "the {name} process did not stop within {grace:?}; killed"
                ));
            }
        }
    }
}

/// The relays' settings a bench run chooses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RelayKnobs {
    /// Critical messages twice this far apart (0: once).
    pub redundancy_us: u64,
    /// The relays' `fanout_linger_us` (`None`: their default).
    pub linger_us: Option<u64>,
    /// The relays' `threads` (`None`: their default).
    pub threads: Option<usize>,
}

/// Start the echo, the origin and the relay (and a second relay when
/// `second_relay`), children of `exe`, set as `knobs` says.
pub(crate) async fn start(
    exe: &Path,
    second_relay: bool,
    knobs: RelayKnobs,
    dir: &Path,
    cert: &Path,
    key: &Path,
    secrets: &Secrets,
) -> anyhow::Result<Servers> {
    let path = |p: &Path| p.display().to_string();
    let spawn = |name: &str, args: Vec<String>, env: Vec<(&str, String)>| {
        Spawn::child(exe, dir, name, args, env)
    };
    let echo = Server::spawn(spawn(
        "echo",
        vec![
            "serve-echo".into(),
            "--cert".into(),
            path(cert),
            "--key".into(),
            path(key),
        ],
        vec![],
    ))
    .await?;
    let origin = Server::spawn(spawn(
        "origin",
        vec!["serve-origin".into()],
        vec![
            ("RINGSIDE_ORIGIN_NAME", "bench-origin".into()),
            ("RINGSIDE_ORIGIN_LISTEN", "127.0.0.1:0".into()),
            ("RINGSIDE_ORIGIN_DATA_DIR", path(&dir.join("origin"))),
            (
                "RINGSIDE_ORIGIN_CLUSTER_SECRET_FILE",
                path(&secrets.cluster_file),
            ),
            ("RINGSIDE_ORIGIN_TLS__CERT", path(cert)),
            ("RINGSIDE_ORIGIN_TLS__KEY", path(key)),
            // The probes gift back to back as one user: the bench times
            // the hop, not the per-user rate backstop (its default, 200/s,
            // would throttle the origin gift run after its burst).
            ("RINGSIDE_ORIGIN_RULES__USER_RATE", "1000000".into()),
            ("RINGSIDE_ORIGIN_RULES__USER_BURST", "2000000".into()),
        ],
    ))
    .await?;
    let relay_env = |name: &str| {
        let mut env = vec![
            ("RINGSIDE_RELAY_NAME", name.to_string()),
            ("RINGSIDE_RELAY_REGION", "bench".into()),
            ("RINGSIDE_RELAY_LISTEN", "127.0.0.1:0".into()),
            ("RINGSIDE_RELAY_ORIGIN", origin.addr().to_string()),
            ("RINGSIDE_RELAY_ORIGIN_CERT", path(cert)),
            (
                "RINGSIDE_RELAY_CLUSTER_SECRET_FILE",
                path(&secrets.cluster_file),
            ),
            (
                "RINGSIDE_RELAY_TOKEN_SECRET_FILE",
                path(&secrets.token_file),
            ),
            ("RINGSIDE_RELAY_TLS__CERT", path(cert)),
            ("RINGSIDE_RELAY_TLS__KEY", path(key)),
            // The bench's clients act far faster than people do.
            ("RINGSIDE_RELAY_LIMITS__ACTIONS_PER_SEC", "100000".into()),
            ("RINGSIDE_RELAY_LIMITS__ACTION_BURST", "200000".into()),
            ("RINGSIDE_RELAY_LIMITS__MESSAGES_PER_SEC", "1000000".into()),
            // Thousands of clients, all on loopback.
            ("RINGSIDE_RELAY_LIMITS__MAX_PER_ADDR", "100000".into()),
            (
                "RINGSIDE_RELAY_LIMITS__MAX_UNAUTHENTICATED",
                "100000".into(),
            ),
            (
                "RINGSIDE_RELAY_LIMITS__RETRY_ABOVE_PER_SEC",
                "100000".into(),
            ),
            ("RINGSIDE_RELAY_LIMITS__HANDSHAKES_PER_SEC", "100000".into()),
            ("RINGSIDE_RELAY_LIMITS__HANDSHAKE_BURST", "100000".into()),
            (
                "RINGSIDE_RELAY_REDUNDANCY_US",
                knobs.redundancy_us.to_string(),
            ),
        ];
        if let Some(us) = knobs.linger_us {
            env.push(("RINGSIDE_RELAY_FANOUT_LINGER_US", us.to_string()));
        }
        if let Some(n) = knobs.threads {
            env.push(("RINGSIDE_RELAY_THREADS", n.to_string()));
        }
        env
    };
    let relay = Server::spawn(spawn(
        "relay",
        vec!["serve-relay".into()],
        relay_env("bench-relay"),
    ))
    .await?;
    let relay2 = if second_relay {
        Some(
            Server::spawn(spawn(
                "relay2",
                vec!["serve-relay".into()],
                relay_env("bench-relay-2"),
            ))
            .await?,
        )
    } else {
        None
    };
    Ok(Servers {
        relay,
        relay2,
        origin,
        echo,
    })
}
