//! What the relay tells its operator (Prometheus, through `ops`): the
//! interaction KPIs it is placed to see, and its own health.
//!
//! Every label set is bounded: classes (5), kinds (2), paths (2), links
//! (2), close codes (the protocol's [`ErrorCode`]s) and handshake outcomes
//! (3). No user, session or room id is ever a label. The relay's `region`
//! and `relay` name are constant labels on the whole registry.
//!
//! Updating a metric is an atomic add: the hub (pure, no IO) holds the
//! handles too, and what it observes does not change what it decides.
//!
//! Client-reported figures ([`Metrics::observe_report`]) are only as honest
//! as the clients: a client can lie about its own experience, so a report
//! is capped ([`MAX_REPORTED_ACKS`], one per [`REPORT_EVERY_MIN`]) and a
//! liar moves the histograms by at most that much.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use protocol::message::{ErrorCode, Report, ACK_BUCKETS_US};
use protocol::Class;

/// Acks one report may count (more and it is ignored). An honest client
/// acks at most ~600 actions between two 10 s reports at the default
/// action rate (50/s, burst 100); each counted ack is one histogram
/// observation, so this also bounds what a report costs the relay: at most
/// 1,000 atomic observations per connection per second.
pub const MAX_REPORTED_ACKS: u64 = 1_000;
/// Reports closer together than this are ignored.
pub const REPORT_EVERY_MIN: Duration = Duration::from_millis(900);

/// A message class, lowercase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    /// session, authority, gift, chat or ambient.
    pub class: &'static str,
}

/// An interaction kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// pk or challenge.
    pub kind: &'static str,
}

/// Where a message went out.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SentLabel {
    /// Its class.
    pub class: &'static str,
    /// datagram or stream.
    pub path: &'static str,
}

/// A connection close code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// The error code's name, lowercase.
    pub code: &'static str,
}

/// A handshake outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// accepted, refused or retry.
    pub outcome: &'static str,
}

/// Which QUIC connections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabel {
    /// client (every client connection) or upstream (the origin link).
    pub link: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    ops::buckets::histogram(&ops::buckets::LATENCY_SECONDS)
}

/// The lowercase name of a class.
pub fn class_name(class: Class) -> &'static str {
    match class {
        Class::Session => "session",
        Class::Authority => "authority",
        Class::Gift => "gift",
        Class::Chat => "chat",
        Class::Ambient => "ambient",
    }
}

/// The lowercase name of a close code.
pub fn code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Normal => "normal",
        ErrorCode::Version => "version",
        ErrorCode::BadToken => "bad_token",
        ErrorCode::TokenExpired => "token_expired",
        ErrorCode::Malformed => "malformed",
        ErrorCode::TooLarge => "too_large",
        ErrorCode::Flood => "flood",
        ErrorCode::Shutdown => "shutdown",
        ErrorCode::Timeout => "timeout",
        ErrorCode::Internal => "internal",
        ErrorCode::Limit => "limit",
        ErrorCode::Busy => "busy",
    }
}

