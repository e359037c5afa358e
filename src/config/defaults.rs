//! Every default value of the configuration, in one place (the values in DESIGN.md).
//!
//! Serde fills absent keys from these impls (`#[serde(default)]`), so a key left out of the file
//! and `Config::default()` always agree.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use super::{
    AdminConfig, CallConfig, FanoutConfig, HealthConfig, IoChoice, IoUringConfig, LimitsConfig,
    PoolConfig, RouteAction, RouteConfig, ServerConfig, TimeoutsConfig,
};

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::UNSPECIFIED,
                8080,
            ))],
            shards: 0,
            io: IoChoice::Auto,
            pin_cpus: true,
            backlog: 4096,
            merge_slashes: true,
            encoded_slashes: super::EncodedSlashes::Reject,
            free_list_max: 256,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9901))),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_head_bytes: 16 * 1024,
            max_headers: 100,
            max_body_bytes: 10 * 1024 * 1024,
            max_connections: 20_000,
        }
    }
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            client_header: Duration::from_secs(10),
            client_idle: Duration::from_secs(60),
            upstream_connect: Duration::from_secs(1),
            upstream_response: Duration::from_secs(15),
            drain: Duration::from_secs(10),
            drain_grace: Duration::ZERO,
            tunnel_idle: Duration::from_secs(3600),
        }
    }
}

impl Default for IoUringConfig {
    fn default() -> Self {
        IoUringConfig {
            multishot_accept: true,
            buffer_ring: true,
            buffer_ring_entries: 256,
            pool_peek: true,
            linked_ops: true,
            registered_files: true,
            defer_taskrun: true,
            coop_taskrun: true,
            single_issuer: true,
            sqpoll: false,
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            // As many as may be open (see `PoolConfig::max_idle`).
            max_idle: 256,
            idle_timeout: Duration::from_secs(30),
            max_connections: 256,
            queue_timeout: Duration::from_secs(1),
            max_waiters: 1024,
            reuse_check_after: Duration::from_millis(10),
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            fail_threshold: 3,
            eject_for: Duration::from_secs(10),
        }
    }
}

impl Default for RouteConfig {
    /// A route matching everything, proxying to an (undefined) upstream named `""`: a base for
    /// struct-update syntax, not a valid route by itself.
    fn default() -> Self {
        RouteConfig {
            host: None,
            path_prefix: "/".to_owned(),
            methods: None,
            action: RouteAction::Proxy {
                upstream: String::new(),
            },
        }
    }
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            timeout: Duration::from_secs(1),
            calls: Vec::new(),
        }
    }
}

impl Default for CallConfig {
    /// The defaults of the optional keys of a call (`required`, `timeout`, `forward_headers`).
    /// `timeout` here is the default route timeout; a call in a file defaults to its own route's.
    fn default() -> Self {
        CallConfig {
            name: String::new(),
            upstream: String::new(),
            path: "/".to_owned(),
            required: false,
            timeout: FanoutConfig::default().timeout,
            forward_headers: [
                "accept",
                "accept-language",
                "authorization",
                "cookie",
                "x-request-id",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }
}

/// `respond.content_type` when the route leaves it out.
pub(super) fn respond_content_type() -> String {
    "text/plain".to_owned()
}
