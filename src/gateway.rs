//! The live routing state of one shard: config, router, upstream groups with their pools,
//! fan-out plans and the pre-rendered answers of respond routes. Replaced whole on reload
//! ([`Live`]); a request holds the `Rc<Gateway>` it started with, so a reload never changes a
//! request mid-flight.
//!
//! Sits between the connection loop and the handlers: it holds the handlers' compiled data
//! (`fanout::plan`, `respond::canned`), and the handlers never see it, only the pieces the
//! connection loop hands them (the config, their upstream group, plan or answer).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::config::{Config, RouteAction};
use crate::fanout::plan::FanoutPlan;
use crate::metrics::PoolGauges;
use crate::respond::canned::CannedResponse;
use crate::router::{Route, Router};
use crate::upstream::UpstreamGroup;
use crate::upstream::pool::Pool;

/// One shard's view of one config generation.
pub struct Gateway {
    /// The config this gateway was built from.
    pub config: Arc<Config>,
    /// Ordered routes.
    pub router: Router,
    /// Upstream groups, in config order (routes refer to them by index).
    pub upstreams: Vec<UpstreamGroup>,
    /// Fan-out plans (fan-out routes refer to them by index).
    pub fanouts: Vec<FanoutPlan>,
    /// Canned answers, rendered once here (respond routes refer to them by index).
    pub answers: Vec<CannedResponse>,
}

impl Gateway {
    /// How request paths are normalized (`[server]` `merge_slashes`, `encoded_slashes`).
    pub fn target_policy(&self) -> crate::http::TargetPolicy {
        let s = &self.config.server;
        crate::http::TargetPolicy {
            merge_slashes: s.merge_slashes,
            encoded_slashes: match s.encoded_slashes {
                crate::config::EncodedSlashes::Reject => crate::http::EncodedSlashes::Reject,
                crate::config::EncodedSlashes::Keep => crate::http::EncodedSlashes::Keep,
            },
        }
    }

    /// Builds the gateway for `config`. Pools of `old` whose endpoint and settings are unchanged
    /// are kept (with their warm connections); the others are closed when their last request ends.
    pub fn build(config: Arc<Config>, old: Option<&Gateway>) -> Gateway {
        let seed = std::process::id() as u64 ^ (Rc::as_ptr(&Rc::new(0u8)) as u64);
        let upstreams: Vec<UpstreamGroup> = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(ui, u)| {
                UpstreamGroup::new(
                    u,
                    |i| {
                        let ep = &u.endpoints[i];
                        old.and_then(|g| g.find_pool(ep, &u.pool, config.timeouts.upstream_connect))
                            .unwrap_or_else(|| {
                                Pool::new(
                                    ep.clone(),
                                    u.pool.clone(),
                                    config.timeouts.upstream_connect,
                                )
                            })
                    },
                    seed.wrapping_add((ui as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                )
            })
            .collect();
        let upstream_index = |name: &str| config.upstreams.iter().position(|u| u.name == name);
        let mut fanouts = Vec::new();
        let mut answers = Vec::new();
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, rc) in config.routes.iter().enumerate() {
            let slot = match &rc.action {
                RouteAction::Fanout(f) => {
                    // Validation guarantees every call names a defined upstream; a route whose
                    // plan cannot be built is left out rather than pointing at another's plan.
                    match FanoutPlan::new(f, upstream_index) {
                        Some(p) => fanouts.push(p),
                        None => continue,
                    }
                    fanouts.len() - 1
                }
                RouteAction::Respond(r) => {
                    answers.push(CannedResponse::new(r));
                    answers.len() - 1
                }
                RouteAction::Proxy { .. } => 0,
            };
            if let Some(r) = Route::new(i, rc, upstream_index, slot) {
                routes.push(r);
            }
        }
        Gateway {
            router: Router::new(routes),
            upstreams,
            fanouts,
            answers,
            config,
        }
    }

    /// The pool gauges of every upstream on this shard, for a metrics snapshot.
    pub fn pool_gauges(&self) -> BTreeMap<String, PoolGauges> {
        let mut pools = BTreeMap::new();
        for g in &self.upstreams {
            let e: &mut PoolGauges = pools.entry(g.name.clone()).or_default();
            for m in g.members() {
                e.idle += m.pool.idle_count() as u64;
                e.open += m.pool.open_count() as u64;
                e.opened_total += m.pool.opened_total();
                e.ejected += u64::from(m.is_ejected());
            }
        }
        pools
    }

    fn find_pool(
        &self,
        ep: &crate::upstream::Endpoint,
        cfg: &crate::config::PoolConfig,
        connect_timeout: std::time::Duration,
    ) -> Option<Rc<Pool>> {
        self.upstreams
            .iter()
            .flat_map(|g| g.members())
            .find(|m| m.pool.same_settings(ep, cfg, connect_timeout))
            .map(|m| m.pool.clone())
    }
}

/// The gateway new requests on one shard use: replaced whole by a reload, while requests already
/// running keep the one they started with.
pub struct Live(RefCell<Rc<Gateway>>);

impl Live {
    /// Serves `gateway` from now on.
    pub fn new(gateway: Gateway) -> Live {
        Live(RefCell::new(Rc::new(gateway)))
    }

    /// The gateway for a request starting now.
    pub fn current(&self) -> Rc<Gateway> {
        self.0.borrow().clone()
    }

    /// Replaces the gateway for requests that start after this.
    pub fn replace(&self, gateway: Gateway) {
        *self.0.borrow_mut() = Rc::new(gateway);
    }
}
