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
    /// Open loop at fixed rates ([`OPEN_LOOP_LOADS`] of the reference's closed-loop maximum),
    /// latency from the scheduled send time (the `latency-open` scenario).
    pub open_loop: bool,
    /// Also measured with wrk, as a check of the suite's own client.
    pub wrk_check: bool,
}

/// latency-open: the loads, in percent of the reference target's closed-loop maximum on
/// proxy-small (the same run's median). Each load is one cell, `latency-open-<pct>`.
pub const OPEN_LOOP_LOADS: [u32; 2] = [50, 90];

/// The target whose closed-loop maximum on proxy-small sets the open-loop rates, and the
/// fall-backs when it is not installed, in order.
pub const OPEN_LOOP_REFERENCE: [&str; 4] = ["nginx", "haproxy", "ringway-epoll", "ringway-uring"];

/// The cell name of one open-loop load: `latency-open-50`.
pub fn open_loop_cell(sc: &Scenario, pct: u32) -> String {
    format!("{}-{pct}", sc.name)
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
    open_loop: false,
    wrk_check: false,
};

/// Every scenario, in report order.
pub const ALL: [Scenario; 10] = [
    Scenario {
        name: "hello",
        path: "/hello",
        body_size: HELLO_BODY.len(),
        local: true,
        wrk_check: true,
        ..BASE
    },
    Scenario {
        wrk_check: true,
        ..BASE
    },
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
    // Fan-out of 64 KiB JSON bodies: the answer's JSON check and escaping scale with body size
    // (issue 16 §3: a byte-at-a-time validator was a cliff here), so this cell keeps it seen.
    Scenario {
        name: "fanout-64k",
        fanout: true,
        path: "/page",
        body_size: 64 * 1024,
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
    // proxy-small's traffic at fixed rates; runs after every closed-loop round of the run.
    Scenario {
        name: "latency-open",
        open_loop: true,
        ..BASE
    },
];

/// Looks a scenario up by name.
pub fn by_name(name: &str) -> Option<Scenario> {
    ALL.iter().copied().find(|s| s.name == name)
}
