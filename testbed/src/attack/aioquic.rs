//! The non-quinn client: `testbed/attack/aioquic_attack.py` (Python,
//! aioquic) run against the relay with hello frames encoded here by the
//! protocol's own codec, one per connection. The script prints a JSON line
//! per connection (what it sent, how the connection ended as it saw it);
//! the runner keeps those lines for the report and checks the relay's RSS
//! against the documented bound per connection.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use bytes::BytesMut;
use protocol::codec;
use protocol::message::{ClientMsg, Hello, PROTOCOL_VERSION};
use protocol::SessionId;

use super::hostile::FIRST_ATTACKER_USER;
use super::secrets::Secrets;

/// How to run the script.
#[derive(Debug, Clone)]
pub struct Script {
    /// The interpreter.
    pub python: String,
    /// The script.
    pub path: PathBuf,
    /// The relay's port (on 127.0.0.1).
    pub port: u16,
    /// The relay's certificate, for the script to trust.
    pub cafile: PathBuf,
    /// Connections it opens.
    pub connections: usize,
    /// How long it attacks.
    pub duration: Duration,
    /// Seed for its junk.
    pub seed: u64,
}

/// What the script printed and how it ended.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Its exit status (`None`: killed or never started).
    pub status: Option<i32>,
    /// One JSON line per connection, then a summary line.
    pub lines: Vec<String>,
    /// The tail of its stderr when it failed.
    pub stderr: String,
}

/// Hello frames (hex, one per connection) with valid viewer tokens and
/// fresh sessions.
pub fn hellos(secrets: &Secrets, n: usize, seed: u64) -> anyhow::Result<String> {
    let mut out = String::new();
    for i in 0..n {
        let hello = ClientMsg::Hello(Hello {
            version: PROTOCOL_VERSION,
            token: secrets.viewer(FIRST_ATTACKER_USER + 50_000 + i as u64),
            session: SessionId(seed.wrapping_mul(1_000_003).wrapping_add(i as u64) | 1 << 63),
            datagrams: true,
        });
        let mut frame = BytesMut::new();
        codec::write_frame(&hello, &mut frame).context("encoding a hello")?;
        for b in frame.iter() {
            out.push_str(&format!("{b:02x}"));
        }
        out.push('\n');
    }
    Ok(out)
}

/// Run the script (writing its hello file into `dir`), wait for it (its
/// duration plus 30 s at most) and collect what it printed.
pub async fn run(script: &Script, secrets: &Secrets, dir: &Path) -> anyhow::Result<Outcome> {
    let hello_file = dir.join("aioquic-hellos.txt");
    std::fs::write(
        &hello_file,
        hellos(secrets, script.connections, script.seed)?,
    )
    .context("writing the hello file")?;
    let mut child = std::process::Command::new(&script.python)
        .arg(&script.path)
        .args(["--port", &script.port.to_string()])
        .arg("--cafile")
        .arg(&script.cafile)
        .arg("--hello-file")
        .arg(&hello_file)
        .args(["--connections", &script.connections.to_string()])
        .args(["--duration", &script.duration.as_secs_f64().to_string()])
        .args(["--seed", &script.seed.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} {} (is Python with aioquic installed? pip install aioquic)",
                script.python,
                script.path.display()
            )
        })?;
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = tokio::time::Instant::now() + script.duration + Duration::from_secs(30);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s.code(),
            Ok(None) if tokio::time::Instant::now() < deadline => {
                // Nothing signals a child's exit to a task: look again.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    // The pipes close with the child.
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    let tail: Vec<&str> = err.lines().collect();
    Ok(Outcome {
        status,
        lines: out.lines().map(str::to_string).collect(),
        stderr: tail[tail.len().saturating_sub(15)..].join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_lines_are_frames_the_codec_reads_back() {
        let s = Secrets::generate().expect("secrets");
        let text = hellos(&s, 3, 9).expect("hellos");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let bytes: Vec<u8> = (0..lines[0].len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&lines[0][i..i + 2], 16).expect("hex"))
            .collect();
        let mut d = codec::FrameDecoder::new();
        d.extend(&bytes);
        match d.decode::<ClientMsg>().expect("decodes") {
            Some(ClientMsg::Hello(h)) => assert_eq!(h.version, PROTOCOL_VERSION),
            other => panic!("{other:?}"),
        }
        // The script recognises a Welcome by its variant byte after the
        // length: keep that true.
        let w = codec::encode(&protocol::message::ServerMsg::Welcome(
            protocol::message::Welcome {
                session: SessionId(1),
                relay: "r".into(),
                region: "x".into(),
                upstream: true,
            },
        ))
        .expect("encodes");
        assert_eq!(w[0], 0);
    }
}
