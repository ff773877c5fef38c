//! The device clock, as stamped on every punch: wall time plus what is needed to notice and
//! correct a wrong wall clock centrally (sync state, boot id, time since boot).
#![allow(unsafe_code)]

use std::sync::OnceLock;

use rollcall_protocol::v1::ClockState;
use uuid::Uuid;

/// Wall time now (UTC unix ms) and the clock's state.
pub fn now() -> (i64, ClockState) {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let (ntp_synced, offset_ms) = sync_state();
    (
        wall,
        ClockState {
            ntp_synced,
            offset_ms,
            boot_id: boot_id(),
            monotonic_ms: boottime_ms(),
        },
    )
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`); nil if unreadable.
pub fn boot_id() -> Uuid {
    static ID: OnceLock<Uuid> = OnceLock::new();
    *ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .and_then(|s| Uuid::parse_str(s.trim()).ok())
            .unwrap_or_default()
    })
}

/// CLOCK_BOOTTIME in ms: keeps counting through suspend, never jumps with the wall clock.
pub fn boottime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Whether the kernel considers the clock synchronised (NTP), and its estimated error.
fn sync_state() -> (bool, Option<i64>) {
    // SAFETY: timex is plain data; all-zero is a valid value, and modes = 0 makes adjtimex a
    // read-only query that fills the struct.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, exclusively borrowed timex.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 || state == libc::TIME_ERROR {
        return (false, None);
    }
    // esterror is in microseconds.
    (true, Some(tx.esterror / 1000))
}
