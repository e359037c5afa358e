//! `ringway-bench`: the benchmark suite's backend, load generator and suite runner (CLI only).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use ringway_bench::addr::Addr;
use ringway_bench::backend::{self, BackendConfig};

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
    /// Worker threads (default: 1).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Backend(a) => run_backend(a),
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
