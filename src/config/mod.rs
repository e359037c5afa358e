//! Configuration: the TOML schema, every default, validation with file:line:column errors.
//!
//! This module owns the shape of `ringway.toml` and nothing else: it reads a file once at start-up,
//! turns it into plain data ([`Config`]), and can print that data back ([`Config::render`], what
//! `ringway check` shows). It never opens sockets, spawns threads or touches the request path.
//!
//! Every default lives in `defaults.rs` (the `Default` impls, values from DESIGN.md). Loading
//! is two steps: serde deserialises the document (syntax, unknown keys, wrong types, bad durations,
//! endpoints and addresses are caught here, at the exact value), then validation checks what one
//! value alone cannot show (references between upstreams and routes, limits, fan-out rules). Every
//! error, from either step, names the file, line, column and dotted key (`route[1].fanout.call[0].timeout`).

mod de;
mod defaults;
pub mod endpoint;
mod load;
mod locate;
mod render;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use endpoint::Endpoint;

/// The whole gateway configuration, every default filled in.
///
/// Build it with [`Config::load`] or [`Config::parse`] (which validate), or start from
/// [`Config::default`] in tests. `[[upstream]]` and `[[route]]` tables become [`Config::upstreams`]
/// and [`Config::routes`]; routes keep their file order because they match in order.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`: listeners, shards, I/O driver.
    pub server: ServerConfig,
    /// `[admin]`: the metrics and health listener.
    pub admin: AdminConfig,
    /// `[limits]`: abuse limits on client requests.
    pub limits: LimitsConfig,
    /// `[timeouts]`: client and upstream timeouts, shutdown drain.
    pub timeouts: TimeoutsConfig,
    /// `[log]`: access log destination and format.
    pub log: LogConfig,
    /// `[io_uring]`: advanced io_uring features (each used only where the kernel has it).
    pub io_uring: IoUringConfig,
    /// `[[upstream]]`: backend groups, in file order.
    #[serde(rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
    /// `[[route]]`: routes, in file order (first match wins).
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
}

/// Largest `server.free_list_max`: 65536 backend read buffers are already 1 GiB per shard.
pub const MAX_FREE_LIST: usize = 65536;

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Addresses every shard listens on (one `SO_REUSEPORT` socket per shard per address). Never empty.
    #[serde(with = "de::listen_addrs")]
    pub listen: Vec<SocketAddr>,
    /// Number of shards; `0` means one per available core.
    pub shards: usize,
    /// Which I/O driver to run.
    pub io: IoChoice,
    /// Pin each shard's thread to one CPU (best effort: a failure logs a warning).
    pub pin_cpus: bool,
    /// `listen(2)` backlog per listener.
    pub backlog: u32,
    /// Merge repeated slashes in request paths before routing and forwarding (`//a` → `/a`),
    /// like nginx's `merge_slashes on`. RFC 3986 §3.3 counts an empty segment as a segment, so
    /// `false` keeps them.
    pub merge_slashes: bool,
    /// What to do with `%2F`, `%5C` and a raw `\` in a request path: `reject` (400, the
    /// default) or `keep` them as they are, for backends that need encoded slashes.
    pub encoded_slashes: EncodedSlashes,
    /// Most spare items each of a shard's free lists keeps: backend read buffers (16 KiB),
    /// client read buffers (4 KiB), head scratch buffers (1 KiB), and request-state slots per
    /// size class. Size it to the requests in flight at once on one shard, a fan-out request
    /// counting once per call; past it, a request allocates (`ringway_free_list_misses_total`
    /// says how often). Read at start; a reload keeps the old value.
    pub free_list_max: usize,
}

/// `server.encoded_slashes`: see [`crate::http::EncodedSlashes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodedSlashes {
    /// 400 `encoded_slash`.
    #[default]
    Reject,
    /// Forward them as they are (`%2f` upper-cased); they never split a path segment.
    Keep,
}

