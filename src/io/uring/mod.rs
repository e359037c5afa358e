//! The io_uring driver: ringway's own, on the `io-uring` crate, one ring per shard.
//!
//! - `ring.rs`: the ring, the operation slab (`user_data` = slab index), submission, the wait
//!   (a TIMEOUT SQE, no EXT_ARG), completion dispatch, and the rule that an operation's buffers
//!   and socket outlive a dropped future until the kernel's final completion;
//! - `exec.rs`: the task executor (a slab of tasks, integer wakers, a FIFO run queue);
//! - `bufring.rs`: the provided-buffer ring idle reads select from;
//! - `stream.rs`: streams, listeners and their operations.
//!
//! Ring setup flags are asked for where the kernel has them and dropped one by one where it does
//! not (DEFER_TASKRUN 6.1, SINGLE_ISSUER 6.0, COOP_TASKRUN/TASKRUN_FLAG 5.19), so the same binary
//! runs from 5.10 up. All of the driver's `unsafe` is in this directory.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::time::Duration;

use super::timer::{TimerKey, Wheel};

/// The kernel's UIO_MAXIOV: most iovecs one `sendmsg` accepts.
pub const MAX_IOVECS: usize = 1024;

/// Which optional io_uring features the uring driver may use; each is still used only where the
/// kernel has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UringOptions {
    /// Ring size (submission queue entries).
    pub capacity: u32,
    /// IORING_SETUP_COOP_TASKRUN + TASKRUN_FLAG (5.19).
    pub coop_taskrun: bool,
    /// IORING_SETUP_SINGLE_ISSUER (6.0).
    pub single_issuer: bool,
    /// IORING_SETUP_DEFER_TASKRUN (6.1; needs SINGLE_ISSUER).
    pub defer_taskrun: bool,
    /// Multishot accept (5.19).
    pub multishot_accept: bool,
    /// A provided-buffer ring for reads on idle connections (5.19).
    pub buffer_ring: bool,
    /// Buffers in that ring (a power of two).
    pub buffer_ring_entries: u16,
    /// The pooled-connection reuse check goes through the ring ([`Stream::peek_on_ring`]).
    pub pool_peek: bool,
    /// A write and the read after it go to the kernel as one linked chain (`IOSQE_IO_LINK`, 6.0
    /// here): a backend request and its answer's first read, a keep-alive answer and the read
    /// of the client's next request. One wake-up per pair.
    pub linked_ops: bool,
    /// Slots in the ring's table of registered files (`files.rs`); 0: none, every operation
    /// names its socket's fd.
    pub registered_files: u32,
    /// IORING_SETUP_SQPOLL: a kernel thread per ring submits for us (opt-in: it burns CPU while
    /// busy, idling after [`SQPOLL_IDLE`]). Excludes DEFER_TASKRUN.
    pub sqpoll: bool,
}

/// The smallest ring [`Runtime::new`] shrinks to under a tight RLIMIT_MEMLOCK: a shard keeps a
/// few operations in flight per connection, and the driver submits early when the queue is full, so
/// a small ring costs extra `io_uring_enter` calls, not correctness.
pub const MIN_RING_ENTRIES: u32 = 64;

/// How long an SQPOLL kernel thread spins without work before it sleeps.
pub const SQPOLL_IDLE: Duration = Duration::from_millis(50);

/// Size of each ring buffer: a typical request head fits in one.
pub const BUFFER_RING_BUF_LEN: usize = 4096;

thread_local! {
    /// Whether this thread's ring has a registered provided-buffer ring.
    static BUFFER_RING: Cell<bool> = const { Cell::new(false) };
    /// Whether this thread's reuse checks go through the ring.
    static POOL_PEEK: Cell<bool> = const { Cell::new(true) };
    /// Whether this thread links writes to the reads after them (see `UringOptions::linked_ops`).
    static LINKED_OPS: Cell<bool> = const { Cell::new(false) };
    /// Idle reads that found the ring empty (ENOBUFS) and used an ordinary buffer.
    static RING_EXHAUSTED: Cell<u64> = const { Cell::new(0) };
}

/// Whether this thread checks pooled connections with a peek on the ring.
pub fn pool_peek_on_ring() -> bool {
    POOL_PEEK.get()
}

/// Whether this thread links a write to the read after it ([`Stream::write_vectored_then_read`]).
pub fn linked_ops() -> bool {
    LINKED_OPS.get()
}

