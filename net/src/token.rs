//! Signed tokens: who a user is and what it may do, for how long.
//!
//! A token is `postcard(Claims) ‖ HMAC-SHA256(key, postcard(Claims))`. The
//! app's backend mints tokens with a secret it shares with the relays; a
//! relay verifies them in constant time and never trusts a claim it has not
//! verified. Relays prove to the origin that they belong to the deployment
//! the same way, with a separate cluster secret.
//!
//! Every token says what it is for ([`Purpose`]) inside the signed part, and
//! [`TokenKey::verify`] takes the purpose the verifier expects: a client
//! token never passes as a relay's cluster proof, nor the other way round,
//! even where an operator set both secrets alike.

use ring::hmac;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use protocol::id::{RoomId, UserId};
use protocol::room::Grant;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN: usize = 4096;
const TAG: usize = 32;

/// What a token is for. Signed with the rest of the claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Purpose {
    /// A user's token, presented by the SDK to a relay.
    Client,
    /// A relay's proof of membership, presented to the origin.
    Cluster,
}

/// What a token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// What the token is for; checked by [`TokenKey::verify`].
    pub purpose: Purpose,
    /// Who.
    pub user: UserId,
    /// Rooms the user may join; `None` means any room.
    pub rooms: Option<Vec<RoomId>>,
    /// Rooms the user hosts.
    pub host_of: Vec<RoomId>,
    /// Platform staff (may moderate and start challenges anywhere).
    pub operator: bool,
    /// Expiry, in seconds since the Unix epoch.
    pub expires: u64,
}

impl Claims {
    /// A user's token: `user` may join any room (or only `rooms`), hosts
    /// `host_of`, until `expires` (Unix seconds).
    pub fn client(user: UserId, host_of: Vec<RoomId>, expires: u64) -> Claims {
        Claims {
            purpose: Purpose::Client,
            user,
            rooms: None,
            host_of,
            operator: false,
            expires,
        }
    }

    /// A relay's proof of membership, valid until `expires` (Unix seconds).
    pub fn cluster(expires: u64) -> Claims {
        Claims {
            purpose: Purpose::Cluster,
            user: UserId(0),
            rooms: Some(Vec::new()),
            host_of: Vec::new(),
            operator: false,
            expires,
        }
    }

