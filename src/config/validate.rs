//! Checks that no single value can make: references between routes and upstreams, uniqueness,
//! limits, fan-out rules. Runs on the deserialised [`Config`]; each failure names the dotted key
//! it is about, and the loader turns that key back into a line and column.
//!
//! Also normalises names (methods uppercased, host and header names lowercased) so that later
//! layers compare without case folding on the request path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use toml::de::DeTable;

use super::locate::KeyPath;
use super::{Config, FanoutConfig, RespondConfig, RouteAction, RouteConfig, UpstreamConfig};

/// A semantic error: the key it is about and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Invalid {
    pub(super) path: KeyPath,
    pub(super) message: String,
    /// Where to point instead when the file does not spell out `path` (it took its default).
    pub(super) or_else: Option<KeyPath>,
}

type Check = Result<(), Invalid>;

fn fail(path: KeyPath, message: impl Into<String>) -> Check {
    Err(Invalid {
        path,
        message: message.into(),
        or_else: None,
    })
}

pub(super) const TWO_ACTIONS: &str = "a route does one thing: proxy (`upstream = \"name\"`), \
     fan out (a `[route.fanout]` table) or answer itself (`respond = { ... }`), not two of them";
pub(super) const NO_ACTION: &str = "a route needs `upstream = \"name\"` (proxy), a \
     `[route.fanout]` table (fan-out) or `respond = { status = 200 }` (answered by ringway)";

/// The keys that give a route its action; exactly one per route.
const ACTION_KEYS: [&str; 3] = ["upstream", "fanout", "respond"];

/// Longest upstream or call name: names are written into JSON, headers and metric labels.
pub(super) const MAX_NAME_LEN: usize = 64;

/// Smallest `limits.max_head_bytes` that still fits a realistic request line and a few headers.
pub(super) const MIN_HEAD_BYTES: usize = 1024;

/// The methods a fan-out route answers (DESIGN.md, fan-out contract).
const FANOUT_METHODS: [&str; 2] = ["GET", "HEAD"];

/// Before deserialising: every `[[route]]` has exactly one of `upstream`, `fanout`, `respond`.
///
/// Done on the raw document because after serde the route has no span left to point at. With
/// two or more, the error points at the second in file order: the first one is what the author
/// presumably meant, the next one is the surprise.
pub(super) fn route_actions(doc: &DeTable<'_>) -> Check {
    let Some((_, routes)) = doc.iter().find(|(k, _)| k.get_ref() == "route") else {
        return Ok(());
    };
    let Some(routes) = routes.get_ref().as_array() else {
        return Ok(()); // wrong type: serde reports it.
    };
    let root = KeyPath::root().key("route");
    for (i, route) in routes.iter().enumerate() {
        let Some(route) = route.get_ref().as_table() else {
            continue;
        };
        let mut present: Vec<(usize, &str)> = route
            .iter()
            .filter(|(k, _)| ACTION_KEYS.contains(&k.get_ref().as_ref()))
            .map(|(k, _)| (k.span().start, k.get_ref().as_ref()))
            .collect();
        present.sort_unstable();
        match present.as_slice() {
            [] => return fail(root.index(i), NO_ACTION),
            [_] => {}
            [_, (_, second), ..] => return fail(root.index(i).key(second), TWO_ACTIONS),
        }
    }
    Ok(())
}

/// Lowercases host and forwarded header names, uppercases methods.
pub(super) fn normalize(config: &mut Config) {
    for route in &mut config.routes {
        if let Some(host) = &mut route.host {
            host.make_ascii_lowercase();
        }
        for method in route.methods.iter_mut().flatten() {
            method.make_ascii_uppercase();
        }
        if let RouteAction::Respond(r) = &mut route.action {
            // Field values carry no surrounding whitespace (RFC 9110 §5.5).
            let trimmed = r.content_type.trim_matches([' ', '\t']);
            if trimmed.len() != r.content_type.len() {
                r.content_type = trimmed.to_owned();
            }
        }
        if let RouteAction::Fanout(f) = &mut route.action {
            for call in &mut f.calls {
                for h in &mut call.forward_headers {
                    h.make_ascii_lowercase();
                }
            }
        }
    }
}

