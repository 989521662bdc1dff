//! What became of an action, as an app should read it.

use protocol::room::Reason;
use protocol::Seq;

/// An action's authoritative outcome, as the app should show it.
///
/// Unlike the wire's [`protocol::Outcome`], "the origin cannot tell" is not
/// a rejection: an action whose id the origin no longer remembers (the wire
/// says `Rejected { reason: Stale }`) may well have been applied — showing
/// "gift failed" for it would be wrong, and sending it again would count it
/// twice. It is [`Outcome::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It took effect; `seq` is the last event it produced in its room.
    Applied {
        /// Sequence number of the action's last event in its room.
        seq: Seq,
    },
    /// Refused; nothing changed. `reason` is never [`Reason::Stale`].
    Rejected {
        /// Why.
        reason: Reason,
    },
    /// Unknown: do not resend. The origin no longer remembers this action's
    /// id (too old for its session's memory), so it cannot say whether it
    /// was applied. It may have been: if so, its events are in the room's
    /// state and carry the action's id as their `cause`. A resend would be
    /// a new action.
    Unknown,
}

impl Outcome {
    /// Whether the action took effect (known to have).
    pub fn is_applied(self) -> bool {
        matches!(self, Outcome::Applied { .. })
    }

    /// Whether the action is known to have changed nothing.
    pub fn is_rejected(self) -> bool {
        matches!(self, Outcome::Rejected { .. })
    }
}

impl From<protocol::Outcome> for Outcome {
    fn from(o: protocol::Outcome) -> Self {
        match o {
            protocol::Outcome::Applied { seq } => Outcome::Applied { seq },
            protocol::Outcome::Rejected {
                reason: Reason::Stale,
            } => Outcome::Unknown,
            protocol::Outcome::Rejected { reason } => Outcome::Rejected { reason },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_is_unknown_not_a_rejection() {
        let stale = protocol::Outcome::Rejected {
            reason: Reason::Stale,
        };
        assert_eq!(Outcome::from(stale), Outcome::Unknown);
        assert!(!Outcome::Unknown.is_rejected());
        assert!(!Outcome::Unknown.is_applied());
        let refused = protocol::Outcome::Rejected {
            reason: Reason::NotAllowed,
        };
        assert_eq!(
            Outcome::from(refused),
            Outcome::Rejected {
                reason: Reason::NotAllowed
            }
        );
        let applied = protocol::Outcome::Applied { seq: Seq(3) };
        assert!(Outcome::from(applied).is_applied());
    }
}
