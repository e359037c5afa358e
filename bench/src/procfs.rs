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

/// Clock ticks per second for /proc/PID/stat times (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
fn clk_tck() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Fields of /proc/PID/stat after the `(comm)` field, which may itself contain spaces.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// CPU time of a process split into user space (utime) and kernel (stime).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuSplit {
    /// User-space time (utime).
    pub user: Duration,
    /// Kernel time (stime): system calls, softirqs charged to the task, page faults.
    pub sys: Duration,
}

impl CpuSplit {
    /// user + sys.
    pub fn total(&self) -> Duration {
        self.user + self.sys
    }

    /// `self - earlier`, field by field, never negative.
    pub fn since(&self, earlier: &CpuSplit) -> CpuSplit {
        CpuSplit {
            user: self.user.saturating_sub(earlier.user),
            sys: self.sys.saturating_sub(earlier.sys),
        }
    }
}

impl std::ops::Add for CpuSplit {
    type Output = CpuSplit;
    fn add(self, o: CpuSplit) -> CpuSplit {
        CpuSplit {
            user: self.user + o.user,
            sys: self.sys + o.sys,
        }
    }
}

/// utime and stime (all threads) of one process, from /proc/PID/stat (10 ms ticks).
pub fn proc_cpu_split(pid: u32) -> Option<CpuSplit> {
    let f = stat_fields(pid)?;
    // After the comm: state is index 0, so utime (field 14) is index 11 and stime index 12.
    let tick = |i: usize| -> Option<Duration> {
        let t = f.get(i)?.parse::<u64>().ok()?;
        Some(Duration::from_secs_f64(t as f64 / clk_tck()))
    };
    Some(CpuSplit {
        user: tick(11)?,
        sys: tick(12)?,
    })
}

/// CPU time (utime + stime, all threads) of one process, from /proc/PID/stat (10 ms ticks).
pub fn proc_cpu(pid: u32) -> Option<Duration> {
    proc_cpu_split(pid).map(|c| c.total())
}

/// `pid` and all its descendants (e.g. an nginx master and its worker).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(pp) = stat_fields(p).and_then(|f| f.get(1)?.parse::<u32>().ok()) {
                parent_of.push((p, pp));
            }
        }
    }
    let mut tree = vec![pid];
    // Bounded: each pass adds only processes not yet in the tree; stops when a pass adds none.
    loop {
        let before = tree.len();
        for &(p, pp) in &parent_of {
            if tree.contains(&pp) && !tree.contains(&p) {
                tree.push(p);
            }
        }
        if tree.len() == before {
            return tree;
        }
    }
}

/// CPU time summed over a process tree.
pub fn tree_cpu(pid: u32) -> Duration {
    tree_cpu_split(pid).total()
}

/// utime and stime summed over a process tree.
pub fn tree_cpu_split(pid: u32) -> CpuSplit {
    process_tree(pid)
        .into_iter()
        .filter_map(proc_cpu_split)
        .fold(CpuSplit::default(), |a, b| a + b)
}

/// Busy and total jiffies of a set of CPUs, from the `cpuN` lines of /proc/stat (all processes,
/// not only ours: a core shared with a compiler is busy too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreTimes {
    /// Jiffies not idle and not iowait.
    pub busy: u64,
    /// All jiffies.
    pub total: u64,
}

impl CoreTimes {
    /// Fraction of the time the CPUs were busy between `earlier` and `self` (0..=1), or None
    /// when no time passed.
    pub fn busy_since(&self, earlier: &CoreTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let busy = self.busy.checked_sub(earlier.busy)?;
        (total > 0).then(|| busy as f64 / total as f64)
    }
}

/// Parses the `cpuN` lines of /proc/stat text for the CPUs in `cpus`.
pub fn parse_core_times(stat: &str, cpus: &[usize]) -> CoreTimes {
    let mut t = CoreTimes::default();
    for line in stat.lines() {
        let mut it = line.split_whitespace();
        let Some(name) = it.next() else { continue };
        let Some(n) = name
            .strip_prefix("cpu")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if !cpus.contains(&n) {
            continue;
        }
        // user nice system idle iowait irq softirq steal (guest times are inside user).
        let v: Vec<u64> = it.take(8).filter_map(|x| x.parse().ok()).collect();
        if v.len() < 5 {
            continue;
        }
        let total: u64 = v.iter().sum();
        let idle = v[3] + v[4];
        t.total += total;
        t.busy += total - idle;
    }
    t
}

/// [`parse_core_times`] of the live /proc/stat.
pub fn core_times(cpus: &[usize]) -> CoreTimes {
    parse_core_times(
        &std::fs::read_to_string("/proc/stat").unwrap_or_default(),
        cpus,
    )
}

/// Resident set size (VmRSS) of one process in KiB.
pub fn proc_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// VmRSS summed over a process tree, in KiB.
pub fn tree_rss_kib(pid: u32) -> u64 {
    process_tree(pid).into_iter().filter_map(proc_rss_kib).sum()
}

/// CPUs the calling thread may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: we pass the real size of `set`, which the kernel fills.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return vec![0];
    }
    // SAFETY: CPU_ISSET reads the set we own, with an index below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins the calling thread (pid 0) or process `pid` to `cpus`.
///
/// Async-signal-safe (one syscall, no allocation), so it may run in a `pre_exec` hook.
pub fn set_affinity(pid: libc::pid_t, cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: zeroed cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: CPU_SET writes the set we own; indexes come from `allowed_cpus`, < CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is valid for reads of its full size.
    let rc = unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Raises RLIMIT_NOFILE (soft, and hard when allowed) to at least `want`; children inherit it.
///
/// Returns the soft limit in force afterwards. The idle-10k scenario needs ~10k client sockets
/// here and as many in the target.
pub fn raise_nofile(want: u64) -> u64 {
    // SAFETY: getrlimit fills the struct we own.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to our rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur >= want {
        return lim.rlim_cur;
    }
    // Root may raise the hard limit too; otherwise settle for the hard limit.
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: valid pointer to an initialised rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return want;
    }
    let capped = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } == 0 {
        return lim.rlim_max;
    }
    lim.rlim_cur
}

/// Kernel release (`uname -r`).
pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// CPU model name from /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_times_sum_the_named_cpus_only() {
        let stat = "cpu  100 0 100 800 0 0 0 0 0 0\n\
                    cpu0 10 0 10 80 0 0 0 0 0 0\n\
                    cpu1 50 5 20 20 5 0 0 0 0 0\n\
                    intr 1 2 3\n";
        let one = parse_core_times(stat, &[1]);
        assert_eq!(
            one,
            CoreTimes {
                busy: 75,
                total: 100
            }
        );
        let both = parse_core_times(stat, &[0, 1]);
        assert_eq!(
            both,
            CoreTimes {
                busy: 95,
                total: 200
            }
        );
        let later = CoreTimes {
            busy: 175,
            total: 200,
        };
        assert_eq!(later.busy_since(&one), Some(1.0));
        assert_eq!(one.busy_since(&one), None);
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(proc_cpu(me).is_some(), "cpu of self");
        assert!(proc_rss_kib(me).is_some_and(|k| k > 0), "rss of self");
        assert!(process_tree(me).contains(&me));
        assert!(!allowed_cpus().is_empty());
    }
}
