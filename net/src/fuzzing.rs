//! The fuzz target body for token verification, shared by the cargo-fuzz
//! target `fuzz/fuzz_targets/tokens.rs` and the corpus replay in
//! `net/tests/fuzz_corpus.rs` (see `protocol::fuzzing` for the decoders').
//!
//! Not for production use: an invariant that does not hold panics.

use crate::token::{Claims, Purpose, TokenError, TokenKey, MAX_TOKEN};
use protocol::codec::decode;
use protocol::RoomId;
use ring::hmac;

/// The secret the tokens body verifies with (the seed corpus's valid
/// tokens are minted with it).
pub const FUZZ_SECRET: &[u8] = b"ringside fuzzing secret, 32 bytes+";

/// The time (Unix seconds) the tokens body verifies at.
pub const FUZZ_NOW: u64 = 1_800_000_000;

const TAG: usize = 32;

/// Tokens: the input as a token offered to [`TokenKey::verify`] for
/// each [`Purpose`]; then, since a fuzzer cannot forge a signature, the
/// input (and the input less its last 32 bytes) signed with
/// [`FUZZ_SECRET`], so the claims decoder behind the signature check is
/// reached too. Returns the verifications that passed.
pub fn tokens(data: &[u8]) -> usize {
    let key = TokenKey::new(FUZZ_SECRET);
    let mut passed = 0;
    for purpose in [Purpose::Client, Purpose::Cluster] {
        let result = key.verify(data, purpose, FUZZ_NOW);
        if data.len() <= TAG || data.len() > MAX_TOKEN {
            assert_eq!(result, Err(TokenError::Malformed));
        }
        passed += usize::from(check(&key, purpose, result));
    }
    let raw = hmac::Key::new(hmac::HMAC_SHA256, FUZZ_SECRET);
    let bodies = [Some(data), data.len().checked_sub(TAG).map(|n| &data[..n])];
    for body in bodies.into_iter().flatten() {
        if body.is_empty() || body.len() + TAG > MAX_TOKEN {
            continue;
        }
        let mut token = body.to_vec();
        token.extend_from_slice(hmac::sign(&raw, body).as_ref());
        let claims = decode::<Claims>(body).ok();
        for purpose in [Purpose::Client, Purpose::Cluster] {
            let result = key.verify(&token, purpose, FUZZ_NOW);
            // A signed token is judged on its claims alone.
            let expected = match &claims {
                None => Err(TokenError::Malformed),
                Some(c) if c.purpose != purpose => Err(TokenError::WrongPurpose),
                Some(c) if c.expires <= FUZZ_NOW => Err(TokenError::Expired),
                Some(c) => Ok(c.clone()),
            };
            assert_eq!(result, expected);
            passed += usize::from(check(&key, purpose, result));
        }
    }
    passed
}

/// Claims that passed say what was asked and mint again into a token
/// that passes with the same claims. Returns whether `result` passed.
fn check(key: &TokenKey, purpose: Purpose, result: Result<Claims, TokenError>) -> bool {
    let Ok(claims) = result else {
        return false;
    };
    assert_eq!(claims.purpose, purpose);
    assert!(claims.expires > FUZZ_NOW);
    let _ = claims.grant(RoomId(1));
    let again = key.verify(&key.mint(&claims), purpose, FUZZ_NOW);
    assert_eq!(again.as_ref(), Ok(&claims));
    true
}
