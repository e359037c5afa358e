//! `ringway` command line: parse arguments, load config, start shards.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ringway::config::{Config, IoChoice, LogFormat};
use ringway::server::{self, RunOptions};

#[derive(Parser, Debug)]
#[command(
    name = "ringway",
    version,
    about = "HTTP/1.1 gateway on io_uring, thread-per-core"
)]
struct Cli {
    /// Log format (overrides [log] format).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum IoArg {
    Auto,
    Uring,
    Epoll,
}

impl From<IoArg> for IoChoice {
    fn from(a: IoArg) -> IoChoice {
        match a {
            IoArg::Auto => IoChoice::Auto,
            IoArg::Uring => IoChoice::Uring,
            IoArg::Epoll => IoChoice::Epoll,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway.
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// I/O driver (overrides [server] io).
        #[arg(long, value_enum)]
        io: Option<IoArg>,
        /// Number of shards; 0 = one per core (overrides [server] shards).
        #[arg(long)]
        shards: Option<usize>,
    },
    /// Validate a config file and print it with every default filled in.
    Check {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the kernel version, io_uring availability and supported features.
    Probe,
    /// Zero-config first run: demo backends plus the gateway on 127.0.0.1:8080.
    Demo {
        /// Listen address of the demo gateway.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// I/O driver.
        #[arg(long, value_enum, default_value = "auto")]
        io: IoArg,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_override = cli.log_format.map(|f| match f {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    });
    match cli.command {
        Command::Run { config, io, shards } => {
            let mut cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("ringway: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Some(io) = io {
                cfg.server.io = io.into();
            }
            if let Some(n) = shards {
                cfg.server.shards = n;
            }
            init_logging(log_override.unwrap_or(cfg.log.format));
            finish(server::run(
                cfg,
                RunOptions {
                    config_path: Some(config),
                },
            ))
        }
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                print!("{}", c.render());
                eprintln!("ringway: {} is valid", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringway: {e}");
                ExitCode::from(2)
            }
        },
        Command::Probe => {
            let mut report = ringway::io::probe::probe();
            if let Ok(f) = &report.uring
                && f.missing_required().is_empty()
            {
                report.self_test = Some(ringway::io::selftest::run_on_new_ring(f));
            }
            print!("{report}");
            ExitCode::SUCCESS
        }
        Command::Demo { listen, io } => {
            init_logging(log_override.unwrap_or(LogFormat::Text));
            finish(ringway::demo::run(listen, io.into()))
        }
    }
}

fn finish(r: Result<i32, server::RunError>) -> ExitCode {
    match r {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("ringway: {e}");
            ExitCode::from(1)
        }
    }
}
