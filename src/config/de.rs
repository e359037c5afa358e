//! Serde glue for the values TOML spells as strings (durations, addresses, endpoints, log
//! destinations) and the TOML shape of routes and fan-outs.
//!
//! Every string is parsed inside a `Visitor` (not after `String::deserialize`) so that toml attaches
//! the span of the exact offending value to the error: that is what makes `line:col` point at the
//! second endpoint of an array rather than at the array.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use super::{
    AccessLog, CallConfig, Endpoint, FanoutConfig, RespondConfig, RouteAction, RouteConfig,
};

/// Visits one string and parses it with `parse`; the error message is the parser's.
struct StrVisitor<T, F> {
    expecting: &'static str,
    parse: F,
    _out: PhantomData<T>,
}

impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for StrVisitor<T, F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }
}

fn parse_str<'de, D, T>(
    d: D,
    expecting: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    d.deserialize_str(StrVisitor {
        expecting,
        parse,
        _out: PhantomData,
    })
}

/// A list of strings, each parsed by `T`'s own `Deserialize` (so each error has its element's span).
fn seq<'de, D, T>(d: D, expecting: &'static str) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct SeqVisitor<T>(&'static str, PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for SeqVisitor<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(item) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(SeqVisitor(expecting, PhantomData))
}

fn display_seq<S: Serializer, T: fmt::Display>(items: &[T], s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(items.len()))?;
    for item in items {
        seq.serialize_element(&item.to_string())?;
    }
    seq.end()
}

fn parse_duration(v: &str) -> Result<Duration, String> {
    humantime::parse_duration(v).map_err(|e| {
        format!("`{v}` is not a duration: {e}; write e.g. \"300ms\", \"10s\" or \"1m 30s\"")
    })
}

fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

const DURATION_EXPECTING: &str = "a duration string such as \"10s\" or \"300ms\"";

/// `Duration` as a humantime string (`"10s"`, `"300ms"`).
pub(super) mod duration {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse_str(d, DURATION_EXPECTING, parse_duration)
    }

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*v))
    }

    /// `Option<Duration>`; absence is `None` (use with `#[serde(default)]`).
    pub mod option {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }

        pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => super::serialize(v, s),
                None => s.serialize_none(),
            }
        }
    }
}

fn parse_listen(v: &str) -> Result<SocketAddr, String> {
    v.parse().map_err(|_| {
        format!("`{v}` is not a listen address: expected ip:port, e.g. \"0.0.0.0:8080\" or \"[::]:8080\"")
    })
}

struct ListenAddr(SocketAddr);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "a listen address such as \"0.0.0.0:8080\"", parse_listen).map(ListenAddr)
    }
}

/// `server.listen`: a list of `ip:port` strings.
pub(super) mod listen_addrs {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
        let addrs: Vec<ListenAddr> =
            seq(d, "a list of listen addresses such as [\"0.0.0.0:8080\"]")?;
        Ok(addrs.into_iter().map(|a| a.0).collect())
    }

    pub fn serialize<S: Serializer>(v: &[SocketAddr], s: S) -> Result<S::Ok, S::Error> {
        display_seq(v, s)
    }
}

/// `admin.listen`: an `ip:port` string or `"off"`.
pub(super) mod admin_listen {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        parse_str(
            d,
            "a listen address such as \"127.0.0.1:9901\", or \"off\"",
            |v| {
                if v == "off" {
                    Ok(None)
                } else {
                    parse_listen(v)
                        .map(Some)
                        .map_err(|e| format!("{e}, or \"off\" to disable the admin listener"))
                }
            },
        )
    }

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(addr) => s.serialize_str(&addr.to_string()),
            None => s.serialize_str("off"),
        }
    }
}

struct EndpointDe(Endpoint);

impl<'de> Deserialize<'de> for EndpointDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(
            d,
            "an endpoint such as \"127.0.0.1:9001\" or \"unix:/run/ads.sock\"",
            |v| v.parse::<Endpoint>().map(EndpointDe).map_err(|e| e.0),
        )
    }
}

/// `upstream.endpoints`: a list of endpoint strings.
pub(super) mod endpoints {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Endpoint>, D::Error> {
        let eps: Vec<EndpointDe> = seq(
            d,
            "a list of endpoints such as [\"127.0.0.1:9001\", \"unix:/run/ads.sock\"]",
        )?;
        Ok(eps.into_iter().map(|e| e.0).collect())
    }