/// The relay's metrics. Cheap to clone (every field is a shared handle).
#[derive(Clone, Debug)]
pub struct Metrics {
    /// From an action's arrival to its ack leaving, per class.
    pub action_ack: Histograms<ClassLabel>,
    /// Clients' own action-to-ack times, from their reports, per class.
    pub client_ack: Histograms<ClassLabel>,
    /// Clients' clock error bound, from their reports.
    pub drift: Histogram,
    /// Client sessions that ended while a room of theirs had a live interaction.
    pub interaction_sessions: Family<KindLabel, Counter>,
    /// Of those, the ones that ended abnormally (no goodbye).
    pub interaction_losses: Family<KindLabel, Counter>,
    /// Client connections open now.
    pub connections: Gauge,
    /// Incoming connection attempts, by what admission said.
    pub handshakes: Family<OutcomeLabel, Counter>,
    /// Client connections closed by the relay, by code.
    pub closed: Family<CodeLabel, Counter>,
    /// Messages handed to a client's connection, by class and path.
    pub sent: Family<SentLabel, Counter>,
    /// Ambient messages shed under congestion.
    pub shed: Family<ClassLabel, Counter>,
    /// Gap repairs served.
    pub resyncs: Counter,
    /// Snapshots sent (joins and repairs that needed the whole state).
    pub snapshots: Counter,
    /// Bytes waiting in client queues.
    pub queued_bytes: Gauge,
    /// Whether the link to the origin is up (1) or not (0).
    pub upstream_connected: Gauge,
    /// Links to the origin established after the first.
    pub upstream_reconnects: Counter,
    /// Origin nodes with a live link (cluster mode; 0 or 1 otherwise).
    pub origin_links_up: Gauge,
    /// `Moved` answers acted on (cluster mode: a room changed node).
    pub moved: Counter,
    /// Actions an origin node handed back undecided (cluster mode).
    pub redirects: Counter,
    /// Held actions dropped at their bound (count or time; the client's
    /// retry and the relay's resend are the backstop).
    pub held_dropped: Counter,
    /// Whether the relay is draining (1) or not (0).
    pub draining: Gauge,
    /// QUIC packets sent, as quinn counts them.
    pub path_sent: Family<LinkLabel, Counter>,
    /// QUIC packets declared lost, as quinn counts them.
    pub path_lost: Family<LinkLabel, Counter>,
    /// Client reports ignored (too frequent, too large).
    pub reports_ignored: Counter,
    /// `sent`'s counters by class rank and path (datagram first), looked up
    /// once: counting a send on the fan-out path is one atomic add.
    sent_by: [[Counter; 2]; 5],
    /// `path_sent` and `path_lost` for the client links and the upstream
    /// link, looked up once (every connection adds to them every 50 ms).
    path_by: [(Counter, Counter); 2],
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            action_ack: Family::new_with_constructor(latency),
            client_ack: Family::new_with_constructor(latency),
            drift: ops::buckets::histogram(&ops::buckets::DRIFT_SECONDS),
            interaction_sessions: Family::default(),
            interaction_losses: Family::default(),
            connections: Gauge::default(),
            handshakes: Family::default(),
            closed: Family::default(),
            sent: Family::default(),
            shed: Family::default(),
            resyncs: Counter::default(),
            snapshots: Counter::default(),
            queued_bytes: Gauge::default(),
            upstream_connected: Gauge::default(),
            upstream_reconnects: Counter::default(),
            origin_links_up: Gauge::default(),
            moved: Counter::default(),
            redirects: Counter::default(),
            held_dropped: Counter::default(),
            draining: Gauge::default(),
            path_sent: Family::default(),
            path_lost: Family::default(),
            reports_ignored: Counter::default(),
            sent_by: Default::default(),
            path_by: Default::default(),
        };
        // Every series an alert or a dashboard reads exists from the start
        // (at zero), so rates and ratios work before the first event.
        for class in Class::ALL.map(class_name) {
            let _ = m.action_ack.get_or_create(&ClassLabel { class });
            let _ = m.client_ack.get_or_create(&ClassLabel { class });
        }
        for kind in ["pk", "challenge"] {
            let _ = m.interaction_sessions.get_or_create(&KindLabel { kind });
            let _ = m.interaction_losses.get_or_create(&KindLabel { kind });
        }
        for outcome in ["accepted", "refused", "retry"] {
            let _ = m.handshakes.get_or_create(&OutcomeLabel { outcome });
        }
        for (i, link) in ["client", "upstream"].into_iter().enumerate() {
            m.path_by[i] = (
                m.path_sent.get_or_create(&LinkLabel { link }).clone(),
                m.path_lost.get_or_create(&LinkLabel { link }).clone(),
            );
        }
        let _ = m.shed.get_or_create(&ClassLabel { class: "ambient" });
        for class in Class::ALL {
            for (i, path) in ["datagram", "stream"].into_iter().enumerate() {
                let label = SentLabel {
                    class: class_name(class),
                    path,
                };
                m.sent_by[class.rank()][i] = m.sent.get_or_create(&label).clone();
            }
        }
        for code in [
            ErrorCode::Normal,
            ErrorCode::Malformed,
            ErrorCode::TooLarge,
            ErrorCode::BadToken,
            ErrorCode::TokenExpired,
            ErrorCode::Version,
            ErrorCode::Flood,
            ErrorCode::Timeout,
            ErrorCode::Shutdown,
            ErrorCode::Limit,
            ErrorCode::Busy,
        ] {
            let _ = m.closed.get_or_create(&CodeLabel {
                code: code_name(code),
            });
        }
        m
    }
}

