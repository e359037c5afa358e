//! The io_uring driver: compio's proactor, one ring per shard.
//!
//! Ring setup flags are asked for where the kernel has them and dropped one by one where it does
//! not (DEFER_TASKRUN 6.1, SINGLE_ISSUER 6.0, COOP_TASKRUN/TASKRUN_FLAG 5.19), so the same binary
//! runs from 5.10 up. compio cancels an operation whose future is dropped; the buffer stays owned
//! by the driver until the kernel's completion arrives, so a cancelled read can never write into
//! freed memory.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use compio::BufResult;
use compio::driver::op::{Recv, RecvFlags};
use compio::driver::{ProactorBuilder, ToSharedFd};
use compio::io::{AsyncRead, AsyncReadExt, AsyncReadManaged, AsyncWrite, AsyncWriteExt};
use futures_util::StreamExt;

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
    /// IORING_SETUP_SQPOLL: a kernel thread per ring submits for us (opt-in: it burns CPU while
    /// busy, idling after [`SQPOLL_IDLE`]). Excludes DEFER_TASKRUN.
    pub sqpoll: bool,
}

/// The smallest ring [`Runtime::new`] shrinks to under a tight RLIMIT_MEMLOCK: a shard keeps a
/// few operations in flight per connection, and compio submits early when the queue is full, so
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
    /// Idle reads that found the ring empty (ENOBUFS) and used an ordinary buffer.
    static RING_EXHAUSTED: Cell<u64> = const { Cell::new(0) };
}

/// Whether this thread checks pooled connections with a peek on the ring.
pub fn pool_peek_on_ring() -> bool {
    POOL_PEEK.get()
}

/// How many idle reads on this thread found the buffer ring empty.
pub fn buffer_ring_exhausted() -> u64 {
    RING_EXHAUSTED.get()
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
            sqpoll: false,
        }
    }
}

/// One shard's compio runtime.
pub struct Runtime {
    /// Taken out and dropped if the shard's future panics (see [`Runtime::block_on`]).
    rt: RefCell<Option<compio::runtime::Runtime>>,
}

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
            let mut pb = ProactorBuilder::new();
            pb.capacity(capacity)
                .buffer_pool_size(
                    std::num::NonZeroU16::new(opts.buffer_ring_entries.max(1)).expect("nonzero"),
                )
                .buffer_pool_buffer_len(BUFFER_RING_BUF_LEN)
                .coop_taskrun(coop)
                .taskrun_flag(coop)
                .single_issuer(single)
                .defer_taskrun(defer);
            if opts.sqpoll {
                pb.sqpoll_idle(SQPOLL_IDLE);
            }
            match compio::runtime::RuntimeBuilder::new()
                .with_proactor(pb)
                .build()
            {
                Ok(rt) => {
                    if !rt.driver_type().is_iouring() {
                        return Err(io::Error::other(
                            "compio did not select its io_uring driver; io_uring is unavailable",
                        ));
                    }
                    tracing::debug!(coop, single, defer, capacity, "io_uring ring set up");
                    BUFFER_RING.set(opts.buffer_ring && register_buffer_ring(&rt));
                    POOL_PEEK.set(opts.pool_peek);
                    return Ok(Runtime {
                        rt: RefCell::new(Some(rt)),
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no ring setup attempted")))
    }

    /// compio's own `block_on` loop, plus ringway's timer wheel: every wait is bounded by the
    /// wheel's next deadline as well as compio's, and due timers fire after each wait.
    ///
    /// # Panics
    /// A panic in `fut` or a task is passed on, after the runtime (and with it every task and
    /// its sockets) is dropped outside the unwind: compio drops no task future while the thread
    /// is panicking, so connections would otherwise be leaked open.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        let out = {
            let guard = self.rt.borrow();
            let rt = guard
                .as_ref()
                .expect("the runtime is only taken after a panic");
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_loop(rt, fut)))
        };
        match out {
            Ok(out) => out,
            Err(panic) => {
                drop(self.rt.borrow_mut().take());
                std::panic::resume_unwind(panic)
            }
        }
    }
}

