//! A per-shard keepalive pool for one endpoint: a LIFO stack of idle connections, a cap on open
//! connections, and a bounded FIFO of requests waiting for a slot.
//!
//! Shard-local (`Rc`, `Cell`, `RefCell`): no locks. A checked-out [`PooledConn`] holds a `Weak`
//! to its pool and returns itself on drop only when the request marked it reusable; anything else
//! (an error, a timeout, a truncated body) closes it, so a connection with unread bytes is never
//! reused.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use crate::config::PoolConfig;
use crate::io::{self as rio, LocalEvent, Stream};
use crate::upstream::Endpoint;

/// Why no connection could be had.
#[derive(Debug)]
pub enum CheckoutError {
    /// Connecting failed (refused, unreachable, reset): the endpoint's fault.
    Connect(io::Error),
    /// Connecting took longer than `upstream_connect`.
    ConnectTimeout,
    /// All `max_connections` were busy for `queue_timeout`, or the wait queue was full.
    Exhausted,
}

impl fmt::Display for CheckoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckoutError::Connect(e) => write!(f, "connect failed: {e}"),
            CheckoutError::ConnectTimeout => f.write_str("connect timed out"),
            CheckoutError::Exhausted => f.write_str("connection pool exhausted"),
        }
    }
}

/// Longest pause between two sweeps of a pool's idle connections: an idle connection the backend
/// closed (FIN) or that expired gives its fd back within about this long, even if nothing checks
/// the pool out.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Shortest pause between two sweeps, so a burst of expiries never becomes a busy loop.
const SWEEP_MIN: Duration = Duration::from_millis(10);

struct Idle {
    stream: Stream,
    /// When this idle connection must be closed: pool `idle_timeout`, or earlier if the backend
    /// said `Keep-Alive: timeout=N`.
    expires: Instant,
    /// When it was checked in (its last response had just been read to its end).
    since: Instant,
}

struct Waiter {
    ready: LocalEvent,
    /// Set when the waiter gave up (queue timeout, client gone): a wake-up must go to the next one.
    abandoned: Cell<bool>,
}

/// The pool of one endpoint on one shard.
pub struct Pool {
    endpoint: Endpoint,
    cfg: PoolConfig,
    connect_timeout: Duration,
    idle: RefCell<Vec<Idle>>,
    /// Open connections: idle + checked out + being connected.
    open: Cell<usize>,
    waiters: RefCell<VecDeque<Rc<Waiter>>>,
    opened_total: Cell<u64>,
    /// A sweeper task is running for this pool (it runs while idle connections exist).
    sweeping: Cell<bool>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("endpoint", &self.endpoint)
            .field("open", &self.open.get())
            .field("idle", &self.idle.borrow().len())
            .finish()
    }
}

impl Pool {
    /// An empty pool for `endpoint`.
    pub fn new(endpoint: Endpoint, cfg: PoolConfig, connect_timeout: Duration) -> Rc<Pool> {
        Rc::new(Pool {
            endpoint,
            cfg,
            connect_timeout,
            idle: RefCell::new(Vec::new()),
            open: Cell::new(0),
            waiters: RefCell::new(VecDeque::new()),
            opened_total: Cell::new(0),
            sweeping: Cell::new(false),
        })
    }

    /// The endpoint this pool connects to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The pool's settings.
    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    /// Whether this pool can serve `cfg` for `endpoint` unchanged (reload keeps such pools).
    pub fn same_settings(
        &self,
        endpoint: &Endpoint,
        cfg: &PoolConfig,
        connect_timeout: Duration,
    ) -> bool {
        &self.endpoint == endpoint && &self.cfg == cfg && self.connect_timeout == connect_timeout
    }

