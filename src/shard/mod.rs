//! Shards: N named threads (`ringway-shard-N`), each pinned to one CPU, each with its own event
//! loop, its own `SO_REUSEPORT` listeners, pools and metrics.
//!
//! Shards share nothing mutable on the request path. The only cross-thread traffic is
//! [`Command`]s sent at start-up, reload, scrape and shutdown: a command goes into the shard's
//! `mpsc` queue and one byte on its control socketpair wakes the shard's control task (a socket,
//! so both drivers wait on it the same way).

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::future::{Either, select};

use crate::access_log::{AccessLogWriter, ShardAccessLog};
use crate::config::Config;
use crate::gateway::{Gateway, Live};
use crate::io::{self as rio, Driver, Listener, LocalEvent, Runtime, Stream, UringOptions};
use crate::local::ShardLocal;
use crate::metrics::ShardSnapshot;

mod bind;
mod fds;
mod state;

use bind::{allowed_cpus, bind_all, pin_current_thread};

pub use fds::raise_nofile_limit;
pub use state::Shard;

/// A message from the main thread to one shard.
pub enum Command {
    /// Stop accepting, let in-flight requests finish, close idle connections, then stop.
    Drain,
    /// Send a copy of the shard's counters.
    Scrape(mpsc::Sender<ShardSnapshot>),
    /// Apply a new, already validated config to new requests; reply with the outcome.
    Reload(Arc<Config>, mpsc::Sender<Result<(), String>>),
}

/// A started set of shards, driven from the main thread.
pub struct ShardSet {
    threads: Vec<thread::JoinHandle<()>>,
    control: Controller,
    /// The driver every shard runs.
    pub driver: Driver,
    /// The bound listen addresses (port 0 resolved).
    pub listen: Vec<SocketAddr>,
}

/// Why the shards could not start; each message says what to fix.
#[derive(Debug)]
pub struct StartError {
    msg: String,
    uring_unusable: bool,
}

impl StartError {
    /// A start-up failure that says what to fix.
    pub fn new(msg: impl Into<String>) -> StartError {
        StartError {
            msg: msg.into(),
            uring_unusable: false,
        }
    }

    /// The io_uring driver cannot serve here (its ring or its self-test failed), though the
    /// probe let it start: `--io auto` then runs epoll instead.
    fn uring(msg: String) -> StartError {
        StartError {
            msg,
            uring_unusable: true,
        }
    }