/// compio's `block_on` loop with the timer wheel added (see [`Runtime::block_on`]).
fn run_loop<F: Future>(rt: &compio::runtime::Runtime, fut: F) -> F::Output {
    rt.enter(|| {
        let waker = rt.waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        let mut due = Vec::new();
        // Bounded by the future: the shard's main future ends when it drains.
        loop {
            if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                rt.run();
                return out;
            }
            let more_tasks = rt.run();
            let wait = if more_tasks {
                Some(Duration::ZERO)
            } else {
                // The clock is read only when a timer is armed.
                let wheel = TIMERS
                    .with_borrow(Wheel::next_deadline)
                    .map(|d| d.saturating_duration_since(std::time::Instant::now()));
                match (wheel, rt.current_timeout()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            };
            rt.poll_with(wait);
            fire_due_timers(&mut due);
        }
    })
}

thread_local! {
    /// This shard's timers (see `timer.rs`); advanced only by [`Runtime::block_on`].
    static TIMERS: RefCell<Wheel> = RefCell::new(Wheel::new(std::time::Instant::now()));
}

/// Fires the timers that are due, waking their tasks outside the wheel's borrow.
fn fire_due_timers(due: &mut Vec<std::task::Waker>) {
    TIMERS.with_borrow_mut(|w| {
        if w.armed() > 0 {
            w.advance(std::time::Instant::now(), due);
        }
    });
    due.drain(..).for_each(std::task::Waker::wake);
}

