//! Config tests: defaults, the DESIGN.md example, render round trips, and one located error per
//! class of mistake (exact line, column and key).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::*;

/// DESIGN.md's example, verbatim. It references an upstream `profile` it does not define.
const DESIGN_EXAMPLE: &str = r#"[server]
listen = ["0.0.0.0:8080"]
shards = 0              # 0 = one per available core
io = "auto"             # auto | uring | epoll
pin_cpus = true

[admin]
listen = "127.0.0.1:9901"     # /metrics (Prometheus text), /healthz, /readyz

[limits]
max_head_bytes = 16384
max_headers = 100
max_body_bytes = 10485760
max_connections = 20000

[timeouts]               # humantime strings
client_header = "10s"    # whole head must arrive within this
client_idle = "60s"      # keepalive idle
upstream_connect = "1s"
upstream_response = "15s"
drain = "10s"            # SIGTERM: finish in-flight requests within this
drain_grace = "0s"       # SIGTERM: /readyz answers 503 this long before accepting stops

[log]
access = "off"           # off | stdout | /path/to/access.log
format = "text"          # text | json

[io_uring]               # each advanced feature is used only where the kernel has it; false forces it off
multishot_accept = true
buffer_ring = true
defer_taskrun = true

[[upstream]]
name = "ads"
endpoints = ["127.0.0.1:9001", "unix:/run/ads.sock"]
balance = "round_robin"                  # round_robin | least_outstanding
pool = { max_idle = 64, idle_timeout = "30s", max_connections = 256, queue_timeout = "1s" }
health = { fail_threshold = 3, eject_for = "10s" }

[[route]]
path_prefix = "/ads/"
upstream = "ads"

[[route]]
path_prefix = "/page"
[route.fanout]
timeout = "300ms"
[[route.fanout.call]]
name = "ads"
upstream = "ads"
path = "/ads/slots"
required = false
timeout = "100ms"
[[route.fanout.call]]
name = "profile"
upstream = "profile"
path = "/profile"
required = true
"#;

const PROFILE_UPSTREAM: &str =
    "\n[[upstream]]\nname = \"profile\"\nendpoints = [\"127.0.0.1:9002\"]\n";

