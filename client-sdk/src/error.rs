use protocol::message::ErrorCode;
use protocol::room::Reason;
use protocol::ActionId;
use thiserror::Error;

/// What can go wrong for an app using the SDK.
///
/// An action's future resolves with its outcome ([`crate::Acked`]) or with
/// one of the variants that name the action's id ([`Error::Busy`],
/// [`Error::Throttled`], [`Error::TimedOut`], [`Error::Unresolved`];
/// [`Error::action`] reads it), so an app can reconcile what it showed: the
/// events an action made carry its id as their `cause`.
#[derive(Debug, Clone, Error)]
pub enum Error {
    /// No relay could be reached.
    #[error("no relay reachable: {0}")]
    Unreachable(String),
    /// A relay refused the session (bad or expired token, wrong version).
    #[error("refused by the relay: {code}: {reason}")]
    Refused {
        /// The close code.
        code: ErrorCode,
        /// The relay's words.
        reason: String,
    },
    /// The relay refused to let the user follow the room.
    #[error("join refused: {0}")]
    JoinRefused(Reason),
    /// Too many actions waiting for their outcome: this one was not sent
    /// (nothing happened). Try again shortly.
    #[error("action {id}: too many actions in flight; not sent")]
    Busy {
        /// The action, never sent.
        id: ActionId,
    },
    /// The action's deadline passed while the rate limit held it back: the
    /// relay's last answer was `Throttled` (it did not forward it on that
    /// try) or it was waiting its turn while the client paced itself to the
    /// user's rate. The SDK sends it no more. It was not applied unless an
    /// earlier copy got through before the relay started refusing (then its
    /// events carry its id as their cause).
    #[error("action {id}: throttled past its deadline")]
    Throttled {
        /// The action.
        id: ActionId,
    },
    /// The action's deadline passed with no answer (the relay or the origin
    /// unreachable, or too slow). It may or may not have been applied: do
    /// not resend it blindly; its events, if any, carry its id as cause.
    #[error("action {id}: no outcome before its deadline")]
    TimedOut {
        /// The action.
        id: ActionId,
    },
    /// The client stopped with the action unresolved: closed by the app, or
    /// its session refused for good (`cause`). It may or may not have been
    /// applied.
    #[error("action {id} unresolved: {cause}")]
    Unresolved {
        /// The action.
        id: ActionId,
        /// Why the client stopped ([`Error::Closed`], [`Error::Refused`]).
        cause: Box<Error>,
    },
    /// The client was closed.
    #[error("client closed")]
    Closed,
    /// TLS or socket setup failed, or the token provider failed before the
    /// first connection.
    #[error("setup: {0}")]
    Setup(String),
}

impl Error {
    /// Whether this is a refusal every relay would make alike (a bad or
    /// expired token, a wrong version): trying the next relay is pointless.
    pub fn refused_everywhere(&self) -> bool {
        matches!(
            self,
            Error::Refused {
                code: ErrorCode::BadToken | ErrorCode::TokenExpired | ErrorCode::Version,
                ..
            }
        )
    }

    /// The action this error is about, if it is about one.
    pub fn action(&self) -> Option<ActionId> {
        match self {
            Error::Busy { id }
            | Error::Throttled { id }
            | Error::TimedOut { id }
            | Error::Unresolved { id, .. } => Some(*id),
            _ => None,
        }
    }
}
