//! What to do to packets: the serde form of an impairment ([`Profile`] for
//! one direction, [`LinkProfile`] for both) and its checked, compiled form.
//!
//! Durations are milliseconds as plain numbers (`delay_ms = 20`,
//! `jitter_ms = 0.5`); probabilities are numbers in `[0, 1]`. Every field has
//! a default, and [`Profile::default`] is a perfect link.

use std::time::Duration;

use figment::value::{Dict, Value};
use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

use super::verdict::Direction;

/// One direction's impairments. Each field is off at its default; any
/// combination may be on at once (see the [module docs](super) for the order
/// in which they apply).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Profile {
    /// Independent (Bernoulli) loss: each packet is lost with this probability.
    pub loss: f64,
    /// Bursty loss from a Gilbert–Elliott chain; `None` turns it off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<GilbertElliott>,
    /// Base one-way delay added to every packet, in milliseconds.
    pub delay_ms: f64,
    /// Jitter scale in milliseconds: the half-width of a uniform jitter or the
    /// standard deviation of a normal one. The total delay is clamped at 0.
    pub jitter_ms: f64,
    /// How jitter is drawn.
    pub jitter_distribution: JitterDistribution,
    /// Whether jitter may reorder packets. `false` (the default) keeps order:
    /// a packet is never released before the one sent before it, as on a
    /// real FIFO path where jitter comes from queueing.
    pub jitter_reorders: bool,
    /// Explicit reordering: with this probability a packet is held back by
    /// `reorder_delay_ms` more, so later packets overtake it.
    pub reorder: f64,
    /// Extra delay of a held-back packet, in milliseconds.
    pub reorder_delay_ms: f64,
    /// Duplication: with this probability a second copy is delivered.
    pub duplicate: f64,
    /// How much later than the original the copy is released, in milliseconds.
    pub duplicate_delay_ms: f64,
    /// Bottleneck rate in bits per second; 0 means unlimited. Each packet
    /// occupies the link for `len * 8 / rate_bps` seconds.
    pub rate_bps: u64,
    /// Drop-tail queue limit of the bottleneck in bytes (0: no byte limit).
    /// Counts every byte not yet fully sent, the packet on the wire included.
    pub queue_bytes: u64,
    /// Drop-tail queue limit of the bottleneck in packets (0: no packet limit).
    pub queue_packets: u64,
    /// Periods during which every packet is dropped.
    #[serde(skip_serializing_if = "Blackhole::is_off")]
    pub blackhole: Blackhole,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            loss: 0.0,
            burst: None,
            delay_ms: 0.0,
            jitter_ms: 0.0,
            jitter_distribution: JitterDistribution::Uniform,
            jitter_reorders: false,
            reorder: 0.0,
            reorder_delay_ms: 10.0,
            duplicate: 0.0,
            duplicate_delay_ms: 0.0,
            rate_bps: 0,
            queue_bytes: 64 * 1024,
            queue_packets: 0,
            blackhole: Blackhole::default(),
        }
    }
}

impl Profile {
    /// Checks every field; the same checks [`Impairment::new`](super::Impairment::new) makes.
    pub fn validate(&self) -> Result<(), ProfileError> {
        Model::compile(self).map(drop)
    }
}

/// How jitter values are drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JitterDistribution {
    /// Uniform in `[-jitter_ms, +jitter_ms]` (netem's default shape).
    #[default]
    Uniform,
    /// Normal with standard deviation `jitter_ms` (Box–Muller).
    Normal,
}

/// A Gilbert–Elliott loss model: a two-state Markov chain stepped once per
/// packet, with a loss probability in each state.
///
/// With `loss_good = 0` and `loss_bad = 1` (the defaults, Gilbert's original
/// model) losses come in bursts of mean length `1 / r` and the long-run loss
/// is `p / (p + r)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GilbertElliott {
    /// Probability of moving from Good to Bad at a packet.
    pub p: f64,
    /// Probability of moving from Bad to Good at a packet.
    pub r: f64,
    /// Loss probability while Good.
    pub loss_good: f64,
    /// Loss probability while Bad.
    pub loss_bad: f64,
}