const EXAMPLE: &str = include_str!("../../examples/ringway.toml");
const MINIMAL: &str = include_str!("../../examples/minimal.toml");

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn parse(text: &str) -> Config {
    Config::parse(text, "t.toml")
        .unwrap_or_else(|e| panic!("expected the config to parse, got: {e}"))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

#[test]
fn defaults_are_designs() {
    let c = Config::default();
    assert_eq!(c.server.listen, vec![addr("0.0.0.0:8080")]);
    assert_eq!(c.server.shards, 0);
    assert_eq!(c.server.io, IoChoice::Auto);
    assert!(c.server.pin_cpus);
    assert_eq!(c.server.backlog, 4096);
    assert_eq!(c.server.free_list_max, 256);
    assert!(c.server.merge_slashes);
    assert_eq!(c.server.encoded_slashes, EncodedSlashes::Reject);
    assert_eq!(c.admin.listen, Some(addr("127.0.0.1:9901")));
    assert_eq!(c.limits.max_head_bytes, 16384);
    assert_eq!(c.limits.max_headers, 100);
    assert_eq!(c.limits.max_body_bytes, 10_485_760);
    assert_eq!(c.limits.max_connections, 20_000);
    let t = &c.timeouts;
    assert_eq!(
        (t.client_header, t.client_idle, t.upstream_connect),
        (secs(10), secs(60), secs(1))
    );
    assert_eq!(
        (t.upstream_response, t.drain, t.drain_grace),
        (secs(15), secs(10), secs(0))
    );
    assert_eq!(c.log.access, AccessLog::Off);
    assert_eq!(c.log.format, LogFormat::Text);
    let u = &c.io_uring;
    assert!(
        u.multishot_accept && u.buffer_ring && u.defer_taskrun && u.coop_taskrun && u.single_issuer
    );
    assert!(!u.sqpoll);
    assert!(c.upstreams.is_empty() && c.routes.is_empty());

    let p = PoolConfig::default();
    assert_eq!(
        (p.max_idle, p.idle_timeout, p.max_connections),
        (256, secs(30), 256)
    );
    assert_eq!((p.queue_timeout, p.max_waiters), (secs(1), 1024));
    assert_eq!(
        HealthConfig::default(),
        HealthConfig {
            fail_threshold: 3,
            eject_for: secs(10)
        }
    );
    assert_eq!(Balance::default(), Balance::RoundRobin);
    assert_eq!(FanoutConfig::default().timeout, secs(1));
    let call = CallConfig::default();
    assert!(!call.required);
    assert_eq!(
        call.forward_headers,
        [
            "accept",
            "accept-language",
            "authorization",
            "cookie",
            "x-request-id"
        ]
    );
    assert_eq!(RouteConfig::default().path_prefix, "/");
}

#[test]
fn empty_file_is_all_defaults() {
    assert_eq!(parse(""), Config::default());
    assert_eq!(parse("# nothing\n[server]\n[limits]\n"), Config::default());
}

#[test]
fn design_example_lacks_only_the_profile_upstream() {
    let e = Config::parse(DESIGN_EXAMPLE, "ringway.toml").unwrap_err();
    assert_eq!(
        e.to_string(),
        "ringway.toml:56:12: route[1].fanout.call[1].upstream: no `[[upstream]]` is named \
         `profile` (defined: ads)"
    );
}

#[test]
fn design_example_parses() {
    let c = parse(&format!("{DESIGN_EXAMPLE}{PROFILE_UPSTREAM}"));
    let ads = c.upstream("ads").unwrap();
    assert_eq!(
        ads.endpoints,
        vec![
            Endpoint::Tcp(addr("127.0.0.1:9001")),
            Endpoint::Unix("/run/ads.sock".into())
        ]
    );
    // The example spells out the defaults, but for a smaller idle pool.
    assert_eq!(
        ads.pool,
        PoolConfig {
            max_idle: 64,
            ..PoolConfig::default()
        }
    );
    assert_eq!(ads.health, HealthConfig::default());
    assert!(c.upstream("nope").is_none());
    assert_eq!(c.routes.len(), 2);
    assert_eq!(
        c.routes[0],
        RouteConfig {
            path_prefix: "/ads/".into(),
            action: RouteAction::Proxy {
                upstream: "ads".into()
            },
            ..RouteConfig::default()
        }
    );
    let RouteAction::Fanout(f) = &c.routes[1].action else {
        panic!("expected a fan-out, got {:?}", c.routes[1].action)
    };
    assert_eq!(f.timeout, ms(300));
    let names: Vec<_> = f.calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["ads", "profile"]);
    assert_eq!((f.calls[0].timeout, f.calls[0].required), (ms(100), false));
    // No `timeout`: the route's.
    assert_eq!((f.calls[1].timeout, f.calls[1].required), (ms(300), true));
    assert_eq!(
        f.calls[1].forward_headers,
        CallConfig::default().forward_headers
    );
    // Everything the example spells out is a default.
    let defaults = Config::default();
    assert_eq!(
        (
            &c.server,
            &c.admin,
            &c.limits,
            &c.timeouts,
            &c.log,
            &c.io_uring
        ),
        (
            &defaults.server,
            &defaults.admin,
            &defaults.limits,
            &defaults.timeouts,
            &defaults.log,
            &defaults.io_uring
        )
    );
}

#[test]
fn examples_parse() {
    let c = parse(EXAMPLE);
    assert_eq!(c.upstreams.len(), 2);
    assert_eq!(c.routes.len(), 4);
    assert_eq!(
        c.routes[3].action,
        RouteAction::Respond(RespondConfig {
            status: 200,
            body: "User-agent: *\nDisallow: /\n".into(),
            content_type: "text/plain".into(),
        })
    );
    assert_eq!(c.routes[1].host.as_deref(), Some("api.example.com"));
    assert_eq!(
        c.upstream("profile").unwrap().balance,
        Balance::LeastOutstanding
    );
    let m = parse(MINIMAL);
    assert_eq!(m.routes[0].path_prefix, "/");
    assert_eq!(m.server, ServerConfig::default());
}