    /// Idle connections right now.
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().len()
    }

    /// Open connections right now (idle + in use + connecting).
    pub fn open_count(&self) -> usize {
        self.open.get()
    }

    /// Connections this pool has opened since it was created.
    pub fn opened_total(&self) -> u64 {
        self.opened_total.get()
    }

    /// Takes a connection: the newest quiet idle one, else a new one if under `max_connections`,
    /// else waits in FIFO order up to `queue_timeout`.
    ///
    /// Returns the connection and whether it was reused (a reused connection may have been closed
    /// by the backend in the meantime; see the retry rule in `proxy`).
    ///
    /// # Errors
    /// [`CheckoutError`]: connect failure or timeout (the endpoint's fault), or exhaustion (503).
    ///
    /// # Cancellation
    /// Dropping the future gives up its place in the queue; a connection being opened is closed.
    pub async fn checkout(self: &Rc<Self>) -> Result<PooledConn, CheckoutError> {
        self.checkout_inner(false).await
    }

    /// Like [`Pool::checkout`] but never reuses an idle connection: the retry after a stale
    /// pooled connection failed must not land on another stale one.
    ///
    /// # Errors
    /// As [`Pool::checkout`].
    pub async fn checkout_fresh(self: &Rc<Self>) -> Result<PooledConn, CheckoutError> {
        self.checkout_inner(true).await
    }

    async fn checkout_inner(self: &Rc<Self>, fresh: bool) -> Result<PooledConn, CheckoutError> {
        let deadline = crate::io::now() + self.cfg.queue_timeout;
        loop {
            if !fresh && let Some(stream) = self.pop_idle().await {
                return Ok(PooledConn::new(self, stream, true));
            }
            if fresh && self.open.get() >= self.cfg.max_connections && self.idle_count() > 0 {
                // Make room for the fresh connection by closing the oldest idle one.
                drop(self.idle.borrow_mut().remove(0));
                self.release_slot();
            }
            if self.open.get() < self.cfg.max_connections {
                return self.connect_new().await;
            }
            if self.waiters.borrow().len() >= self.cfg.max_waiters {
                return Err(CheckoutError::Exhausted);
            }
            let waiter = Rc::new(Waiter {
                ready: LocalEvent::new(),
                abandoned: Cell::new(false),
            });
            self.waiters.borrow_mut().push_back(waiter.clone());
            let guard = AbandonOnDrop(&waiter);
            let woke = rio::timeout_at(deadline, waiter.ready.wait()).await.is_ok();
            drop(guard);
            if !woke {
                return Err(CheckoutError::Exhausted);
            }
        }
    }

    /// Pops the newest idle connection that is neither expired nor readable (stray bytes or FIN
    /// mean the backend is closing or misbehaving: evict, never reuse). A connection checked in
    /// less than `pool.reuse_check_after` ago is taken without the readable check.
    ///
    /// The readable check is [`Stream::quiet_for_reuse`]: on io_uring it rides in the loop's next
    /// submission instead of costing a syscall, so this awaits. Meanwhile the connection is out of
    /// the idle stack and keeps its slot; if this future is dropped, the connection is closed and
    /// the slot freed.
    async fn pop_idle(&self) -> Option<Stream> {
        loop {
            let idle = self.idle.borrow_mut().pop()?;
            let slot = SlotGuard(self);
            let now = crate::io::now();
            // Checked in moments ago, right after its response was read whole and nothing
            // followed: a backend that closes or writes that soon is vanishingly rare, and the
            // check would cost a completion and a wake-up (uring) or a syscall (epoll) on
            // nearly every reuse under load (the cached connection nginx pops is not checked
            // either; its close handler only sees what the last epoll_wait saw).
            let fresh = now.saturating_duration_since(idle.since) < self.cfg.reuse_check_after;
            if idle.expires > now && (fresh || idle.stream.quiet_for_reuse().await) {
                std::mem::forget(slot);
                return Some(idle.stream);
            }
            // Closed before the slot is released, so a waiter woken by it finds the fd gone.
            drop(idle);
            drop(slot);
        }
    }

    async fn connect_new(self: &Rc<Self>) -> Result<PooledConn, CheckoutError> {
        self.open.set(self.open.get() + 1);
        // The slot is released on every failure path, including cancellation.
        let slot = SlotGuard(self);
        let res = match &self.endpoint {
            Endpoint::Tcp(addr) => rio::connect_tcp(*addr, self.connect_timeout).await,
            Endpoint::Unix(path) => rio::connect_unix(path, self.connect_timeout).await,
        };
        match res {
            Ok(stream) => {
                std::mem::forget(slot);
                self.opened_total.set(self.opened_total.get() + 1);
                Ok(PooledConn::new(self, stream, false))
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(CheckoutError::ConnectTimeout),
            Err(e) => Err(CheckoutError::Connect(e)),
        }
    }

    /// Gives a clean connection back (LIFO). Over `max_idle`, it is closed instead.
    ///
    /// `keep_alive_for` is the backend's `Keep-Alive: timeout=N`: the connection is dropped a
    /// little before the backend's own timer fires, never after `idle_timeout`.
    fn checkin(self: &Rc<Self>, stream: Stream, keep_alive_for: Option<Duration>) {
        let ttl = match keep_alive_for {
            // Close a little before the backend's own keep-alive timer to avoid the race where
            // the backend closes just as we reuse.
            Some(t) => t
                .saturating_sub(Duration::from_millis(500))
                .min(self.cfg.idle_timeout),
            None => self.cfg.idle_timeout,
        };
        if self.idle.borrow().len() >= self.cfg.max_idle || ttl.is_zero() {
            drop(stream);
            self.release_slot();
            return;
        }
        let now = crate::io::now();
        self.idle.borrow_mut().push(Idle {
            stream,
            expires: now + ttl,
            since: now,
        });
        self.start_sweeper();
        self.wake_one();
    }

    /// Starts the task that closes idle connections once they expire or turn readable, unless
    /// one runs already. It holds only a `Weak` to the pool and ends when no idle connection is
    /// left or the pool is gone (reload), so an unused pool costs no timer.
    fn start_sweeper(self: &Rc<Self>) {
        if self.sweeping.replace(true) {
            return;
        }
        let pool = Rc::downgrade(self);
        rio::spawn(async move {
            // Bounded: each pass sleeps at least SWEEP_MIN, and the task ends once the pool has
            // no idle connection (none can be added without a request) or is dropped.
            loop {
                let Some(wait) = pool.upgrade().map(|p| p.next_sweep()) else {
                    return;
                };
                rio::sleep(wait).await;
                let Some(p) = pool.upgrade() else {
                    return;
                };
                p.sweep();
                if p.idle_count() == 0 {
                    p.sweeping.set(false);
                    return;
                }
            }
        });
    }

    /// How long the sweeper sleeps: until the earliest expiry, at most [`SWEEP_EVERY`].
    fn next_sweep(&self) -> Duration {
        let now = crate::io::now();
        self.idle
            .borrow()
            .iter()
            .map(|i| i.expires.saturating_duration_since(now))
            .min()
            .unwrap_or(SWEEP_EVERY)
            .clamp(SWEEP_MIN, SWEEP_EVERY)
    }

    /// A connection closed: its slot is free for a waiter.
    fn release_slot(&self) {
        self.open.set(self.open.get().saturating_sub(1));
        self.wake_one();
    }

    fn wake_one(&self) {
        let mut waiters = self.waiters.borrow_mut();
        while let Some(w) = waiters.pop_front() {
            if !w.abandoned.get() {
                w.ready.set();
                return;
            }
        }
    }

    /// Closes idle connections whose time is up, and those the backend closed or wrote to
    /// meanwhile (the same check as before a reuse). Called by the pool's sweeper task.
    pub fn sweep(&self) {
        let now = crate::io::now();
        let mut closed = 0;
        self.idle.borrow_mut().retain(|i| {
            let keep = i.expires > now && i.stream.is_quiet();
            if !keep {
                closed += 1;
            }
            keep
        });
        for _ in 0..closed {
            self.release_slot();
        }
    }

    /// Closes every idle connection (reload dropped this pool, or the shard is stopping).
    pub fn close_idle(&self) {
        let n = {
            let mut idle = self.idle.borrow_mut();
            let n = idle.len();
            idle.clear();
            n
        };
        for _ in 0..n {
            self.release_slot();
        }
    }
}

