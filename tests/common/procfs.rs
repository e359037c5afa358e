//! What a test can see of the gateway process from the outside: CPU time, RSS, open fds (from
//! `/proc/PID`), and the pool and connection gauges of its metrics, with bounded waits for them
//! to return to a baseline.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use super::gateway::Gateway;

/// User + system CPU time of process `pid`, in clock ticks (usually 10 ms).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after `(comm) `: state is index 0, so utime and stime are indexes 11 and 12.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// CPU ticks process `pid` spends during `window`.
pub fn cpu_ticks_during(pid: u32, window: Duration) -> u64 {
    let before = cpu_ticks(pid);
    std::thread::sleep(window);
    cpu_ticks(pid) - before
}

/// VmRSS of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Raises this (test) process's open-files limit to at least `want` where it may: the soft limit
/// up to the hard one, and as root (CAP_SYS_RESOURCE) the hard one too, up to the kernel's
/// `fs.nr_open`. Returns the soft limit in force afterwards.
pub fn raise_own_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    // SAFETY: `lim` is a valid rlimit struct the kernel reads from / writes into.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_max < want && libc::geteuid() == 0 {
            // Only root may raise the hard limit; a failure leaves it as it was.
            let raised = libc::rlimit {
                rlim_cur: want.min(nr_open),
                rlim_max: want.min(nr_open),
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// The gateway's gauges that must return to zero once every client is gone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gauges {
    pub clients_open: f64,
    pub pool_active: f64,
    pub pool_idle: f64,
}

/// Reads the client and pool gauges of upstream `upstream` (summed over shards by the gateway).
pub fn gauges(gw: &Gateway, upstream: &str) -> Gauges {
    let (_, body) = gw.admin_get("/metrics");
    let value = |series: String| -> f64 {
        body.lines()
            .find(|l| l.starts_with(&series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    Gauges {
        clients_open: value("ringway_client_connections_open".into()),
        pool_active: value(format!(
            "ringway_upstream_pool_active{{upstream=\"{upstream}\"}}"
        )),
        pool_idle: value(format!(
            "ringway_upstream_pool_idle{{upstream=\"{upstream}\"}}"
        )),
    }
}

/// Waits (bounded by `limit`) until no client connection is open, no pool slot of `upstream` is
/// in use, and the gateway's open fds are at most `fds_baseline` + its idle pooled connections;
/// panics with what it saw otherwise. Returns the last gauges.
pub fn assert_back_to_baseline(
    gw: &Gateway,
    upstream: &str,
    fds_baseline: usize,
    limit: Duration,
    what: &str,
) -> Gauges {
    let deadline = Instant::now() + limit;
    loop {
        let g = gauges(gw, upstream);
        let fds = gw.open_fds();
        let idle = g.pool_idle as usize;
        if g.clients_open == 0.0 && g.pool_active == 0.0 && fds <= fds_baseline.saturating_add(idle)
        {
            return g;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: not back to baseline after {limit:?}: {g:?}, {fds} fds open vs baseline {fds_baseline} + {idle} idle pooled"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The gateway's open fds once the admin probes of start-up have closed (a short settle).
pub fn settled_fds(gw: &Gateway) -> usize {
    std::thread::sleep(Duration::from_millis(150));
    gw.open_fds()
}
