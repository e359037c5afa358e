//! THE SEAM: owned-buffer streams, listeners, connect, spawn and timers over two drivers.
//!
//! - `uring`: completion-based io_uring, ringway's own driver on the `io-uring` crate (see
//!   `uring/`, `kernel-notes.md`).
//! - `epoll`: readiness-based tokio `current_thread`, one runtime per shard (see `epoll.rs`).
//!
//! Everything above this module is driver-agnostic: it sees [`Stream`], [`Listener`],
//! [`connect_tcp`]/[`connect_unix`], [`spawn`], [`sleep`] and [`timeout`], and never names compio,
//! tokio or io_uring. Dispatch is a `match` on an enum, not a trait object: one predictable branch
//! per operation, no allocation.
//!
//! Buffers are owned: `read` takes a `BytesMut` and gives it back, because with io_uring the kernel
//! writes into the buffer after the call returns. A timed-out or dropped operation must not leave
//! a live read behind that later swallows bytes: callers close a connection after any timeout on it.
//!
//! This module must never know HTTP.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

mod epoll;
pub mod event;
pub mod probe;
pub mod recycle;
pub mod selftest;
pub mod spares;
mod timeout;
mod timer;
mod uring;

pub use event::LocalEvent;
pub use recycle::{Recycled, SlotStats, boxed, boxed_with};
pub use timeout::{Elapsed, Timeout, timeout, timeout_at, until};
pub use uring::{
    DriverCounters, MAX_FILE_SLOTS, MAX_IOVECS, UringOptions, buffer_ring_exhausted,
    driver_counters, iovec_stats, registered_files,
};

/// The buffers of one vectored write: inline up to four (a head and a few body pieces, what
/// nearly every write has), so building one allocates nothing.
pub type Pieces = smallvec::SmallVec<[Bytes; 4]>;

/// Larger piece vectors are freed, not kept (a huge answer must not pin its vector for good).
const SPARE_PARTS_CAP: usize = 1024;

thread_local! {
    /// Spare piece vectors ([`take_parts`]), bounded by `server.free_list_max`.
    static PARTS: spares::Spares<Vec<Bytes>> = const { spares::Spares::new(recycle::DEFAULT_MAX_SPARE) };
}

/// This thread's spare piece vectors: (spare, misses), for the metrics.
pub fn parts_stats() -> (u64, u64) {
    PARTS.try_with(spares::Spares::stats).unwrap_or_default()
}

/// Sets how many spare piece vectors and iovec boxes this thread keeps (the shard's
/// `server.free_list_max`).
pub fn set_write_spares(max: usize) {
    let _ = PARTS.try_with(|p| p.set_max(max));
    uring::set_iovec_spares(max);
}

/// An empty vector for the pieces of a long write (a fan-out answer), with room for `cap`:
/// from this thread's spares when one is left. The drivers give it back once the write has
/// taken its pieces (a [`Pieces`] made from it keeps its heap buffer), so a warm shard's
/// answers allocate no vector.
pub fn take_parts(cap: usize) -> Vec<Bytes> {
    let mut v = PARTS
        .try_with(spares::Spares::take)
        .ok()
        .flatten()
        .unwrap_or_default();
    v.reserve(cap);
    v
}

/// Gives back the vector of a spilled [`Pieces`] (its pieces are dropped).
fn give_parts(bufs: Pieces) {
    if !bufs.spilled() {
        return;
    }
    let mut v = bufs.into_vec();
    if v.capacity() > SPARE_PARTS_CAP {
        return;
    }
    v.clear();
    let _ = PARTS.try_with(|p| p.give(v));
}

/// Which I/O driver a shard runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// io_uring (completion-based), ringway's own driver.
    Uring,
    /// epoll (readiness-based) through tokio's current-thread runtime.
    Epoll,
}

impl Driver {
    /// The name used on the command line, in config and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Uring => "uring",
            Driver::Epoll => "epoll",
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Driver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "uring" => Ok(Driver::Uring),
            "epoll" => Ok(Driver::Epoll),
            other => Err(format!(
                "unknown driver `{other}` (expected uring or epoll)"
            )),
        }
    }
}

