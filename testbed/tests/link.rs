//! The UDP impairment proxy over real sockets on 127.0.0.1: an echo server
//! behind a link, clients in front of it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use testbed::impair::{Direction, LinkProfile, Profile};
use testbed::link::{bind_udp, spawn_link, LinkConfig, LinkHandle, LinkStats};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

const LOCALHOST: &str = "127.0.0.1:0";

/// Socket buffers of the test's own sockets: a link releases bursts.
const BUFFER: usize = 4 << 20;

/// A UDP socket on 127.0.0.1:0 with large buffers.
fn udp() -> UdpSocket {
    bind_udp(LOCALHOST.parse().expect("addr"), BUFFER).expect("bind")
}

/// Longest any test may take; a hang fails instead of blocking CI.
const TEST_LIMIT: Duration = Duration::from_secs(20);

/// A UDP echo server on 127.0.0.1:0.
async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
    let socket = udp();
    let addr = socket.local_addr().expect("echo addr");
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            // Loopback with large buffers: a failed send shows up in the counts.
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    (addr, task)
}

/// An echo server with a link in front of it.
async fn echo_behind_link(
    config: impl FnOnce(LinkConfig) -> LinkConfig,
) -> (LinkHandle, JoinHandle<()>) {
    let (echo, task) = echo_server().await;
    let listen = LOCALHOST.parse().expect("addr");
    let link = spawn_link(config(LinkConfig::new(listen, echo)))
        .await
        .expect("spawn link");
    (link, task)
}

/// A client socket connected to the link.
async fn client(link: &LinkHandle) -> UdpSocket {
    let socket = udp();
    socket.connect(link.local_addr()).await.expect("connect");
    socket
}

/// A 64-byte datagram carrying `seq`.
fn packet(seq: u64) -> [u8; 64] {
    let mut p = [0u8; 64];
    p[..8].copy_from_slice(&seq.to_le_bytes());
    p
}

/// The `seq` of a datagram made by [`packet`].
fn seq_of(p: &[u8]) -> u64 {
    u64::from_le_bytes(p[..8].try_into().expect("8 bytes"))
}

/// Receives echoes until `done(stats, received)` holds, checking after each
/// datagram and at least every 50 ms. Returns `(seq, arrival)` pairs.
async fn receive_until(
    socket: &UdpSocket,
    link: &LinkHandle,
    mut done: impl FnMut(&LinkStats, usize) -> bool,
) -> Vec<(u64, Instant)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(&link.stats(), got.len()) {
        assert!(
            Instant::now() < deadline,
            "gave up waiting after {} datagrams; link:\n{}",
            got.len(),
            link.stats()
        );
        if let Ok(r) = timeout(Duration::from_millis(50), socket.recv(&mut buf)).await {
            let n = r.expect("recv");
            got.push((seq_of(&buf[..n]), Instant::now()));
        }
    }
    got
}

/// Everything sent has been through both directions and left the link.
fn all_through(s: &LinkStats, sent: u64, received: usize) -> bool {
    s.up.engine.packets_in == sent
        && s.up.held == 0
        && s.down.held == 0
        && s.down.engine.packets_in == s.up.sent
        && s.down.sent == received as u64
}

/// Checks that every copy is accounted for, in both directions.
fn assert_accounted(s: &LinkStats) {
    for d in Direction::BOTH {
        let d = s.direction(d);
        assert_eq!(
            d.engine.packets_in,
            d.engine.delivered + d.engine.dropped(),
            "{d:?}"
        );
        assert_eq!(
            d.engine.delivered + d.engine.duplicated,
            d.held + d.sent + d.send_errors + d.overflow + d.discarded,
            "{d:?}"
        );
    }
}