    /// What the token grants in `room`, if anything.
    pub fn grant(&self, room: RoomId) -> Option<Grant> {
        if self.host_of.contains(&room) {
            return Some(Grant::Host);
        }
        if let Some(rooms) = &self.rooms {
            if !rooms.contains(&room) {
                return None;
            }
        }
        Some(if self.operator {
            Grant::Operator
        } else {
            Grant::Viewer
        })
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    /// Too short, too long, or not a token at all.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match: forged, or signed with another secret.
    #[error("bad token signature")]
    BadSignature,
    /// Valid, but past its expiry.
    #[error("token expired")]
    Expired,
    /// Valid, but minted for another purpose (a client token offered as a
    /// cluster proof, or the reverse).
    #[error("token minted for another purpose")]
    WrongPurpose,
}

/// A secret that mints and verifies tokens.
#[derive(Clone)]
pub struct TokenKey(hmac::Key);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from a shared secret. Callers enforce a minimum length where
    /// the secret guards anything reachable from outside (see the relay's
    /// and the origin's configuration); 32 random bytes is right.
    pub fn new(secret: &[u8]) -> TokenKey {
        TokenKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// Sign `claims` into a token.
    pub fn mint(&self, claims: &Claims) -> Vec<u8> {
        // Claims are plain data; postcard cannot fail to encode them.
        let mut token = postcard::to_allocvec(claims).unwrap_or_default();
        let tag = hmac::sign(&self.0, &token);
        token.extend_from_slice(tag.as_ref());
        token
    }

    /// Check a token's signature, purpose and expiry at `now_unix` (seconds).
    pub fn verify(
        &self,
        token: &[u8],
        purpose: Purpose,
        now_unix: u64,
    ) -> Result<Claims, TokenError> {
        if token.len() <= TAG || token.len() > MAX_TOKEN {
            return Err(TokenError::Malformed);
        }
        let (body, tag) = token.split_at(token.len() - TAG);
        hmac::verify(&self.0, body, tag).map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = protocol::codec::decode(body).map_err(|_| TokenError::Malformed)?;
        if claims.purpose != purpose {
            return Err(TokenError::WrongPurpose);
        }
        if claims.expires <= now_unix {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// The claims of `token` WITHOUT checking its signature, purpose or expiry.
///
/// Unverified: anyone can forge these bytes. Only for the token's own holder
/// to schedule things (the SDK reads `expires` to renew in time); never to
/// decide what someone may do — that is [`TokenKey::verify`]'s job.
pub fn unverified_claims(token: &[u8]) -> Result<Claims, TokenError> {
    if token.len() <= TAG || token.len() > MAX_TOKEN {
        return Err(TokenError::Malformed);
    }
    let body = &token[..token.len() - TAG];
    protocol::codec::decode(body).map_err(|_| TokenError::Malformed)
}

/// Seconds since the Unix epoch, from the system clock (for expiry checks).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Lower-case hex, for tokens on command lines.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parse lower- or upper-case hex.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            purpose: Purpose::Client,
            user: UserId(7),
            rooms: Some(vec![RoomId(1), RoomId(2)]),
            host_of: vec![RoomId(2)],
            operator: false,
            expires: 2_000,
        }
    }

    #[test]
    fn a_minted_token_verifies_and_grants_what_it_says() {
        let key = TokenKey::new(b"secret");
        let c = key
            .verify(&key.mint(&claims()), Purpose::Client, 1_000)
            .expect("valid");
        assert_eq!(c, claims());
        assert_eq!(c.grant(RoomId(1)), Some(Grant::Viewer));
        assert_eq!(c.grant(RoomId(2)), Some(Grant::Host));
        assert_eq!(c.grant(RoomId(3)), None);
    }

    #[test]
    fn forged_expired_and_garbage_tokens_are_refused() {
        let key = TokenKey::new(b"secret");
        let mut t = key.mint(&claims());
        assert_eq!(
            key.verify(&t, Purpose::Client, 2_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            TokenKey::new(b"other").verify(&t, Purpose::Client, 1_000),
            Err(TokenError::BadSignature)
        );
        t[0] ^= 1;
        assert_eq!(
            key.verify(&t, Purpose::Client, 1_000),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            key.verify(b"short", Purpose::Client, 1_000),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            key.verify(&vec![0; MAX_TOKEN + 1], Purpose::Client, 1_000),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn a_token_passes_only_for_its_own_purpose() {
        // The same secret on both sides: the purpose alone keeps them apart.
        let key = TokenKey::new(b"one secret for everything");
        let client = key.mint(&claims());
        let relay = key.mint(&Claims::cluster(2_000));
        assert_eq!(
            key.verify(&client, Purpose::Cluster, 1_000),
            Err(TokenError::WrongPurpose)
        );
        assert_eq!(
            key.verify(&relay, Purpose::Client, 1_000),
            Err(TokenError::WrongPurpose)
        );
        assert!(key.verify(&relay, Purpose::Cluster, 1_000).is_ok());
    }

    #[test]
    fn the_holder_reads_its_claims_without_the_secret() {
        let key = TokenKey::new(b"secret");
        let t = key.mint(&claims());
        assert_eq!(unverified_claims(&t), Ok(claims()));
        // Unverified: a forged tag reads the same (hence "only to schedule").
        let mut forged = t.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(unverified_claims(&forged).map(|c| c.expires), Ok(2_000));
        assert_eq!(unverified_claims(b"short"), Err(TokenError::Malformed));
        assert_eq!(
            unverified_claims(&[0xff; TAG + 3]),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn hex_round_trips() {
        let b = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(from_hex(&to_hex(&b)), Some(b));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