impl Default for GilbertElliott {
    fn default() -> Self {
        Self {
            p: 0.0,
            r: 1.0,
            loss_good: 0.0,
            loss_bad: 1.0,
        }
    }
}

impl GilbertElliott {
    /// The long-run share of packets lost: `πG·loss_good + πB·loss_bad` with
    /// `πB = p / (p + r)`.
    pub fn stationary_loss(&self) -> f64 {
        if self.p + self.r == 0.0 {
            // The chain never moves; it starts Good.
            return self.loss_good;
        }
        let bad = self.p / (self.p + self.r);
        (1.0 - bad) * self.loss_good + bad * self.loss_bad
    }
}

/// Periods during which a direction drops everything. Times are measured
/// from the start of the link (the `now` the engine is given), not from the
/// moment the profile was set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Blackhole {
    /// Drop everything, now and until the profile changes.
    pub always: bool,
    /// `[start, end)` windows in milliseconds since the link started.
    pub windows_ms: Vec<[f64; 2]>,
    /// Length of the periodic pattern in milliseconds; 0 turns it off.
    pub period_ms: f64,
    /// Dark time at the start of each period, in milliseconds.
    pub dark_ms: f64,
    /// When the first period begins, in milliseconds since the link started.
    pub start_ms: f64,
}

impl Blackhole {
    /// Whether this blackhole never drops anything.
    pub fn is_off(&self) -> bool {
        !self.always && self.windows_ms.is_empty() && (self.period_ms == 0.0 || self.dark_ms == 0.0)
    }
}

/// Both directions of a link. `up` is from the peers towards the upstream
/// service, `down` is the replies.
///
/// In TOML, keys at the top level apply to both directions, and optional
/// `[up]` / `[down]` tables override single fields for one direction:
///
/// ```toml
/// loss = 0.05
/// delay_ms = 20
///
/// [down]
/// loss = 0.01        # down: 1% loss, 20 ms; up: 5% loss, 20 ms
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkProfile {
    /// Peers → upstream.
    pub up: Profile,
    /// Upstream → peers.
    pub down: Profile,
}

impl LinkProfile {
    /// The same profile both ways.
    pub fn symmetric(profile: Profile) -> Self {
        Self {
            up: profile.clone(),
            down: profile,
        }
    }

    /// The profile of one direction.
    pub fn direction(&self, direction: Direction) -> &Profile {
        match direction {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        }
    }

    /// The profile of one direction, to change it.
    pub fn direction_mut(&mut self, direction: Direction) -> &mut Profile {
        match direction {
            Direction::Up => &mut self.up,
            Direction::Down => &mut self.down,
        }
    }

    /// Parses the TOML form described on [`LinkProfile`].
    pub fn from_toml(toml: &str) -> Result<Self, Box<figment::Error>> {
        use figment::providers::{Format, Toml};
        figment::Figment::from(Toml::string(toml))
            .extract()
            .map_err(Box::new)
    }

    /// Checks both directions.
    pub fn validate(&self) -> Result<(), ProfileError> {
        self.up
            .validate()
            .map_err(|e| e.in_direction(Direction::Up))?;
        self.down
            .validate()
            .map_err(|e| e.in_direction(Direction::Down))
    }
}

impl Serialize for LinkProfile {
    /// A symmetric link serialises as one flat profile; an asymmetric one as
    /// full `up` and `down` tables.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Both<'a> {
            up: &'a Profile,
            down: &'a Profile,
        }
        if self.up == self.down {
            self.up.serialize(serializer)
        } else {
            Both {
                up: &self.up,
                down: &self.down,
            }
            .serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for LinkProfile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut both = Dict::deserialize(deserializer)?;
        let up = both.remove("up");
        let down = both.remove("down");
        let both = Value::from(both);
        // The shared keys first, so that an error there is not blamed on a direction.
        both.deserialize::<Profile>().map_err(D::Error::custom)?;
        let one = |over: Option<Value>, name: &str| -> Result<Profile, D::Error> {
            let merged = match over {
                Some(over) => merge(both.clone(), over),
                None => both.clone(),
            };
            merged
                .deserialize()
                .map_err(|e| D::Error::custom(format_args!("{name}: {e}")))
        };
        Ok(Self {
            up: one(up, "up")?,
            down: one(down, "down")?,
        })
    }
}