impl Metrics {
    /// Registers every metric in `registry`.
    pub fn register(&self, r: &mut Registry) {
        r.register_with_unit(
            "ringside_action_ack",
            "From an action's arrival at the relay to its ack leaving, by class",
            Unit::Seconds,
            self.action_ack.clone(),
        );
        r.register_with_unit(
            "ringside_client_ack",
            "Clients' own action-to-ack time (SDK end to end), from their periodic reports, by class",
            Unit::Seconds,
            self.client_ack.clone(),
        );
        r.register_with_unit(
            "ringside_timer_drift",
            "Clients' bound on their clock error against the origin (half the best clock-exchange RTT plus the offset's change since the last report)",
            Unit::Seconds,
            self.drift.clone(),
        );
        r.register(
            "ringside_interaction_sessions",
            "Client sessions that ended while a room they followed had a live interaction, by kind",
            self.interaction_sessions.clone(),
        );
        r.register(
            "ringside_interaction_session_losses",
            "Of those, sessions that ended abnormally (no goodbye: crash, network loss, error), by kind",
            self.interaction_losses.clone(),
        );
        r.register(
            "ringside_relay_connections",
            "Client connections open",
            self.connections.clone(),
        );
        r.register(
            "ringside_relay_handshakes",
            "Incoming client connections by admission outcome",
            self.handshakes.clone(),
        );
        r.register(
            "ringside_relay_clients_closed",
            "Client connections the relay closed, by code",
            self.closed.clone(),
        );
        r.register(
            "ringside_relay_sent",
            "Messages handed to client connections, by class and path (datagram, or the reliable stream)",
            self.sent.clone(),
        );
        r.register(
            "ringside_relay_shed",
            "Messages shed under congestion, by class",
            self.shed.clone(),
        );
        r.register(
            "ringside_relay_resyncs",
            "Gap repairs served",
            self.resyncs.clone(),
        );
        r.register(
            "ringside_relay_snapshots",
            "Room snapshots sent to clients",
            self.snapshots.clone(),
        );
        r.register_with_unit(
            "ringside_relay_queued",
            "Bytes waiting in client queues",
            Unit::Bytes,
            self.queued_bytes.clone(),
        );
        self.register_upstream(r);
        r.register(
            "ringside_relay_draining",
            "1 while the relay is draining",
            self.draining.clone(),
        );
        r.register(
            "ringside_path_sent_packets",
            "QUIC packets sent, by link",
            self.path_sent.clone(),
        );
        r.register(
            "ringside_path_lost_packets",
            "QUIC packets declared lost, by link",
            self.path_lost.clone(),
        );
        r.register(
            "ringside_relay_reports_ignored",
            "Client reports ignored (too frequent or too large)",
            self.reports_ignored.clone(),
        );
    }

    /// The link(s) to the origin: up or not, nodes linked, reconnects,
    /// and cluster mode's routing answers.
    fn register_upstream(&self, r: &mut Registry) {
        r.register(
            "ringside_relay_upstream_connected",
            "1 while the link to the origin is up",
            self.upstream_connected.clone(),
        );
        r.register(
            "ringside_relay_upstream_reconnects",
            "Links to the origin made after the first",
            self.upstream_reconnects.clone(),
        );
        r.register(
            "ringside_relay_origin_links_up",
            "Origin nodes with a live link",
            self.origin_links_up.clone(),
        );
        r.register(
            "ringside_relay_moved",
            "Rooms moved to another origin node on its answer",
            self.moved.clone(),
        );
        r.register(
            "ringside_relay_redirects",
            "Actions an origin node handed back undecided",
            self.redirects.clone(),
        );
        r.register(
            "ringside_relay_held_dropped",
            "Held actions dropped at their bound",
            self.held_dropped.clone(),
        );
    }

