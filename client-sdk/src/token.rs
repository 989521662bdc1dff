//! Tokens that outlive a connection: the app's token provider, and when to
//! renew (pure: takes the remaining life, does no IO).
//!
//! A token expires; a relay closes a connection at its token's expiry
//! (`TokenExpired`). With a [`TokenProvider`] the SDK asks the app for a
//! fresh token some margin before expiry ([`renew_after`]) and hands it to
//! the relay (`Renew`) on the live connection; every later (re)connect uses
//! the newest token. If a connection is closed for expiry anyway (a renewal
//! failed, or came late), the SDK fetches a fresh token and resumes the same
//! session on the next connection. A token the relays refuse as bad stays
//! fatal.
//!
//! The expiry is read from the token without its secret
//! ([`net::token::unverified_claims`]): only to schedule the renewal.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// What a token provider returns: a fresh signed token, or why not.
pub type TokenResult = Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>>;

/// The future a token provider returns.
pub type TokenFuture = Pin<Box<dyn Future<Output = TokenResult> + Send>>;

/// A callback the SDK calls for a fresh token for the same user (typically
/// a request to the app's backend). Cheap to clone.
#[derive(Clone)]
pub struct TokenProvider(Arc<dyn Fn() -> TokenFuture + Send + Sync>);

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenProvider(..)")
    }
}

impl TokenProvider {
    /// A provider from an async function.
    pub fn new<F, Fut>(f: F) -> TokenProvider
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = TokenResult> + Send + 'static,
    {
        TokenProvider(Arc::new(move || Box::pin(f())))
    }

    /// Ask for a fresh token.
    pub fn fetch(&self) -> TokenFuture {
        (self.0)()
    }
}

/// Renew no later than this before expiry.
pub const RENEW_MARGIN: Duration = Duration::from_secs(30);

/// A failed fetch is tried again after this, doubling…
pub const FETCH_RETRY_MIN: Duration = Duration::from_secs(1);
/// …up to this.
pub const FETCH_RETRY_MAX: Duration = Duration::from_secs(30);

/// How long to wait before renewing a token with `remaining` life: at 80%
/// of it or [`RENEW_MARGIN`] before expiry, whichever is earlier — but not
/// before half of it (a token shorter than twice the margin would otherwise
/// be renewed at once, again and again) and not sooner than [`RENEW_MIN`].
pub fn renew_after(remaining: Duration) -> Duration {
    let margin = remaining.saturating_sub(RENEW_MARGIN).max(remaining / 2);
    remaining.mul_f64(0.8).min(margin).max(RENEW_MIN)
}

/// The shortest wait before a renewal (a provider handing out spent tokens
/// must not be called in a loop).
pub const RENEW_MIN: Duration = Duration::from_secs(1);

/// How long to wait before fetching again after `failures` failed fetches
/// in a row (from 1).
pub fn fetch_retry(failures: u32) -> Duration {
    FETCH_RETRY_MIN
        .saturating_mul(1 << failures.saturating_sub(1).min(8))
        .min(FETCH_RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_well_before_expiry() {
        // An hour: at 80% (48 min comes before 59.5 min).
        assert_eq!(
            renew_after(Duration::from_secs(3600)),
            Duration::from_secs(2880)
        );
        // Two minutes: 30 s before (90 s comes before 96 s).
        assert_eq!(
            renew_after(Duration::from_secs(120)),
            Duration::from_secs(90)
        );
        // Short-lived: half-way, never at once.
        assert_eq!(renew_after(Duration::from_secs(10)), Duration::from_secs(5));
        assert_eq!(renew_after(Duration::ZERO), RENEW_MIN);
    }

    #[test]
    fn failed_fetches_back_off() {
        let waits: Vec<u64> = (1..=7).map(|n| fetch_retry(n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30]);
    }
}