#[test]
fn render_round_trips() {
    let design = format!("{DESIGN_EXAMPLE}{PROFILE_UPSTREAM}");
    let mut odd = parse(EXAMPLE);
    odd.admin.listen = None;
    odd.log.access = AccessLog::File("/var/log/ringway/access.log".into());
    odd.log.format = LogFormat::Json;
    odd.server.io = IoChoice::Epoll;
    odd.server.listen = vec![addr("[::]:8443"), addr("127.0.0.1:8080")];
    odd.timeouts.client_idle = Duration::from_millis(90_500);
    odd.routes[1].host = None;
    odd.routes[1].methods = None;
    for (name, c) in [
        ("defaults", Config::default()),
        ("design", parse(&design)),
        ("example", parse(EXAMPLE)),
        ("minimal", parse(MINIMAL)),
        ("odd", odd),
    ] {
        let text = c.render();
        let back = Config::parse(&text, "rendered.toml")
            .unwrap_or_else(|e| panic!("{name}: rendered config does not parse: {e}\n{text}"));
        assert_eq!(back, c, "{name}: rendered config differs:\n{text}");
    }
}

#[test]
fn render_writes_every_default() {
    let text = parse(MINIMAL).render();
    for line in [
        "backlog = 4096",
        "free_list_max = 256",
        "listen = \"127.0.0.1:9901\"",
        "max_head_bytes = 16384",
        "drain_grace = \"0s\"",
        "sqpoll = false",
        "max_waiters = 1024",
        "reuse_check_after = \"10ms\"",
        "eject_for = \"10s\"",
        "path_prefix = \"/\"",
    ] {
        assert!(text.contains(line), "expected `{line}` in:\n{text}");
    }
}

#[test]
fn names_are_normalised() {
    let c = parse(concat!(
        up!(),
        "[[route]]\nhost = \"API.Example.com\"\nmethods = [\"get\", \"Post\"]\nupstream = \"ads\"\n",
        "[[route]]\npath_prefix = \"/f\"\n[route.fanout]\n[[route.fanout.call]]\n",
        "name = \"a\"\nupstream = \"ads\"\npath = \"/a\"\nforward_headers = [\"X-Request-ID\"]\n",
    ));
    assert_eq!(c.routes[0].host.as_deref(), Some("api.example.com"));
    assert_eq!(c.routes[0].methods, Some(vec!["GET".into(), "POST".into()]));
    let RouteAction::Fanout(f) = &c.routes[1].action else {
        panic!()
    };
    assert_eq!(f.calls[0].forward_headers, ["x-request-id"]);
    assert_eq!(f.calls[0].timeout, FanoutConfig::default().timeout);
}

#[test]
fn respond_forms_and_defaults() {
    let inline = parse("[[route]]\nrespond = { status = 200, body = \"hello\\n\" }\n");
    let table = parse(
        "[[route]]\npath_prefix = \"/\"\n[route.respond]\nstatus = 200\nbody = \"hello\\n\"\ncontent_type = \"text/plain\"\n",
    );
    let want = RouteAction::Respond(RespondConfig {
        status: 200,
        body: "hello\n".into(),
        content_type: "text/plain".into(),
    });
    assert_eq!(inline.routes[0].action, want);
    assert_eq!(table.routes, inline.routes);
    // Body defaults to empty; Content-Type surrounding whitespace is not part of the value.
    let c = parse("[[route]]\nrespond = { status = 204, content_type = \" application/json \" }\n");
    assert_eq!(
        c.routes[0].action,
        RouteAction::Respond(RespondConfig {
            status: 204,
            body: String::new(),
            content_type: "application/json".into(),
        })
    );
    // Any method may be answered, and `ringway check` prints it back.
    let c = parse("[[route]]\nmethods = [\"post\"]\nrespond = { status = 503, body = \"down\" }\n");
    let text = c.render();
    assert!(
        text.contains(
            "[route.respond]\nstatus = 503\nbody = \"down\"\ncontent_type = \"text/plain\""
        ),
        "{text}"
    );
    assert_eq!(Config::parse(&text, "r.toml"), Ok(c));
}

#[test]
fn admin_off_and_access_log_forms() {
    let c = parse("[admin]\nlisten = \"off\"\n[log]\naccess = \"/tmp/a.log\"\nformat = \"json\"\n");
    assert_eq!(c.admin.listen, None);
    assert_eq!(c.log.access, AccessLog::File("/tmp/a.log".into()));
    assert_eq!(
        parse("[log]\naccess = \"stdout\"\n").log.access,
        AccessLog::Stdout
    );
}

