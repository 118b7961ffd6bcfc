//! Keeping a VM's clock right after boot. A guest has no RTC of its own (VZLinuxBootLoader gives
//! none; QEMU's is not read): the host sends its time in the boot instructions, then sends a
//! `ClockUpdate` line on the boot connection whenever the host has slept (its wall clock moved
//! further than its monotonic clock, which stops in sleep on macOS and Linux alike) and once a
//! minute anyway, against drift. The guest sets its clock from each line.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One line, host to guest, after the boot instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockUpdate {
    pub time_secs: i64,
    pub time_nanos: u32,
}

impl ClockUpdate {
    pub fn now() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            time_secs: now.as_secs() as i64,
            time_nanos: now.subsec_nanos(),
        }
    }

    /// The line as sent, newline included.
    pub fn line(&self) -> Vec<u8> {
        let mut l = serde_json::to_vec(self).expect("two integers serialise");
        l.push(b'\n');
        l
    }
}

/// How often the host compares its clocks.
const TICK: Duration = Duration::from_secs(5);
/// A push at least this often, slept or not.
const EVERY: Duration = Duration::from_secs(60);
/// More wall-clock time than monotonic time by this much means the host slept.
const SLEPT: Duration = Duration::from_secs(2);

/// Whether the host slept between two readings: its wall clock advanced `wall` while its
/// monotonic clock advanced `mono`. A wall clock set back (NTP) counts too: the guest follows.
pub fn slept(wall: Option<Duration>, mono: Duration) -> bool {
    match wall {
        Some(w) => w > mono + SLEPT || w + SLEPT < mono,
        None => true,
    }
}

/// Sends `ClockUpdate`s on `conn` after sleep and every minute, from a thread of its own,
/// until a write fails (the VM is gone).
pub fn keep_in_step(conn: UnixStream) {
    std::thread::spawn(move || {
        let mut conn = conn;
        let (mut wall, mut mono) = (SystemTime::now(), Instant::now());
        let mut pushed = Instant::now();
        loop {
            std::thread::sleep(TICK);
            let (w, m) = (SystemTime::now(), Instant::now());
            let jumped = slept(w.duration_since(wall).ok(), m.duration_since(mono));
            (wall, mono) = (w, m);
            if !jumped && pushed.elapsed() < EVERY {
                continue;
            }
            if jumped {
                tracing::debug!("the host's clock jumped (sleep?): telling the guest");
            }
            if conn.write_all(&ClockUpdate::now().line()).is_err() {
                return;
            }
            pushed = Instant::now();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wall_clock_ahead_of_the_monotonic_one_means_the_host_slept() {
        let s = Duration::from_secs;
        assert!(!slept(Some(s(5)), s(5)), "awake");
        assert!(!slept(Some(s(6)), s(5)), "within the slack");
        assert!(slept(Some(s(3605)), s(5)), "an hour asleep");
        assert!(slept(Some(s(0)), s(5)), "the wall clock set back");
        assert!(slept(None, s(5)), "the wall clock before the last reading");
    }

    #[test]
    fn an_update_is_one_json_line() {
        let u = ClockUpdate::now();
        let line = u.line();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(line.ends_with(b"\n"));
        let back: ClockUpdate = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, u);
        assert!(u.time_secs > 1_700_000_000);
    }
}
