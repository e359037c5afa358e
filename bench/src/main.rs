//! `ringway-bench`: the benchmark suite's backend, load generator and suite runner (CLI only).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use ringway_bench::addr::Addr;
use ringway_bench::backend::{self, BackendConfig};
use ringway_bench::load::{self, LoadConfig};
use ringway_bench::procfs;
use ringway_bench::suite::{self, SuiteOptions};

#[derive(Parser)]
#[command(name = "ringway-bench", version, about = "ringway benchmark suite")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fast HTTP/1.1 keepalive backend answering a fixed body; prints its counters on exit.
    Backend(BackendArgs),
    /// Keepalive load generator (closed loop, or open loop with --rate), HDR latency histogram.
    Load(LoadArgs),
    /// Benchmark suite: scenarios × targets in interleaved rounds; writes results.json, report.md, SVGs.
    Suite(SuiteArgs),
    /// Paired A/B of two ringway builds or drivers, both up at once, load alternating, order
    /// flipped every pair; prints paired median ratios with bootstrap 95% intervals.
    Ab(AbArgs),
}

#[derive(clap::Args)]
struct AbArgs {
    /// Build A (a ringway binary).
    #[arg(long)]
    a: std::path::PathBuf,
    /// Build B (may be the same binary as A with other --b-args).
    #[arg(long)]
    b: std::path::PathBuf,
    /// Extra `ringway run` arguments of A, one string: "--io epoll".
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    a_args: String,
    /// Extra `ringway run` arguments of B.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    b_args: String,
    /// Suite scenario (closed loop).
    #[arg(long, default_value = "proxy-256")]
    scenario: String,
    /// Pairs of slices (each pair loads A and B once).
    #[arg(long, default_value_t = 12)]
    pairs: usize,
    /// Length of one slice, e.g. 2s.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    slice: Duration,
    /// Warm-up of each build before the first pair.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Write ab.json and ab.md here too.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

#[derive(clap::Args)]
struct SuiteArgs {
    /// A few seconds per scenario and 1 round (under 3 minutes in all).
    #[arg(long)]
    quick: bool,
    /// Output directory (default: bench/results/<date>-<short cpu name>/, a new one per run).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Comma-separated targets: ringway-uring, ringway-epoll, direct, nginx, haproxy (default:
    /// these five); also the io_uring variants ringway-uring-no-<feature> (multishot_accept, pool_peek, linked_ops,
    /// buffer_ring, defer_taskrun, coop_taskrun, single_issuer, registered_files) and
    /// ringway-uring-5.10 (all off).
    #[arg(long, value_delimiter = ',')]
    targets: Option<Vec<String>>,
    /// Comma-separated scenarios: hello, proxy-small, proxy-256, proxy-64k, proxy-uds, fanout-4,
    /// pipelined, idle-10k, latency-open (default: all).
    #[arg(long, value_delimiter = ',')]
    scenarios: Option<Vec<String>>,
    /// Rounds (default 3, or 1 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// ringway binary (default: target/release/ringway of this workspace, then PATH).
    #[arg(long)]
    ringway: Option<std::path::PathBuf>,
    /// Measured duration per window (tests use it to stay short).
    #[arg(long, hide = true, value_parser = parse_duration)]
    duration: Option<Duration>,
}

#[derive(clap::Args)]
struct LoadArgs {
    /// Target URL: http://IP:PORT/path (with --unix, only the path is used).
    #[arg(long)]
    url: String,
    /// Connect to this Unix socket instead of the URL's TCP address.
    #[arg(long)]
    unix: Option<std::path::PathBuf>,
    /// Keepalive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Run length, e.g. 10s, 500ms.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Requests written back to back per connection (closed loop).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Open loop: total requests per second, latency from the intended send time.
    #[arg(long)]
    rate: Option<f64>,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Per-response timeout (counted as an error), e.g. 5s.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Parses `10s`, `500ms`, `2m`, `1.5s`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))
}