/// Sets how many spare SENDMSG iovec boxes this thread keeps.
pub fn set_iovec_spares(max: usize) {
    iovecs::set_spares(max);
}

/// This thread's spare SENDMSG iovec boxes: (spare, misses) (zero on epoll).
pub fn iovec_stats() -> (u64, u64) {
    iovecs::stats()
}

/// This thread's driver counters: task polls, SQEs queued, CQEs reaped.
pub fn driver_counters() -> DriverCounters {
    let (sqes, cqes) = ring::counters();
    let (files_in_use, file_slots) = files::usage();
    DriverCounters {
        task_polls: exec::task_polls(),
        sqes,
        cqes,
        files_in_use: u64::from(files_in_use),
        file_slots: u64::from(file_slots),
    }
}

/// What a shard's uring driver has done so far (all zero on epoll).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverCounters {
    /// Tasks polled (a task is polled once when spawned, then once per wake-up).
    pub task_polls: u64,
    /// SQEs queued.
    pub sqes: u64,
    /// CQEs reaped.
    pub cqes: u64,
    /// Sockets in the ring's file table now (a gauge).
    pub files_in_use: u64,
    /// Slots in that table (0: none).
    pub file_slots: u64,
}

/// The most slots a ring's file table gets (5.10's limit).
pub const MAX_FILE_SLOTS: u32 = files::MAX_SLOTS;

/// This thread's registered-file slots: (in use, in the table); zeros without a table.
pub fn registered_files() -> (u32, u32) {
    files::usage()
}

/// How many idle reads on this thread found the buffer ring empty.
pub fn buffer_ring_exhausted() -> u64 {
    RING_EXHAUSTED.get()
}

impl UringOptions {
    /// These options with every feature `kernel` lacks turned off (no probe: all off), so the
    /// ring asks `io_uring_setup` only for flags the kernel really accepted in the probe.
    pub fn limited_to(self, kernel: Option<&super::probe::UringFeatures>) -> UringOptions {
        let has = |f: fn(&super::probe::UringFeatures) -> bool| kernel.is_some_and(f);
        UringOptions {
            coop_taskrun: self.coop_taskrun && has(|f| f.coop_taskrun && f.taskrun_flag),
            single_issuer: self.single_issuer && has(|f| f.single_issuer),
            defer_taskrun: self.defer_taskrun && has(|f| f.defer_taskrun),
            multishot_accept: self.multishot_accept && has(|f| f.multishot_accept),
            buffer_ring: self.buffer_ring && has(|f| f.buffer_ring),
            linked_ops: self.linked_ops && has(|f| f.linked_send_recv),
            registered_files: if has(|f| f.registered_files) {
                self.registered_files
            } else {
                0
            },
            ..self
        }
    }
}

impl Default for UringOptions {
    fn default() -> Self {
        UringOptions {
            capacity: 4096,
            coop_taskrun: true,
            single_issuer: true,
            defer_taskrun: true,
            multishot_accept: true,
            buffer_ring: true,
            // Each buffer is held only from the completion that filled it until its bytes are
            // copied out, so the ring needs about one buffer per connection whose data arrives
            // in one loop turn; when it runs dry the read falls back to an ordinary one.
            buffer_ring_entries: 256,
            pool_peek: true,
            linked_ops: true,
            registered_files: 1024,
            sqpoll: false,
        }
    }
}

/// One shard's ring and executor. Both live in thread-locals (the ring in `ring.rs`, the tasks
/// in `exec.rs`); this value owns them: dropping it drops every task, waits for the operations
/// they leave in flight, and closes the ring.
pub struct Runtime {
    /// Thread-bound (the ring and tasks are this thread's).
    _not_send: std::marker::PhantomData<std::rc::Rc<()>>,
}

/// Woken tasks polled per loop turn before completions are reaped again: a busy shard still
/// submits and reaps regularly.
const TASK_BUDGET: usize = 256;

