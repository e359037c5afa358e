//! The scenario table: what each scenario sends and what the backends answer.

/// One benchmark scenario.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Name used on the command line and in reports.
    pub name: &'static str,
    /// Keepalive client connections (closed loop).
    pub connections: usize,
    /// Requests per batch per connection.
    pub pipeline: usize,
    /// Backend response body size.
    pub body_size: usize,
    /// Backends listen on Unix sockets (the target's upstream side is UDS).
    pub uds: bool,
    /// Client request path.
    pub path: &'static str,
    /// One client request fans out to [`FANOUT_CALLS`] backend calls.
    pub fanout: bool,
    /// Idle scenario: open this many keepalive connections (one request each), measure RSS.
    pub idle_connections: Option<usize>,
    /// The target answers by itself with [`HELLO_BODY`]: no backend runs, so the numbers are the
    /// target's event loop and HTTP codec alone (the `hello` scenario).
    pub local: bool,
}

/// The body every target answers the `hello` scenario with, byte for byte (`text/plain`), the
/// TechEmpower plaintext body.
pub const HELLO_BODY: &str = "Hello, World!";

/// Backend paths of the fan-out calls; the client path is `/page`.
pub const FANOUT_CALLS: [&str; 4] = ["/a", "/b", "/c", "/d"];

const BASE: Scenario = Scenario {
    name: "proxy-small",
    connections: 64,
    pipeline: 1,
    body_size: 150,
    uds: false,
    path: "/item",
    fanout: false,
    idle_connections: None,
    local: false,
};

/// Every scenario, in report order.
pub const ALL: [Scenario; 8] = [
    Scenario {
        name: "hello",
        path: "/hello",
        body_size: HELLO_BODY.len(),
        local: true,
        ..BASE
    },
    BASE,
    Scenario {
        name: "proxy-256",
        connections: 256,
        ..BASE
    },
    Scenario {
        name: "proxy-64k",
        body_size: 64 * 1024,
        ..BASE
    },
    Scenario {
        name: "proxy-uds",
        uds: true,
        ..BASE
    },
    Scenario {
        name: "fanout-4",
        fanout: true,
        path: "/page",
        ..BASE
    },
    Scenario {
        name: "pipelined",
        pipeline: 16,
        ..BASE
    },
    Scenario {
        name: "idle-10k",
        idle_connections: Some(10_000),
        ..BASE
    },
];

/// Looks a scenario up by name.
pub fn by_name(name: &str) -> Option<Scenario> {
    ALL.iter().copied().find(|s| s.name == name)
}