/// `over` on top of `base`: tables merge key by key, anything else replaces.
fn merge(base: Value, over: Value) -> Value {
    match (base, over) {
        (Value::Dict(tag, mut base), Value::Dict(_, over)) => {
            for (key, value) in over {
                let merged = match base.remove(&key) {
                    Some(old) => merge(old, value),
                    None => value,
                };
                base.insert(key, merged);
            }
            Value::Dict(tag, base)
        }
        (_, over) => over,
    }
}

/// A profile field that is out of range.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ProfileError {
    /// A probability outside `[0, 1]` (or NaN).
    #[error("{field} must be a probability in [0, 1], got {value}")]
    Probability {
        /// The field, as spelt in TOML.
        field: String,
        /// The value given.
        value: f64,
    },
    /// A duration that is negative, NaN or longer than a day.
    #[error("{field} must be a number of milliseconds in [0, {MAX_MS}], got {value}")]
    Duration {
        /// The field, as spelt in TOML.
        field: String,
        /// The value given.
        value: f64,
    },
    /// A rate limit with neither queue limit, which would let the queue grow
    /// without bound.
    #[error("rate_bps needs a queue limit: set queue_bytes or queue_packets")]
    UnboundedQueue,
    /// A blackhole window whose end is not after its start.
    #[error("blackhole window [{start}, {end}) must end after it starts")]
    EmptyWindow {
        /// Start in milliseconds.
        start: f64,
        /// End in milliseconds.
        end: f64,
    },
    /// A periodic blackhole darker than its period, or dark with no period.
    #[error("blackhole dark_ms ({dark}) must be at most period_ms ({period}), and need a period")]
    Period {
        /// `period_ms`.
        period: f64,
        /// `dark_ms`.
        dark: f64,
    },
}

impl ProfileError {
    /// Prefixes the field with `up.` or `down.`.
    fn in_direction(self, direction: Direction) -> Self {
        let prefix = |field: String| format!("{direction}.{field}");
        match self {
            Self::Probability { field, value } => Self::Probability {
                field: prefix(field),
                value,
            },
            Self::Duration { field, value } => Self::Duration {
                field: prefix(field),
                value,
            },
            other => other,
        }
    }
}

/// Longest accepted duration: one day, in milliseconds.
const MAX_MS: f64 = 86_400_000.0;

/// A checked [`Profile`] in the units the engine uses.
#[derive(Clone, Debug)]
pub(crate) struct Model {
    /// See [`Profile::loss`].
    pub(crate) loss: f64,
    /// See [`Profile::burst`].
    pub(crate) burst: Option<GilbertElliott>,
    /// Base delay in nanoseconds.
    pub(crate) delay: Duration,
    /// Jitter scale in nanoseconds (0: no jitter).
    pub(crate) jitter_ns: f64,
    /// See [`Profile::jitter_distribution`].
    pub(crate) jitter_distribution: JitterDistribution,
    /// The negation of [`Profile::jitter_reorders`].
    pub(crate) keep_order: bool,
    /// See [`Profile::reorder`].
    pub(crate) reorder: f64,
    /// See [`Profile::reorder_delay_ms`].
    pub(crate) reorder_delay: Duration,
    /// See [`Profile::duplicate`].
    pub(crate) duplicate: f64,
    /// See [`Profile::duplicate_delay_ms`].
    pub(crate) duplicate_delay: Duration,
    /// The bottleneck.
    pub(crate) rate: Rate,
    /// The blackhole schedule.
    pub(crate) blackhole: Schedule,
}

/// The bottleneck's parameters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rate {
    /// Bits per second; 0 is unlimited.
    pub(crate) bps: u64,
    /// Byte limit of the queue (`u64::MAX`: none).
    pub(crate) queue_bytes: u64,
    /// Packet limit of the queue (never unbounded: see `MAX_QUEUE_PACKETS`).
    pub(crate) queue_packets: usize,
}

/// Hard cap on queued packets when `queue_packets` is 0, so that zero-length
/// datagrams cannot grow the queue without bound.
const MAX_QUEUE_PACKETS: usize = 1 << 16;

