//! Targets: what sits between the load generator and the backends, how to configure, start,
//! pin and stop it. Configs are written into the run's temporary directory; every address is
//! 127.0.0.1 or a socket path in that directory.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::scenarios::{FANOUT_CALLS, HELLO_BODY, Scenario};
use crate::addr::Addr;

/// How long a target may take to accept connections after start.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a target may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// An `[io_uring]` feature of ringway that a variant target forces off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringFeature {
    /// The `[io_uring]` config key.
    pub key: &'static str,
    /// The variant target's name: `ringway-uring-no-<key>`.
    pub target: &'static str,
}

/// `uring_feature!("key")`: the feature and its target name, spelled once.
macro_rules! uring_feature {
    ($key:literal) => {
        UringFeature {
            key: $key,
            target: concat!("ringway-uring-no-", $key),
        }
    };
}

/// The advanced io_uring features with a `ringway-uring-no-<feature>` variant; all of them are
/// off in `ringway-uring-5.10`. A new `[io_uring]` key is one more line here.
pub const URING_FEATURES: &[UringFeature] = &[
    uring_feature!("multishot_accept"),
    uring_feature!("buffer_ring"),
    uring_feature!("pool_peek"),
    uring_feature!("linked_ops"),
    uring_feature!("defer_taskrun"),
    uring_feature!("coop_taskrun"),
    uring_feature!("single_issuer"),
    uring_feature!("registered_files"),
];

/// A proxy (or no proxy) under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// Load generator straight to a backend pinned on the target CPU: the upper bound.
    Direct,
    /// ringway with the io_uring driver.
    RingwayUring,
    /// ringway with the epoll driver.
    RingwayEpoll,
    /// nginx, 1 worker.
    Nginx,
    /// haproxy, 1 thread.
    Haproxy,
    /// ringway-uring with one feature forced off: that feature's before/after in one run.
    RingwayUringWithout(UringFeature),
    /// ringway-uring with every feature of [`URING_FEATURES`] off: the 5.10-era feature set.
    RingwayUringBase,
}

impl TargetKind {
    /// The default targets, in report order (the io_uring variants run only when named).
    pub const ALL: [TargetKind; 5] = [
        TargetKind::RingwayUring,
        TargetKind::RingwayEpoll,
        TargetKind::Direct,
        TargetKind::Nginx,
        TargetKind::Haproxy,
    ];

    /// The io_uring variant targets, accepted by `--targets`.
    pub fn variants() -> impl Iterator<Item = TargetKind> {
        URING_FEATURES
            .iter()
            .map(|f| TargetKind::RingwayUringWithout(*f))
            .chain([TargetKind::RingwayUringBase])
    }

    /// Name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Direct => "direct",
            TargetKind::RingwayUring => "ringway-uring",
            TargetKind::RingwayEpoll => "ringway-epoll",
            TargetKind::Nginx => "nginx",
            TargetKind::Haproxy => "haproxy",
            TargetKind::RingwayUringWithout(f) => f.target,
            TargetKind::RingwayUringBase => "ringway-uring-5.10",
        }
    }

    /// Parses a target name (a default target or a variant).
    pub fn by_name(s: &str) -> Option<TargetKind> {
        Self::ALL
            .into_iter()
            .chain(Self::variants())
            .find(|t| t.name() == s)
    }

    /// Every name `--targets` accepts, for error messages.
    pub fn known_names() -> Vec<&'static str> {
        Self::ALL
            .into_iter()
            .chain(Self::variants())
            .map(TargetKind::name)
            .collect()
    }

    /// The ringway driver this target runs, if it is ringway.
    pub fn ringway_io(self) -> Option<&'static str> {
        match self {
            TargetKind::RingwayEpoll => Some("epoll"),
            TargetKind::RingwayUring
            | TargetKind::RingwayUringWithout(_)
            | TargetKind::RingwayUringBase => Some("uring"),
            TargetKind::Direct | TargetKind::Nginx | TargetKind::Haproxy => None,
        }
    }

    /// The `[io_uring]` keys this target forces to `false`.
    pub fn uring_off(self) -> Vec<&'static str> {
        match self {
            TargetKind::RingwayUringWithout(f) => vec![f.key],
            TargetKind::RingwayUringBase => URING_FEATURES.iter().map(|f| f.key).collect(),
            _ => Vec::new(),
        }
    }

    /// Why this target cannot run this scenario, if it cannot.
    pub fn unsupported(self, sc: &Scenario) -> Option<&'static str> {
        match self {
            TargetKind::Haproxy if sc.fanout => Some("haproxy has no fan-out/aggregation"),
            _ => None,
        }
    }
}