    /// Whether the failure was the io_uring driver's, so that epoll may still work.
    pub fn uring_unusable(&self) -> bool {
        self.uring_unusable
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for StartError {}

/// How many shards `shards = 0` means: one per CPU this process may run on.
pub fn default_shard_count() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Starts `shards` threads on `driver` serving `config`.
///
/// Returns once every shard has bound its listeners and built its event loop.
///
/// # Errors
/// A listener that cannot bind, or a shard whose runtime cannot be built (io_uring refused):
/// the message says what to fix.
pub fn start(
    config: Arc<Config>,
    driver: Driver,
    shards: usize,
    access_log: Option<AccessLogWriter>,
) -> Result<ShardSet, StartError> {
    let shards = if shards == 0 {
        default_shard_count()
    } else {
        shards
    };
    let (listeners, resolved) = bind_all(&config.server.listen, shards, config.server.backlog)?;
    let cpus = allowed_cpus();
    // Ask io_uring_setup only for what the kernel has (the probe really tries each flag) and
    // what the config allows.
    let feats = match driver {
        Driver::Uring => crate::io::probe::uring_features().ok(),
        Driver::Epoll => None,
    };
    let conn_limit = fds::client_conn_limit(
        config.limits.max_connections,
        fds::nofile_soft_limit(),
        fds::open_fds_now(),
        shards,
        fds::backend_conn_max(&config, shards),
    )
    .div_ceil(shards)
    .max(1);
    let uring_opts = UringOptions {
        coop_taskrun: config.io_uring.coop_taskrun,
        single_issuer: config.io_uring.single_issuer,
        defer_taskrun: config.io_uring.defer_taskrun,
        multishot_accept: config.io_uring.multishot_accept,
        buffer_ring: config.io_uring.buffer_ring,
        buffer_ring_entries: config.io_uring.buffer_ring_entries,
        pool_peek: config.io_uring.pool_peek,
        linked_ops: config.io_uring.linked_ops,
        registered_files: if config.io_uring.registered_files {
            fds::file_slots(conn_limit, fds::backend_conn_max(&config, 1))
        } else {
            0
        },
        // Opt-in and not probed: the kernel's answer at ring setup is the authority.
        sqpoll: config.io_uring.sqpoll,
        ..UringOptions::default()
    }
    .limited_to(feats.as_ref());
    if driver == Driver::Uring {
        tracing::info!(
            coop_taskrun = uring_opts.coop_taskrun,
            single_issuer = uring_opts.single_issuer,
            // SQPOLL excludes DEFER_TASKRUN: the ring is built without it then.
            defer_taskrun = uring_opts.defer_taskrun && !uring_opts.sqpoll,
            multishot_accept = uring_opts.multishot_accept,
            buffer_ring = uring_opts.buffer_ring,
            pool_peek = uring_opts.pool_peek,
            linked_ops = uring_opts.linked_ops,
            registered_files = uring_opts.registered_files,
            sqpoll = uring_opts.sqpoll,
            "io_uring features in use"
        );
    }

    let (ready_tx, ready_rx) = mpsc::channel::<Result<usize, String>>();
    // Two phases: every shard builds its event loop and (on uring) passes the self-test, and
    // only then does any shard serve; so a failure leaves no shard holding the listeners.
    let (boot_tx, boot_rx) = mpsc::channel::<Result<(), StartError>>();
    let mut go = Vec::with_capacity(shards);
    let mut threads = Vec::with_capacity(shards);
    let mut control = Controller {
        shards: Vec::with_capacity(shards),
    };
    for (id, shard_listeners) in listeners.into_iter().enumerate() {
        let (ctl_main, ctl_shard) = StdUnixStream::pair()
            .map_err(|e| StartError::new(format!("control socketpair for shard {id}: {e}")))?;
        let (cmd_tx, cmd_rx) = mpsc::channel::<Command>();
        let cpu = (config.server.pin_cpus && !cpus.is_empty()).then(|| cpus[id % cpus.len()]);
        let config = config.clone();
        let ready_tx = ready_tx.clone();
        let uring_opts = uring_opts.clone();
        let access_log = access_log.clone();
        let boot_tx = boot_tx.clone();
        let (go_tx, go_rx) = mpsc::channel::<bool>();
        go.push(go_tx);
        let thread = thread::Builder::new()
            .name(format!("ringway-shard-{id}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    // Best effort: a container may forbid affinity changes; the shard still runs.
                    if let Err(e) = pin_current_thread(cpu) {
                        tracing::warn!(shard = id, cpu, "could not pin shard to its CPU: {e}");
                    }
                }
                let multishot_accept = uring_opts.multishot_accept;
                let rt = match boot(id, driver, &uring_opts) {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = boot_tx.send(Err(e));
                        return;
                    }
                };
                let _ = boot_tx.send(Ok(()));
                if go_rx.recv() != Ok(true) {
                    return; // Another shard failed; this one never served.
                }
                rt.block_on(run_shard(
                    id,
                    multishot_accept,
                    access_log,
                    driver,
                    config,
                    conn_limit,
                    shard_listeners,
                    ctl_shard,
                    cmd_rx,
                    ready_tx,
                ));
            })
            .map_err(|e| StartError::new(format!("cannot start shard thread {id}: {e}")))?;
        threads.push(thread);
        control.shards.push((ctl_main, cmd_tx));
    }
    drop(ready_tx);
    drop(boot_tx);
    let mut failure = None;
    for _ in 0..shards {
        let failed = match boot_rx.recv() {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(_) => StartError::new("a shard thread exited during start-up"),
        };
        failure.get_or_insert(failed);
    }
    if let Some(e) = failure {
        drop(go);
        for t in threads {
            let _ = t.join();
        }
        return Err(e);
    }
    for g in &go {
        let _ = g.send(true);
    }
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(msg)) => return Err(StartError::new(msg)),
            Err(_) => return Err(StartError::new("a shard thread exited during start-up")),
        }
    }
    Ok(ShardSet {
        threads,
        control,
        driver,
        listen: resolved,
    })
}