thread_local! {
    /// The driver of the runtime running on this thread; set by [`Runtime::block_on`].
    static CURRENT: Cell<Option<Driver>> = const { Cell::new(None) };
}

/// The driver of the shard this code runs on.
///
/// # Panics
/// Outside a [`Runtime::block_on`]: that is a programming error, not an input error.
pub fn current_driver() -> Driver {
    CURRENT
        .with(Cell::get)
        .expect("ringway io used outside a shard runtime")
}

/// The driver of the shard event loop this thread runs, if any (inside [`Runtime::block_on`]).
/// Reads a `const` thread-local and never allocates, so a counting global allocator may call it
/// (the allocation test counts what each driver's shard threads allocate).
pub fn shard_driver() -> Option<Driver> {
    CURRENT.try_with(Cell::get).ok().flatten()
}

/// One shard's event loop.
pub enum Runtime {
    /// One io_uring and its task executor.
    Uring(uring::Runtime),
    /// tokio current-thread runtime plus the `LocalSet` that runs `!Send` tasks.
    Epoll(epoll::Runtime),
}

impl Runtime {
    /// Builds the event loop for `driver` on the calling thread.
    ///
    /// # Errors
    /// For `Uring`, when io_uring cannot be set up (seccomp, sysctl, memlock): the error names
    /// io_uring and the errno.
    pub fn new(driver: Driver, opts: &UringOptions) -> io::Result<Runtime> {
        match driver {
            Driver::Uring => uring::Runtime::new(opts).map(Runtime::Uring),
            Driver::Epoll => epoll::Runtime::new().map(Runtime::Epoll),
        }
    }

    /// The driver this runtime runs.
    pub fn driver(&self) -> Driver {
        match self {
            Runtime::Uring(_) => Driver::Uring,
            Runtime::Epoll(_) => Driver::Epoll,
        }
    }

    /// Runs `fut` to completion on this thread, with [`spawn`] available to it.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        let prev = CURRENT.with(|c| c.replace(Some(self.driver())));
        let out = match self {
            Runtime::Uring(rt) => rt.block_on(fut),
            Runtime::Epoll(rt) => rt.block_on(fut),
        };
        CURRENT.with(|c| c.set(prev));
        out
    }
}

/// Spawns a detached task on the current shard.
///
/// The task runs on this thread only; it is dropped (cancelled) if the runtime stops first.
pub fn spawn<F: Future<Output = ()> + 'static>(fut: F) {
    match current_driver() {
        Driver::Uring => uring::spawn(fut),
        Driver::Epoll => epoll::spawn(fut),
    }
}

/// The shard's clock: on `uring` read once per loop turn (deadlines and request durations come
/// from it, as nginx's cached time), on `epoll` the real clock.
pub fn now() -> Instant {
    match CURRENT.with(Cell::get) {
        Some(Driver::Uring) => uring::now(),
        _ => Instant::now(),
    }
}

/// Waits for `dur`.
pub async fn sleep(dur: Duration) {
    sleep_until(deadline_after(dur)).await
}

/// `dur` from now; a duration too long for `Instant` means about 30 years (never, in practice).
fn deadline_after(dur: Duration) -> Instant {
    let now = now();
    now.checked_add(dur)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}

/// Waits until `deadline`.
pub async fn sleep_until(deadline: Instant) {
    match current_driver() {
        Driver::Uring => uring::sleep_until(deadline).await,
        // Boxed (a recycled slot) for the same reason as the epoll idle read: tokio's timer entry
        // is four times the uring wheel's, and every deadline would carry it.
        Driver::Epoll => boxed(epoll::sleep_until(deadline)).await,
    }
}

/// What a peek at a stream found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peek {
    /// Nothing to read, connection open.
    Nothing,
    /// Bytes are waiting.
    Data,
    /// FIN or an error (reset).
    Closed,
}