/// Executables the suite found.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    /// This binary (used for the `direct` backend process).
    pub self_exe: Option<PathBuf>,
    /// ringway binary.
    pub ringway: Option<PathBuf>,
    /// nginx binary.
    pub nginx: Option<PathBuf>,
    /// haproxy binary.
    pub haproxy: Option<PathBuf>,
    /// wrk, the external load generator the suite's own client is checked against.
    pub wrk: Option<PathBuf>,
}

/// Finds an executable on PATH (and the sbin directories Debian installs servers into).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Tools {
    /// Looks for every tool; `ringway` overrides the ringway binary path.
    pub fn discover(ringway: Option<PathBuf>) -> Tools {
        let ringway = ringway.or_else(|| {
            // The build next to this binary (same profile and target dir, CARGO_TARGET_DIR or
            // not), then the workspace's release build, then PATH.
            let sibling = std::env::current_exe()
                .ok()
                .and_then(|e| Some(e.parent()?.join("ringway")));
            let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/ringway");
            sibling
                .filter(|p| p.is_file())
                .or_else(|| ws.is_file().then_some(ws))
                .or_else(|| which("ringway"))
        });
        Tools {
            self_exe: std::env::current_exe().ok(),
            ringway,
            nginx: which("nginx"),
            haproxy: which("haproxy"),
            wrk: which("wrk"),
        }
    }

    /// The binary a target needs, or why it is missing.
    pub fn binary(&self, t: TargetKind) -> Result<&Path, String> {
        let (b, what) = match t {
            TargetKind::Direct => (&self.self_exe, "ringway-bench itself"),
            TargetKind::RingwayUring
            | TargetKind::RingwayEpoll
            | TargetKind::RingwayUringWithout(_)
            | TargetKind::RingwayUringBase => (
                &self.ringway,
                "ringway binary (build it or pass --ringway PATH)",
            ),
            TargetKind::Nginx => (&self.nginx, "nginx (apt-get install nginx)"),
            TargetKind::Haproxy => (&self.haproxy, "haproxy (apt-get install haproxy)"),
        };
        b.as_deref().ok_or_else(|| format!("not found: {what}"))
    }
}

/// Everything a target config needs to know.
pub struct TargetSetup<'a> {
    /// The scenario.
    pub scenario: &'a Scenario,
    /// Backend addresses (TCP or Unix) the target proxies to.
    pub backends: &'a [Addr],
    /// Directory for configs, logs, sockets.
    pub dir: &'a Path,
    /// CPUs the target is pinned to.
    pub cpus: &'a [usize],
    /// RLIMIT_NOFILE the target inherits (it cannot raise it further without CAP_SYS_RESOURCE).
    pub nofile: u64,
}

/// A started target.
pub struct RunningTarget {
    child: Child,
    /// Where the load generator connects: TCP `127.0.0.1:PORT` or a Unix socket.
    pub addr: Addr,
    /// TCP address for idle connections (same as `addr` unless it is a Unix socket).
    pub tcp_addr: String,
    /// Log file of the target (stdout and stderr).
    pub log: PathBuf,
}