impl ShardSet {
    /// Number of shards.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Whether there are no shards (never true for a started set).
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// A handle the admin thread uses to scrape and reload without owning the threads.
    ///
    /// # Errors
    /// The control sockets cannot be duplicated (out of fds).
    pub fn controller(&self) -> Result<Controller, StartError> {
        let mut shards = Vec::with_capacity(self.control.shards.len());
        for (ctl, tx) in &self.control.shards {
            let ctl = ctl
                .try_clone()
                .map_err(|e| StartError::new(format!("control socket: {e}")))?;
            shards.push((ctl, tx.clone()));
        }
        Ok(Controller { shards })
    }

    /// Tells every shard to drain, then waits up to `deadline` for their threads to finish.
    ///
    /// Returns the number of shards that did not finish in time.
    pub fn drain_and_join(self, deadline: Instant) -> usize {
        self.control.broadcast(|_| Command::Drain);
        let mut late = 0;
        for t in self.threads {
            // Bounded wait: poll `is_finished` rather than block past the deadline.
            while !t.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                late += 1;
            }
        }
        late
    }
}

/// Sends commands to shards from another thread (the admin listener, the signal loop).
#[derive(Debug)]
pub struct Controller {
    shards: Vec<(StdUnixStream, mpsc::Sender<Command>)>,
}

impl Controller {
    /// Number of shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Whether there are no shards.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Sends `make(i)` to shard `i`, for every shard.
    pub fn broadcast(&self, mut make: impl FnMut(usize) -> Command) {
        for (i, (ctl, tx)) in self.shards.iter().enumerate() {
            if tx.send(make(i)).is_ok() {
                // One byte wakes the control task; if the socket buffer is full the shard already
                // has wake-ups pending, so a failed write loses nothing.
                let _ = (&*ctl).write(&[1]);
            }
        }
    }

    /// Sends `make(tx)` to every shard and gathers one reply per shard, waiting at most `limit`
    /// in all; shards that do not answer in time are missing from the result.
    fn ask_all<T>(&self, limit: Duration, make: impl Fn(mpsc::Sender<T>) -> Command) -> Vec<T> {
        let (tx, rx) = mpsc::channel();
        self.broadcast(|_| make(tx.clone()));
        drop(tx);
        let deadline = Instant::now() + limit;
        let mut out = Vec::with_capacity(self.shards.len());
        while out.len() < self.shards.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(r) => out.push(r),
                Err(_) => break,
            }
        }
        out
    }

    /// Gathers every shard's counters, waiting at most `limit` in all.
    pub fn scrape(&self, limit: Duration) -> Vec<ShardSnapshot> {
        let mut out = self.ask_all(limit, Command::Scrape);
        out.sort_by_key(|s| s.shard);
        out
    }

    /// Applies `config` on every shard; one result per shard (an error for each that did not
    /// answer within `limit`).
    pub fn reload(&self, config: Arc<Config>, limit: Duration) -> Vec<Result<(), String>> {
        let mut out = self.ask_all(limit, |tx| Command::Reload(config.clone(), tx));
        let missing = self.shards.len() - out.len();
        out.extend((0..missing).map(|_| Err("a shard did not answer in time".to_string())));
        out
    }
}

