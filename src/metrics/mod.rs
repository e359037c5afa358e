//! Per-shard counters and the Prometheus text rendering of their sum (`exposition`).
//!
//! Each shard counts into plain `Cell`s and `RefCell<HashMap>`s on its own thread: no atomics on
//! the request path. On scrape the admin thread asks every shard for a [`ShardSnapshot`] (a
//! message), then merges and renders them. Label lookups borrow `&str`, so counting a request does
//! not allocate once its labels have been seen.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Upper bounds (seconds) of the request duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How one upstream exchange ended (the `outcome` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// A complete response arrived.
    Ok,
    /// Connect refused/failed, reset, or the connection closed early.
    Error,
    /// Connect or response timeout.
    Timeout,
    /// The response was malformed.
    BadResponse,
    /// No endpoint available (all ejected, pool exhausted).
    Unavailable,
}

impl UpstreamOutcome {
    pub(crate) const ALL: [UpstreamOutcome; 5] = [
        UpstreamOutcome::Ok,
        UpstreamOutcome::Error,
        UpstreamOutcome::Timeout,
        UpstreamOutcome::BadResponse,
        UpstreamOutcome::Unavailable,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamOutcome::Ok => "ok",
            UpstreamOutcome::Error => "error",
            UpstreamOutcome::Timeout => "timeout",
            UpstreamOutcome::BadResponse => "bad_response",
            UpstreamOutcome::Unavailable => "unavailable",
        }
    }
}

/// How one fan-out call ended (the `outcome` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// 2xx answer embedded.
    Ok,
    /// Failed (connect, reset, non-2xx, malformed).
    Error,
    /// Hit its own timeout or the route deadline.
    Timeout,
    /// Cancelled because a required call failed or the client left.
    Cancelled,
}

impl CallOutcome {
    pub(crate) const ALL: [CallOutcome; 4] = [
        CallOutcome::Ok,
        CallOutcome::Error,
        CallOutcome::Timeout,
        CallOutcome::Cancelled,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Error => "error",
            CallOutcome::Timeout => "timeout",
            CallOutcome::Cancelled => "cancelled",
        }
    }
}

/// The request duration histogram (non-cumulative bucket counts; rendered cumulative).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Count per bucket of [`DURATION_BUCKETS`], plus one for +Inf.
    pub buckets: [u64; DURATION_BUCKETS.len() + 1],
    /// Sum of observations, seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        let i = DURATION_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum += secs;
        self.count += 1;
    }

    pub(crate) fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets.iter()) {
            *a += b;
        }
        self.sum += o.sum;
        self.count += o.count;
    }
}

/// One shard's live counters.
#[derive(Debug)]
pub struct ShardMetrics {
    shard: usize,
    accepts: Cell<u64>,
    conns_open: Cell<u64>,
    requests: RefCell<HashMap<String, HashMap<u16, u64>>>,
    duration: RefCell<Histogram>,
    upstream: RefCell<HashMap<String, [u64; 5]>>,
    fanout: RefCell<HashMap<String, HashMap<String, [u64; 4]>>>,
}

impl ShardMetrics {
    /// Zeroed counters for shard `shard`.
    pub fn new(shard: usize) -> Self {
        ShardMetrics {
            shard,
            accepts: Cell::new(0),
            conns_open: Cell::new(0),
            requests: RefCell::default(),
            duration: RefCell::default(),
            upstream: RefCell::default(),
            fanout: RefCell::default(),
        }
    }

    /// A client connection was accepted.
    pub fn accepted(&self) {
        self.accepts.set(self.accepts.get() + 1);
    }

    /// A client connection opened (accepted and being served).
    pub fn conn_opened(&self) {
        self.conns_open.set(self.conns_open.get() + 1);
    }

    /// A client connection closed.
    pub fn conn_closed(&self) {
        self.conns_open.set(self.conns_open.get().saturating_sub(1));
    }

    /// A response with `status` was sent for `route` (label; `""` when no route matched).
    pub fn request(&self, route: &str, status: u16, took: Duration) {
        let mut reqs = self.requests.borrow_mut();
        let by_status = match reqs.get_mut(route) {
            Some(m) => m,
            None => reqs.entry(route.to_string()).or_default(),
        };
        *by_status.entry(status).or_insert(0) += 1;
        self.duration.borrow_mut().observe(took.as_secs_f64());
    }

