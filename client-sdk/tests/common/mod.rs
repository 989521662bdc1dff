//! A whole topology in one process, on 127.0.0.1 with port 0 everywhere: an
//! origin with its own temporary data directory, relays, and clients with
//! signed tokens.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use client_sdk::{Client, Room};
use origin::Origin;
use protocol::net::Identity;
use protocol::token::{unix_now, Claims, TokenKey};
use protocol::{RoomId, RoomState, UserId};
use relay::Relay;

pub const TOKEN_SECRET: &str = "test-token-secret";
pub const CLUSTER_SECRET: &str = "test-cluster-secret";

pub struct Topology {
    pub origin: Option<Origin>,
    pub relays: Vec<Option<Relay>>,
    pub identity: Identity,
    pub data_dir: PathBuf,
    pub origin_config: origin::Config,
    pub relay_configs: Vec<relay::Config>,
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// Short rules for tests: battles of seconds, not minutes.
pub fn fast_rules() -> origin::rules::Config {
    origin::rules::Config {
        pk_min_duration: Duration::from_secs(1),
        pk_grace: Duration::from_millis(500),
        pk_punishment: Duration::from_millis(500),
        ..origin::rules::Config::default()
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "ringside-test-{tag}-{}-{nanos}",
        std::process::id()
    ))
}

impl Topology {
    pub async fn start(tag: &str, relays: usize) -> Topology {
        Topology::start_with(tag, relays, fast_rules()).await
    }

    pub async fn start_with(tag: &str, relays: usize, rules: origin::rules::Config) -> Topology {
        Topology::start_custom(tag, relays, rules, |_| {}).await
    }

    /// With a hook to adjust each relay's configuration.
    pub async fn start_custom(
        tag: &str,
        relays: usize,
        rules: origin::rules::Config,
        tweak: impl Fn(&mut relay::Config),
    ) -> Topology {
        init_tracing();
        let identity = Identity::self_signed(&["localhost"]).expect("certificate");
        let data_dir = temp_dir(tag);
        let origin_config = origin::Config {
            name: format!("origin-{tag}"),
            listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir: data_dir.clone(),
            cluster_secret: CLUSTER_SECRET.into(),
            rules,
            ..origin::Config::default()
        };
        let origin = Origin::start_with(origin_config.clone(), identity.clone())
            .await
            .expect("origin starts");
        // Remember the port, so that a restarted origin comes back on it.
        let origin_config = origin::Config {
            listen: origin.addr(),
            ..origin_config
        };
        let mut t = Topology {
            origin: Some(origin),
            relays: Vec::new(),
            identity,
            data_dir,
            origin_config,
            relay_configs: Vec::new(),
        };
        for i in 0..relays {
            let mut cfg = relay::Config {
                name: format!("relay-{i}"),
                region: format!("region-{i}"),
                listen: "127.0.0.1:0".parse().expect("addr"),
                origin: t.origin_addr(),
                origin_cert: None,
                cluster_secret: CLUSTER_SECRET.into(),
                token_secret: TOKEN_SECRET.into(),
                // Tests send in bursts; the limits are checked by their own test.
                actions_per_sec: 10_000,
                messages_per_sec: 100_000,
                ..relay::Config::default()
            };
            tweak(&mut cfg);
            let r = Relay::start_with(cfg.clone(), t.identity.clone(), t.identity.certs.clone())
                .await
                .expect("relay starts");
            t.relay_configs.push(cfg);
            t.relays.push(Some(r));
        }
        t
    }

    pub fn origin(&self) -> &Origin {
        self.origin.as_ref().expect("origin running")
    }

    pub fn origin_addr(&self) -> std::net::SocketAddr {
        self.origin().addr()
    }

    pub fn relay_addr(&self, i: usize) -> std::net::SocketAddr {
        self.relays[i].as_ref().expect("relay running").addr()
    }

    pub fn relay_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.relays.iter().flatten().map(Relay::addr).collect()
    }

    /// A token for `user`, hosting `host_of`.
    pub fn token(&self, user: u64, host_of: &[RoomId]) -> Vec<u8> {
        TokenKey::new(TOKEN_SECRET.as_bytes()).mint(&Claims {
            user: UserId(user),
            rooms: None,
            host_of: host_of.to_vec(),
            operator: false,
            expires: unix_now() + 3600,
        })
    }

    /// A client of `user` connected to the given relays (best first by RTT).
    pub async fn client(&self, user: u64, host_of: &[RoomId], relays: &[usize]) -> Client {
        let mut b = Client::builder()
            .token(self.token(user, host_of))
            .trust_pem(&self.identity.cert_pem())
            .expect("pem");
        for i in relays {
            b = b.relay(self.relay_addr(*i));
        }
        b.connect().await.expect("client connects")
    }

    /// The origin's committed state of a room.
    pub async fn origin_state(&self, room: RoomId) -> RoomState {
        self.origin()
            .room_state(room)
            .await
            .expect("room exists at the origin")
    }

    /// Restart the origin from its data directory (after an abort or shutdown).
    pub async fn restart_origin(&mut self) {
        let o = Origin::start_with(self.origin_config.clone(), self.identity.clone())
            .await
            .expect("origin restarts");
        self.origin = Some(o);
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Wait until every room handle's state equals the origin's, or panic.
pub async fn converge(t: &Topology, rooms: &[&Room], within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    for room in rooms {
        loop {
            let origin = t.origin_state(room.id()).await;
            let mine = room.state();
            if mine == origin {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "room {} did not converge: client at {}, origin at {}\nclient: {mine:?}\norigin: {origin:?}",
                    room.id(),
                    mine.seq,
                    origin.seq
                );
            }
            let mut w = room.watch();
            let _ = tokio::time::timeout(Duration::from_millis(50), w.changed()).await;
        }
    }
}