/// The body of one shard thread.
/// Builds shard `id`'s event loop and, on uring, runs the start-up self-test through it.
fn boot(id: usize, driver: Driver, uring_opts: &UringOptions) -> Result<Runtime, StartError> {
    let rt = Runtime::new(driver, uring_opts).map_err(|e| match driver {
        Driver::Uring => StartError::uring(format!("shard {id}: {e}")),
        Driver::Epoll => StartError::new(format!("shard {id}: {e}")),
    })?;
    if driver == Driver::Uring {
        rt.block_on(rio::selftest::run(uring_opts.multishot_accept))
            .map_err(|f| StartError::uring(format!("shard {id}: {f}")))?;
    }
    Ok(rt)
}

#[allow(clippy::too_many_arguments)]
async fn run_shard(
    id: usize,
    multishot_accept: bool,
    access_log: Option<AccessLogWriter>,
    driver: Driver,
    config: Arc<Config>,
    conn_limit: usize,
    std_listeners: Vec<std::net::TcpListener>,
    ctl: StdUnixStream,
    commands: mpsc::Receiver<Command>,
    ready: mpsc::Sender<Result<usize, String>>,
) {
    let setup = (|| -> Result<(Vec<Listener>, Stream, Gateway), String> {
        let mut listeners = Vec::with_capacity(std_listeners.len());
        for l in std_listeners {
            listeners
                .push(Listener::from_std(l).map_err(|e| format!("shard {id}: listener: {e}"))?);
        }
        let ctl = Stream::from_std_unix(ctl).map_err(|e| format!("shard {id}: control: {e}"))?;
        let gateway = Gateway::build(config.clone(), None);
        Ok((listeners, ctl, gateway))
    })();
    let (listeners, ctl, gateway) = match setup {
        Ok(v) => v,
        Err(msg) => {
            let _ = ready.send(Err(msg));
            return;
        }
    };
    let free_list_max = config.server.free_list_max;
    // This thread's request-state slots (crate::io::recycle) follow the same bound.
    crate::io::recycle::set_max_spare(free_list_max);
    crate::io::set_write_spares(free_list_max);
    let local = ShardLocal::new(id, access_log.map(ShardAccessLog::new), free_list_max);
    let shard = Rc::new(Shard::new(
        id,
        driver,
        local,
        Live::new(gateway),
        conn_limit,
    ));
    let _ = ready.send(Ok(id));
    drop(ready);

    rio::spawn(control_loop(shard.clone(), ctl, commands));
    if shard.local().access_log().is_some() {
        // The only periodic shard work is flushing the access log; without one, no timer.
        rio::spawn(housekeeping(shard.clone()));
    }
    let multishot = multishot_accept;
    let accept_loops: Vec<_> = listeners
        .into_iter()
        .map(|l| Box::pin(accept_loop(shard.clone(), l, multishot)))
        .collect();
    futures_util::future::join_all(accept_loops).await;

    // Draining: the listeners are closed; wait for open connections to finish, bounded by the
    // drain timeout (the main thread also stops waiting then).
    let deadline = Instant::now() + config.timeouts.drain;
    while shard.open_connections() > 0 && Instant::now() < deadline {
        rio::sleep(Duration::from_millis(10)).await;
    }
    if let Some(log) = shard.local().access_log() {
        log.flush();
    }
    if shard.open_connections() > 0 {
        tracing::warn!(
            shard = id,
            open = shard.open_connections(),
            "drain timeout passed with connections still open; closing them"
        );
    }
}

/// Below this many free client slots a shard accepts one connection at a time. An armed
/// multishot accept lets the kernel take every incoming connection, an fd each, however many the
/// shard may still hold: near the limit that would eat the fds kept for backends (see
/// [`fds::client_conn_limit`]) and park accepted clients nobody serves.
const MULTISHOT_MIN_HEADROOM: usize = 64;

