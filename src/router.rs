//! Routing: ordered routes matched by optional host, path prefix and optional methods.
//!
//! First match wins, in config order; no match is a 404. Matching is byte comparisons over the
//! parsed head: no allocation per request.

use crate::config::{RouteAction, RouteConfig};

/// What a matched route does.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteKind {
    /// Forward to one endpoint of this upstream group (index into the gateway's upstreams).
    Proxy { upstream: usize },
    /// Fan out to several calls (index into the gateway's fan-out plans).
    Fanout { plan: usize },
    /// Answer with a fixed response (index into the gateway's canned answers).
    Respond { answer: usize },
}

/// One compiled route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Position in the config, also the metrics label index.
    pub index: usize,
    /// The label used in metrics and logs: `host` + `path_prefix`.
    pub label: String,
    host: Option<Vec<u8>>,
    path_prefix: Vec<u8>,
    methods: Option<Vec<Vec<u8>>>,
    /// What to do with a matching request.
    pub kind: RouteKind,
}

impl Route {
    /// Compiles `cfg`; `upstream_index` maps an upstream name to its index; `slot` is the index
    /// of the route's fan-out plan (fan-out route) or canned answer (respond route), unused for
    /// a proxy route.
    pub fn new(
        index: usize,
        cfg: &RouteConfig,
        upstream_index: impl Fn(&str) -> Option<usize>,
        slot: usize,
    ) -> Option<Route> {
        let kind = match &cfg.action {
            RouteAction::Proxy { upstream } => RouteKind::Proxy {
                upstream: upstream_index(upstream)?,
            },
            RouteAction::Fanout(_) => RouteKind::Fanout { plan: slot },
            RouteAction::Respond(_) => RouteKind::Respond { answer: slot },
        };
        let label = match &cfg.host {
            Some(h) => format!("{h}{}", cfg.path_prefix),
            None => cfg.path_prefix.clone(),
        };
        Some(Route {
            index,
            label,
            host: cfg
                .host
                .as_ref()
                .map(|h| h.to_ascii_lowercase().into_bytes()),
            path_prefix: cfg.path_prefix.as_bytes().to_vec(),
            methods: cfg
                .methods
                .as_ref()
                .map(|ms| ms.iter().map(|m| m.as_bytes().to_vec()).collect()),
            kind,
        })
    }

    /// Whether a request with this host (port stripped or not), path and method matches.
    pub fn matches(&self, host: Option<&[u8]>, path: &[u8], method: &[u8]) -> bool {
        if let Some(want) = &self.host {
            let Some(host) = host else { return false };
            if !host_eq(host, want) {
                return false;
            }
        }
        if !path.starts_with(&self.path_prefix) {
            return false;
        }
        match &self.methods {
            Some(ms) => ms.iter().any(|m| m == method),
            None => true,
        }
    }
}

/// Compares a request's Host (which may carry `:port`) with a configured host name,
/// ASCII-case-insensitively (RFC 9110 §4.2.3: host is case-insensitive).
fn host_eq(host: &[u8], want: &[u8]) -> bool {
    let name = match host.iter().rposition(|&b| b == b':') {
        // Keep IPv6 literals `[::1]` whole: a colon inside brackets is not a port separator.
        Some(i) if !host.starts_with(b"[") || host[..i].ends_with(b"]") => &host[..i],
        _ => host,
    };
    name.eq_ignore_ascii_case(want) || host.eq_ignore_ascii_case(want)
}

/// The ordered route table.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// A router over `routes`, in order.
    pub fn new(routes: Vec<Route>) -> Router {
        Router { routes }
    }

    /// The first route matching, or None (→ 404).
    pub fn route(&self, host: Option<&[u8]>, path: &[u8], method: &[u8]) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(host, path, method))
    }

    /// Every route, in order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteAction;

    fn route(host: Option<&str>, prefix: &str, methods: Option<&[&str]>) -> Route {
        let cfg = RouteConfig {
            host: host.map(str::to_string),
            path_prefix: prefix.to_string(),
            methods: methods.map(|m| m.iter().map(|s| s.to_string()).collect()),
            action: RouteAction::Proxy {
                upstream: "u".into(),
            },
        };
        Route::new(0, &cfg, |_| Some(0), 0).unwrap()
    }

    #[test]
    fn prefix_host_and_method() {
        let r = route(Some("Api.Example.com"), "/ads/", Some(&["GET", "HEAD"]));
        assert!(r.matches(Some(b"api.example.com"), b"/ads/1", b"GET"));
        assert!(r.matches(Some(b"API.example.com:8080"), b"/ads/", b"HEAD"));
        assert!(!r.matches(Some(b"other.com"), b"/ads/1", b"GET"));
        assert!(!r.matches(None, b"/ads/1", b"GET"));
        assert!(!r.matches(Some(b"api.example.com"), b"/ad", b"GET"));
        assert!(!r.matches(Some(b"api.example.com"), b"/ads/1", b"POST"));
    }

    #[test]
    fn first_match_wins_and_no_match_is_none() {
        let mut a = route(None, "/a", None);
        a.index = 0;
        let mut b = route(None, "/", None);
        b.index = 1;
        let router = Router::new(vec![a, b]);
        assert_eq!(router.route(None, b"/abc", b"GET").unwrap().index, 0);
        assert_eq!(router.route(None, b"/x", b"GET").unwrap().index, 1);
        let only_a = Router::new(vec![route(None, "/a", None)]);
        assert!(only_a.route(None, b"/b", b"GET").is_none());
    }

    #[test]
    fn ipv6_host_with_port() {
        let r = route(Some("[::1]"), "/", None);
        assert!(r.matches(Some(b"[::1]:8080"), b"/", b"GET"));
        assert!(r.matches(Some(b"[::1]"), b"/", b"GET"));
    }
}