/// The I/O driver choice: `auto` picks `uring` when the kernel allows it, else `epoll`.
///
/// Shared by the config file (`server.io`) and the command line (`--io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IoChoice {
    /// `uring` if io_uring is usable (not disabled by sysctl or seccomp), else `epoll`.
    #[default]
    Auto,
    /// Completion-based io_uring; start-up fails if the kernel refuses it.
    Uring,
    /// Readiness-based epoll.
    Epoll,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None` (`listen = "off"`) disables it.
    #[serde(with = "de::admin_listen")]
    pub listen: Option<SocketAddr>,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request head (request line + headers) in bytes; at least 1024.
    pub max_head_bytes: usize,
    /// Most header fields in one request head; at least 1.
    pub max_headers: usize,
    /// Largest request body in bytes (413 beyond it).
    pub max_body_bytes: u64,
    /// Most open client connections across the process.
    pub max_connections: usize,
}

/// `[timeouts]`, humantime strings in TOML (`"10s"`, `"300ms"`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// The whole request head must arrive within this (else 408).
    #[serde(with = "de::duration")]
    pub client_header: Duration,
    /// Keepalive idle time between requests on a client connection.
    #[serde(with = "de::duration")]
    pub client_idle: Duration,
    /// Connecting to an upstream endpoint.
    #[serde(with = "de::duration")]
    pub upstream_connect: Duration,
    /// From request sent to response head received.
    #[serde(with = "de::duration")]
    pub upstream_response: Duration,
    /// SIGTERM: in-flight requests must finish within this.
    #[serde(with = "de::duration")]
    pub drain: Duration,
    /// SIGTERM: `/readyz` answers 503 this long before accepting stops.
    #[serde(with = "de::duration")]
    pub drain_grace: Duration,
    /// An upgraded connection (WebSocket, CONNECT) that moves no byte either way this long is
    /// closed (HAProxy's `timeout tunnel`).
    #[serde(with = "de::duration")]
    pub tunnel_idle: Duration,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Access log destination.
    pub access: AccessLog,
    /// Access log line format.
    pub format: LogFormat,
}

/// Where access log lines go: TOML `"off"`, `"stdout"` or a file path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessLog {
    /// No access log.
    #[default]
    Off,
    /// One line per request on standard output.
    Stdout,
    /// Appended to this file.
    File(PathBuf),
}

/// Access log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable `key=value` text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[io_uring]`: each feature is used only where the kernel supports it; `false` forces it off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IoUringConfig {
    /// One multishot accept per listener instead of one SQE per connection (5.19+).
    pub multishot_accept: bool,
    /// Provided-buffer rings for receives (5.19+): idle keepalive clients hold no read buffer.
    pub buffer_ring: bool,
    /// Buffers (4 KiB each) in each shard's provided-buffer ring; a power of two, 1-32768. When
    /// more reads than this complete in one loop turn, the rest use ordinary buffers (counted by
    /// `ringway_shard_buffer_ring_exhausted_total`).
    pub buffer_ring_entries: u16,
    /// The check before an idle pooled backend connection is reused (a one-byte
    /// `recv(MSG_PEEK | MSG_DONTWAIT)`) goes through the ring, with no syscall of its own, instead
    /// of a plain `recv` syscall. Any io_uring kernel (RECV, 5.6).
    pub pool_peek: bool,
    /// Writes and the reads after them go to the kernel as linked chains, woken once
    /// (`IOSQE_IO_LINK`; 6.0+ here): a backend request and its answer's first read, a keep-alive
    /// answer and the read that waits for the client's next request.
    pub linked_ops: bool,
    /// Sockets are registered in the ring's file table and operations name them by slot
    /// (`IOSQE_FIXED_FILE`), sparing the kernel a file reference taken and dropped per operation.
    /// Two `io_uring_register` calls per connection (open, close). Any io_uring kernel (5.5).
    pub registered_files: bool,
    /// `IORING_SETUP_DEFER_TASKRUN` (6.1+).
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN` (5.19+).
    pub coop_taskrun: bool,
    /// `IORING_SETUP_SINGLE_ISSUER` (6.0+): each ring is driven by its own shard thread only.
    pub single_issuer: bool,
    /// `IORING_SETUP_SQPOLL`: a kernel thread polls the submission queue. Off by default: it burns a core per shard.
    pub sqpoll: bool,
}

/// One `[[upstream]]`: a named group of backend endpoints with a pool per endpoint per shard.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Unique name routes refer to; letters, digits, `_`, `-`, `.`, 1-64 characters.
    pub name: String,
    /// Backends (`"127.0.0.1:9001"`, `"[::1]:9001"`, `"unix:/run/ads.sock"`). Never empty.
    #[serde(with = "de::endpoints")]
    pub endpoints: Vec<Endpoint>,
    /// How a request picks an endpoint.
    #[serde(default)]
    pub balance: Balance,
    /// Keepalive pool settings (per endpoint, per shard).
    #[serde(default)]
    pub pool: PoolConfig,
    /// Passive health checking.
    #[serde(default)]
    pub health: HealthConfig,
}

/// Endpoint balancing: TOML `"round_robin"` or `"least_outstanding"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// Power of two choices on in-flight requests.
    LeastOutstanding,
}