#[tokio::test]
async fn loss_and_delay_are_what_the_profile_says() {
    timeout(TEST_LIMIT, async {
        // Loss on the way up only; 10 ms each way.
        let profile = LinkProfile {
            up: Profile {
                loss: 0.2,
                delay_ms: 10.0,
                ..Profile::default()
            },
            down: Profile {
                delay_ms: 10.0,
                ..Profile::default()
            },
        };
        let (link, echo) = echo_behind_link(|c| LinkConfig {
            seed: 7,
            ..c.with_profile(profile)
        })
        .await;
        let socket = client(&link).await;

        const N: u64 = 500;
        let mut sent_at = Vec::new();
        for seq in 0..N {
            sent_at.push(Instant::now());
            socket.send(&packet(seq)).await.expect("send");
        }
        let got = receive_until(&socket, &link, |s, n| all_through(s, N, n)).await;
        let stats = link.shutdown().await.expect("shutdown");
        echo.abort();

        // Loss: 20% ± 6% (sd of the share is 1.8% for 500 packets).
        let up = stats.up;
        assert_eq!(up.engine.packets_in, N);
        let share = up.engine.dropped_loss as f64 / N as f64;
        assert!((share - 0.2).abs() < 0.06, "up loss {share}");
        assert_eq!(up.engine.dropped(), up.engine.dropped_loss);
        assert_eq!(stats.down.engine.dropped(), 0);

        // Counters add up end to end.
        assert_accounted(&stats);
        assert_eq!(up.sent, up.engine.delivered);
        assert_eq!(stats.down.engine.packets_in, up.sent);
        assert_eq!(stats.down.sent, stats.down.engine.packets_in);
        assert_eq!(got.len() as u64, stats.down.sent);
        let seqs: BTreeSet<u64> = got.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs.len(), got.len(), "duplicates without duplication");
        assert!(seqs.iter().all(|&s| s < N));

        // Delay: never under 2 × 10 ms; typically close to it.
        let mut rtts: Vec<Duration> = got
            .iter()
            .map(|&(s, at)| at - sent_at[s as usize])
            .collect();
        rtts.sort();
        assert!(
            rtts[0] >= Duration::from_millis(20),
            "min rtt {:?}",
            rtts[0]
        );
        let median = rtts[rtts.len() / 2];
        assert!(median < Duration::from_millis(35), "median rtt {median:?}");
        assert!(
            rtts[rtts.len() - 1] < Duration::from_millis(250),
            "max rtt {:?}",
            rtts[rtts.len() - 1]
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn blackhole_window_drops_everything_sent_during_it() {
    timeout(TEST_LIMIT, async {
        let mut up = Profile::default();
        up.blackhole.windows_ms = vec![[300.0, 600.0]];
        let profile = LinkProfile {
            up,
            down: Profile::default(),
        };
        let (link, echo) = echo_behind_link(|c| c.with_profile(profile)).await;
        let socket = client(&link).await;

        // One packet every 5 ms for 900 ms of link time, stamped just before
        // sending; the link stamps it a little later, never earlier.
        let mut stamps = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let mut seq = 0;
        while link.elapsed() < Duration::from_millis(900) {
            tick.tick().await;
            stamps.push(link.elapsed());
            socket.send(&packet(seq)).await.expect("send");
            seq += 1;
        }
        let n = seq;
        let got = receive_until(&socket, &link, |s, r| all_through(s, n, r)).await;
        let stats = link.shutdown().await.expect("shutdown");
        echo.abort();

        let back: BTreeSet<u64> = got.iter().map(|(s, _)| *s).collect();
        let ms = |m| Duration::from_millis(m);
        let mut checked_dark = 0;
        for (seq, &at) in stamps.iter().enumerate() {
            let returned = back.contains(&(seq as u64));
            // 25 ms margin for the link to read a packet sent before 300 ms
            // or late in the window.
            if at < ms(275) || at >= ms(600) {
                assert!(returned, "packet sent at {at:?} lost outside the window");
            } else if at >= ms(300) && at < ms(575) {
                assert!(
                    !returned,
                    "packet sent at {at:?} came back through the blackhole"
                );
                checked_dark += 1;
            }
        }
        assert!(
            checked_dark >= 40,
            "only {checked_dark} packets inside the window"
        );
        assert_eq!(stats.up.engine.dropped_blackhole, n - back.len() as u64);
        assert_eq!(stats.up.engine.dropped(), stats.up.engine.dropped_blackhole);
        assert_accounted(&stats);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn profile_changes_take_effect_at_runtime() {
    timeout(TEST_LIMIT, async {
        let (link, echo) = echo_behind_link(|c| c).await;
        let socket = client(&link).await;
        let mut dark = Profile::default();
        dark.blackhole.always = true;

        for seq in 0..50 {
            socket.send(&packet(seq)).await.expect("send");
        }
        let got = receive_until(&socket, &link, |s, n| all_through(s, 50, n)).await;
        assert_eq!(got.len(), 50);

        // Cut the way up.
        link.set_direction_profile(Direction::Up, dark)
            .await
            .expect("set profile");
        for seq in 50..100 {
            socket.send(&packet(seq)).await.expect("send");
        }
        let got = receive_until(&socket, &link, |s, _| s.up.engine.packets_in == 100).await;
        assert!(got.is_empty(), "{} came back through a cut link", got.len());
        assert_eq!(link.stats().up.engine.dropped_blackhole, 50);

        // Restore, with a delay both ways this time.
        let slow = LinkProfile::symmetric(Profile {
            delay_ms: 15.0,
            ..Profile::default()
        });
        link.set_profile(slow).await.expect("set profile");
        let start = Instant::now();
        for seq in 100..150 {
            socket.send(&packet(seq)).await.expect("send");
        }
        let got = receive_until(&socket, &link, |s, n| all_through(s, 150, n + 50)).await;
        assert_eq!(got.len(), 50);
        assert!(got
            .iter()
            .all(|&(_, at)| at - start >= Duration::from_millis(30)));

        // An invalid profile is refused; the link keeps running.
        let bad = Profile {
            loss: 7.0,
            ..Profile::default()
        };
        assert!(link
            .set_direction_profile(Direction::Down, bad)
            .await
            .is_err());
        let stats = link.shutdown().await.expect("shutdown");
        assert_accounted(&stats);
        echo.abort();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn each_peer_gets_its_own_session_and_only_its_own_replies() {
    timeout(TEST_LIMIT, async {
        let (link, echo) = echo_behind_link(|c| c).await;
        let a = client(&link).await;
        let b = client(&link).await;
        for seq in 0..20 {
            a.send(&packet(seq)).await.expect("send a");
            b.send(&packet(1000 + seq)).await.expect("send b");
        }
        let got_a = receive_until(&a, &link, |_, n| n == 20).await;
        let got_b = receive_until(&b, &link, |_, n| n == 20).await;
        assert!(got_a.iter().all(|(s, _)| *s < 1000));
        assert!(got_b.iter().all(|(s, _)| *s >= 1000));
        let stats = link.shutdown().await.expect("shutdown");
        assert_eq!((stats.sessions.opened, stats.sessions.active), (2, 0));
        echo.abort();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn sessions_idle_out_and_are_bounded() {
    timeout(TEST_LIMIT, async {
        let (link, echo) = echo_behind_link(|c| LinkConfig {
            session_idle: Duration::from_millis(100),
            max_sessions: 2,
            ..c
        })
        .await;
        let peers = [
            client(&link).await,
            client(&link).await,
            client(&link).await,
        ];
        for (i, peer) in peers.iter().enumerate() {
            peer.send(&packet(i as u64)).await.expect("send");
            let got = receive_until(peer, &link, |_, n| n == 1).await;
            assert_eq!(got[0].0, i as u64);
        }
        let s = link.stats().sessions;
        assert_eq!((s.opened, s.active, s.evicted), (3, 2, 1));

        // Quiet: both remaining sessions idle out.
        let deadline = Instant::now() + Duration::from_secs(5);
        while link.stats().sessions.active > 0 {
            assert!(Instant::now() < deadline, "sessions never idled out");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(link.stats().sessions.expired, 2);

        // A returning peer gets a new session and its replies.
        peers[0].send(&packet(7)).await.expect("send");
        let got = receive_until(&peers[0], &link, |_, n| n == 1).await;
        assert_eq!(got[0].0, 7);
        assert_eq!(link.stats().sessions.opened, 4);
        link.shutdown().await.expect("shutdown");
        echo.abort();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn duplicates_arrive_twice_and_held_packets_are_capped() {
    timeout(TEST_LIMIT, async {
        let profile = LinkProfile {
            up: Profile::default(),
            down: Profile {
                duplicate: 1.0,
                duplicate_delay_ms: 1.0,
                ..Profile::default()
            },
        };
        let (link, echo) = echo_behind_link(|c| c.with_profile(profile)).await;
        let socket = client(&link).await;
        for seq in 0..30 {
            socket.send(&packet(seq)).await.expect("send");
        }
        let got = receive_until(&socket, &link, |s, n| all_through(s, 30, n)).await;
        assert_eq!(got.len(), 60);
        for seq in 0..30 {
            assert_eq!(
                got.iter().filter(|(s, _)| *s == seq).count(),
                2,
                "seq {seq}"
            );
        }
        let stats = link.shutdown().await.expect("shutdown");
        assert_eq!(stats.down.engine.duplicated, 30);
        assert_accounted(&stats);
        echo.abort();

        // A link that may hold 10 packets, with packets waiting 200 ms.
        let slow = LinkProfile::symmetric(Profile {
            delay_ms: 200.0,
            ..Profile::default()
        });
        let (link, echo) = echo_behind_link(|c| LinkConfig {
            max_held_packets: 10,
            ..c.with_profile(slow)
        })
        .await;
        let socket = client(&link).await;
        for seq in 0..30 {
            socket.send(&packet(seq)).await.expect("send");
        }
        let got = receive_until(&socket, &link, |s, n| {
            s.up.engine.packets_in == 30
                && s.up.held == 0
                && s.down.held == 0
                && s.down.sent == n as u64
        })
        .await;
        let stats = link.shutdown().await.expect("shutdown");
        assert!(stats.up.overflow >= 10, "{:?}", stats.up);
        assert_eq!(got.len() as u64, stats.down.sent);
        assert_accounted(&stats);
        echo.abort();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn shutdown_discards_held_packets_and_frees_the_port() {
    timeout(TEST_LIMIT, async {
        let slow = LinkProfile::symmetric(Profile {
            delay_ms: 10_000.0,
            ..Profile::default()
        });
        let (link, echo) = echo_behind_link(|c| c.with_profile(slow)).await;
        let addr = link.local_addr();
        let socket = client(&link).await;
        for seq in 0..5 {
            socket.send(&packet(seq)).await.expect("send");
        }
        receive_until(&socket, &link, |s, _| s.up.engine.packets_in == 5).await;
        let stats = link.shutdown().await.expect("shutdown");
        assert_eq!((stats.up.held, stats.up.discarded), (0, 5));
        assert_accounted(&stats);
        UdpSocket::bind(addr).await.expect("port is free again");
        echo.abort();
    })
    .await
    .expect("test timed out");
}