#[derive(clap::Args)]
struct BackendArgs {
    /// Listen address (IP:PORT or unix:/path); repeat for several.
    #[arg(long, required = true)]
    listen: Vec<Addr>,
    /// Response body size in bytes.
    #[arg(long, default_value_t = 150)]
    body_size: usize,
    /// Delay before each response, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Answer a JSON body with Content-Type application/json.
    #[arg(long)]
    json: bool,
    /// Answer exactly this text/plain body (overrides --body-size and --json).
    #[arg(long)]
    text: Option<String>,
    /// Worker threads (default: 1).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Backend(a) => run_backend(a),
        Cmd::Load(a) => run_load(a),
        Cmd::Ab(a) => ringway_bench::ab::run(&ringway_bench::ab::AbOptions {
            a: a.a,
            b: a.b,
            a_args: a.a_args.split_whitespace().map(String::from).collect(),
            b_args: a.b_args.split_whitespace().map(String::from).collect(),
            scenario: a.scenario,
            pairs: a.pairs,
            slice: a.slice,
            warmup: a.warmup,
            out: a.out,
        })
        .map(|_| ()),
        Cmd::Suite(a) => suite::run(&SuiteOptions {
            quick: a.quick,
            out: a.out,
            targets: a.targets,
            scenarios: a.scenarios,
            rounds: a.rounds,
            ringway: a.ringway,
            duration: a.duration,
        })
        .map(|_| ()),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringway-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_backend(a: BackendArgs) -> anyhow::Result<()> {
    let h = backend::spawn(BackendConfig {
        listen: a.listen,
        body_size: a.body_size,
        delay: Duration::from_millis(a.delay_ms),
        json: a.json,
        text: a.text,
        threads: a.threads,
    })?;
    for addr in h.addrs() {
        println!("listening on {addr}");
    }
    wait_for_signal()?;
    let st = h.stop();
    println!("{}", serde_json::to_string(&st)?);
    Ok(())
}

fn run_load(a: LoadArgs) -> anyhow::Result<()> {
    let (host_port, path) = load::parse_url(&a.url).map_err(anyhow::Error::msg)?;
    let cpu0 = procfs::rusage(libc::RUSAGE_SELF);
    let r = load::run(&LoadConfig {
        host_port,
        unix: a.unix,
        path,
        connections: a.connections,
        duration: a.duration,
        pipeline: a.pipeline,
        rate: a.rate,
        threads: a.threads,
        timeout: a.timeout,
    })?;
    // Whole-process CPU (all threads, including runtime set-up) per request: the honest cost.
    let cpu = procfs::rusage(libc::RUSAGE_SELF).saturating_sub(cpu0);
    let cpu_us = cpu.as_secs_f64() * 1e6 / (r.requests.max(1) as f64);
    if a.json {
        let v = serde_json::json!({
            "requests": r.requests,
            "errors": r.errors.total(),
            "error_kinds": r.errors,
            "elapsed_s": r.elapsed.as_secs_f64(),
            "rps": r.rps(),
            "p50_us": r.pct_us(0.5),
            "p90_us": r.pct_us(0.9),
            "p99_us": r.pct_us(0.99),
            "p999_us": r.pct_us(0.999),
            "max_us": r.hist.max() as f64 / 1000.0,
            "loadgen_cpu_us_per_req": cpu_us,
        });
        println!("{v}");
    } else {
        println!(
            "requests {}  errors {} (non-2xx {}, connect {}, io {}, timeout {})  elapsed {:.2}s",
            r.requests,
            r.errors.total(),
            r.errors.non_2xx,
            r.errors.connect,
            r.errors.io,
            r.errors.timeout,
            r.elapsed.as_secs_f64()
        );
        println!("req/s {:.0}", r.rps());
        println!(
            "latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            r.pct_us(0.5),
            r.pct_us(0.9),
            r.pct_us(0.99),
            r.pct_us(0.999),
            r.hist.max() as f64 / 1000.0
        );
        println!("load generator CPU: {cpu_us:.2} us/request (utime+stime of this process)");
    }
    Ok(())
}

/// Blocks until SIGINT or SIGTERM (the suite stops its children with SIGTERM).
fn wait_for_signal() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        Ok::<(), std::io::Error>(())
    })?;
    Ok(())
}