/// `pool = { ... }` of an upstream (per endpoint, per shard).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(from = "PoolConfigInput")]
pub struct PoolConfig {
    /// Most idle keepalive connections kept; at most `max_connections`, which it defaults to:
    /// a fan-out's burst of calls then all go back to the pool, instead of most being closed
    /// and opened again by the next burst (nginx's `keepalive` must be sized by hand for that).
    pub max_idle: usize,
    /// An idle connection unused this long is closed.
    #[serde(with = "de::duration")]
    pub idle_timeout: Duration,
    /// Most connections open at once (idle + in use); at least 1.
    pub max_connections: usize,
    /// How long a request waits for a connection when the pool is at `max_connections` (then 503).
    #[serde(with = "de::duration")]
    pub queue_timeout: Duration,
    /// Bound of the FIFO of requests waiting for a connection (beyond it: 503 at once).
    pub max_waiters: usize,
    /// An idle connection reused within this long of its check-in skips the check that the
    /// backend has not closed it or written to it meanwhile (a one-byte peek). `0s`: every reuse
    /// is checked.
    #[serde(with = "de::duration")]
    pub reuse_check_after: Duration,
}

/// [`PoolConfig`] as written: `max_idle` may be left out, and then follows `max_connections`.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PoolConfigInput {
    max_idle: Option<usize>,
    #[serde(with = "de::duration")]
    idle_timeout: Duration,
    max_connections: usize,
    #[serde(with = "de::duration")]
    queue_timeout: Duration,
    max_waiters: usize,
    #[serde(with = "de::duration")]
    reuse_check_after: Duration,
}

impl Default for PoolConfigInput {
    fn default() -> Self {
        let d = PoolConfig::default();
        PoolConfigInput {
            max_idle: None,
            idle_timeout: d.idle_timeout,
            max_connections: d.max_connections,
            queue_timeout: d.queue_timeout,
            max_waiters: d.max_waiters,
            reuse_check_after: d.reuse_check_after,
        }
    }
}

impl From<PoolConfigInput> for PoolConfig {
    fn from(i: PoolConfigInput) -> Self {
        PoolConfig {
            max_idle: i.max_idle.unwrap_or(i.max_connections),
            idle_timeout: i.idle_timeout,
            max_connections: i.max_connections,
            queue_timeout: i.queue_timeout,
            max_waiters: i.max_waiters,
            reuse_check_after: i.reuse_check_after,
        }
    }
}

/// `health = { ... }` of an upstream: passive ejection.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Consecutive failures (connect error, reset, timeout) that eject an endpoint; at least 1.
    pub fail_threshold: u32,
    /// How long an ejected endpoint stays out.
    #[serde(with = "de::duration")]
    pub eject_for: Duration,
}

/// One `[[route]]`. Routes match in order on `host`, `path_prefix`, `methods`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "de::RouteToml", into = "de::RouteToml")]
pub struct RouteConfig {
    /// Match only this `Host` (lowercased; compared case-insensitively); `None` matches any host.
    pub host: Option<String>,
    /// Match paths starting with this; always starts with `/`.
    pub path_prefix: String,
    /// Match only these methods (uppercased HTTP tokens); `None` matches any method.
    pub methods: Option<Vec<String>>,
    /// What a matching request does.
    pub action: RouteAction,
}

