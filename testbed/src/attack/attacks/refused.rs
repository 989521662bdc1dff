//! Input the relay must refuse with a code, after which the attacker comes
//! back: undecodable messages after a valid hello, and hellos with bad
//! tokens.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::kit::hello_dialing;
use crate::attack::hostile::{client_config, hello, persistent, Attacker, Dialing, Next, Target};

/// Undecodable input after a valid hello, three forms by attacker: a
/// datagram of random bytes, a datagram with a valid length and a garbage
/// body, a stream frame with a valid length and a garbage body. The relay
/// should close each with a code; the attacker comes back.
pub(super) async fn malformed(att: &mut Attacker, target: &Target) -> anyhow::Result<()> {
    let form = att.index % 3;
    let cfg = client_config(target, |_| {})?;
    persistent(att, target, cfg, hello_dialing(), move |mut s| async move {
        match form {
            0 => {
                let len = 1 + (s.rng.next_u64() % 1000) as usize;
                let junk: Vec<u8> = (0..len).map(|_| s.rng.next_u64() as u8).collect();
                let _ = s.conn.send_datagram(Bytes::from(junk));
            }
            1 => {
                let _ = s
                    .conn
                    .send_datagram(Bytes::from_static(&[5, 0xff, 0xff, 0xff, 0xff, 0xff]));
            }
            _ => {
                if let Some((send, _)) = s.control.as_mut() {
                    let mut f = 16u32.to_be_bytes().to_vec();
                    f.extend_from_slice(&[0xff; 16]);
                    let _ = send.write_all(&f).await;
                }
            }
        }
        s.answers.sent.fetch_add(1, Ordering::Relaxed);
        // Hold the streams while the relay decides.
        std::future::pending::<()>().await;
        drop(s);
        Next::Hold
    })
    .await
}

/// Hellos with tokens the relay must refuse, five forms by attacker: random
/// bytes, a token signed with another secret, an expired one, a cluster
/// proof signed with the client secret, and 60 KiB of token. The attacker
/// comes back after each refusal.
pub(super) async fn tokens(att: &mut Attacker, target: &Target) -> anyhow::Result<()> {
    use net::token::{unix_now, Claims, TokenKey};
    let form = att.index % 5;
    let user = att.user;
    let key = TokenKey::new(target.secrets.token.as_bytes());
    let cfg = client_config(target, |_| {})?;
    let dialing = Dialing {
        hello: false,
        datagrams: true,
    };
    persistent(att, target, cfg, dialing, move |mut s| {
        let token = match form {
            0 => (0..200).map(|_| s.rng.next_u64() as u8).collect(),
            1 => TokenKey::new(b"not the relay's secret, not at all").mint(&Claims::client(
                protocol::UserId(user),
                Vec::new(),
                unix_now() + 3600,
            )),
            2 => key.mint(&Claims::client(
                protocol::UserId(user),
                Vec::new(),
                unix_now() - 10,
            )),
            3 => key.mint(&Claims::cluster(unix_now() + 3600)),
            _ => vec![0x42; 60 * 1024],
        };
        let conn = s.conn.clone();
        let session = s.session;
        async move {
            s.answers.sent.fetch_add(1, Ordering::Relaxed);
            // Refused (as it should be) or welcomed: either way, wait for
            // the relay to close the connection.
            let held = hello(&conn, token, session, true).await;
            std::future::pending::<()>().await;
            drop((held, s));
            Next::Hold
        }
    })
    .await
}