#[test]
fn io_choice_parses_and_displays() {
    for (s, v) in [
        ("auto", IoChoice::Auto),
        ("uring", IoChoice::Uring),
        ("epoll", IoChoice::Epoll),
    ] {
        assert_eq!(s.parse::<IoChoice>(), Ok(v));
        assert_eq!(v.to_string(), s);
    }
    assert!(
        "kqueue"
            .parse::<IoChoice>()
            .unwrap_err()
            .contains("auto, uring or epoll")
    );
}

#[test]
fn missing_file_names_path_and_os_error() {
    let e = Config::load(Path::new("/nonexistent/ringway.toml")).unwrap_err();
    assert_eq!(e.file, "/nonexistent/ringway.toml");
    assert_eq!((e.line, e.column, e.key.as_deref()), (None, None, None));
    assert!(e.message.contains("No such file or directory"), "{e}");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/ringway.toml: cannot read config file: "),
        "{e}"
    );
}

#[test]
fn load_reads_the_file_and_names_it_in_errors() {
    let dir = std::env::temp_dir().join(format!("ringway-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[server]\nshards = -1\n").unwrap();
    let e = Config::load(&path).unwrap_err();
    assert_eq!(e.file, path.display().to_string());
    assert_eq!((e.line, e.column), (Some(2), Some(10)), "{e}");
    std::fs::write(&path, MINIMAL).unwrap();
    assert_eq!(Config::load(&path).unwrap(), parse(MINIMAL));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn error_display_format() {
    let e = ConfigError {
        file: "ringway.toml".into(),
        line: Some(12),
        column: Some(5),
        key: Some("upstream[0].endpoints[1]".into()),
        message: "bad".into(),
    };
    assert_eq!(
        e.to_string(),
        "ringway.toml:12:5: upstream[0].endpoints[1]: bad"
    );
    let e = ConfigError { key: None, ..e };
    assert_eq!(e.to_string(), "ringway.toml:12:5: bad");
}

/// Lines 1-3: one upstream named `ads`.
macro_rules! up {
    () => {
        "[[upstream]]\nname = \"ads\"\nendpoints = [\"127.0.0.1:9001\"]\n"
    };
}
use up;

/// Lines 1-11: `up!()` and a fan-out route (lines 4-11) with one call (lines 8-11).
macro_rules! fan {
    () => {
        concat!(
            up!(),
            "[[route]]\npath_prefix = \"/page\"\n[route.fanout]\ntimeout = \"300ms\"\n",
            "[[route.fanout.call]]\nname = \"ads\"\nupstream = \"ads\"\npath = \"/ads\"\n"
        )
    };
}

/// `rejects! { name: toml => line:col "key" "message fragment" }`: one test per error class.
macro_rules! rejects {
    ($($name:ident: $text:expr => $line:literal : $col:literal $key:literal $msg:literal;)*) => {$(
        #[test]
        fn $name() {
            let text: &str = $text;
            let e = match Config::parse(text, "t.toml") {
                Ok(c) => panic!("expected an error at {}:{} {}, got a config: {c:?}", $line, $col, $key),
                Err(e) => e,
            };
            let want_key = if $key.is_empty() { None } else { Some($key) };
            assert_eq!(
                (e.line, e.column, e.key.as_deref()),
                (Some($line), Some($col), want_key),
                "wrong place for: {e}"
            );
            assert!(e.message.contains($msg), "expected `{}` in: {e}", $msg);
            assert_eq!(e.file, "t.toml");
        }
    )*};
}

rejects! {
    syntax_error: "[server]\nlisten = [\"0.0.0.0:8080\"\n" => 2:25 "" "unclosed array";
    unknown_key: "[server]\nlisten = [\"0.0.0.0:8080\"]\nlisten_addr = 1\n"
        => 3:1 "server.listen_addr" "unknown field `listen_addr`";
    unknown_table: "[sever]\nshards = 1\n" => 1:2 "sever" "unknown field `sever`";
    unknown_key_in_call: concat!(fan!(), "retries = 2\n")
        => 12:1 "route[0].fanout.call[0].retries" "unknown field `retries`";
    unknown_key_in_inline_pool: concat!(up!(), "pool = { max_idel = 1 }\n")
        => 4:10 "upstream[0].pool.max_idel" "unknown field `max_idel`";
    single_brackets_for_route: concat!(up!(), "[route]\nupstream = \"ads\"\n")
        => 4:1 "route" "write `[[route]]` (an array of tables), not `[route]`";
    single_brackets_for_call: concat!(up!(), "[[route]]\n[route.fanout]\n[route.fanout.call]\nname = \"a\"\n")
        => 6:1 "route[0].fanout.call" "write `[[route.fanout.call]]`";
    wrong_type: "[server]\nshards = \"four\"\n" => 2:10 "server.shards" "invalid type: string";
    wrong_enum: "[server]\nio = \"kqueue\"\n" => 2:6 "server.io" "unknown variant `kqueue`";
    wrong_encoded_slashes: "[server]\nencoded_slashes = \"decode\"\n" => 2:19 "server.encoded_slashes" "unknown variant `decode`";
    wrong_merge_slashes: "[server]\nmerge_slashes = \"yes\"\n" => 2:17 "server.merge_slashes" "invalid type: string";
    bad_duration: "[timeouts]\nclient_idle = \"10 parsecs\"\n"
        => 2:15 "timeouts.client_idle" "`10 parsecs` is not a duration";
    duration_not_a_string: "[timeouts]\ndrain = 10\n" => 2:9 "timeouts.drain" "a duration string";
    bad_call_duration: concat!(fan!(), "timeout = \"soon\"\n")
        => 12:11 "route[0].fanout.call[0].timeout" "`soon` is not a duration";
    bad_endpoint: "[[upstream]]\nname = \"ads\"\nendpoints = [\"127.0.0.1:9001\", \"1.2.3.4\"]\n"
        => 3:32 "upstream[0].endpoints[1]" "`1.2.3.4` is not an endpoint: expected ip:port";
    empty_listen: "[server]\nlisten = []\n" => 2:10 "server.listen" "at least one address";
    bad_listen: "[server]\nlisten = [\"0.0.0.0:8080\", \"localhost:80\"]\n"
        => 2:27 "server.listen[1]" "`localhost:80` is not a listen address";
    duplicate_listen: "[server]\nlisten = [\"0.0.0.0:8080\", \"0.0.0.0:8080\"]\n"
        => 2:27 "server.listen[1]" "listed twice";
    bad_admin_listen: "[admin]\nlisten = \"nowhere\"\n" => 2:10 "admin.listen" "or \"off\"";
    admin_on_server_address: "[server]\nlisten = [\"127.0.0.1:9901\"]\n"
        => 2:11 "server.listen[0]" "overlaps server.listen `127.0.0.1:9901`";
    admin_on_server_wildcard: "[admin]\nlisten = \"127.0.0.1:8080\"\n"
        => 2:10 "admin.listen" "overlaps server.listen `0.0.0.0:8080`";
    undefined_upstream: concat!(up!(), "[[route]]\nupstream = \"adz\"\n")
        => 5:12 "route[0].upstream" "no `[[upstream]]` is named `adz` (defined: ads)";
    undefined_call_upstream: concat!(up!(),
        "[[route]]\n[route.fanout]\n[[route.fanout.call]]\nname = \"x\"\nupstream = \"nope\"\npath = \"/\"\n")
        => 8:12 "route[0].fanout.call[0].upstream" "no `[[upstream]]` is named `nope`";
    duplicate_upstream: concat!(up!(), "\n", up!())
        => 6:8 "upstream[1].name" "upstream `ads` is already defined by upstream[0]";
    no_endpoints: "[[upstream]]\nname = \"ads\"\nendpoints = []\n"
        => 3:13 "upstream[0].endpoints" "has no endpoints";
    endpoints_missing: "[[upstream]]\nname = \"ads\"\n"
        => 1:1 "upstream[0]" "missing field `endpoints`";
    bad_upstream_name: "[[upstream]]\nname = \"my ads\"\nendpoints = [\"127.0.0.1:1\"]\n"
        => 2:8 "upstream[0].name" "1-64 letters, digits, `_`, `-` or `.`";
    route_with_both: concat!(up!(), "[[route]]\nupstream = \"ads\"\n[route.fanout]\ntimeout = \"1s\"\n")
        => 6:1 "route[0].fanout" "not two of them";
    route_with_neither: concat!(up!(), "\n[[route]]\npath_prefix = \"/x\"\n")
        => 5:1 "route[0]" "needs `upstream = \"name\"` (proxy), a `[route.fanout]` table (fan-out) or `respond";
    route_with_upstream_and_respond: concat!(up!(), "[[route]]\nupstream = \"ads\"\nrespond = { status = 200 }\n")
        => 6:11 "route[0].respond" "not two of them";
    route_with_respond_then_upstream: concat!(up!(), "[[route]]\nrespond = { status = 200 }\nupstream = \"ads\"\n")
        => 6:12 "route[0].upstream" "not two of them";
    route_with_fanout_and_respond_table: concat!(fan!(), "[route.respond]\nstatus = 200\n")
        => 12:1 "route[0].respond" "not two of them";
    route_with_all_three: concat!(up!(), "[[route]]\nupstream = \"ads\"\nrespond = { status = 200 }\n[route.fanout]\n")
        => 6:11 "route[0].respond" "proxy (`upstream = \"name\"`), fan out (a `[route.fanout]` table) or answer itself";
    respond_status_1xx: "[[route]]\nrespond = { status = 101 }\n"
        => 2:22 "route[0].respond.status" "`101` is not a status ringway can answer with: expected 200-599";
    respond_status_600: "[[route]]\n[route.respond]\nstatus = 600\n"
        => 3:10 "route[0].respond.status" "expected 200-599";
    respond_status_missing: "[[route]]\nrespond = { body = \"x\" }\n"
        => 2:11 "route[0].respond" "missing field `status`";
    respond_status_not_a_number: "[[route]]\nrespond = { status = \"200\" }\n"
        => 2:22 "route[0].respond.status" "invalid type: string";
    respond_204_with_body: "[[route]]\nrespond = { status = 204, body = \"x\" }\n"
        => 2:34 "route[0].respond.body" "a 204 response has no body (RFC 9110 §15.3.5)";
    respond_205_with_body: "[[route]]\nrespond = { status = 205, body = \"x\" }\n"
        => 2:34 "route[0].respond.body" "a 205 response has no body (RFC 9110 §15.3.6)";
    respond_304_with_body: "[[route]]\n[route.respond]\nstatus = 304\nbody = \"x\"\n"
        => 4:8 "route[0].respond.body" "a 304 response has no body";
    respond_bad_content_type: "[[route]]\nrespond = { status = 200, content_type = \"text/plain\\r\\nX: y\" }\n"
        => 2:42 "route[0].respond.content_type" "is not a Content-Type value";
    respond_empty_content_type: "[[route]]\nrespond = { status = 200, content_type = \"\" }\n"
        => 2:42 "route[0].respond.content_type" "is not a Content-Type value";
    respond_unknown_key: "[[route]]\nrespond = { status = 200, headers = 1 }\n"
        => 2:27 "route[0].respond.headers" "unknown field `headers`";
    path_prefix_without_slash: concat!(up!(), "[[route]]\npath_prefix = \"api\"\nupstream = \"ads\"\n")
        => 5:15 "route[0].path_prefix" "`api` must start with `/`";
    method_not_a_token: concat!(up!(), "[[route]]\nmethods = [\"GET\", \"GE T\"]\nupstream = \"ads\"\n")
        => 5:19 "route[0].methods[1]" "`GE T` is not an HTTP method";
    methods_empty: concat!(up!(), "[[route]]\nmethods = []\nupstream = \"ads\"\n")
        => 5:11 "route[0].methods" "matches no request";
    fanout_post: concat!(up!(), "[[route]]\nmethods = [\"POST\"]\n[route.fanout]\n[[route.fanout.call]]\n",
        "name = \"a\"\nupstream = \"ads\"\npath = \"/\"\n")
        => 5:12 "route[0].methods[0]" "GET and HEAD only";
    fanout_without_calls: concat!(up!(), "[[route]]\n[route.fanout]\ntimeout = \"1s\"\n")
        => 5:1 "route[0].fanout" "at least one";
    duplicate_call_names: concat!(fan!(), "[[route.fanout.call]]\nname = \"ads\"\nupstream = \"ads\"\npath = \"/b\"\n")
        => 13:8 "route[0].fanout.call[1].name" "call `ads` is already defined by call[0]";
    call_name_needs_escaping: concat!(up!(), "[[route]]\n[route.fanout]\n[[route.fanout.call]]\n",
        "name = \"a\\\"b\"\nupstream = \"ads\"\npath = \"/\"\n")
        => 7:8 "route[0].fanout.call[0].name" "valid call name: use 1-64 letters, digits, `_`, `-` or `.`";
    call_name_too_long: concat!(up!(), "[[route]]\n[route.fanout]\n[[route.fanout.call]]\n",
        "name = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\nupstream = \"ads\"\npath = \"/\"\n")
        => 7:8 "route[0].fanout.call[0].name" "1-64";
    call_name_empty: concat!(up!(), "[[route]]\n[route.fanout]\n[[route.fanout.call]]\n",
        "name = \"\"\nupstream = \"ads\"\npath = \"/\"\n")
        => 7:8 "route[0].fanout.call[0].name" "1-64";
    call_timeout_over_route: concat!(fan!(), "timeout = \"301ms\"\n")
        => 12:11 "route[0].fanout.call[0].timeout" "`301ms` is longer than the route's fan-out timeout `300ms`";
    call_path_without_slash: concat!(up!(), "[[route]]\n[route.fanout]\n[[route.fanout.call]]\n",
        "name = \"a\"\nupstream = \"ads\"\npath = \"ads\"\n")
        => 9:8 "route[0].fanout.call[0].path" "must start with `/`";
    call_path_with_query: concat!(up!(), "[[route]]\n[route.fanout]\n[[route.fanout.call]]\n",
        "name = \"a\"\nupstream = \"ads\"\npath = \"/ads?x=1\"\n")
        => 9:8 "route[0].fanout.call[0].path" "must not have its own `?`";
    call_path_with_space: concat!(up!(), "[[route]]\n[route.fanout]\n[[route.fanout.call]]\n",
        "name = \"a\"\nupstream = \"ads\"\npath = \"/a b\"\n")
        => 9:8 "route[0].fanout.call[0].path" "spaces";
    bad_forward_header: concat!(fan!(), "forward_headers = [\"accept\", \"x:y\"]\n")
        => 12:30 "route[0].fanout.call[0].forward_headers[1]" "`x:y` is not a header name";
    framing_forward_header: concat!(fan!(), "forward_headers = [\"accept\", \"Content-Length\"]\n")
        => 12:30 "route[0].fanout.call[0].forward_headers[1]" "cannot be forwarded";
    max_head_bytes_too_small: "[limits]\nmax_head_bytes = 512\n"
        => 2:18 "limits.max_head_bytes" "at least 1024, got 512";
    max_headers_zero: "[limits]\nmax_head_bytes = 1024\nmax_headers = 0\n"
        => 3:15 "limits.max_headers" "at least 1";
    pool_max_connections_zero: concat!(up!(), "[upstream.pool]\nmax_idle = 0\nmax_connections = 0\n")
        => 6:19 "upstream[0].pool.max_connections" "at least 1";
    pool_max_idle_over_max_connections: concat!(up!(), "pool = { max_idle = 300 }\n")
        => 4:21 "upstream[0].pool.max_idle" "max_idle (300) is more than max_connections (256)";
    fail_threshold_zero: concat!(up!(), "health = { fail_threshold = 0 }\n")
        => 4:29 "upstream[0].health.fail_threshold" "at least 1";
    zero_timeout: "[timeouts]\nupstream_connect = \"0s\"\n"
        => 2:20 "timeouts.upstream_connect" "more than 0s";
    buffer_ring_entries_not_power_of_two: "[io_uring]\nbuffer_ring_entries = 300\n"
        => 2:23 "io_uring.buffer_ring_entries" "power of two from 1 to 32768 (the kernel's limit), got 300";
    buffer_ring_entries_zero: "[io_uring]\nbuffer_ring_entries = 0\n"
        => 2:23 "io_uring.buffer_ring_entries" "got 0";
    free_list_max_too_large: "[server]\nlisten = [\"127.0.0.1:8080\"]\nfree_list_max = 100000\n"
        => 3:17 "server.free_list_max" "at most 65536 (each list keeps up to this many buffers per shard), got 100000";
}

/// Left out, `max_idle` follows `max_connections` (every open connection may go back to the
/// pool); given, it is kept as it is.
#[test]
fn pool_max_idle_follows_max_connections_unless_given() {
    let pool = |extra: &str| {
        let c = parse(&format!(
            "[[upstream]]\nname = \"a\"\nendpoints = [\"127.0.0.1:9001\"]\n{extra}\n"
        ));
        let p = c.upstream("a").unwrap().pool.clone();
        (p.max_idle, p.max_connections)
    };
    assert_eq!(pool(""), (256, 256));
    assert_eq!(pool("pool = { max_connections = 100 }"), (100, 100));
    assert_eq!(
        pool("pool = { max_connections = 100, max_idle = 8 }"),
        (8, 100)
    );
}