impl Runtime {
    /// Sets up the ring with the best flags this kernel accepts, at the largest size up to
    /// `opts.capacity` that the locked-memory limit allows.
    ///
    /// Kernels whose io_uring predates 5.12 charge ring memory to RLIMIT_MEMLOCK, often 64 KiB
    /// for ordinary users and in containers, and a 4096-entry ring needs ~300 KiB. So on ENOMEM
    /// the ring is halved, down to [`MIN_RING_ENTRIES`], with one warning saying how to raise the
    /// limit; only a ring that cannot be set up even then is an error.
    ///
    /// # Errors
    /// io_uring refused (the message names the errno and its likely cause).
    pub fn new(opts: &UringOptions) -> io::Result<Runtime> {
        let mut capacity = opts.capacity.max(MIN_RING_ENTRIES);
        loop {
            match Self::with_capacity(opts, capacity) {
                Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && capacity > MIN_RING_ENTRIES => {
                    capacity /= 2;
                }
                Err(e) => return Err(uring_error(e)),
                Ok(rt) => {
                    if capacity < opts.capacity {
                        tracing::warn!(
                            entries = capacity,
                            wanted = opts.capacity,
                            "io_uring ring shrunk to fit RLIMIT_MEMLOCK ({}); raise it for full \
                             size (systemd LimitMEMLOCK=, ulimit -l)",
                            super::probe::memlock_limit()
                                .map_or("unlimited".to_string(), |l| format!("{} KiB", l / 1024))
                        );
                    }
                    return Ok(rt);
                }
            }
        }
    }