    /// A client's report: its clock error bound and its ack times. `false`
    /// (and nothing counted) when it claims more than [`MAX_REPORTED_ACKS`].
    pub fn observe_report(&self, report: &Report) -> bool {
        let total: u64 = (report.acks.iter())
            .flat_map(|a| a.counts.iter())
            .map(|(_, n)| u64::from(*n))
            .sum();
        let valid = (report.acks.iter())
            .flat_map(|a| a.counts.iter())
            .all(|(bucket, _)| usize::from(*bucket) < ACK_BUCKETS_US.len());
        if total > MAX_REPORTED_ACKS || !valid {
            self.reports_ignored.inc();
            return false;
        }
        if let Some(us) = report.clock_error_us {
            self.drift.observe(f64::from(us) / 1e6);
        }
        for a in &report.acks {
            let h = self.client_ack.get_or_create(&ClassLabel {
                class: class_name(a.class),
            });
            for (bucket, n) in &a.counts {
                // The bucket's upper bound lands in the same Prometheus
                // bucket (the bounds are the same), so counts are exact.
                let v = ACK_BUCKETS_US[usize::from(*bucket)] as f64 / 1e6;
                for _ in 0..*n {
                    h.observe(v);
                }
            }
        }
        true
    }

    /// A client connection closed by the relay with `code`.
    pub fn closed_with(&self, code: ErrorCode) {
        self.closed
            .get_or_create(&CodeLabel {
                code: code_name(code),
            })
            .inc();
    }

    /// A message handed to a connection.
    pub fn sent_on(&self, class: Class, datagram: bool) {
        self.sent_by[class.rank()][usize::from(!datagram)].inc();
    }
}

/// Adds what quinn counted since the last look to the path counters.
#[derive(Debug, Default)]
pub struct PathStats {
    sent: u64,
    lost: u64,
}

impl PathStats {
    /// Adds the growth of `stats` since the last call to `link`'s counters
    /// (`"client"` or `"upstream"`).
    pub fn update(&mut self, m: &Metrics, link: &'static str, stats: &quinn::ConnectionStats) {
        let (sent, lost) = (stats.path.sent_packets, stats.path.lost_packets);
        let (sent_total, lost_total) = &m.path_by[usize::from(link == "upstream")];
        sent_total.inc_by(sent.saturating_sub(self.sent));
        lost_total.inc_by(lost.saturating_sub(self.lost));
        self.sent = self.sent.max(sent);
        self.lost = self.lost.max(lost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::message::AckCounts;

    #[test]
    fn client_buckets_match_the_histogram_buckets() {
        // The report's buckets are the exposition's: a count lands where
        // the client put it.
        let ours: Vec<u64> = (ops::buckets::LATENCY_SECONDS.iter())
            .map(|s| (s * 1e6).round() as u64)
            .collect();
        assert_eq!(ours, ACK_BUCKETS_US[..ours.len()].to_vec());
    }

    #[test]
    fn a_report_moves_the_histograms_and_a_huge_one_is_ignored() {
        let m = Metrics::default();
        let r = Report {
            clock_error_us: Some(2_500),
            acks: vec![AckCounts {
                class: Class::Gift,
                counts: vec![(3, 7), (5, 1)],
            }],
        };
        assert!(m.observe_report(&r));
        let mut reg = Registry::default();
        m.register(&mut reg);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).expect("encode");
        assert!(
            text.contains("ringside_client_ack_seconds_count{class=\"gift\"} 8"),
            "{text}"
        );
        assert!(
            text.contains("ringside_timer_drift_seconds_count 1"),
            "{text}"
        );
        let liar = Report {
            clock_error_us: None,
            acks: vec![AckCounts {
                class: Class::Gift,
                counts: vec![(0, u32::MAX)],
            }],
        };
        assert!(!m.observe_report(&liar));
        let bad_bucket = Report {
            clock_error_us: None,
            acks: vec![AckCounts {
                class: Class::Gift,
                counts: vec![(200, 1)],
            }],
        };
        assert!(!m.observe_report(&bad_bucket));
        assert_eq!(m.reports_ignored.get(), 2);
    }
}