/// Accepts connections until the shard drains.
///
/// At the shard's connection limit it stops accepting until a connection closes (new clients
/// wait in the listen backlog); an accept error (`EMFILE` despite the fd reserve, `ENFILE`,
/// `ENOBUFS`) backs off 50 ms. Neither case spins. With `multishot`, a multishot accept is kept
/// armed only while more than [`MULTISHOT_MIN_HEADROOM`] slots are free (re-armed above twice
/// that): dropping it cancels it, closing the few connections the kernel may have accepted and
/// not yet handed over, which can only happen at that switch, near the limit.
async fn accept_loop(shard: Rc<Shard>, listener: Listener, multishot: bool) {
    let mut multi = multishot && shard.headroom() > MULTISHOT_MIN_HEADROOM;
    let mut incoming = listener.incoming(multi);
    // Bounded: each pass accepts one connection, waits for a close, backs off, or returns.
    loop {
        let room = shard.headroom();
        let want_multi = multishot
            && if multi {
                room > MULTISHOT_MIN_HEADROOM
            } else {
                room > 2 * MULTISHOT_MIN_HEADROOM
            };
        if want_multi != multi {
            multi = want_multi;
            incoming = listener.incoming(multi);
        }
        if room == 0 {
            // Over the limit: wait for a close instead of accepting (no busy loop).
            let ev = LocalEvent::new();
            shard.wake_below_limit(ev.clone());
            match select(
                Box::pin(ev.wait()),
                Box::pin(shard.local().draining().wait()),
            )
            .await
            {
                Either::Left(_) => continue,
                Either::Right(_) => return,
            }
        }
        let accepted = match select(
            Box::pin(incoming.next()),
            Box::pin(shard.local().draining().wait()),
        )
        .await
        {
            Either::Left((r, _)) => r,
            Either::Right(_) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                shard.local().metrics().accepted();
                shard.conn_opened();
                let client = crate::client::Client::new(shard.local().clone(), stream, peer);
                // The task is this future, nothing around it: its size is an idle
                // connection's memory cost (tests/resources.rs).
                let open = OpenConn(shard.clone());
                rio::spawn(crate::conn::serve(client, shard.gateway().clone(), open));
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: back off so a persistent error never spins the CPU;
                // established connections keep being served meanwhile.
                tracing::warn!(shard = shard.id, "accept failed: {e}; retrying in 50ms");
                rio::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Counts a client connection as open while it lives (dropped when its task ends).
struct OpenConn(Rc<Shard>);

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.conn_closed();
    }
}

/// Once a second: flushes the access log (pools sweep their own idle connections).
async fn housekeeping(shard: Rc<Shard>) {
    loop {
        let tick = rio::sleep(Duration::from_secs(1));
        match select(Box::pin(tick), Box::pin(shard.local().draining().wait())).await {
            Either::Left(_) => {}
            Either::Right(_) => return,
        }
        if let Some(log) = shard.local().access_log() {
            log.flush();
        }
    }
}

/// Applies commands from the main thread; woken by a byte on the control socket.
async fn control_loop(shard: Rc<Shard>, mut ctl: Stream, commands: mpsc::Receiver<Command>) {
    let mut buf = BytesMut::with_capacity(64);
    loop {
        buf.clear();
        let (res, b) = ctl.read(buf).await;
        buf = b;
        let closed = !matches!(res, Ok(n) if n > 0);
        while let Ok(cmd) = commands.try_recv() {
            match cmd {
                Command::Drain => {
                    tracing::info!(shard = shard.id, "draining");
                    shard.local().draining().set();
                }
                Command::Scrape(reply) => {
                    let pools = shard.gateway().current().pool_gauges();
                    let metrics = shard.local().metrics();
                    let mut snap = metrics.snapshot(pools, shard.open_connections());
                    snap.free_lists = shard.local().free_lists().to_vec();
                    let _ = reply.send(snap);
                }
                Command::Reload(config, reply) => {
                    let old = shard.gateway().current();
                    shard.gateway().replace(Gateway::build(config, Some(&old)));
                    let _ = reply.send(Ok(()));
                }
            }
        }
        if closed {
            // The main thread is gone: drain so the process can finish.
            shard.local().draining().set();
            return;
        }
    }
}