    pub fn serialize<S: Serializer>(v: &[Endpoint], s: S) -> Result<S::Ok, S::Error> {
        display_seq(v, s)
    }
}

impl<'de> Deserialize<'de> for AccessLog {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "\"off\", \"stdout\" or a file path", |v| match v {
            "off" => Ok(AccessLog::Off),
            "stdout" => Ok(AccessLog::Stdout),
            "" => Err("the access log needs \"off\", \"stdout\" or a file path".to_owned()),
            path => Ok(AccessLog::File(PathBuf::from(path))),
        })
    }
}

impl Serialize for AccessLog {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AccessLog::Off => s.serialize_str("off"),
            AccessLog::Stdout => s.serialize_str("stdout"),
            AccessLog::File(path) => s.serialize_str(&path.to_string_lossy()),
        }
    }
}

fn default_path_prefix() -> String {
    RouteConfig::default().path_prefix
}

fn default_fanout_timeout() -> Duration {
    FanoutConfig::default().timeout
}

fn default_required() -> bool {
    CallConfig::default().required
}

fn default_forward_headers() -> Vec<String> {
    CallConfig::default().forward_headers
}

/// A `[[route]]` table as written: `upstream`, `fanout` and `respond` are all optional here;
/// exactly one must be present (checked with its location before deserialising, see
/// `validate::route_actions`).
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteToml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(default = "default_path_prefix")]
    path_prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    methods: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upstream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fanout: Option<FanoutToml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    respond: Option<RespondConfig>,
}

/// `[route.fanout]` as written.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FanoutToml {
    #[serde(default = "default_fanout_timeout", with = "duration")]
    timeout: Duration,
    #[serde(default)]
    call: Vec<CallToml>,
}

/// `[[route.fanout.call]]` as written: `timeout` may be absent (then it is the route's).
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct CallToml {
    name: String,
    upstream: String,
    path: String,
    #[serde(default = "default_required")]
    required: bool,
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    timeout: Option<Duration>,
    #[serde(default = "default_forward_headers")]
    forward_headers: Vec<String>,
}

impl TryFrom<RouteToml> for RouteConfig {
    type Error = String;

    fn try_from(r: RouteToml) -> Result<Self, String> {
        let action = match (r.upstream, r.fanout, r.respond) {
            (Some(upstream), None, None) => RouteAction::Proxy { upstream },
            (None, None, Some(respond)) => RouteAction::Respond(respond),
            (None, Some(f), None) => RouteAction::Fanout(FanoutConfig {
                timeout: f.timeout,
                calls: f
                    .call
                    .into_iter()
                    .map(|c| CallConfig {
                        name: c.name,
                        upstream: c.upstream,
                        path: c.path,
                        required: c.required,
                        timeout: c.timeout.unwrap_or(f.timeout),
                        forward_headers: c.forward_headers,
                    })
                    .collect(),
            }),
            (None, None, None) => return Err(super::validate::NO_ACTION.to_owned()),
            _ => return Err(super::validate::TWO_ACTIONS.to_owned()),
        };
        Ok(RouteConfig {
            host: r.host,
            path_prefix: r.path_prefix,
            methods: r.methods,
            action,
        })
    }
}

impl From<RouteConfig> for RouteToml {
    fn from(r: RouteConfig) -> Self {
        let (upstream, fanout, respond) = match r.action {
            RouteAction::Proxy { upstream } => (Some(upstream), None, None),
            RouteAction::Respond(respond) => (None, None, Some(respond)),
            RouteAction::Fanout(f) => (
                None,
                Some(FanoutToml {
                    timeout: f.timeout,
                    call: f
                        .calls
                        .into_iter()
                        .map(|c| CallToml {
                            name: c.name,
                            upstream: c.upstream,
                            path: c.path,
                            required: c.required,
                            timeout: Some(c.timeout),
                            forward_headers: c.forward_headers,
                        })
                        .collect(),
                }),
                None,
            ),
        };
        RouteToml {
            host: r.host,
            path_prefix: r.path_prefix,
            methods: r.methods,
            upstream,
            fanout,
            respond,
        }
    }
}
