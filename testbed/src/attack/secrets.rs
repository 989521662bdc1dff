//! Secrets for one run, generated at random (never a string from the
//! source), and the tokens signed with them.
//!
//! The processes get the secrets through their configuration variables;
//! the honest clients and the attackers get tokens minted here, exactly as
//! an app's backend would mint them.

use std::io::Read as _;

use anyhow::Context as _;
use net::token::{unix_now, Claims, Purpose, TokenKey};
use protocol::{RoomId, UserId};

/// The run's secrets, as the processes' configuration takes them.
#[derive(Clone)]
pub struct Secrets {
    /// Signs client tokens (relay `token_secret`).
    pub token: String,
    /// Relays prove membership with it (`cluster_secret`, both sides).
    pub cluster: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { .. }")
    }
}

/// `n` random bytes from the kernel, as hex.
fn random_hex(n: usize) -> anyhow::Result<String> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Secrets {
    /// Fresh secrets of 32 random bytes each (64 hex characters).
    pub fn generate() -> anyhow::Result<Secrets> {
        Ok(Secrets {
            token: random_hex(32)?,
            cluster: random_hex(32)?,
        })
    }

    /// A client token for `user`, hosting `host_of`, valid for a day.
    pub fn token(&self, user: u64, host_of: &[RoomId]) -> Vec<u8> {
        TokenKey::new(self.token.as_bytes()).mint(&Claims {
            purpose: Purpose::Client,
            user: UserId(user),
            rooms: None,
            host_of: host_of.to_vec(),
            operator: false,
            expires: unix_now() + 24 * 3600,
        })
    }

    /// A viewer's token for `user`.
    pub fn viewer(&self, user: u64) -> Vec<u8> {
        self.token(user, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_tokens_verify_with_them_only() {
        let a = Secrets::generate().expect("secrets");
        let b = Secrets::generate().expect("secrets");
        assert_eq!(a.token.len(), 64);
        assert_ne!(a.token, b.token);
        assert_ne!(a.token, a.cluster);
        let t = a.viewer(7);
        let now = unix_now();
        let ok = TokenKey::new(a.token.as_bytes()).verify(&t, Purpose::Client, now);
        assert_eq!(ok.expect("verifies").user, UserId(7));
        assert!(TokenKey::new(b.token.as_bytes())
            .verify(&t, Purpose::Client, now)
            .is_err());
    }
}
