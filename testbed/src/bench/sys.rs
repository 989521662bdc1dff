//! What the machine says: process memory and CPU time from `/proc`, the
//! filesystem under a directory, an `fdatasync` probe, and the files a
//! server process needs (a certificate and its key as PEM, a temporary
//! directory removed on drop).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use net::Identity;

use super::stats::Latencies;

/// Cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// Resident memory now (`VmRSS`), KiB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    status_kb(pid, "VmRSS:")
}

/// Peak resident memory so far (`VmHWM`), KiB.
pub fn peak_rss_kb(pid: u32) -> Option<u64> {
    status_kb(pid, "VmHWM:")
}

/// Threads of a process.
pub fn threads(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Threads:"))?;
    line["Threads:".len()..].trim().parse().ok()
}

/// CPU time a process has used (user + system, all threads), from
/// `/proc/PID/stat` in clock ticks of 1/100 s (USER_HZ on Linux).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields restart after its ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14, stime 15 (1-based).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// The whole machine's CPU time so far, from the first line of `/proc/stat`
/// (clock ticks of 1/100 s on Linux).
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineCpu {
    /// user + nice + system: time charged to processes.
    pub tasks: Duration,
    /// irq + softirq: interrupt work, on loopback mostly packet delivery,
    /// which the kernel may not charge to the process that caused it.
    pub softirq: Duration,
    /// Taken by the hypervisor for other guests.
    pub steal: Duration,
}

impl MachineCpu {
    /// Now.
    pub fn now() -> Option<MachineCpu> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        let line = text.lines().next()?.strip_prefix("cpu ")?;
        let f: Vec<u64> = line
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let get = |i: usize| Duration::from_millis(f.get(i).copied().unwrap_or(0) * 10);
        // user nice system idle iowait irq softirq steal guest guest_nice
        Some(MachineCpu {
            tasks: get(0) + get(1) + get(2),
            softirq: get(5) + get(6),
            steal: get(7),
        })
    }

    /// What was used between `earlier` and `self`.
    pub fn since(&self, earlier: &MachineCpu) -> MachineCpu {
        MachineCpu {
            tasks: self.tasks.saturating_sub(earlier.tasks),
            softirq: self.softirq.saturating_sub(earlier.softirq),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }
}

/// The machine's UDP counters (`/proc/net/snmp`, this network namespace:
/// on loopback, both ends of every datagram).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpCounters {
    /// Datagrams delivered to sockets.
    pub in_datagrams: u64,
    /// Datagrams sent.
    pub out_datagrams: u64,
    /// Datagrams dropped because a socket's receive buffer was full.
    pub rcvbuf_errors: u64,
    /// Datagrams dropped because a socket's send buffer was full.
    pub sndbuf_errors: u64,
}

impl UdpCounters {
    /// Now.
    pub fn now() -> Option<UdpCounters> {
        let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
        let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
        let names: Vec<&str> = lines.next()?.split_whitespace().collect();
        let values: Vec<u64> = lines
            .next()?
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let get = |name: &str| {
            names
                .iter()
                .position(|n| *n == name)
                .and_then(|i| values.get(i).copied())
                .unwrap_or(0)
        };
        Some(UdpCounters {
            in_datagrams: get("InDatagrams"),
            out_datagrams: get("OutDatagrams"),
            rcvbuf_errors: get("RcvbufErrors"),
            sndbuf_errors: get("SndbufErrors"),
        })
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &UdpCounters) -> UdpCounters {
        UdpCounters {
            in_datagrams: self.in_datagrams.saturating_sub(earlier.in_datagrams),
            out_datagrams: self.out_datagrams.saturating_sub(earlier.out_datagrams),
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(earlier.rcvbuf_errors),
            sndbuf_errors: self.sndbuf_errors.saturating_sub(earlier.sndbuf_errors),
        }
    }
}

/// The load averages, as `/proc/loadavg` prints them (first three fields).
pub fn loadavg() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// A process's CPU time and memory, sampled.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// CPU time so far.
    pub cpu: Duration,
    /// Resident memory, KiB.
    pub rss_kb: u64,
}

