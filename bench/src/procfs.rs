//! Process facts from /proc and libc: CPU time, RSS, children, affinity, file-descriptor limits.
//!
//! Read-only except [`set_affinity`] and [`raise_nofile`], which change the calling process.

use std::time::Duration;

/// CPU time (user + system) of `who` (`RUSAGE_SELF`, `RUSAGE_THREAD`, `RUSAGE_CHILDREN`).
pub fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own; it has no other side effects.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the duration of the call.
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