impl Peek {
    /// Classifies what a one-byte non-blocking `recv(MSG_PEEK)` returned, syscall or io_uring.
    fn from_recv(res: io::Result<usize>) -> Peek {
        match res {
            Ok(0) => Peek::Closed,
            Ok(_) => Peek::Data,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Peek::Nothing,
            Err(_) => Peek::Closed,
        }
    }
}

/// A connected byte stream: TCP or Unix, on either driver.
pub enum Stream {
    /// io_uring stream.
    Uring(uring::Stream),
    /// epoll stream.
    Epoll(epoll::Stream),
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Stream({}, fd {})", self.driver(), self.as_raw_fd())
    }
}

impl Stream {
    /// The driver this stream belongs to.
    pub fn driver(&self) -> Driver {
        match self {
            Stream::Uring(_) => Driver::Uring,
            Stream::Epoll(_) => Driver::Epoll,
        }
    }

    /// Reads into the spare capacity of `buf` (after its current length) and returns it.
    ///
    /// `Ok(0)` means the peer closed its write side (EOF). If `buf` has no spare capacity, a small
    /// amount is reserved first so a read never spins on a full buffer.
    pub async fn read(&mut self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        if buf.capacity() == buf.len() {
            buf.reserve(4096);
        }
        match self {
            Stream::Uring(s) => s.read(buf).await,
            Stream::Epoll(s) => s.read(buf).await,
        }
    }

    /// Like [`Stream::read`], for a connection with nothing buffered that may stay silent for
    /// long (a keepalive client between requests): no receive buffer is held while waiting.
    /// io_uring takes one from the shard's provided-buffer ring when bytes arrive (5.19+, copied
    /// out and given back at once); epoll waits for readiness first. The buffer is asked of
    /// `take` only once data is there (a shard's spare buffer, see `Client`), and grown to
    /// `min_cap` spare bytes; on an error or EOF the buffer returned may be a new empty one.
    pub async fn read_idle(
        &mut self,
        take: impl FnOnce() -> BytesMut,
        min_cap: usize,
    ) -> (io::Result<usize>, BytesMut) {
        match self {
            Stream::Uring(s) => s.read_idle(take, min_cap).await,
            // Boxed (a recycled slot): tokio's readiness wait is three times the size of the
            // uring one, and inline it would size every idle connection's wait on both drivers.
            Stream::Epoll(s) => boxed(s.read_idle(take, min_cap)).await,
        }
    }

    /// Holds `bufs` back to be written linked with the next [`Stream::read_idle`] (uring with
    /// linked operations and a buffer ring: the answer to a keep-alive request and the wait for
    /// the next one are one completion, one wake-up). Any other operation on the stream writes
    /// them first, and a dropped stream still sends them. Returns `bufs` when they cannot wait
    /// (epoll, or those features off): the caller writes them now.
    ///
    /// A held-back write is bounded by the idle read's deadline (`client_idle`), as a client
    /// write is by its own.
    pub fn defer_write(&mut self, bufs: Pieces) -> Option<Pieces> {
        match self {
            Stream::Uring(s) => s.defer_write(bufs),
            Stream::Epoll(_) => Some(bufs),
        }
    }

    /// Writes a write held back by [`Stream::defer_write`] now, if there is one.
    pub async fn flush_deferred(&mut self) -> io::Result<()> {
        match self {
            Stream::Uring(s) => s.flush_deferred().await,
            Stream::Epoll(_) => Ok(()),
        }
    }

    /// Writes all of `buf`.
    pub async fn write_all(&mut self, buf: Bytes) -> io::Result<()> {
        match self {
            Stream::Uring(s) => s.write_all(buf).await,
            Stream::Epoll(s) => s.write_all(buf).await,
        }
    }