/// Registers the shard's provided-buffer ring (compio sets it up on first use; doing it here
/// turns a kernel refusal into one log line at start instead of an error on a client read).
fn register_buffer_ring(rt: &compio::runtime::Runtime) -> bool {
    match rt.buffer_pool() {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(
                "io_uring buffer ring unavailable ({e}); idle reads use ordinary buffers"
            );
            false
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

pub fn spawn<F: Future<Output = ()> + 'static>(fut: F) {
    compio::runtime::spawn(fut).detach();
}

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

/// A blocking-mode, close-on-exec stream socket, as compio's own socket op makes it: the ring
/// does the waiting, so the fd needs no O_NONBLOCK.
fn new_socket(
    domain: socket2::Domain,
    protocol: Option<socket2::Protocol>,
) -> io::Result<socket2::Socket> {
    socket2::Socket::new(domain, socket2::Type::STREAM, protocol)
}

/// A TCP or Unix stream on the ring.
pub enum Stream {
    Tcp(compio::net::TcpStream),
    Unix(compio::net::UnixStream),
}

impl Stream {
    /// Connects over the ring (IORING_OP_CONNECT, 5.5) a socket made by a plain `socket(2)`.
    ///
    /// Not compio's `TcpStream::connect`: that creates the socket with IORING_OP_SOCKET (5.19),
    /// and on older kernels its blocking fallback stores the new fd twice (once in the op's
    /// `call`, again in `set_result`), so the first owner closes it and every connect fails with
    /// EBADF. Seen on Debian bullseye's 5.10.262 (issue 15). One syscall per new backend
    /// connection costs nothing next to the handshake.
    pub async fn connect_tcp(addr: SocketAddr) -> io::Result<Stream> {
        let sock = new_socket(
            socket2::Domain::for_address(addr),
            Some(socket2::Protocol::TCP),
        )?;
        let sock = compio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(sock))?;
        let s = sock.connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Stream::Tcp(s))
    }

    /// Connects a Unix stream socket over the ring; see [`Stream::connect_tcp`] for why the
    /// socket itself comes from `socket(2)`.
    pub async fn connect_unix(path: &Path) -> io::Result<Stream> {
        use std::os::fd::{FromRawFd, IntoRawFd};
        let sock = new_socket(socket2::Domain::UNIX, None)?;
        // SAFETY: `into_raw_fd` hands over sole ownership of a freshly created, open socket fd.
        let sock = unsafe { compio::net::UnixSocket::from_raw_fd(sock.into_raw_fd()) };
        sock.connect(path).await.map(Stream::Unix)
    }

    pub fn from_std_unix(s: std::os::unix::net::UnixStream) -> io::Result<Stream> {
        compio::net::UnixStream::from_std(s).map(Stream::Unix)
    }

    pub async fn read(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        // `append` reads into the spare capacity after `len` and advances `len` by what arrived.
        let BufResult(res, buf) = match self {
            Stream::Tcp(s) => s.append(buf).await,
            Stream::Unix(s) => s.append(buf).await,
        };
        (res, buf)
    }

    /// Waits for data holding no buffer: the kernel takes one from the shard's provided-buffer
    /// ring when bytes arrive; they are copied into `buf` (grown to `min_cap` spare bytes) and the
    /// ring buffer goes straight back. Without a ring (kernels before 5.19, or switched off), or
    /// when it ran dry (`ENOBUFS`), a poll for readability (IORING_OP_POLL_ADD, 5.1) and then an
    /// ordinary read: still no buffer while idle, for one more operation per read.
    pub async fn read_idle(
        &mut self,
        mut buf: BytesMut,
        min_cap: usize,
    ) -> (io::Result<usize>, BytesMut) {
        if BUFFER_RING.get() {
            // len 0: as many bytes as the ring buffer holds.
            let res = match self {
                Stream::Tcp(s) => s.read_managed(0).await,
                Stream::Unix(s) => s.read_managed(0).await,
            };
            match res {
                Ok(Some(b)) if !b.is_empty() => {
                    buf.reserve(min_cap.max(b.len()));
                    buf.extend_from_slice(&b);
                    return (Ok(b.len()), buf);
                }
                Ok(_) => return (Ok(0), buf),
                // compio maps ENOBUFS (every ring buffer in use) to ResourceBusy.
                Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {
                    RING_EXHAUSTED.set(RING_EXHAUSTED.get() + 1);
                }
                Err(e) => return (Err(e), buf),
            }
        }
        let ready = match self {
            Stream::Tcp(s) => s.to_poll_fd(),
            Stream::Unix(s) => s.to_poll_fd(),
        };
        if let Err(e) = async { ready?.read_ready().await }.await {
            return (Err(e), buf);
        }
        if buf.capacity() - buf.len() < min_cap {
            buf.reserve(min_cap);
        }
        self.read(buf).await
    }

    pub async fn write_all(&mut self, buf: Bytes) -> io::Result<()> {
        let BufResult(res, _) = match self {
            Stream::Tcp(s) => s.write_all(buf).await,
            Stream::Unix(s) => s.write_all(buf).await,
        };
        res
    }

    pub async fn write_vectored_all(&mut self, mut bufs: Vec<Bytes>) -> io::Result<()> {
        // One sendmsg takes at most UIO_MAXIOV (1024) iovecs, else EMSGSIZE: send in slices.
        while !bufs.is_empty() {
            let rest = if bufs.len() > MAX_IOVECS {
                bufs.split_off(MAX_IOVECS)
            } else {
                Vec::new()
            };
            let BufResult(res, _) = match self {
                Stream::Tcp(s) => s.write_vectored_all(bufs).await,
                Stream::Unix(s) => s.write_vectored_all(bufs).await,
            };
            res?;
            bufs = rest;
        }
        Ok(())
    }

    pub async fn tunnel(
        &mut self,
        other: &mut Stream,
        linger: Duration,
        moved: &super::TunnelBytes,
    ) -> io::Result<()> {
        let (there, back) = (&moved.there, &moved.back);
        // `&TcpStream`/`&UnixStream` implement compio's AsyncRead and AsyncWrite, so both
        // directions run at once on shared references, each with its own owned buffer.
        match (&*self, &*other) {
            (Stream::Tcp(a), Stream::Tcp(b)) => {
                super::join_directions(pump(a, b, there), pump(b, a, back), linger).await
            }
            (Stream::Tcp(a), Stream::Unix(b)) => {
                super::join_directions(pump(a, b, there), pump(b, a, back), linger).await
            }
            (Stream::Unix(a), Stream::Tcp(b)) => {
                super::join_directions(pump(a, b, there), pump(b, a, back), linger).await
            }
            (Stream::Unix(a), Stream::Unix(b)) => {
                super::join_directions(pump(a, b, there), pump(b, a, back), linger).await
            }
        }
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().ok(),
            Stream::Unix(_) => None,
        }
    }

    /// A one-byte `recv(MSG_PEEK | MSG_DONTWAIT)` submitted as an io_uring RECV: the kernel runs
    /// it inline during the loop's next `io_uring_enter`. `Ok(0)` is a FIN, `Ok(1)` a waiting
    /// byte (not consumed), `WouldBlock` nothing: with MSG_DONTWAIT in the SQE the kernel
    /// completes with -EAGAIN instead of arming a poll (REQ_F_NOWAIT, since RECV exists, 5.6).
    ///
    /// Built here rather than with compio's `TcpStream::peek`, which sets
    /// IORING_RECVSEND_POLL_FIRST after a recv that left the socket empty: a POLL_FIRST recv with
    /// MSG_DONTWAIT completes with -EAGAIN without looking at the socket, so it would call every
    /// connection quiet.
    pub async fn peek_on_ring(&self) -> io::Result<usize> {
        // The op holds a `SharedFd` (a counted reference to the socket), not a raw fd: if this
        // future is dropped and the stream closed while the op is in flight, the socket stays
        // open until the kernel's completion arrives, so the SQE never names a closed or reused fd.
        let fd = match self {
            Stream::Tcp(s) => s.to_shared_fd(),
            Stream::Unix(s) => s.to_shared_fd(),
        };
        let op = Recv::new(fd, [0u8; 1], RecvFlags::PEEK | RecvFlags::DONTWAIT);
        let BufResult(res, _) = compio::runtime::submit(op).await;
        res
    }
}