/// The blackhole schedule in engine units.
#[derive(Clone, Debug, Default)]
pub(crate) struct Schedule {
    /// See [`Blackhole::always`].
    always: bool,
    /// `[start, end)` windows.
    windows: Vec<(Duration, Duration)>,
    /// `(start, period, dark)` of the periodic pattern.
    periodic: Option<(Duration, Duration, Duration)>,
}

impl Schedule {
    /// Whether a packet arriving at `now` falls into the blackhole.
    pub(crate) fn is_dark(&self, now: Duration) -> bool {
        if self.always {
            return true;
        }
        if self.windows.iter().any(|&(s, e)| s <= now && now < e) {
            return true;
        }
        match self.periodic {
            Some((start, period, dark)) if now >= start => {
                let phase = (now - start).as_nanos() % period.as_nanos();
                phase < dark.as_nanos()
            }
            _ => false,
        }
    }
}

impl Model {
    /// Checks `profile` and converts it to engine units.
    pub(crate) fn compile(profile: &Profile) -> Result<Self, ProfileError> {
        let burst = match &profile.burst {
            Some(ge) => {
                probability("burst.p", ge.p)?;
                probability("burst.r", ge.r)?;
                probability("burst.loss_good", ge.loss_good)?;
                probability("burst.loss_bad", ge.loss_bad)?;
                Some(ge.clone())
            }
            None => None,
        };
        let rate = Rate {
            bps: profile.rate_bps,
            queue_bytes: match profile.queue_bytes {
                0 => u64::MAX,
                n => n,
            },
            queue_packets: match profile.queue_packets {
                0 => MAX_QUEUE_PACKETS,
                n => usize::try_from(n).unwrap_or(usize::MAX),
            },
        };
        if profile.rate_bps > 0 && profile.queue_bytes == 0 && profile.queue_packets == 0 {
            return Err(ProfileError::UnboundedQueue);
        }
        Ok(Self {
            loss: probability("loss", profile.loss)?,
            burst,
            delay: millis("delay_ms", profile.delay_ms)?,
            jitter_ns: millis("jitter_ms", profile.jitter_ms)?.as_nanos() as f64,
            jitter_distribution: profile.jitter_distribution,
            keep_order: !profile.jitter_reorders,
            reorder: probability("reorder", profile.reorder)?,
            reorder_delay: millis("reorder_delay_ms", profile.reorder_delay_ms)?,
            duplicate: probability("duplicate", profile.duplicate)?,
            duplicate_delay: millis("duplicate_delay_ms", profile.duplicate_delay_ms)?,
            rate,
            blackhole: schedule(&profile.blackhole)?,
        })
    }
}

/// Compiles a [`Blackhole`].
fn schedule(b: &Blackhole) -> Result<Schedule, ProfileError> {
    let mut windows = Vec::with_capacity(b.windows_ms.len());
    for &[start, end] in &b.windows_ms {
        let s = millis("blackhole.windows_ms", start)?;
        let e = millis("blackhole.windows_ms", end)?;
        if e <= s {
            return Err(ProfileError::EmptyWindow { start, end });
        }
        windows.push((s, e));
    }
    let period = millis("blackhole.period_ms", b.period_ms)?;
    let dark = millis("blackhole.dark_ms", b.dark_ms)?;
    let start = millis("blackhole.start_ms", b.start_ms)?;
    let periodic = match (period.is_zero(), dark.is_zero()) {
        (_, true) => None,
        (false, false) if dark <= period => Some((start, period, dark)),
        _ => {
            return Err(ProfileError::Period {
                period: b.period_ms,
                dark: b.dark_ms,
            })
        }
    };
    Ok(Schedule {
        always: b.always,
        windows,
        periodic,
    })
}

/// Checks a probability.
fn probability(field: &str, value: f64) -> Result<f64, ProfileError> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(ProfileError::Probability {
            field: field.to_owned(),
            value,
        })
    }
}

