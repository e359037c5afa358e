//! Upstreams: endpoints (TCP or Unix), per-shard keepalive pools, balancing, passive health.

pub mod endpoint;

pub use endpoint::Endpoint;