/// One direction of a tunnel: reads `from` until EOF, writing everything to `to`, then shuts
/// down `to`'s write side so the half-close reaches the other peer.
async fn pump<R: AsyncRead, W: AsyncWrite>(
    mut from: R,
    mut to: W,
    moved: &Cell<u64>,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(super::TUNNEL_BUF);
    loop {
        buf.clear();
        let BufResult(res, b) = from.read(buf).await;
        buf = b;
        match res {
            Ok(0) => {
                // The peer may already be gone; its own direction reports that.
                let _ = to.shutdown().await;
                return Ok(());
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let BufResult(res, b) = to.write_all(buf).await;
        buf = b;
        res?;
        // Counted once written, as the epoll driver does: the access log's bytes are bytes sent.
        moved.set(moved.get() + buf.len() as u64);
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// A listener on the ring.
pub struct Listener {
    inner: compio::net::TcpListener,
}

impl Listener {
    pub fn from_std(l: std::net::TcpListener) -> io::Result<Listener> {
        compio::net::TcpListener::from_std(l).map(|inner| Listener { inner })
    }

    pub fn incoming(&self, multishot: bool) -> Incoming<'_> {
        Incoming {
            listener: &self.inner,
            multi: multishot.then(|| self.inner.incoming()),
        }
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr().ok()
    }
}

/// Accepts on the ring: one multishot accept kept armed, or one-shot accepts.
pub struct Incoming<'a> {
    listener: &'a compio::net::TcpListener,
    multi: Option<compio::net::TcpIncoming<'a>>,
}

impl Incoming<'_> {
    pub async fn next(&mut self) -> io::Result<(Stream, Option<SocketAddr>)> {
        if let Some(multi) = &mut self.multi {
            match multi.next().await {
                Some(Ok(s)) => {
                    s.set_nodelay(true)?;
                    let peer = s.peer_addr().ok();
                    return Ok((Stream::Tcp(s), peer));
                }
                // A kernel without multishot accept answers EINVAL: use one-shot accepts from now on.
                Some(Err(e)) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::info!("multishot accept refused by the kernel; using one-shot accept");
                    self.multi = None;
                }
                Some(Err(e)) => return Err(e),
                None => self.multi = None,
            }
        }
        let (s, peer) = self.listener.accept().await?;
        s.set_nodelay(true)?;
        Ok((Stream::Tcp(s), Some(peer)))
    }
}