impl RunningTarget {
    /// Process id of the target (the nginx master; its worker is found as a child).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, wait, SIGKILL if it lingers.
    pub fn stop(mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of our own child, which we have not yet waited for, so
        // the pid cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let until = Instant::now() + STOP_TIMEOUT;
        // Bounded by STOP_TIMEOUT.
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1 (bound then released; the race with other programs is harmless here).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

/// Writes the target's config, starts it pinned to `setup.cpus`, waits until it accepts.
///
/// # Errors
/// Missing binary, config write failure, spawn failure, not ready in time (with its log tail).
pub fn start(t: TargetKind, tools: &Tools, s: &TargetSetup<'_>) -> Result<RunningTarget, String> {
    let bin = tools.binary(t)?;
    let port = free_port().map_err(|e| format!("free port: {e}"))?;
    let tcp_addr = format!("127.0.0.1:{port}");
    let name = t.name();
    let log = s.dir.join(format!("{name}.log"));
    let mut addr = Addr::Tcp(tcp_addr.parse().map_err(|e| format!("{e}"))?);
    let mut cmd = Command::new(bin);
    match t {
        // The bench backend is a tokio current_thread server: for `hello` it is the "tokio hello
        // world" reference the gateways are compared with.
        TargetKind::Direct if s.scenario.local => {
            cmd.args(["backend", "--threads", "1", "--listen", &tcp_addr]);
            cmd.args(["--text", HELLO_BODY]);
        }
        TargetKind::Direct => {
            cmd.args(["backend", "--json", "--threads", "1", "--listen", &tcp_addr]);
            cmd.args(["--body-size", &s.scenario.body_size.to_string()]);
            if s.scenario.uds {
                let sock = s.dir.join("direct.sock");
                cmd.arg("--listen").arg(format!("unix:{}", sock.display()));
                addr = Addr::Unix(sock);
            }
        }
        TargetKind::RingwayUring
        | TargetKind::RingwayEpoll
        | TargetKind::RingwayUringWithout(_)
        | TargetKind::RingwayUringBase => {
            let admin = free_port().map_err(|e| format!("free port: {e}"))?;
            let cfg = s.dir.join(format!("{name}.toml"));
            let io = t.ringway_io().unwrap_or("uring");
            write(
                &cfg,
                &ringway_config(&tcp_addr, admin, io, &t.uring_off(), s),
            )?;
            cmd.arg("run").arg("--config").arg(&cfg);
            cmd.args(["--io", io, "--shards", "1"]);
        }
        TargetKind::Nginx => {
            let ndir = s.dir.join("nginx");
            std::fs::create_dir_all(ndir.join("www")).map_err(|e| format!("mkdir: {e}"))?;
            write(&ndir.join("www/page"), &ssi_page())?;
            write(&ndir.join("nginx.conf"), &nginx_config(&tcp_addr, &ndir, s))?;
            cmd.arg("-p")
                .arg(&ndir)
                .arg("-c")
                .arg(ndir.join("nginx.conf"));
            cmd.args(["-g", "daemon off;"]);
        }
        TargetKind::Haproxy => {
            let cfg = s.dir.join("haproxy.cfg");
            write(&cfg, &haproxy_config(&tcp_addr, s))?;
            cmd.arg("-db").arg("-f").arg(&cfg);
        }
    }
    spawn_ready(cmd, bin, name, addr, tcp_addr, log, s.cpus)
}

/// The `--io` value in a list of extra ringway arguments (`--io epoll` or `--io=epoll`).
pub fn io_in_args(args: &[String]) -> Option<&str> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == "--io" {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix("--io=")
        }
    })
}

/// Starts one ringway build for an A/B: `bin run --config <generated> --shards 1 <args>`, the
/// config's driver taken from `--io` in `args` (uring when absent, and then `--io uring` is
/// passed too). `name` names its config and log files.
///
/// # Errors
/// As [`start`].
pub fn start_ringway_build(
    bin: &Path,
    args: &[String],
    name: &str,
    s: &TargetSetup<'_>,
) -> Result<RunningTarget, String> {
    let port = free_port().map_err(|e| format!("free port: {e}"))?;
    let admin = free_port().map_err(|e| format!("free port: {e}"))?;
    let tcp_addr = format!("127.0.0.1:{port}");
    let addr = Addr::Tcp(tcp_addr.parse().map_err(|e| format!("{e}"))?);
    let io = io_in_args(args).unwrap_or("uring");
    let cfg = s.dir.join(format!("{name}.toml"));
    write(&cfg, &ringway_config(&tcp_addr, admin, io, &[], s))?;
    let mut cmd = Command::new(bin);
    cmd.arg("run").arg("--config").arg(&cfg);
    cmd.args(["--shards", "1"]);
    if io_in_args(args).is_none() {
        cmd.args(["--io", "uring"]);
    }
    cmd.args(args);
    let log = s.dir.join(format!("{name}.log"));
    spawn_ready(cmd, bin, name, addr, tcp_addr, log, s.cpus)
}

