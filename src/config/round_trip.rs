//! Property test: any valid configuration renders to TOML that parses back to an equal one.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn duration() -> impl Strategy<Value = Duration> {
    // Up to ~1 day with nanosecond precision: humantime must write and read every unit exactly.
    (1u64..=86_400_000_000_000).prop_map(Duration::from_nanos)
}

fn ip() -> impl Strategy<Value = std::net::IpAddr> {
    prop_oneof![
        any::<Ipv4Addr>().prop_map(Into::into),
        any::<Ipv6Addr>().prop_map(Into::into),
    ]
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    prop_oneof![
        (ip(), any::<u16>()).prop_map(|(ip, port)| Endpoint::Tcp(SocketAddr::new(ip, port))),
        "/[a-z0-9/._ -]{1,30}".prop_map(|p| Endpoint::Unix(p.into())),
    ]
}

fn server() -> impl Strategy<Value = ServerConfig> {
    let io = prop_oneof![
        Just(IoChoice::Auto),
        Just(IoChoice::Uring),
        Just(IoChoice::Epoll)
    ];
    (
        proptest::collection::btree_map(1u16..40_000, ip(), 1..4),
        0usize..256,
        io,
        any::<bool>(),
        any::<u32>(),
        any::<(bool, bool)>(),
        0usize..=crate::config::MAX_FREE_LIST,
    )
        .prop_map(
            |(listen, shards, io, pin_cpus, backlog, paths, free_list_max)| ServerConfig {
                // Distinct ports below the admin's: no two listeners collide.
                listen: listen
                    .into_iter()
                    .map(|(port, ip)| SocketAddr::new(ip, port))
                    .collect(),
                shards,
                io,
                pin_cpus,
                backlog,
                merge_slashes: paths.0,
                encoded_slashes: if paths.1 {
                    super::EncodedSlashes::Keep
                } else {
                    super::EncodedSlashes::Reject
                },
                free_list_max,
            },
        )
}

fn upstream(i: usize) -> impl Strategy<Value = UpstreamConfig> {
    let balance = prop_oneof![Just(Balance::RoundRobin), Just(Balance::LeastOutstanding)];
    (
        "[A-Za-z_.-]{0,10}",
        proptest::collection::vec(endpoint(), 1..4),
        balance,
        (
            1usize..10_000,
            any::<usize>(),
            duration(),
            duration(),
            0usize..100_000,
        ),
        (1u32..100, duration()),
    )
        .prop_map(move |(name, endpoints, balance, pool, health)| {
            let (max_connections, idle, idle_timeout, queue_timeout, max_waiters) = pool;
            UpstreamConfig {
                name: format!("{name}{i}"),
                endpoints,
                balance,
                pool: PoolConfig {
                    max_idle: idle % (max_connections + 1),
                    idle_timeout,
                    max_connections,
                    queue_timeout,
                    max_waiters,
                    reuse_check_after: idle_timeout / 3,
                },
                health: HealthConfig {
                    fail_threshold: health.0,
                    eject_for: health.1,
                },
            }
        })
}

fn action(upstreams: usize) -> impl Strategy<Value = RouteAction> {
    let call = (
        0..upstreams,
        "/[a-z0-9/._~-]{0,20}",
        any::<bool>(),
        0.0f64..=1.0,
        proptest::collection::vec("x-[a-z0-9-]{1,10}", 0..4),
    );
    prop_oneof![
        (0..upstreams).prop_map(|u| RouteAction::Proxy {
            upstream: format!("u{u}")
        }),
        (
            prop_oneof![200u16..=599, Just(204u16), Just(205u16), Just(304u16)],
            "[ -~\n\t\u{e9}\u{1F600}]{0,20}",
            "[!-~]([ -~]{0,15}[!-~])?",
        )
            .prop_map(
                |(status, body, content_type)| RouteAction::Respond(RespondConfig {
                    status,
                    // The statuses that never carry a body (validation refuses one).
                    body: if matches!(status, 204 | 205 | 304) {
                        String::new()
                    } else {
                        body
                    },
                    content_type,
                })
            ),
        (duration(), proptest::collection::vec(call, 1..4)).prop_map(|(timeout, calls)| {
            RouteAction::Fanout(FanoutConfig {
                timeout,
                calls: calls
                    .into_iter()
                    .enumerate()
                    .map(
                        |(i, (u, path, required, frac, forward_headers))| CallConfig {
                            name: format!("call.{i}"),
                            upstream: format!("u{u}"),
                            path,
                            required,
                            timeout: timeout.mul_f64(frac).max(Duration::from_nanos(1)),
                            forward_headers,
                        },
                    )
                    .collect(),
            })
        }),
    ]
}

