//! Upstreams: endpoints (TCP or Unix), per-shard keepalive pools, balancing, passive health, and
//! the one exchange with a backend that the proxy and fan-out calls share.

pub mod exchange;
pub mod group;
pub mod pool;
pub mod read_bufs;

/// Endpoints are configuration data (`config::endpoint`); the pools connect to them.
pub use crate::config::endpoint::{self, Endpoint};
pub use exchange::{Attempt, Exchange, Head, read_into};
pub use group::{InFlight, Member, UpstreamGroup};
pub use pool::{CheckoutError, Pool, PooledConn};
pub use read_bufs::{MAX_SPARE_READ_BUF, ReadBufs, UPSTREAM_READ_BUF};
