//! Upstreams: endpoints (TCP or Unix), per-shard keepalive pools, balancing, passive health.

pub mod endpoint;
pub mod group;
pub mod pool;

pub use endpoint::Endpoint;
pub use group::{InFlight, Member, UpstreamGroup};
pub use pool::{CheckoutError, Pool, PooledConn};