/// Sample a process (zeros if `/proc` cannot say).
pub fn sample(pid: u32) -> ProcSample {
    ProcSample {
        cpu: cpu_time(pid).unwrap_or_default(),
        rss_kb: rss_kb(pid).unwrap_or(0),
    }
}

/// The filesystem type and device under `path` (longest mount point that
/// contains it, from `/proc/self/mounts`).
pub fn filesystem_of(path: &Path) -> Option<(String, String)> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let mut best: Option<(usize, String, String)> = None;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(dev), Some(mnt), Some(fs)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let mnt = mnt.replace("\\040", " ");
        if path.starts_with(&mnt) && best.as_ref().is_none_or(|(len, _, _)| mnt.len() >= *len) {
            best = Some((mnt.len(), fs.to_string(), dev.to_string()));
        }
    }
    best.map(|(_, fs, dev)| (fs, dev))
}

/// Time `samples` small appends, each followed by `fdatasync`, in `dir`
/// (what one WAL group commit costs on that disk). Blocking: call it from
/// a blocking thread.
pub fn fsync_probe(dir: &Path, samples: u64, limit: Duration) -> anyhow::Result<Latencies> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut lat = Latencies::new();
    let record = [0x5au8; 64];
    let deadline = Instant::now() + limit;
    for _ in 0..samples {
        if Instant::now() > deadline {
            break;
        }
        let t = Instant::now();
        file.write_all(&record).context("appending")?;
        file.sync_data().context("fdatasync")?;
        lat.record(t.elapsed());
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(lat)
}

/// A directory removed (with everything in it) when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory `ringside-bench-PID-NANOS` under `parent` (the
    /// system temp dir if `None`).
    pub fn new(parent: Option<&Path>) -> anyhow::Result<TempDir> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = parent.join(format!("ringside-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TempDir(dir))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Keep the directory: it is not removed, and its path is returned.
    pub fn keep(mut self) -> PathBuf {
        std::mem::take(&mut self.0)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// PEM text of `der` under `label`.
pub fn pem(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            b64.push(if i <= chunk.len() {
                B64[((v >> (18 - 6 * i)) & 63) as usize]
            } else {
                b'='
            });
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Write `identity` as `cert.pem` and `key.pem` in `dir`; returns both paths.
/// (`net::Identity` can print its certificate but not its key.)
pub fn write_identity(identity: &Identity, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, identity.cert_pem()).context("writing the certificate")?;
    let label = match &identity.key {
        rustls_key::PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        rustls_key::PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    std::fs::write(&key, pem(label, identity.key.secret_der())).context("writing the key")?;
    Ok((cert, key))
}

use net::rustls::pki_types as rustls_key;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_through_the_loader() {
        let id = Identity::self_signed(&["localhost"]).expect("certificate");
        let dir = TempDir::new(None).expect("temp dir");
        let (cert, key) = write_identity(&id, dir.path()).expect("written");
        let back = Identity::from_pem_files(&cert, &key).expect("loads");
        assert_eq!(back.certs, id.certs);
        assert_eq!(back.key.secret_der(), id.key.secret_der());
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn pem_pads_like_base64() {
        assert_eq!(pem("X", b"f"), "-----BEGIN X-----\nZg==\n-----END X-----\n");
        assert_eq!(
            pem("X", b"foob"),
            "-----BEGIN X-----\nZm9vYg==\n-----END X-----\n"
        );
        assert_eq!(
            pem("X", b"foo"),
            "-----BEGIN X-----\nZm9v\n-----END X-----\n"
        );
    }

    #[test]
    fn this_process_is_visible_in_proc() {
        let pid = std::process::id();
        assert!(rss_kb(pid).is_some_and(|kb| kb > 0));
        assert!(peak_rss_kb(pid).is_some());
        assert!(cpu_time(pid).is_some());
        assert!(threads(pid).is_some_and(|n| n >= 1));
        assert!(filesystem_of(&std::env::temp_dir()).is_some());
        assert!(MachineCpu::now().is_some());
        assert!(UdpCounters::now().is_some());
    }
}