/// Spawns `cmd` pinned to `cpus` with its output in `log`, and waits until it accepts.
fn spawn_ready(
    mut cmd: Command,
    bin: &Path,
    name: &str,
    addr: Addr,
    tcp_addr: String,
    log: PathBuf,
    cpus: &[usize],
) -> Result<RunningTarget, String> {
    let logf = std::fs::File::create(&log).map_err(|e| format!("log file: {e}"))?;
    let logf2 = logf.try_clone().map_err(|e| format!("log file: {e}"))?;
    cmd.stdin(Stdio::null()).stdout(logf).stderr(logf2);
    let cpus = cpus.to_vec();
    // SAFETY: the hook runs between fork and exec; it only makes two syscalls (prctl and
    // sched_setaffinity, both async-signal-safe) on data built before the fork, no allocation.
    unsafe {
        cmd.pre_exec(move || {
            // A suite killed mid-run (Ctrl-C) takes its targets with it instead of leaving them
            // pinned and listening. The parent is this process's main thread, which forks every
            // target and lives as long as the process.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            crate::procfs::set_affinity(0, &cpus)
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    let mut rt = RunningTarget {
        child,
        addr,
        tcp_addr,
        log,
    };
    match wait_ready(&mut rt) {
        Ok(()) => Ok(rt),
        Err(e) => {
            let tail = std::fs::read_to_string(&rt.log).unwrap_or_default();
            let tail: String = tail.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            rt.stop();
            Err(format!("{name}: {e}; log: {tail}"))
        }
    }
}

/// Polls the listen address until it accepts, or the process exits, or the timeout passes.
fn wait_ready(rt: &mut RunningTarget) -> Result<(), String> {
    let until = Instant::now() + READY_TIMEOUT;
    // Bounded by READY_TIMEOUT.
    while Instant::now() < until {
        if let Ok(Some(st)) = rt.child.try_wait() {
            return Err(format!("exited during start-up ({st})"));
        }
        let ok = match &rt.addr {
            Addr::Tcp(a) => {
                std::net::TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok()
            }
            Addr::Unix(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
        };
        // A Unix address also needs the TCP port (idle scenario); both come up together.
        if ok {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("not accepting after {READY_TIMEOUT:?}"))
}

fn ringway_endpoint(a: &Addr) -> String {
    a.to_string()
}

/// ringway TOML per DESIGN.md; the suite pins externally, so `pin_cpus = false`. `uring_off`
/// lists `[io_uring]` keys forced to `false` (the variant targets).
pub fn ringway_config(
    listen: &str,
    admin: u16,
    io: &str,
    uring_off: &[&str],
    s: &TargetSetup<'_>,
) -> String {
    let mut c = format!(
        "[server]\nlisten = [\"{listen}\"]\nshards = 1\nio = \"{io}\"\npin_cpus = false\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n\n\
         [log]\naccess = \"off\"\n\n"
    );
    if !uring_off.is_empty() {
        c.push_str("[io_uring]\n");
        for key in uring_off {
            let _ = writeln!(c, "{key} = false");
        }
        c.push('\n');
    }
    if s.scenario.local {
        // No upstream at all: the answer is rendered once at start-up and written per request.
        let _ = write!(
            c,
            "[[route]]\npath_prefix = \"{}\"\n\
             respond = {{ status = 200, body = \"{HELLO_BODY}\", content_type = \"text/plain\" }}\n",
            s.scenario.path
        );
        return c;
    }
    let eps: Vec<String> = s
        .backends
        .iter()
        .map(|a| format!("{:?}", ringway_endpoint(a)))
        .collect();
    let _ = write!(
        c,
        "[[upstream]]\nname = \"b\"\nendpoints = [{}]\n\
         pool = {{ max_idle = 256, max_connections = 1024 }}\n\n",
        eps.join(", ")
    );
    if s.scenario.fanout {
        c.push_str("[[route]]\npath_prefix = \"/page\"\n[route.fanout]\ntimeout = \"1s\"\n");
        for p in FANOUT_CALLS {
            let _ = write!(
                c,
                "[[route.fanout.call]]\nname = \"{}\"\nupstream = \"b\"\npath = \"{p}\"\n",
                p.trim_start_matches('/')
            );
        }
        c.push('\n');
    }
    c.push_str("[[route]]\npath_prefix = \"/\"\nupstream = \"b\"\n");
    c
}

/// The SSI page nginx serves for fan-out: 4 includes, fetched as parallel subrequests.
fn ssi_page() -> String {
    let parts: Vec<String> = FANOUT_CALLS
        .iter()
        .map(|p| {
            format!(
                "\"{}\":<!--# include virtual=\"{p}\" -->",
                p.trim_start_matches('/')
            )
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// nginx: 1 worker, no access log, upstream keepalive, HTTP/1.1 to the upstream, proxy buffers
/// that hold a 64 KiB answer in memory and never a temp file (bench/README.md, "Fair peers").
fn nginx_config(listen: &str, dir: &Path, s: &TargetSetup<'_>) -> String {
    let d = dir.display();
    let servers: String = s
        .backends
        .iter()
        .map(|a| match a {
            Addr::Tcp(t) => format!("    server {t};\n"),
            Addr::Unix(p) => format!("    server unix:{};\n", p.display()),
        })
        .collect();
    // keepalive ≥ client connections: with fewer idle slots than concurrent requests nginx would
    // close and reopen upstream connections on every burst, which ringway (max_idle 256) does not.
    let keepalive = s.scenario.connections.max(64);
    let nofile = s.nofile;
    // Each client connection may need an upstream one too; keep headroom for files and logs.
    let wc = nofile.saturating_sub(100).max(1024);
    // A root master drops its worker to `nobody`, which may not connect to the root-owned
    // backend sockets (EACCES on proxy-uds); keep the worker as the user that runs the suite.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;\n"
    } else {
        ""
    };
    // `hello`: nginx answers itself (`return`), with no upstream block (nginx refuses an empty one).
    let (upstream, locations) = if s.scenario.local {
        (
            String::new(),
            format!(
                "  location = {} {{ default_type text/plain; return 200 \"{HELLO_BODY}\"; }}\n",
                s.scenario.path
            ),
        )
    } else {
        (
            format!(
                "upstream b {{\n{servers}    keepalive {keepalive};\n    keepalive_requests 100000000;\n  }}\n"
            ),
            format!(
                "  location = /page {{ root {d}/www; default_type application/json; ssi on; ssi_types *; }}\n\
                 \x20 location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\";\n\
                 \x20   proxy_buffer_size 16k; proxy_buffers 8 16k; proxy_max_temp_file_size 0; }}\n"
            ),
        )
    };
    format!(
        "{user}worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         worker_rlimit_nofile {nofile};\n\
         events {{ worker_connections {wc}; multi_accept on; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {d}/tmp_body;\n\
           proxy_temp_path {d}/tmp_proxy;\n\
           fastcgi_temp_path {d}/tmp_fastcgi;\n\
           uwsgi_temp_path {d}/tmp_uwsgi;\n\
           scgi_temp_path {d}/tmp_scgi;\n\
           keepalive_requests 100000000;\n\
           keepalive_timeout 300s;\n\
           {upstream}\
           server {{\n\
             listen {listen} backlog=4096;\n\
           {locations}\
           }}\n\
         }}\n"
    )
}

/// haproxy: 1 thread, connection reuse always, no logging (no `log` line anywhere).
fn haproxy_config(listen: &str, s: &TargetSetup<'_>) -> String {
    let servers: String = s
        .backends
        .iter()
        .enumerate()
        .map(|(i, a)| match a {
            Addr::Tcp(t) => format!("  server s{i} {t}\n"),
            // haproxy reads an absolute path as a Unix socket address.
            Addr::Unix(p) => format!("  server s{i} {}\n", p.display()),
        })
        .collect();
    // haproxy wants 2 descriptors per connection (client + server) and refuses to start when it
    // cannot raise RLIMIT_NOFILE that far, so derive maxconn from the limit we really have.
    let maxconn = (s.nofile.saturating_sub(200) / 2).clamp(256, 40_000);
    let global = format!(
        "global\n  nbthread 1\n  maxconn {maxconn}\n\n\
         defaults\n  mode http\n  maxconn {maxconn}\n  timeout connect 5s\n  timeout client 300s\n\
         \x20 timeout server 300s\n  timeout http-keep-alive 300s\n  http-reuse always\n\n"
    );
    if s.scenario.local {
        // `hello`: haproxy answers itself (2.2+), no backend section.
        return format!(
            "{global}frontend fe\n  bind {listen}\n\
             \x20 http-request return status 200 content-type text/plain string \"{HELLO_BODY}\" if {{ path {} }}\n",
            s.scenario.path
        );
    }
    format!(
        "{global}frontend fe\n  bind {listen}\n  default_backend be\n\n\
         backend be\n{servers}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::scenarios;

    #[test]
    fn ringway_config_has_contract_keys() {
        let sc = scenarios::by_name("fanout-4").expect("scenario");
        let be = [
            "127.0.0.1:9001".parse().expect("addr"),
            "unix:/tmp/b.sock".parse().expect("addr"),
        ];
        let s = TargetSetup {
            scenario: &sc,
            backends: &be,
            dir: Path::new("/tmp"),
            cpus: &[1],
            nofile: 20_000,
        };
        let c = ringway_config("127.0.0.1:8080", 9901, "uring", &[], &s);
        for want in [
            "listen = [\"127.0.0.1:8080\"]",
            "shards = 1",
            "io = \"uring\"",
            "pin_cpus = false",
            "listen = \"127.0.0.1:9901\"",
            "endpoints = [\"127.0.0.1:9001\", \"unix:/tmp/b.sock\"]",
            "max_idle = 256",
            "[route.fanout]",
            "path = \"/d\"",
        ] {
            assert!(c.contains(want), "missing {want:?} in:\n{c}");
        }
        // Fan-out route must come before the catch-all: routes match in order.
        assert!(
            c.find("/page").unwrap_or(usize::MAX) < c.find("path_prefix = \"/\"\n").unwrap_or(0)
        );
        assert!(ssi_page().matches("<!--# include virtual=").count() == 4);
        // nginx holds a 64 KiB body in memory (8 × 16 KiB) and never spills it to a temp file.
        let n = nginx_config("127.0.0.1:8080", Path::new("/tmp"), &s);
        for want in [
            "proxy_buffers 8 16k;",
            "proxy_buffer_size 16k;",
            "proxy_max_temp_file_size 0;",
            "keepalive 64;",
            "access_log off;",
        ] {
            assert!(n.contains(want), "missing {want:?} in:\n{n}");
        }
        assert!(!c.contains("[io_uring]"), "no overrides asked:\n{c}");
    }

    #[test]
    fn hello_is_answered_by_every_target_itself_with_the_same_body() {
        let sc = scenarios::by_name("hello").expect("scenario");
        let s = TargetSetup {
            scenario: &sc,
            backends: &[],
            dir: Path::new("/tmp/x"),
            cpus: &[1],
            nofile: 20_000,
        };
        let c = ringway_config("127.0.0.1:8080", 9901, "uring", &[], &s);
        assert!(
            c.contains("path_prefix = \"/hello\"\nrespond = { status = 200, body = \"Hello, World!\", content_type = \"text/plain\" }"),
            "{c}"
        );
        assert!(!c.contains("[[upstream]]"), "no backend for hello:\n{c}");
        let n = nginx_config("127.0.0.1:8080", Path::new("/tmp/x"), &s);
        assert!(
            n.contains(
                "location = /hello { default_type text/plain; return 200 \"Hello, World!\"; }"
            ),
            "{n}"
        );
        assert!(!n.contains("upstream b"), "{n}");
        let h = haproxy_config("127.0.0.1:8080", &s);
        assert!(
            h.contains("http-request return status 200 content-type text/plain string \"Hello, World!\" if { path /hello }"),
            "{h}"
        );
        assert!(!h.contains("backend be"), "{h}");
        // The configs are valid for the real programs (when installed): a typo here would only
        // show up as a failed cell in a suite run.
        let tools = Tools::discover(None);
        let dir = tempfile::tempdir().expect("tempdir");
        let s = TargetSetup {
            dir: dir.path(),
            ..s
        };
        // `nginx -t` of one generated config, named `file` in the temp dir.
        let nginx_t = |nginx: &std::path::Path, file: &str, setup: &TargetSetup| {
            let conf = dir.path().join(file);
            std::fs::write(&conf, nginx_config("127.0.0.1:8080", dir.path(), setup))
                .expect("write");
            let out = Command::new(nginx)
                .arg("-t")
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .output()
                .expect("nginx -t");
            assert!(
                out.status.success(),
                "nginx -t ({file}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        if let Some(nginx) = &tools.nginx {
            nginx_t(nginx, "nginx.conf", &s);
        }
        // The proxy config too (buffers, temp-file limit, upstream keepalive), with a backend.
        if let Some(nginx) = &tools.nginx {
            let sc64 = scenarios::by_name("proxy-64k").expect("scenario");
            let be = ["127.0.0.1:9001".parse().expect("addr")];
            let p = TargetSetup {
                scenario: &sc64,
                backends: &be,
                ..s
            };
            nginx_t(nginx, "nginx-proxy.conf", &p);
        }
        if let Some(haproxy) = &tools.haproxy {
            let conf = dir.path().join("haproxy.cfg");
            std::fs::write(&conf, haproxy_config("127.0.0.1:8080", &s)).expect("write");
            let out = Command::new(haproxy)
                .arg("-c")
                .arg("-f")
                .arg(&conf)
                .output()
                .expect("haproxy -c");
            assert!(
                out.status.success(),
                "haproxy -c: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for (name, found) in [
            ("nginx", tools.nginx.is_some()),
            ("haproxy", tools.haproxy.is_some()),
        ] {
            if !found {
                skip_config_check(name);
            }
        }
    }

    /// Says visibly (past libtest's capture) that a config check did not run; in CI as root
    /// (`RINGWAY_CI=1`), where .ci/run installs both programs, that is a failure.
    fn skip_config_check(program: &str) {
        use std::io::Write;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            !(root && std::env::var("RINGWAY_CI").as_deref() == Ok("1")),
            "{program} is not installed: CI as root must check its generated config"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {program} config check: {program} is not installed"
        );
    }

    #[test]
    fn variant_targets_force_io_uring_keys_off() {
        let names = TargetKind::known_names();
        for want in [
            "ringway-uring-no-multishot_accept",
            "ringway-uring-no-buffer_ring",
            "ringway-uring-no-defer_taskrun",
            "ringway-uring-no-coop_taskrun",
            "ringway-uring-no-single_issuer",
            "ringway-uring-no-registered_files",
            "ringway-uring-5.10",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
            let t = TargetKind::by_name(want).expect("parses");
            assert_eq!(t.name(), want);
            assert_eq!(t.ringway_io(), Some("uring"));
            assert!(
                !TargetKind::ALL.contains(&t),
                "{want} is not a default target"
            );
        }
        let t = TargetKind::by_name("ringway-uring-no-buffer_ring").expect("variant");
        assert_eq!(t.uring_off(), ["buffer_ring"]);
        let base = TargetKind::by_name("ringway-uring-5.10").expect("base");
        assert_eq!(base.uring_off().len(), URING_FEATURES.len());
        assert!(TargetKind::RingwayUring.uring_off().is_empty());

        let sc = scenarios::by_name("proxy-small").expect("scenario");
        let be = ["127.0.0.1:9001".parse().expect("addr")];
        let s = TargetSetup {
            scenario: &sc,
            backends: &be,
            dir: Path::new("/tmp"),
            cpus: &[1],
            nofile: 20_000,
        };
        let c = ringway_config("127.0.0.1:8080", 9901, "uring", &base.uring_off(), &s);
        for f in URING_FEATURES {
            assert!(
                c.contains(&format!("\n{} = false\n", f.key)),
                "{}: {c}",
                f.key
            );
        }
        // Every generated config is one ringway accepts (sqpoll stays at its default, off).
        let parsed = ringway::config::Config::parse(&c, "variant.toml").expect("valid config");
        let u = parsed.io_uring;
        assert!(
            !(u.multishot_accept
                || u.buffer_ring
                || u.pool_peek
                || u.linked_ops
                || u.defer_taskrun
                || u.coop_taskrun
                || u.single_issuer
                || u.registered_files)
        );
    }
}