/// Every semantic rule, in file order; the first failure wins.
pub(super) fn validate(c: &Config) -> Check {
    let root = KeyPath::root();
    let server = root.key("server");
    if c.server.listen.is_empty() {
        return fail(
            server.key("listen"),
            "needs at least one address, e.g. [\"0.0.0.0:8080\"]",
        );
    }
    for (i, addr) in c.server.listen.iter().enumerate() {
        if c.server.listen[..i].contains(addr) {
            return fail(
                server.key("listen").index(i),
                format!("`{addr}` is listed twice"),
            );
        }
    }
    if let Some(admin) = c.admin.listen
        && let Some(i) = c.server.listen.iter().position(|a| overlaps(*a, admin))
    {
        return Err(Invalid {
            path: root.key("admin").key("listen"),
            message: format!(
                "`{admin}` overlaps server.listen `{}`; the admin listener needs its own port",
                c.server.listen[i]
            ),
            or_else: Some(server.key("listen").index(i)),
        });
    }
    if c.server.free_list_max > super::MAX_FREE_LIST {
        return fail(
            server.key("free_list_max"),
            format!(
                "must be at most {} (each list keeps up to this many buffers per shard), got {}",
                super::MAX_FREE_LIST,
                c.server.free_list_max
            ),
        );
    }

    let limits = root.key("limits");
    if c.limits.max_head_bytes < MIN_HEAD_BYTES {
        return fail(
            limits.key("max_head_bytes"),
            format!(
                "must be at least {MIN_HEAD_BYTES}, got {}",
                c.limits.max_head_bytes
            ),
        );
    }
    if c.limits.max_headers < 1 {
        return fail(limits.key("max_headers"), "must be at least 1, got 0");
    }
    if c.limits.max_connections < 1 {
        return fail(limits.key("max_connections"), "must be at least 1, got 0");
    }

    let timeouts = root.key("timeouts");
    for (key, d) in [
        ("client_header", c.timeouts.client_header),
        ("client_idle", c.timeouts.client_idle),
        ("upstream_connect", c.timeouts.upstream_connect),
        ("upstream_response", c.timeouts.upstream_response),
        ("tunnel_idle", c.timeouts.tunnel_idle),
    ] {
        positive(timeouts.key(key), d)?;
    }

    let entries = c.io_uring.buffer_ring_entries;
    // Every power of two a u16 holds is at most 32768, the kernel's limit.
    if !entries.is_power_of_two() {
        return fail(
            root.key("io_uring").key("buffer_ring_entries"),
            format!("must be a power of two from 1 to 32768 (the kernel's limit), got {entries}"),
        );
    }

    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, u) in c.upstreams.iter().enumerate() {
        let at = root.key("upstream").index(i);
        if let Some(first) = names.insert(&u.name, i) {
            return fail(
                at.key("name"),
                format!(
                    "upstream `{}` is already defined by upstream[{first}]",
                    u.name
                ),
            );
        }
        upstream(&at, u)?;
    }

    for (i, r) in c.routes.iter().enumerate() {
        route(&root.key("route").index(i), r, c)?;
    }
    Ok(())
}

fn upstream(at: &KeyPath, u: &UpstreamConfig) -> Check {
    name(
        at.key("name"),
        &u.name,
        "upstream",
        "it appears in metric labels and JSON error bodies",
    )?;
    if u.endpoints.is_empty() {
        return fail(
            at.key("endpoints"),
            format!(
                "upstream `{}` has no endpoints; add e.g. [\"127.0.0.1:9001\"]",
                u.name
            ),
        );
    }
    let pool = at.key("pool");
    if u.pool.max_connections < 1 {
        return fail(pool.key("max_connections"), "must be at least 1, got 0");
    }
    if u.pool.max_idle > u.pool.max_connections {
        return fail(
            pool.key("max_idle"),
            format!(
                "max_idle ({}) is more than max_connections ({}); idle connections count toward max_connections",
                u.pool.max_idle, u.pool.max_connections
            ),
        );
    }
    if u.health.fail_threshold < 1 {
        return fail(
            at.key("health").key("fail_threshold"),
            "must be at least 1, got 0",
        );
    }
    Ok(())
}

fn route(at: &KeyPath, r: &RouteConfig, c: &Config) -> Check {
    if let Some(host) = &r.host
        && (host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic() && b != b'/'))
    {
        return fail(
            at.key("host"),
            format!(
                "`{host}` is not a host name: expected e.g. \"api.example.com\" (no spaces or `/`)"
            ),
        );
    }
    if !r.path_prefix.starts_with('/') {
        return fail(
            at.key("path_prefix"),
            format!("`{}` must start with `/`", r.path_prefix),
        );
    }
    if !r.path_prefix.bytes().all(|b| b.is_ascii_graphic()) {
        return fail(
            at.key("path_prefix"),
            format!(
                "`{}` must not contain spaces or control characters",
                r.path_prefix
            ),
        );
    }
    if let Some(methods) = &r.methods {
        if methods.is_empty() {
            return fail(
                at.key("methods"),
                "an empty list matches no request; leave `methods` out to match every method",
            );
        }
        for (i, m) in methods.iter().enumerate() {
            if !is_token(m) {
                return fail(
                    at.key("methods").index(i),
                    format!(
                        "`{m}` is not an HTTP method: expected a token such as \"GET\" (RFC 9110 §9.1)"
                    ),
                );
            }
            if matches!(r.action, RouteAction::Fanout(_)) && !FANOUT_METHODS.contains(&m.as_str()) {
                return fail(
                    at.key("methods").index(i),
                    format!("a fan-out route answers GET and HEAD only, not `{m}`"),
                );
            }
        }
    }
    match &r.action {
        RouteAction::Proxy { upstream } => defined(at.key("upstream"), upstream, c),
        RouteAction::Fanout(f) => fanout(&at.key("fanout"), f, c),
        RouteAction::Respond(r) => respond(&at.key("respond"), r),
    }
}

