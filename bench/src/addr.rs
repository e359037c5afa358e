//! Listen/connect addresses: `127.0.0.1:9001`, `[::1]:9001` or `unix:/path/to.sock`.
//!
//! Parsing only; this module never opens a socket.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// One address a backend listens on or a client connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// A TCP address (IPv4 or IPv6).
    Tcp(SocketAddr),
    /// A Unix domain stream socket path.
    Unix(PathBuf),
}

impl FromStr for Addr {
    type Err = String;

    /// Parses `unix:/path` or a `host:port` socket address (no DNS: the bench never resolves names).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("empty unix socket path in {s:?}"));
            }
            return Ok(Addr::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(Addr::Tcp)
            .map_err(|e| format!("bad address {s:?} (want IP:PORT or unix:/path): {e}"))
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(a) => write!(f, "{a}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_and_unix() {
        assert_eq!(
            "127.0.0.1:9001".parse::<Addr>(),
            Ok(Addr::Tcp("127.0.0.1:9001".parse().expect("literal")))
        );
        assert_eq!(
            "unix:/tmp/x.sock".parse::<Addr>(),
            Ok(Addr::Unix("/tmp/x.sock".into()))
        );
        assert!("unix:".parse::<Addr>().is_err());
        assert!("localhost:80".parse::<Addr>().is_err());
    }
}
