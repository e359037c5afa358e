//! What the requests of one shard share: its counters, its drain signal, its access-log buffer
//! and its spare backend read buffers.
//!
//! The shard builds one [`ShardLocal`] and every client connection holds an `Rc` to it. It knows
//! nothing of routes or config generations (the connection loop gets those from
//! [`crate::gateway::Live`]), so the request path below the connection loop depends on this leaf
//! and never on the shard itself. Plain `Cell`/`RefCell` state on the shard's thread: no locks.

use crate::access_log::ShardAccessLog;
use crate::io::LocalEvent;
use crate::metrics::ShardMetrics;
use crate::upstream::ReadBufs;

/// One shard's request-path state (see the module doc).
pub struct ShardLocal {
    metrics: ShardMetrics,
    draining: LocalEvent,
    access_log: Option<ShardAccessLog>,
    read_bufs: ReadBufs,
    client_bufs: ReadBufs,
    scratch_bufs: ReadBufs,
}

impl ShardLocal {
    /// The state of shard `id`, writing access-log lines to `access_log` when it is on. Each
    /// free list keeps at most `free_list_max` spare buffers (`server.free_list_max`): about the
    /// requests in flight at once. An idle connection gives its buffers back (it holds none
    /// while idle), so the lists stay bounded by this, not by the number of connections.
    pub fn new(id: usize, access_log: Option<ShardAccessLog>, free_list_max: usize) -> ShardLocal {
        ShardLocal {
            metrics: ShardMetrics::new(id),
            draining: LocalEvent::new(),
            access_log,
            read_bufs: ReadBufs::new(
                crate::upstream::UPSTREAM_READ_BUF,
                free_list_max,
                crate::upstream::MAX_SPARE_READ_BUF,
            ),
            client_bufs: ReadBufs::new(
                crate::client::READ_BUF_INITIAL,
                free_list_max,
                4 * crate::client::READ_BUF_INITIAL,
            ),
            scratch_bufs: ReadBufs::new(
                crate::client::SCRATCH_INITIAL,
                free_list_max,
                4 * crate::client::SCRATCH_INITIAL,
            ),
        }
    }

    /// Every free list's spare count and misses, for the metrics: backend reads, client reads,
    /// head scratch, then this thread's request-state slots, answer piece vectors and write
    /// iovec boxes.
    pub fn free_lists(&self) -> [crate::metrics::FreeList; 6] {
        let list = |name, b: &ReadBufs| crate::metrics::FreeList {
            name,
            spare: b.spare() as u64,
            misses: b.misses(),
        };
        let slots = crate::io::recycle::stats();
        let stats = |name, (spare, misses)| crate::metrics::FreeList {
            name,
            spare,
            misses,
        };
        [
            list("upstream_read", &self.read_bufs),
            list("client_read", &self.client_bufs),
            list("head_scratch", &self.scratch_bufs),
            crate::metrics::FreeList {
                name: "request_state",
                spare: slots.spare as u64,
                misses: slots.fresh,
            },
            stats("answer_parts", crate::io::parts_stats()),
            stats("write_iovecs", crate::io::iovec_stats()),
        ]
    }

    /// This shard's counters.
    pub fn metrics(&self) -> &ShardMetrics {
        &self.metrics
    }

    /// Set when the shard starts draining.
    pub fn draining(&self) -> &LocalEvent {
        &self.draining
    }

    /// Whether the shard is draining (answers then say `Connection: close`).
    pub fn is_draining(&self) -> bool {
        self.draining.is_set()
    }

    /// This shard's access-log buffer, if the access log is on.
    pub fn access_log(&self) -> Option<&ShardAccessLog> {
        self.access_log.as_ref()
    }

    /// Spare backend read buffers.
    pub fn read_bufs(&self) -> &ReadBufs {
        &self.read_bufs
    }

    /// Spare client request read buffers.
    pub fn client_bufs(&self) -> &ReadBufs {
        &self.client_bufs
    }

    /// Spare client head scratch buffers.
    pub fn scratch_bufs(&self) -> &ReadBufs {
        &self.scratch_bufs
    }
}