/// What a route does: TOML `upstream = "name"` (proxy), a `[route.fanout]` table, or a
/// `respond = { ... }` table; exactly one of the three.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteAction {
    /// Forward the request to one endpoint of this upstream.
    Proxy {
        /// Name of an `[[upstream]]`.
        upstream: String,
    },
    /// Call several upstreams concurrently and answer with one JSON object.
    Fanout(FanoutConfig),
    /// Answer with a fixed response, no backend involved (nginx `return`, Envoy `direct_response`).
    Respond(RespondConfig),
}

/// `respond = { status = 200, body = "hello\n", content_type = "text/plain" }` of a route.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RespondConfig {
    /// Status code, 200-599 (1xx are interim responses, not answers).
    pub status: u16,
    /// The body sent for every method but HEAD; must be empty for 204 and 304.
    #[serde(default)]
    pub body: String,
    /// The Content-Type field value (not sent with a 204 or 304, which have no content).
    #[serde(default = "defaults::respond_content_type")]
    pub content_type: String,
}

/// `[route.fanout]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FanoutConfig {
    /// Overall deadline of the fan-out request.
    pub timeout: Duration,
    /// `[[route.fanout.call]]`, in declaration order (the order of keys in the response).
    pub calls: Vec<CallConfig>,
}

/// One `[[route.fanout.call]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CallConfig {
    /// Key of this call's body in the response object; letters, digits, `_`, `-`, `.`, 1-64 characters.
    pub name: String,
    /// Name of an `[[upstream]]`.
    pub upstream: String,
    /// Path requested from the upstream (starts with `/`; the client's query string is appended).
    pub path: String,
    /// A failed required call fails the whole request (502/504); an optional one gives `null`.
    pub required: bool,
    /// This call's own deadline; at most the route's `timeout`, which is also its default.
    pub timeout: Duration,
    /// Client request headers forwarded to this call (lowercase names).
    pub forward_headers: Vec<String>,
}

impl Config {
    /// Reads, parses and validates the configuration file at `path`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `path`: the OS error if the file cannot be read, else as [`Config::parse`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        load::load(path)
    }

    /// Parses and validates configuration text; `file_name` only labels errors.
    ///
    /// Names are normalised on the way in: methods uppercased, host and forwarded header names
    /// lowercased. A `host:port` endpoint is resolved here, once.
    ///
    /// # Errors
    /// The first problem found, with line, column and dotted key where the document has them.
    pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigError> {
        load::parse(text, file_name)
    }

    /// The resolved configuration (every default filled in) as TOML that parses back to an equal
    /// `Config`: what `ringway check` prints.
    ///
    /// Values appear as resolved: a `host:port` endpoint as the address it resolved to, a call
    /// without its own `timeout` with the route's, durations in humantime form (`"1m"` for `"60s"`).
    /// Integers beyond TOML's `i64` (only possible in a hand-built `Config`) cannot be written; the
    /// output is then a single comment line saying so.
    pub fn render(&self) -> String {
        render::render(self)
    }

    /// The upstream named `name`, if any.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}

/// Why a configuration was rejected: where (file, 1-based line and column, dotted key) and what.
///
/// Displays as `ringway.toml:12:5: upstream[0].endpoints[1]: message`, leaving out the parts it
/// does not know (a missing file has no line; a syntax error has no key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name as given to [`Config::load`] / [`Config::parse`].
    pub file: String,
    /// 1-based line of the offending key or value.
    pub line: Option<usize>,
    /// 1-based column (in characters) of the offending key or value.
    pub column: Option<usize>,
    /// Dotted path of the offending key, e.g. `route[1].fanout.call[0].timeout`.
    pub key: Option<String>,
    /// What is wrong, and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl FromStr for IoChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(IoChoice::Auto),
            "uring" => Ok(IoChoice::Uring),
            "epoll" => Ok(IoChoice::Epoll),
            _ => Err(format!(
                "`{s}` is not an I/O driver: expected auto, uring or epoll"
            )),
        }
    }
}

impl fmt::Display for IoChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoChoice::Auto => "auto",
            IoChoice::Uring => "uring",
            IoChoice::Epoll => "epoll",
        })
    }
}

#[cfg(test)]
mod round_trip;
#[cfg(test)]
mod tests;
