//! Running the gateway as a process: pick the driver, start shards and the admin listener, then
//! handle signals (SIGHUP reload, SIGTERM/SIGINT drain, a second signal exits at once).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::access_log::AccessLogWriter;
use crate::admin::{self, AdminState};
use crate::config::{Config, IoChoice};
use crate::io::Driver;
use crate::io::probe::{self, AutoChoice};
use crate::shard::{self, ShardSet};

/// Why the gateway could not start; printed as is, so it says what to fix.
#[derive(Debug)]
pub struct RunError(pub String);

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunError {}

/// Turns the configured `io` choice into a driver, probing io_uring for `auto`.
///
/// # Errors
/// `uring` was asked for but io_uring cannot be set up: the message names io_uring, the errno and
/// the likely cause.
pub fn resolve_driver(choice: IoChoice) -> Result<Driver, RunError> {
    match choice {
        IoChoice::Epoll => Ok(Driver::Epoll),
        IoChoice::Uring => match probe::uring_features() {
            Ok(f) if f.missing_required().is_empty() => Ok(Driver::Uring),
            Ok(f) => Err(RunError(format!(
                "--io uring: this kernel's io_uring lacks what ringway's uring driver needs: {} (see `ringway probe`). Use --io epoll or --io auto",
                f.missing_required().join(", ")
            ))),
            Err(e) => Err(RunError(format!(
                "--io uring: io_uring is unavailable: {e}. Use --io epoll or --io auto, or allow io_uring (see kernel-notes.md)"
            ))),
        },
        IoChoice::Auto => match probe::auto_choice() {
            AutoChoice::Uring => Ok(Driver::Uring),
            AutoChoice::Epoll { reason } => {
                tracing::warn!("io_uring unavailable ({reason}); using the epoll driver");
                Ok(Driver::Epoll)
            }
        },
    }
}

pub use crate::shard::raise_nofile_limit;

/// What `run` needs besides the config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The config file, re-read on SIGHUP (None: reload is not available, e.g. `ringway demo`).
    pub config_path: Option<PathBuf>,
}

/// Runs the gateway until a signal stops it. Returns the process exit code.
///
/// # Errors
/// Start-up failures (driver, listeners, admin), with a message that says what to fix.
pub fn run(config: Config, opts: RunOptions) -> Result<i32, RunError> {
    raise_nofile_limit();
    let driver = resolve_driver(config.server.io)?;
    let access_log =
        AccessLogWriter::start(&config.log.access, config.log.format).map_err(RunError)?;
    let config = Arc::new(config);
    let start = |driver| {
        shard::start(
            config.clone(),
            driver,
            config.server.shards,
            access_log.clone(),
        )
    };
    let shards = match start(driver) {
        // The probe said yes but the ring or its self-test said no: epoll still serves.
        Err(e) if e.uring_unusable() && config.server.io == IoChoice::Auto => {
            tracing::warn!("{e}; using the epoll driver");
            start(Driver::Epoll)
        }
        Err(e) if e.uring_unusable() => Err(shard::StartError::new(format!(
            "--io uring: {e}. Use --io epoll or --io auto (see `ringway probe` and kernel-notes.md)"
        ))),
        r => r,
    }
    .map_err(|e| RunError(e.to_string()))?;
    for addr in &shards.listen {
        tracing::info!(
            driver = %shards.driver,
            shards = shards.len(),
            "listening on {addr}"
        );
    }
    let state = Arc::new(AdminState {
        draining: AtomicBool::new(false),
        controller: shards.controller().map_err(|e| RunError(e.to_string()))?,
    });
    if let Some(addr) = config.admin.listen {
        let bound = admin::start(addr, state.clone()).map_err(RunError)?;
        tracing::info!("admin listening on {bound}");
    }
    let code = signal_loop(shards, state, config, opts);
    if let Some(log) = access_log {
        log.wait_written(Duration::from_secs(2));
    }
    Ok(code)
}

/// Waits for signals and acts on them. Returns the exit code.
fn signal_loop(
    shards: ShardSet,
    state: Arc<AdminState>,
    config: Arc<Config>,
    opts: RunOptions,
) -> i32 {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let (tx, rx) = mpsc::channel();
    let terminations = Arc::new(AtomicUsize::new(0));
    match signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(mut signals) => {
            let terminations = terminations.clone();
            let spawned = thread::Builder::new()
                .name("ringway-signals".into())
                .spawn(move || {
                    for sig in signals.forever() {
                        if sig != SIGHUP && terminations.fetch_add(1, Ordering::SeqCst) >= 1 {
                            // Second stop signal: the operator wants out now.
                            eprintln!("ringway: second stop signal, exiting at once");
                            std::process::exit(1);
                        }
                        if tx.send(sig).is_err() {
                            return;
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("cannot start the signal thread: {e}");
            }
        }
        Err(e) => tracing::error!("cannot install signal handlers: {e}"),
    }

    let mut config = config;
    loop {
        let Ok(sig) = rx.recv() else {
            // No signal source: run until killed.
            loop {
                thread::park();
            }
        };
        if sig == SIGHUP {
            config = reload(&state, config, &opts);
            continue;
        }
        // SIGTERM / SIGINT: readiness off first, serve through the grace period, then drain.
        state.draining.store(true, Ordering::SeqCst);
        let grace = config.timeouts.drain_grace;
        tracing::info!(
            "stop signal: /readyz now answers 503; draining in {grace:?}, for at most {:?}",
            config.timeouts.drain
        );
        if !grace.is_zero() {
            thread::sleep(grace);
        }
        let deadline = Instant::now() + config.timeouts.drain + Duration::from_millis(200);
        let late = shards.drain_and_join(deadline);
        if late > 0 {
            tracing::warn!(
                "{late} shard(s) still had requests at the drain deadline; exiting anyway"
            );
        } else {
            tracing::info!("drained; exiting");
        }
        return 0;
    }
}

/// Re-reads the config file and applies it to every shard; keeps the old one on any error.
fn reload(state: &AdminState, old: Arc<Config>, opts: &RunOptions) -> Arc<Config> {
    let Some(path) = &opts.config_path else {
        tracing::warn!("SIGHUP: no config file to reload");
        return old;
    };
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("reload rejected, keeping the running config: {e}");
            return old;
        }
    };
    if new.server != old.server || new.admin != old.admin {
        tracing::warn!(
            "reload: [server] and [admin] changes (listen addresses, shards, io) need a restart; applying routes, upstreams, limits and timeouts only"
        );
    }
    let new = Arc::new(new);
    let results = state.controller.reload(new.clone(), Duration::from_secs(5));
    let failed = results.iter().filter(|r| r.is_err()).count();
    if failed > 0 {
        tracing::error!("reload: {failed} shard(s) did not apply the new config");
    } else {
        tracing::info!("reload applied on {} shard(s)", results.len());
    }
    new
}