fn route(upstreams: usize) -> impl Strategy<Value = RouteConfig> {
    let methods = proptest::option::of(proptest::sample::subsequence(vec!["GET", "HEAD"], 1..=2));
    (
        proptest::option::of("[a-z0-9.-]{1,20}(:[0-9]{1,5})?"),
        "/[a-z0-9/._~-]{0,20}",
        methods,
        action(upstreams),
    )
        .prop_map(|(host, path_prefix, methods, action)| RouteConfig {
            host,
            path_prefix,
            methods: methods.map(|m| m.into_iter().map(str::to_owned).collect()),
            action,
        })
}

fn config() -> impl Strategy<Value = Config> {
    (1usize..4).prop_flat_map(|n| {
        let upstreams: Vec<_> = (0..n)
            .map(|i| {
                upstream(i).prop_map(move |mut u| {
                    u.name = format!("u{i}");
                    u
                })
            })
            .collect();
        let access = prop_oneof![
            Just(AccessLog::Off),
            Just(AccessLog::Stdout),
            "/[a-z0-9/._ -]{1,30}".prop_map(|p| AccessLog::File(p.into())),
        ];
        (
            server(),
            proptest::option::of(40_000u16..),
            (
                1024usize..1 << 20,
                1usize..1000,
                0u64..i64::MAX as u64,
                1usize..1 << 20,
            ),
            proptest::array::uniform6(duration()),
            access,
            any::<[bool; 6]>(),
            upstreams,
            proptest::collection::vec(route(n), 0..5),
        )
            .prop_map(
                |(server, admin, limits, t, access, u, upstreams, routes)| Config {
                    server,
                    admin: AdminConfig {
                        listen: admin.map(|port| SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)),
                    },
                    limits: LimitsConfig {
                        max_head_bytes: limits.0,
                        max_headers: limits.1,
                        max_body_bytes: limits.2,
                        max_connections: limits.3,
                    },
                    timeouts: TimeoutsConfig {
                        client_header: t[0],
                        client_idle: t[1],
                        upstream_connect: t[2],
                        upstream_response: t[3],
                        drain: t[4],
                        drain_grace: t[5],
                        tunnel_idle: t[0],
                    },
                    log: LogConfig {
                        access,
                        format: if u[0] {
                            LogFormat::Json
                        } else {
                            LogFormat::Text
                        },
                    },
                    io_uring: IoUringConfig {
                        multishot_accept: u[0],
                        buffer_ring: u[1],
                        buffer_ring_entries: if u[1] { 256 } else { 1 },
                        pool_peek: u[2],
                        linked_ops: u[3],
                        registered_files: u[4],
                        defer_taskrun: u[2],
                        coop_taskrun: u[3],
                        single_issuer: u[4],
                        sqpoll: u[5],
                    },
                    upstreams,
                    routes,
                },
            )
    })
}

proptest! {
    #[test]
    fn render_then_parse_is_identity(c in config()) {
        let text = c.render();
        let back = Config::parse(&text, "rendered.toml");
        prop_assert_eq!(back.as_ref(), Ok(&c), "rendered:\n{}", text);
    }
}