/// Checks a duration in milliseconds and converts it, rounded to the
/// nanosecond.
fn millis(field: &str, value: f64) -> Result<Duration, ProfileError> {
    if (0.0..=MAX_MS).contains(&value) {
        Ok(Duration::from_nanos((value * 1e6).round() as u64))
    } else {
        Err(ProfileError::Duration {
            field: field.to_owned(),
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_is_valid_and_off() {
        let p = Profile::default();
        p.validate().expect("default is valid");
        assert!(p.blackhole.is_off());
    }

    #[test]
    fn top_level_keys_apply_both_ways_and_tables_override_fields() {
        let link = LinkProfile::from_toml(
            r#"
            loss = 0.05
            delay_ms = 20
            [burst]
            p = 0.01
            r = 0.5
            [down]
            loss = 0.01
            [down.burst]
            r = 0.25
            "#,
        )
        .expect("parses");
        assert_eq!(link.up.loss, 0.05);
        assert_eq!(link.down.loss, 0.01);
        assert_eq!(link.up.delay_ms, 20.0);
        assert_eq!(link.down.delay_ms, 20.0);
        let up = link.up.burst.as_ref().expect("up burst");
        let down = link.down.burst.as_ref().expect("down burst");
        assert_eq!((up.p, up.r), (0.01, 0.5));
        // Nested tables merge field by field.
        assert_eq!((down.p, down.r), (0.01, 0.25));
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_name() {
        let err = LinkProfile::from_toml("los = 0.05").expect_err("typo must fail");
        assert!(err.to_string().contains("`los`"), "{err}");
        assert!(!err.to_string().starts_with("up"), "{err}");
        let err = LinkProfile::from_toml("[up]\njitter = 3").expect_err("typo must fail");
        assert!(err.to_string().starts_with("up: "), "{err}");
        assert!(err.to_string().contains("`jitter`"), "{err}");
    }

    #[test]
    fn serialisation_round_trips() {
        let mut link = LinkProfile::symmetric(Profile {
            loss: 0.1,
            delay_ms: 5.5,
            ..Profile::default()
        });
        let back: LinkProfile =
            figment::Figment::from(figment::providers::Serialized::defaults(&link))
                .extract()
                .expect("round trip");
        assert_eq!(back, link);

        link.down.blackhole.windows_ms.push([100.0, 200.0]);
        link.down.burst = Some(GilbertElliott {
            p: 0.1,
            ..GilbertElliott::default()
        });
        let back: LinkProfile =
            figment::Figment::from(figment::providers::Serialized::defaults(&link))
                .extract()
                .expect("round trip");
        assert_eq!(back, link);
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        let bad = |p: Profile| p.validate().expect_err("must be rejected");
        assert!(matches!(
            bad(Profile {
                loss: 1.5,
                ..Profile::default()
            }),
            ProfileError::Probability { .. }
        ));
        assert!(matches!(
            bad(Profile {
                loss: f64::NAN,
                ..Profile::default()
            }),
            ProfileError::Probability { .. }
        ));
        assert!(matches!(
            bad(Profile {
                delay_ms: -1.0,
                ..Profile::default()
            }),
            ProfileError::Duration { .. }
        ));
        assert!(matches!(
            bad(Profile {
                jitter_ms: f64::INFINITY,
                ..Profile::default()
            }),
            ProfileError::Duration { .. }
        ));
        assert_eq!(
            bad(Profile {
                rate_bps: 1_000_000,
                queue_bytes: 0,
                queue_packets: 0,
                ..Profile::default()
            }),
            ProfileError::UnboundedQueue
        );
        let mut p = Profile::default();
        p.blackhole.windows_ms.push([200.0, 100.0]);
        assert!(matches!(bad(p), ProfileError::EmptyWindow { .. }));
        let mut p = Profile::default();
        p.blackhole.dark_ms = 10.0;
        assert!(matches!(bad(p), ProfileError::Period { .. }));
        let mut link = LinkProfile::default();
        link.down.burst = Some(GilbertElliott {
            r: 2.0,
            ..GilbertElliott::default()
        });
        let err = link.validate().expect_err("bad r");
        assert!(err.to_string().contains("down.burst.r"), "{err}");
    }

    #[test]
    fn stationary_loss_of_gilbert() {
        let ge = GilbertElliott {
            p: 0.01,
            r: 0.24,
            ..GilbertElliott::default()
        };
        assert!((ge.stationary_loss() - 0.04).abs() < 1e-12);
    }
}