    /// One ring of `capacity` entries, falling back setup flag by setup flag, newest first (an
    /// older kernel answers EINVAL to an unknown flag). Errors are returned raw.
    fn with_capacity(opts: &UringOptions, capacity: u32) -> io::Result<Runtime> {
        let attempts = [
            (
                opts.coop_taskrun,
                opts.single_issuer,
                // The kernel refuses DEFER_TASKRUN together with SQPOLL.
                opts.defer_taskrun && opts.single_issuer && !opts.sqpoll,
            ),
            (opts.coop_taskrun, opts.single_issuer, false),
            (opts.coop_taskrun, false, false),
            (false, false, false),
        ];
        let mut last_err = None;
        for (coop, single, defer) in attempts {
            let mut b = io_uring::IoUring::builder();
            if coop {
                b.setup_coop_taskrun().setup_taskrun_flag();
            }
            if single {
                b.setup_single_issuer();
            }
            if defer {
                b.setup_defer_taskrun();
            }
            if opts.sqpoll {
                b.setup_sqpoll(SQPOLL_IDLE.as_millis() as u32);
            }
            match b.build(capacity) {
                Ok(uring) => {
                    tracing::debug!(coop, single, defer, capacity, "io_uring ring set up");
                    let mut r = ring::Ring::new(uring);
                    r.bufs = if opts.buffer_ring {
                        register_buffer_ring(&r, opts.buffer_ring_entries)
                    } else {
                        None
                    };
                    let has_bufs = r.bufs.is_some();
                    ring::install(r)?;
                    // Only once the ring is this thread's: a ring that failed to install must not
                    // change a running one's settings, nor replace its file table (which names
                    // the ring's fd).
                    BUFFER_RING.set(has_bufs);
                    POOL_PEEK.set(opts.pool_peek);
                    LINKED_OPS.set(opts.linked_ops);
                    if opts.registered_files > 0
                        && let Err(e) =
                            ring::with_ring(|r| files::register(r.uring(), opts.registered_files))
                    {
                        tracing::warn!(
                            slots = opts.registered_files,
                            "io_uring file table unavailable ({e}); operations name plain fds"
                        );
                    }
                    return Ok(Runtime {
                        _not_send: std::marker::PhantomData,
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no ring setup attempted")))
    }

    /// Runs `fut` on this thread's ring: poll what was woken, submit and wait, reap the
    /// completions (waking their tasks), fire due timers; again until `fut` is ready.
    ///
    /// # Panics
    /// A panic in `fut` or a task is passed on, after every task (and with it its sockets) was
    /// dropped and the ring closed: connections must not be leaked open by a dead shard.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_loop(fut))) {
            Ok(out) => out,
            Err(panic) => {
                shutdown();
                std::panic::resume_unwind(panic)
            }
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        shutdown();
    }
}

/// Drops every task, waits for their operations' final completions, closes the ring.
fn shutdown() {
    NOW.set(None);
    exec::drop_all_tasks();
    ring::uninstall();
}

thread_local! {
    /// The clock as read once per loop turn, after the wait: deadlines and durations on this
    /// shard are computed from it (as nginx's `ngx_current_msec`), so a turn reads the clock once
    /// however many timers its tasks arm.
    static NOW: Cell<Option<std::time::Instant>> = const { Cell::new(None) };
}

/// This turn's clock (see `NOW`); the real clock outside a running loop.
pub fn now() -> std::time::Instant {
    NOW.get().unwrap_or_else(std::time::Instant::now)
}

/// The loop of [`Runtime::block_on`].
fn run_loop<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut due = Vec::new();
    let mut first = true;
    // The wheel first (its first use reads the clock), then the turn's clock: a deadline taken
    // from `NOW` must never be behind the wheel's own time, or it would fire at once.
    TIMERS.with_borrow(Wheel::armed);
    NOW.set(Some(std::time::Instant::now()));
    // Bounded by the future: the shard's main future ends when it drains.
    loop {
        if let std::task::Poll::Ready(out) = exec::poll_main(fut.as_mut(), first) {
            return out;
        }
        first = false;
        let more = exec::run_tasks(TASK_BUDGET);
        let res = ring::with_ring(|r| {
            let res = if more || exec::has_work() {
                r.submit();
                Ok(())
            } else {
                // The clock is read only when a timer is armed.
                r.wait(TIMERS.with_borrow(Wheel::next_deadline))
            };
            r.reap();
            res
        });
        if let Err(e) = res {
            panic!("io_uring wait failed: {e}");
        }
        let now = std::time::Instant::now();
        NOW.set(Some(now));
        fire_due_timers(now, &mut due);
    }
}

thread_local! {
    /// This shard's timers (see `timer.rs`); advanced only by [`Runtime::block_on`].
    static TIMERS: RefCell<Wheel> = RefCell::new(Wheel::new(std::time::Instant::now()));
}

/// Fires the timers that are due, waking their tasks outside the wheel's borrow.
fn fire_due_timers(now: std::time::Instant, due: &mut Vec<std::task::Waker>) {
    TIMERS.with_borrow_mut(|w| {
        if w.armed() > 0 {
            w.advance(now, due);
        }
    });
    due.drain(..).for_each(std::task::Waker::wake);
}

/// Registers the shard's provided-buffer ring; a kernel refusal is one log line at start instead
/// of an error on a client read.
fn register_buffer_ring(r: &ring::Ring, entries: u16) -> Option<bufring::BufRing> {
    match bufring::BufRing::register(r.uring(), entries, BUFFER_RING_BUF_LEN) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(
                "io_uring buffer ring unavailable ({e}); idle reads use ordinary buffers"
            );
            None
        }
    }
}

/// Wraps a ring setup error so it names io_uring, the errno and the likely cause.
fn uring_error(e: io::Error) -> io::Error {
    let cause = match e.raw_os_error() {
        Some(libc::EPERM) => {
            "io_uring is blocked: a seccomp profile (Docker's default blocks it) or sysctl kernel.io_uring_disabled"
        }
        Some(libc::ENOSYS) => "the kernel has no io_uring, or a seccomp profile answers ENOSYS",
        Some(libc::ENOMEM) => {
            "no memory for even the smallest ring: RLIMIT_MEMLOCK too low (kernels whose io_uring \
             predates 5.12 charge rings to it) or the memory cgroup is full; raise the limit \
             (systemd LimitMEMLOCK=, ulimit -l) or run --io epoll"
        }
        _ => "see `ringway probe`",
    };
    io::Error::new(e.kind(), format!("io_uring setup failed: {e}: {cause}"))
}

pub use exec::spawn;

pub fn sleep_until(deadline: std::time::Instant) -> Sleep {
    Sleep {
        deadline,
        key: None,
    }
}

/// A timer on the shard's wheel: armed at its first poll, cancelled when dropped.
pub struct Sleep {
    deadline: std::time::Instant,
    key: Option<TimerKey>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = &mut *self;
        TIMERS.with_borrow_mut(|w| match this.key {
            Some(key) => w.poll(key, cx.waker()),
            None => match w.insert(this.deadline, cx.waker()) {
                Some(key) => {
                    this.key = Some(key);
                    std::task::Poll::Pending
                }
                None => std::task::Poll::Ready(()),
            },
        })
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            // At thread exit the wheel may already be gone; nothing is left to cancel then.
            let _ = TIMERS.try_with(|w| w.borrow_mut().remove(key));
        }
    }
}

mod bufring;
mod exec;
mod files;
mod iovecs;
mod ring;
mod stream;

pub use stream::{Incoming, Listener, Stream};

#[cfg(test)]
mod tests;
