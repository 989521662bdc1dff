//! Client settings.

use std::net::SocketAddr;
use std::time::Duration;

use net::rustls::pki_types::CertificateDer;
use net::Tuning;

use crate::token::TokenProvider;

/// Client settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Relays to choose from.
    pub relays: Vec<SocketAddr>,
    /// The relays' TLS name.
    pub server_name: String,
    /// The signed token (see `net::token`); with a `token_provider`,
    /// the first one (empty: the provider is asked before connecting).
    pub token: Vec<u8>,
    /// Called for a fresh token before the current one expires (and after a
    /// relay closed the connection for expiry); `None`: the token is fixed,
    /// and its expiry ends the session.
    pub token_provider: Option<TokenProvider>,
    /// Certificates to trust for relays.
    pub roots: Vec<CertificateDer<'static>>,
    /// Transport settings (keep-alive and idle timeout decide how fast a dead
    /// relay is noticed when there is no standby to hear it first).
    pub tuning: Tuning,
    /// Send a copy of each critical action this long after it (default
    /// 8 ms); `None` sends once (no copies at all).
    pub redundancy: Option<Duration>,
    /// Send a second copy this long after the action (default 16 ms:
    /// beyond a burst of losses the first copy may share with it) while the
    /// path is losing packets (a loss in the last 5 s); `None`: one copy.
    /// Only with `redundancy`; a copy is not sent once the answer is in.
    pub second_copy: Option<Duration>,
    /// Send a third copy this long after the action (default 32 ms: past a
    /// long burst, sooner than the stream fallback) while the path is losing
    /// packets; `None`: two copies at most. Only with `second_copy`.
    pub third_copy: Option<Duration>,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// Use datagrams (the default). Off, everything travels on the reliable
    /// stream: the baseline the testbed compares against.
    pub datagrams: bool,
    /// Rank relays by measured RTT (the default); off, they are tried in the
    /// order given (an app pinning users to a region).
    pub probe: bool,
    /// How long an action may wait for its outcome (default 30 s): past it,
    /// the SDK stops trying and the action's future resolves with
    /// [`Error::Throttled`](crate::Error::Throttled) or [`Error::TimedOut`](crate::Error::TimedOut). [`Room::act_within`](crate::Room::act_within) sets
    /// it per call.
    pub action_deadline: Duration,
    /// Most actions sent and not yet answered at once (default 32); more
    /// wait in the SDK, oldest first, so a burst never floods the relay.
    pub action_window: usize,
    /// Keep a warm standby connection to a second relay (the default, with
    /// more than one relay): it hears at once when the live relay dies and
    /// the session resumes on it without a handshake, so a relay's death is
    /// survived within a second while idle connections send keep-alives
    /// only every few seconds ([`Tuning::keep_alive_ms`]).
    pub standby: bool,
    /// How often the client reports its ack times (bucketed per class) and
    /// its clock error bound to its relay, for the operators' metrics
    /// (default 10 s); `None`: never.
    pub report_every: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            relays: Vec::new(),
            server_name: "localhost".into(),
            token: Vec::new(),
            token_provider: None,
            roots: Vec::new(),
            tuning: Tuning::default(),
            redundancy: Some(crate::retry::COPY_DELAY),
            second_copy: Some(crate::retry::SECOND_COPY_DELAY),
            third_copy: Some(crate::retry::THIRD_COPY_DELAY),
            connect_timeout: Duration::from_millis(1500),
            datagrams: true,
            probe: true,
            action_deadline: Duration::from_secs(30),
            action_window: 32,
            standby: true,
            report_every: Some(Duration::from_secs(10)),
        }
    }
}
