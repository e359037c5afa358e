//! The open-files budget: how many client connections a gateway may hold so that its backends
//! still get fds, and the `RLIMIT_NOFILE` it reads and raises.

use crate::config::Config;

/// Fds every shard needs besides connections (its ring or epoll fd, wake-up and control fds,
/// listeners), counted on top of those already open when the limit is computed.
const FD_PER_SHARD: usize = 8;

/// Fds kept for the rest of the process: admin connections (scrapes, probes), log files,
/// a reload's config file.
const FD_SLACK: usize = 16;

/// How many client connections the whole gateway may hold without running out of fds for its
/// backends: `max_connections`, lowered to fit under the open-files limit `nofile` (the soft
/// `RLIMIT_NOFILE`, which `ringway run` raised to the hard limit at start). At least 1.
///
/// The reserve, never used for clients: the fds open now (`open_now`), [`FD_PER_SHARD`] per
/// shard, [`FD_SLACK`], and room for every backend connection the pools may open
/// (`backend_max`, the sum of `max_connections` over endpoints and shards) or, when fds are
/// that scarce, half of what is left, since each proxied request in flight holds one client
/// and one backend fd.
///
/// Without it, enough clients take every fd and each request then fails to connect to its
/// backend (`EMFILE`, 502) while the gateway keeps accepting: it looks up but serves nothing.
/// With it, the accept loop stops at the limit (it waits for a close, see [`accept_loop`]), the
/// extra clients wait in the listen backlog, and the established ones keep being served.
/// Computed once at start; a reload that adds endpoints does not recompute it.
pub(super) fn client_conn_limit(
    max_connections: usize,
    nofile: Option<usize>,
    open_now: usize,
    shards: usize,
    backend_max: usize,
) -> usize {
    let Some(nofile) = nofile else {
        return max_connections.max(1);
    };
    let fixed = open_now
        .saturating_add(FD_SLACK)
        .saturating_add(FD_PER_SHARD.saturating_mul(shards));
    let avail = nofile.saturating_sub(fixed);
    let backends = backend_max.min(avail / 2);
    let by_fds = avail.saturating_sub(backends).max(1);
    if by_fds < max_connections {
        tracing::info!(
            rlimit_nofile = nofile,
            reserved_for_backends = backends,
            reserved_other = fixed,
            max_connections,
            "open-files limit caps client connections at {by_fds}"
        );
    }
    by_fds.min(max_connections).max(1)
}

/// The most backend connections `config`'s pools may hold at once over `shards` shards.
pub(super) fn backend_conn_max(config: &Config, shards: usize) -> usize {
    config
        .upstreams
        .iter()
        .map(|u| u.endpoints.len().saturating_mul(u.pool.max_connections))
        .fold(0usize, usize::saturating_add)
        .saturating_mul(shards)
}

/// Slots for one shard's io_uring file table: its client connections (`clients`, the shard's
/// share of the limit) and its pools' backend connections (`backends`, per shard), with a few
/// to spare, within the kernel's table limit and the open-files limit (the kernel refuses a
/// table larger than `RLIMIT_NOFILE`). Sockets beyond the table still work, on plain fds.
pub(super) fn file_slots(clients: usize, backends: usize) -> u32 {
    let want = clients
        .saturating_add(backends)
        .saturating_add(FD_PER_SHARD);
    let cap = nofile_soft_limit().unwrap_or(usize::MAX);
    u32::try_from(want.min(cap))
        .unwrap_or(u32::MAX)
        .min(crate::io::MAX_FILE_SLOTS)
}

/// Fds this process has open right now (`/proc/self/fd`, minus the one reading it).
pub(super) fn open_fds_now() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(FD_SLACK, |d| d.count().saturating_sub(1))
}

/// The soft and hard `RLIMIT_NOFILE`, if the kernel says.
fn nofile_limits() -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit struct; getrlimit only writes into it.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim)
}

/// The soft `RLIMIT_NOFILE`, if known and finite.
pub(super) fn nofile_soft_limit() -> Option<usize> {
    let lim = nofile_limits()?;
    if lim.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    usize::try_from(lim.rlim_cur).ok()
}

/// Raises the soft open-files limit to the hard limit: every client and backend connection is
/// an fd, and the default soft limit (1024) is far below a gateway's needs.
pub fn raise_nofile_limit() {
    if let Some(mut lim) = nofile_limits()
        && lim.rlim_cur < lim.rlim_max
    {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit struct the kernel only reads.
        unsafe {
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{FD_PER_SHARD, FD_SLACK, client_conn_limit};

    #[test]
    fn scarce_fds_are_split_between_clients_and_backends() {
        // 64 fds, 18 open, one shard: 22 left, 11 for backends, 11 for clients.
        let fixed = 18 + FD_SLACK + FD_PER_SHARD;
        assert_eq!(fixed, 42);
        assert_eq!(client_conn_limit(20_000, Some(64), 18, 1, 256), 11);
    }

    #[test]
    fn plenty_of_fds_reserve_what_the_pools_may_open() {
        // 20,000 fds, one endpoint of 256 connections on one shard.
        assert_eq!(
            client_conn_limit(20_000, Some(20_000), 18, 1, 256),
            20_000 - 18 - FD_SLACK - FD_PER_SHARD - 256
        );
        assert_eq!(client_conn_limit(100, Some(1 << 20), 18, 4, 4096), 100);
    }

    #[test]
    fn unknown_or_exhausted_limits() {
        assert_eq!(client_conn_limit(20_000, None, 18, 1, 256), 20_000);
        assert_eq!(client_conn_limit(20_000, Some(10), 18, 1, 256), 1);
    }
}