/// A response the gateway sends itself: a final status, no body where HTTP forbids one, and a
/// Content-Type that can be written into the head as it is.
fn respond(at: &KeyPath, r: &RespondConfig) -> Check {
    if !(200..=599).contains(&r.status) {
        return fail(
            at.key("status"),
            format!(
                "`{}` is not a status ringway can answer with: expected 200-599 (1xx responses are interim, RFC 9110 §15.2)",
                r.status
            ),
        );
    }
    if matches!(r.status, 204 | 205 | 304) && !r.body.is_empty() {
        return fail(
            at.key("body"),
            format!(
                "a {} response has no body (RFC 9110 §{}); remove `body` or pick another status",
                r.status,
                match r.status {
                    204 => "15.3.5",
                    205 => "15.3.6",
                    _ => "15.4.5",
                }
            ),
        );
    }
    let ct = &r.content_type;
    if ct.is_empty()
        || !ct
            .bytes()
            .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
    {
        return fail(
            at.key("content_type"),
            format!(
                "`{}` is not a Content-Type value: expected e.g. \"text/plain; charset=utf-8\" (visible ASCII, no line breaks)",
                ct.escape_debug()
            ),
        );
    }
    Ok(())
}

fn fanout(at: &KeyPath, f: &FanoutConfig, c: &Config) -> Check {
    positive(at.key("timeout"), f.timeout)?;
    if f.calls.is_empty() {
        return fail(
            at.clone(),
            "a fan-out needs at least one `[[route.fanout.call]]`",
        );
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, call) in f.calls.iter().enumerate() {
        let at = at.key("call").index(i);
        name(
            at.key("name"),
            &call.name,
            "call",
            "it is a key of the JSON response, written without escaping",
        )?;
        if let Some(first) = names.insert(&call.name, i) {
            return fail(
                at.key("name"),
                format!("call `{}` is already defined by call[{first}]", call.name),
            );
        }
        defined(at.key("upstream"), &call.upstream, c)?;
        let path = &call.path;
        if !path.starts_with('/') {
            return fail(at.key("path"), format!("`{path}` must start with `/`"));
        }
        if let Some(bad) = path
            .chars()
            .find(|&ch| ch == '?' || ch == '#' || !ch.is_ascii_graphic())
        {
            let why = match bad {
                '?' => {
                    "the client's query string is appended to it, so it must not have its own `?`"
                }
                '#' => "a fragment is never sent to a server",
                _ => "it must not contain spaces or control characters",
            };
            return fail(at.key("path"), format!("`{path}`: {why}"));
        }
        positive(at.key("timeout"), call.timeout)?;
        if call.timeout > f.timeout {
            return fail(
                at.key("timeout"),
                format!(
                    "`{}` is longer than the route's fan-out timeout `{}`",
                    humantime::format_duration(call.timeout),
                    humantime::format_duration(f.timeout)
                ),
            );
        }
        for (j, h) in call.forward_headers.iter().enumerate() {
            if !is_token(h) {
                return fail(
                    at.key("forward_headers").index(j),
                    format!("`{h}` is not a header name (RFC 9110 §5.1)"),
                );
            }
            if crate::http::not_for_subrequests(h.as_bytes()) {
                return fail(
                    at.key("forward_headers").index(j),
                    format!(
                        "`{h}` cannot be forwarded to a fan-out call: framing, hop-by-hop and forwarding fields are set by ringway"
                    ),
                );
            }
        }
    }
    Ok(())
}

fn defined(at: KeyPath, upstream: &str, c: &Config) -> Check {
    if c.upstream(upstream).is_some() {
        return Ok(());
    }
    let known: Vec<&str> = c.upstreams.iter().map(|u| u.name.as_str()).collect();
    let known = if known.is_empty() {
        "no upstreams are defined".to_owned()
    } else {
        format!("defined: {}", known.join(", "))
    };
    fail(
        at,
        format!("no `[[upstream]]` is named `{upstream}` ({known})"),
    )
}

/// Whether binding both addresses would collide: same port and the same or a wildcard address
/// (on Linux `[::]` also takes IPv4 unless `bindv6only` is set).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn positive(at: KeyPath, d: Duration) -> Check {
    if d.is_zero() {
        return fail(at, "must be more than 0s");
    }
    Ok(())
}

/// Upstream and call names: 1-64 of letters, digits, `_`, `-`, `.`, so they can be written into
/// JSON, `Ringway-Partial`, `Server-Timing` and metric labels as they are.
fn name(at: KeyPath, name: &str, what: &str, why: &str) -> Check {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        return Ok(());
    }
    fail(
        at,
        format!(
            "`{name}` is not a valid {what} name: use 1-{MAX_NAME_LEN} letters, digits, `_`, `-` or `.` ({why})"
        ),
    )
}

/// `token = 1*tchar` (RFC 9110 §5.6.2).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}
