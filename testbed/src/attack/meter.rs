//! A sampler thread that reads the relay's and the origin's resident memory
//! every few milliseconds, keeps the peak of the current window, and raises
//! a flag when the relay passes the abort level (so an attack that would
//! exhaust the machine is stopped early).
//!
//! It is a plain thread, not a task: an attack may keep the async runtime
//! busy, and the figures must not depend on that. The kernel's own peak
//! (`VmHWM`, reset through `/proc/PID/clear_refs` at each window) is read
//! too, so a spike between two samples is not missed where the kernel
//! allows the reset.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::bench::sys;

/// How often the sampler looks.
const EVERY: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
struct Shared {
    /// Peak RSS of each process in the current window, KiB.
    peak_kb: [AtomicU64; 2],
    /// The relay passed the abort level.
    abort: AtomicBool,
    /// Stop the thread.
    done: AtomicBool,
}

/// The sampler; the thread stops when this is dropped.
#[derive(Debug)]
pub struct Meter {
    pids: [u32; 2],
    shared: Arc<Shared>,
    /// Whether `clear_refs` resets worked at the last window start.
    hwm_reset: bool,
}

/// Peaks of one window, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peaks {
    /// The relay's.
    pub relay_kb: u64,
    /// The origin's.
    pub origin_kb: u64,
}

impl Meter {
    /// Start sampling `relay` and `origin`; the abort flag rises when the
    /// relay's RSS passes `abort_bytes`.
    pub fn start(relay: u32, origin: u32, abort_bytes: u64) -> Meter {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let pids = [relay, origin];
        let abort_kb = abort_bytes / 1024;
        // If the thread cannot start, peaks fall back to the kernel's.
        let _ = std::thread::Builder::new()
            .name("attack-meter".into())
            .spawn(move || {
                while !s.done.load(Ordering::Relaxed) {
                    for (i, pid) in pids.iter().enumerate() {
                        let kb = sys::rss_kb(*pid).unwrap_or(0);
                        s.peak_kb[i].fetch_max(kb, Ordering::Relaxed);
                        if i == 0 && kb > abort_kb {
                            s.abort.store(true, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(EVERY);
                }
            });
        Meter {
            pids,
            shared,
            hwm_reset: false,
        }
    }

    /// Start a new window: peaks from now on.
    pub fn window(&mut self) {
        for (i, pid) in self.pids.iter().enumerate() {
            let now = sys::rss_kb(*pid).unwrap_or(0);
            self.shared.peak_kb[i].store(now, Ordering::Relaxed);
        }
        self.shared.abort.store(false, Ordering::Relaxed);
        // "5" resets the peak RSS (VmHWM) to the current RSS (Linux ≥ 4.0).
        self.hwm_reset = self
            .pids
            .iter()
            .all(|pid| std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok());
    }

    /// The peaks since the window began.
    pub fn peaks(&self) -> Peaks {
        let mut p = [0u64; 2];
        for (i, pid) in self.pids.iter().enumerate() {
            p[i] = self.shared.peak_kb[i].load(Ordering::Relaxed);
            p[i] = p[i].max(sys::rss_kb(*pid).unwrap_or(0));
            if self.hwm_reset {
                p[i] = p[i].max(sys::peak_rss_kb(*pid).unwrap_or(0));
            }
        }
        Peaks {
            relay_kb: p[0],
            origin_kb: p[1],
        }
    }

    /// Whether the relay passed the abort level in this window.
    pub fn aborted(&self) -> bool {
        self.shared.abort.load(Ordering::Relaxed)
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.shared.done.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meter_sees_this_process_and_its_growth() {
        let me = std::process::id();
        let mut m = Meter::start(me, me, u64::MAX);
        m.window();
        let before = m.peaks().relay_kb;
        assert!(before > 0);
        // Touch 64 MiB so it is resident.
        let big = std::hint::black_box(vec![1u8; 64 << 20]);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while m.peaks().relay_kb < before + 32 * 1024 {
            assert!(std::time::Instant::now() < deadline, "growth never seen");
            std::thread::sleep(EVERY);
        }
        assert!(!m.aborted());
        drop(big);
    }
}