struct SlotGuard<'a>(&'a Pool);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.0.release_slot();
    }
}

struct AbandonOnDrop<'a>(&'a Rc<Waiter>);

impl Drop for AbandonOnDrop<'_> {
    fn drop(&mut self) {
        self.0.abandoned.set(true);
    }
}

/// A connection checked out of a [`Pool`].
///
/// Dropped without [`PooledConn::release_reusable`], it is closed and its slot freed.
pub struct PooledConn {
    stream: Option<Stream>,
    pool: Weak<Pool>,
    reused: bool,
    keep: Option<Option<Duration>>,
}

impl fmt::Debug for PooledConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConn")
            .field("reused", &self.reused)
            .finish()
    }
}

impl PooledConn {
    fn new(pool: &Rc<Pool>, stream: Stream, reused: bool) -> PooledConn {
        PooledConn {
            stream: Some(stream),
            pool: Rc::downgrade(pool),
            reused,
            keep: None,
        }
    }

    /// Whether this connection carried an earlier request (it may have gone stale meanwhile).
    pub fn is_reused(&self) -> bool {
        self.reused
    }

    /// The stream.
    pub fn stream(&mut self) -> &mut Stream {
        // Invariant: `stream` is Some until drop.
        self.stream
            .as_mut()
            .expect("pooled stream present until drop")
    }

    /// The stream, shared (for checks such as [`Stream::is_quiet`]).
    pub fn stream_ref(&self) -> &Stream {
        // Invariant: `stream` is Some until drop.
        self.stream
            .as_ref()
            .expect("pooled stream present until drop")
    }

    /// Marks the exchange complete and the connection clean: on drop it returns to the pool,
    /// kept at most `keep_alive_for` (the backend's `Keep-Alive: timeout`) if given.
    pub fn release_reusable(mut self, keep_alive_for: Option<Duration>) {
        self.keep = Some(keep_alive_for);
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        match self.pool.upgrade() {
            Some(pool) => match self.keep {
                Some(ka) => pool.checkin(stream, ka),
                None => {
                    drop(stream);
                    pool.release_slot();
                }
            },
            None => drop(stream),
        }
    }
}
