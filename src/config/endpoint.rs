//! Where a backend listens: `ip:port`, `[v6]:port` or `unix:/path`.
//!
//! Parsing happens once, at config load; nothing here resolves names on the request path.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

/// One backend address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A TCP address (IPv4 or IPv6).
    Tcp(SocketAddr),
    /// A Unix domain stream socket path.
    Unix(PathBuf),
}

/// Why an endpoint string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointError(pub String);

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EndpointError {}

impl FromStr for Endpoint {
    type Err = EndpointError;

    /// Parses `127.0.0.1:9001`, `[::1]:9001`, `unix:/run/ads.sock`, or `host:port`.
    ///
    /// A `host:port` name is resolved here, once (config load is the only place that calls this),
    /// and the first address wins: the request path never does DNS.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(EndpointError(
                    "`unix:` needs a socket path, e.g. unix:/run/ads.sock".into(),
                ));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Endpoint::Tcp(addr));
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(EndpointError(format!(
                "`{s}` is not an endpoint: expected ip:port, [v6]:port, host:port or unix:/path"
            )));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(EndpointError(format!(
                "`{s}` is not an endpoint: expected ip:port, [v6]:port, host:port or unix:/path"
            )));
        }
        match s.to_socket_addrs() {
            Ok(mut addrs) => addrs
                .next()
                .map(Endpoint::Tcp)
                .ok_or_else(|| EndpointError(format!("`{s}` resolved to no address"))),
            Err(e) => Err(EndpointError(format!("`{s}` could not be resolved: {e}"))),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "127.0.0.1:9001".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp("127.0.0.1:9001".parse().unwrap())
        );
        assert_eq!(
            "[::1]:9001".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp("[::1]:9001".parse().unwrap())
        );
        assert_eq!(
            "unix:/run/ads.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/run/ads.sock".into())
        );
        assert!(matches!(
            "localhost:80".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp(_)
        ));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "unix:",
            "127.0.0.1",
            "host:notaport",
            ":80",
            "1.2.3.4:99999",
        ] {
            assert!(
                bad.parse::<Endpoint>().is_err(),
                "expected `{bad}` to be rejected"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["127.0.0.1:9001", "[::1]:9001", "unix:/run/ads.sock"] {
            assert_eq!(s.parse::<Endpoint>().unwrap().to_string(), s);
        }
    }
}
