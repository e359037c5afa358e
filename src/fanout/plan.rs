//! A fan-out route compiled from its config: the calls in declaration order, each with its
//! upstream index, path, timeout, forwarded headers and the literal key that precedes its value
//! in the answer. Built once per config generation (see `gateway`); a leaf the gateway may import.

use std::time::Duration;

use bytes::Bytes;

use crate::config::FanoutConfig;
use crate::http;

/// One call of a plan.
#[derive(Debug, Clone)]
pub struct CallPlan {
    /// The key in the answer.
    pub name: String,
    /// Index of its upstream group in the gateway.
    pub upstream: usize,
    /// Path sent to the backend (the client's query string is appended).
    pub path: String,
    /// A failure of a required call fails the whole request.
    pub required: bool,
    /// This call's own timeout (never longer than the route's).
    pub timeout: Duration,
    /// Lowercase names of client request headers forwarded to the backend.
    pub forward_headers: Vec<String>,
    /// The literal that precedes this call's value: `{"name":` or `,"name":`.
    pub(super) key: Bytes,
}

/// A compiled fan-out route.
#[derive(Debug, Clone)]
pub struct FanoutPlan {
    /// Overall deadline of the request.
    pub timeout: Duration,
    /// Calls in declaration order (the order of keys in the answer).
    pub calls: Vec<CallPlan>,
}

impl FanoutPlan {
    /// Compiles `cfg`; None if a call names an unknown upstream (validation prevents this).
    ///
    /// `forward_headers` entries that ringway writes itself or that are hop-by-hop are dropped
    /// here ([`http::not_for_subrequests`]), so no config can make a call carry the client's
    /// framing.
    pub fn new(cfg: &FanoutConfig, upstream_index: impl Fn(&str) -> Option<usize>) -> Option<Self> {
        let mut calls = Vec::with_capacity(cfg.calls.len());
        for (i, c) in cfg.calls.iter().enumerate() {
            // Call names are validated to need no JSON escaping.
            let key = format!("{}\"{}\":", if i == 0 { "{" } else { "," }, c.name);
            calls.push(CallPlan {
                name: c.name.clone(),
                upstream: upstream_index(&c.upstream)?,
                path: c.path.clone(),
                required: c.required,
                timeout: c.timeout.min(cfg.timeout),
                forward_headers: c
                    .forward_headers
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .filter(|h| !http::not_for_subrequests(h.as_bytes()))
                    .collect(),
                key: Bytes::from(key),
            });
        }
        Some(FanoutPlan {
            timeout: cfg.timeout,
            calls,
        })
    }
}