    /// Writes all of `bufs`, in order, with vectored writes (one `writev`/`sendmsg` when the
    /// socket takes it all). A [`Pieces`] of up to four buffers costs no allocation; a `Vec`
    /// converts without copying.
    pub async fn write_vectored_all(&mut self, bufs: impl Into<Pieces>) -> io::Result<()> {
        let bufs = bufs.into();
        match self {
            Stream::Uring(s) => s.write_vectored_all(bufs).await,
            Stream::Epoll(s) => s.write_vectored_all(bufs).await,
        }
    }

    /// Writes all of `bufs`, then reads once into the spare capacity of `buf`: on `uring` with
    /// linked operations, as one chain the kernel runs back to back, with one completion (one
    /// task wake-up) for both. Returns the write's result, the read's (`None` if no read was
    /// made: the write failed, or the driver only wrote; the caller then reads as usual), and
    /// the buffer.
    ///
    /// # Cancellation
    /// Dropping the future (a timeout) loses `buf` with the read, as [`Stream::read`] does, and
    /// leaves unknown how much was written: the connection must be closed.
    pub fn write_vectored_then_read(
        &mut self,
        bufs: impl Into<Pieces>,
        buf: BytesMut,
    ) -> impl Future<Output = (io::Result<()>, Option<io::Result<usize>>, BytesMut)> + '_ {
        use futures_util::future::Either;
        // Built eagerly, not in an async fn: the future then holds the driver's future only,
        // not the 136-byte pieces as well.
        let bufs = bufs.into();
        match self {
            Stream::Uring(s) => Either::Left(s.write_vectored_then_read(bufs, buf)),
            // Readiness has nothing to link: the write alone (boxed: tokio's write is the
            // larger state), the read left to the caller.
            Stream::Epoll(s) => {
                let write = boxed(s.write_vectored_all(bufs));
                Either::Right(async move { (write.await, None, buf) })
            }
        }
    }

    /// What a non-blocking `recv(MSG_PEEK)` of one byte sees; consumes nothing.
    fn peek(&self) -> Peek {
        let mut byte = 0u8;
        // SAFETY: `byte` is a valid 1-byte buffer for the duration of the call; the fd is open
        // because `self` owns it. MSG_PEEK consumes nothing, so the stream's state is unchanged.
        let n = unsafe {
            libc::recv(
                self.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        Peek::from_recv(if n >= 0 {
            Ok(n as usize)
        } else {
            Err(io::Error::last_os_error())
        })
    }

    /// True if nothing can be read right now and the peer has not closed: the check before an idle
    /// pooled connection is reused (one non-blocking `recv(MSG_PEEK)`; no bytes are consumed).
    /// Unsolicited bytes or a FIN both make a pooled connection unusable.
    pub fn is_quiet(&self) -> bool {
        self.peek() == Peek::Nothing
    }

    /// [`Stream::is_quiet`], made the cheapest way this driver can: the check before an idle
    /// pooled connection is reused.
    ///
    /// The same one-byte `recv(MSG_PEEK | MSG_DONTWAIT)`, with the same answer: false for
    /// unsolicited bytes, a FIN or a reset, as the socket stands when the kernel runs it. On
    /// `uring` it goes to the kernel as an io_uring RECV in the loop's next `io_uring_enter`,
    /// which the loop makes anyway: no syscall of its own, one loop turn of latency. On `epoll`
    /// it is the plain syscall (tokio's cached readiness can be stale either way, so it is no
    /// exact substitute).
    ///
    /// # Cancellation
    /// Dropping the future is harmless: the peek consumes nothing, and on `uring` the in-flight
    /// operation holds its own reference to the socket (see `uring::Stream::peek_on_ring`).
    pub async fn quiet_for_reuse(&self) -> bool {
        let peek = match self {
            Stream::Uring(s) if uring::pool_peek_on_ring() => {
                Peek::from_recv(s.peek_on_ring().await)
            }
            // `io_uring.pool_peek = false`, and epoll.
            _ => self.peek(),
        };
        peek == Peek::Nothing
    }

    /// True if the peer has closed or reset the connection (a pending FIN or error), checked
    /// without consuming any byte; pipelined bytes waiting to be read do not count as closed.
    pub fn peer_closed(&self) -> bool {
        self.peek() == Peek::Closed
    }

    /// Half-closes the write side (`shutdown(SHUT_WR)`): the peer reads EOF after what was sent,
    /// while this side can still read (lingering close). A plain syscall on both drivers: it
    /// never blocks.
    ///
    /// # Errors
    /// The socket is not connected.
    pub fn shutdown_write(&self) -> io::Result<()> {
        // SAFETY: shutdown(2) on an fd `self` owns; it takes no pointers.
        if unsafe { libc::shutdown(self.as_raw_fd(), libc::SHUT_WR) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The peer's TCP address (None for Unix sockets).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Stream::Uring(s) => s.peer_addr(),
            Stream::Epoll(s) => s.peer_addr(),
        }
    }

    /// Closes the connection with a RST instead of a FIN (SO_LINGER 0), for connections abandoned
    /// mid-exchange where the peer must not mistake a truncation for a complete message.
    pub fn set_reset_on_close(&self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: `linger` is a valid, initialised struct of the size passed; the fd is open.
        unsafe {
            libc::setsockopt(
                self.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }

    /// Relays bytes both ways between `self` and `other` until both directions have ended, for a
    /// connection that switched protocols (HTTP `101`, RFC 9110 §15.2.2). `moved` counts the bytes
    /// moved `self` → `other` and `other` → `self` as they go (an idle watchdog reads it).
    ///
    /// When one side reaches EOF, the other side's write half is shut down (a half-close passes
    /// through the tunnel) and the other direction goes on for at most `linger`: a peer that never
    /// answers the half-close cannot hold the tunnel open forever. An error on either direction
    /// ends the tunnel at once. Both streams must belong to the same driver (they always do: a
    /// shard has one driver).
    ///
    /// # Errors
    /// The first read or write error of either direction; `InvalidInput` for streams of different
    /// drivers.
    ///
    /// # Cancellation
    /// Dropping the future stops both directions; close both streams afterwards.
    pub async fn tunnel(
        &mut self,
        other: &mut Stream,
        linger: Duration,
        moved: &TunnelBytes,
    ) -> io::Result<()> {
        match (self, other) {
            (Stream::Uring(a), Stream::Uring(b)) => a.tunnel(b, linger, moved).await,
            (Stream::Epoll(a), Stream::Epoll(b)) => a.tunnel(b, linger, moved).await,
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "tunnel between streams of different drivers",
            )),
        }
    }

    /// Converts a connected std Unix stream (e.g. one end of a socketpair) into a shard stream.
    ///
    /// # Errors
    /// If the runtime cannot register the fd.
    pub fn from_std_unix(s: std::os::unix::net::UnixStream) -> io::Result<Stream> {
        match current_driver() {
            Driver::Uring => uring::Stream::from_std_unix(s).map(Stream::Uring),
            Driver::Epoll => epoll::Stream::from_std_unix(s).map(Stream::Epoll),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Uring(s) => s.as_raw_fd(),
            Stream::Epoll(s) => s.as_raw_fd(),
        }
    }
}

/// Bytes a [`Stream::tunnel`] has moved each way so far; the caller watches it for idleness.
#[derive(Debug, Default)]
pub struct TunnelBytes {
    /// From the stream `tunnel` is called on to the other.
    pub there: Cell<u64>,
    /// Back from the other stream.
    pub back: Cell<u64>,
}

impl TunnelBytes {
    /// Both directions together.
    pub fn total(&self) -> u64 {
        self.there.get() + self.back.get()
    }
}

/// Bytes one direction of a [`Stream::tunnel`] moves per read.
const TUNNEL_BUF: usize = 16 * 1024;

/// Runs the two directions of a tunnel: done when both end, when one fails (the error), or
/// `linger` after the first one ended cleanly.
async fn join_directions<A, B>(a: A, b: B, linger: Duration) -> io::Result<()>
where
    A: Future<Output = io::Result<()>>,
    B: Future<Output = io::Result<()>>,
{
    let (a, b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (first, rest) = match futures_util::future::select(a, b).await {
        futures_util::future::Either::Left((res, rest)) => {
            (res, futures_util::future::Either::Left(rest))
        }
        futures_util::future::Either::Right((res, rest)) => {
            (res, futures_util::future::Either::Right(rest))
        }
    };
    first?;
    // The peer that sent EOF got it passed on; the other one has `linger` to finish its side.
    timeout(linger, rest).await.unwrap_or(Ok(()))
}

/// Connects to a TCP address within `limit`, with TCP_NODELAY set.
///
/// # Errors
/// The connect error, or `TimedOut` when `limit` passes first.
pub async fn connect_tcp(addr: SocketAddr, limit: Duration) -> io::Result<Stream> {
    let fut = async {
        match current_driver() {
            Driver::Uring => uring::Stream::connect_tcp(addr).await.map(Stream::Uring),
            Driver::Epoll => epoll::Stream::connect_tcp(addr).await.map(Stream::Epoll),
        }
    };
    match timeout(limit, fut).await {
        Ok(r) => r,
        Err(Elapsed) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// Connects to a Unix stream socket within `limit`.
///
/// # Errors
/// The connect error, or `TimedOut` when `limit` passes first.
pub async fn connect_unix(path: &Path, limit: Duration) -> io::Result<Stream> {
    let fut = async {
        match current_driver() {
            Driver::Uring => uring::Stream::connect_unix(path).await.map(Stream::Uring),
            Driver::Epoll => epoll::Stream::connect_unix(path).await.map(Stream::Epoll),
        }
    };
    match timeout(limit, fut).await {
        Ok(r) => r,
        Err(Elapsed) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// A listening TCP socket registered with the current shard's driver.
pub enum Listener {
    /// io_uring listener.
    Uring(uring::Listener),
    /// epoll listener.
    Epoll(epoll::Listener),
}

impl Listener {
    /// Registers an already bound and listening std listener (made with socket2: SO_REUSEPORT,
    /// backlog) with the current shard's driver.
    ///
    /// # Errors
    /// If the fd cannot be registered.
    pub fn from_std(l: std::net::TcpListener) -> io::Result<Listener> {
        match current_driver() {
            Driver::Uring => uring::Listener::from_std(l).map(Listener::Uring),
            Driver::Epoll => epoll::Listener::from_std(l).map(Listener::Epoll),
        }
    }

    /// The stream of accepted connections.
    ///
    /// `multishot` asks the uring driver for multishot accept (kernel 5.19+: one submission keeps
    /// producing connections); it falls back to one-shot accepts if the kernel refuses. Ignored by
    /// epoll.
    pub fn incoming(&self, multishot: bool) -> Incoming<'_> {
        match self {
            Listener::Uring(l) => Incoming::Uring(l.incoming(multishot)),
            Listener::Epoll(l) => Incoming::Epoll(l),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Uring(l) => l.local_addr(),
            Listener::Epoll(l) => l.local_addr(),
        }
    }
}

/// Accepted connections of one [`Listener`].
// One per listener per shard, living in the accept loop's frame: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Incoming<'a> {
    /// io_uring accepts (multishot or one-shot).
    Uring(uring::Incoming<'a>),
    /// epoll accepts.
    Epoll(&'a epoll::Listener),
}

impl Incoming<'_> {
    /// The next connection (TCP_NODELAY set) and its peer address.
    ///
    /// # Errors
    /// Accept errors are returned as they come (EMFILE included); the caller decides to back off
    /// so that a persistent error never becomes a busy loop.
    pub async fn next(&mut self) -> io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            Incoming::Uring(i) => i.next().await.map(|(s, a)| (Stream::Uring(s), a)),
            Incoming::Epoll(l) => l.accept().await.map(|(s, a)| (Stream::Epoll(s), Some(a))),
        }
    }
}

#[cfg(test)]
#[path = "peek_tests.rs"]
mod peek_tests;