    /// An upstream exchange with `upstream` ended with `outcome`.
    pub fn upstream(&self, upstream: &str, outcome: UpstreamOutcome) {
        let mut ups = self.upstream.borrow_mut();
        let counts = match ups.get_mut(upstream) {
            Some(c) => c,
            None => ups.entry(upstream.to_string()).or_insert([0; 5]),
        };
        counts[outcome as usize] += 1;
    }

    /// A fan-out call `call` of `route` ended with `outcome`.
    pub fn fanout_call(&self, route: &str, call: &str, outcome: CallOutcome) {
        let mut f = self.fanout.borrow_mut();
        let calls = match f.get_mut(route) {
            Some(c) => c,
            None => f.entry(route.to_string()).or_default(),
        };
        let counts = match calls.get_mut(call) {
            Some(c) => c,
            None => calls.entry(call.to_string()).or_insert([0; 4]),
        };
        counts[outcome as usize] += 1;
    }

    /// A copy of the counters, with the shard's pool gauges `pools` and its open client
    /// connection count, to send to the admin thread.
    pub fn snapshot(
        &self,
        pools: BTreeMap<String, PoolGauges>,
        open_connections: usize,
    ) -> ShardSnapshot {
        ShardSnapshot {
            shard: self.shard,
            accepts: self.accepts.get(),
            conns_open: open_connections as u64,
            requests: self
                .requests
                .borrow()
                .iter()
                .flat_map(|(r, m)| m.iter().map(move |(s, n)| ((r.clone(), *s), *n)))
                .collect(),
            duration: self.duration.borrow().clone(),
            upstream: self
                .upstream
                .borrow()
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            fanout: self
                .fanout
                .borrow()
                .iter()
                .flat_map(|(r, m)| m.iter().map(move |(c, v)| ((r.clone(), c.clone()), *v)))
                .collect(),
            pools,
            // Counted by the io layer on this (the shard's) thread.
            buffer_ring_exhausted: crate::io::buffer_ring_exhausted(),
            driver: crate::io::driver_counters(),
            free_lists: Vec::new(),
        }
    }
}

/// Pool gauges of one upstream on one shard.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolGauges {
    /// Idle pooled connections.
    pub idle: u64,
    /// Open connections (idle + in use).
    pub open: u64,
    /// Connections opened since the pool was created.
    pub opened_total: u64,
    /// Endpoints ejected right now.
    pub ejected: u64,
}

/// A copy of one shard's counters, sent to the admin thread on scrape.
#[derive(Clone, Debug, Default)]
pub struct ShardSnapshot {
    /// Shard index.
    pub shard: usize,
    /// Client connections accepted.
    pub accepts: u64,
    /// Client connections open now.
    pub conns_open: u64,
    /// Responses by (route, status).
    pub requests: BTreeMap<(String, u16), u64>,
    /// Request durations.
    pub duration: Histogram,
    /// Upstream exchanges by upstream, counted per [`UpstreamOutcome`].
    pub upstream: BTreeMap<String, [u64; 5]>,
    /// Fan-out calls by (route, call), counted per [`CallOutcome`].
    pub fanout: BTreeMap<(String, String), [u64; 4]>,
    /// Pool gauges by upstream.
    pub pools: BTreeMap<String, PoolGauges>,
    /// Idle reads that found the io_uring buffer ring empty (always 0 on epoll).
    pub buffer_ring_exhausted: u64,
    /// The uring driver's task polls, SQEs and CQEs (all zero on epoll).
    pub driver: crate::io::DriverCounters,
    /// The shard's free lists ([`crate::local::ShardLocal::free_lists`]).
    pub free_lists: Vec<FreeList>,
}

/// One per-shard free list, as of a scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FreeList {
    /// Its `list` label: `upstream_read`, `client_read`, `head_scratch`, `request_state`,
    /// `answer_parts`, `write_iovecs`.
    pub name: &'static str,
    /// Spare items on it now.
    pub spare: u64,
    /// Takes that found it empty and allocated, since start.
    pub misses: u64,
}

mod exposition;

pub use exposition::render;
