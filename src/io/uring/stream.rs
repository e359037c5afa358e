//! Streams and listeners on the ring: connect, owned-buffer reads and writes, the reuse-check
//! peek, tunnels, accept (multishot where the kernel has it).
//!
//! Each operation hands the kernel pointers into memory its [`Op`] owns (a `BytesMut`'s spare
//! capacity, a `Bytes`, a boxed iovec array) plus a reference to the socket ([`Fd`]); see
//! `ring.rs` for why that makes a dropped operation safe.

use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use io_uring::{cqueue, opcode, squeue, types};

use super::iovecs::{IoVecs, give_iovecs, iovecs_for};
use super::ring::{Fd, LinkedOp, MultiOp, Op, result, ring_alive, with_ring};
use super::{BUFFER_RING, MAX_IOVECS, RING_EXHAUSTED, bufring};

/// `opcode::$op::new(<the socket>, args..)`, the socket named by its file-table slot
/// (`IOSQE_FIXED_FILE`) when it has one, else by its fd (`files.rs`).
macro_rules! on_fd {
    ($fd:expr, $op:ident($($arg:expr),* $(,)?)) => {
        match $fd.slot() {
            Some(slot) => opcode::$op::new(types::Fixed(slot), $($arg),*),
            None => opcode::$op::new(types::Fd($fd.raw()), $($arg),*),
        }
    };
}

/// A blocking-mode, close-on-exec stream socket: the ring does the waiting, so the fd needs no
/// O_NONBLOCK (the kernel's io_uring reads and writes never block the thread either way).
fn new_socket(
    domain: socket2::Domain,
    protocol: Option<socket2::Protocol>,
) -> io::Result<socket2::Socket> {
    socket2::Socket::new(domain, socket2::Type::STREAM, protocol)
}

/// A TCP or Unix stream on the ring.
pub struct Stream {
    fd: Rc<Fd>,
    tcp: bool,
    /// A keep-alive answer's last write, held back to go to the kernel linked with the next
    /// idle read ([`Stream::defer_write`]); every other operation sends it first.
    deferred: Option<Box<IoVecs>>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        // A held-back answer still goes out: a detached SENDMSG keeps its buffers and the socket
        // (its own fd reference) until it completes, and the socket closes after it.
        if let Some(mut v) = self.deferred.take()
            && ring_alive()
        {
            let entry = self.send_whole(&mut v);
            // SAFETY: the msghdr, iovecs and bytes live in the boxed `v`, which the detached op
            // owns with a reference to the fd until its completion.
            unsafe { Op::submit(entry, (v, self.fd.clone())) }.detach();
        }
    }
}

impl Stream {
    fn new(fd: RawFd, tcp: bool) -> Stream {
        Stream {
            fd: Rc::new(Fd::registered(fd)),
            tcp,
            deferred: None,
        }
    }

    /// The socket's slot in the ring's file table, if it has one (tests).
    #[cfg(test)]
    pub(super) fn file_slot(&self) -> Option<u32> {
        self.fd.slot()
    }

    /// Connects over the ring (IORING_OP_CONNECT, 5.5) a socket made by `socket(2)`.
    pub async fn connect_tcp(addr: SocketAddr) -> io::Result<Stream> {
        let sock = new_socket(
            socket2::Domain::for_address(addr),
            Some(socket2::Protocol::TCP),
        )?;
        sock.set_tcp_nodelay(true)?;
        let s = Stream::new(sock.into_raw_fd(), true);
        s.connect(socket2::SockAddr::from(addr)).await?;
        Ok(s)
    }

    /// Connects a Unix stream socket over the ring.
    pub async fn connect_unix(path: &Path) -> io::Result<Stream> {
        let sock = new_socket(socket2::Domain::UNIX, None)?;
        let s = Stream::new(sock.into_raw_fd(), false);
        s.connect(socket2::SockAddr::unix(path)?).await?;
        Ok(s)
    }

    async fn connect(&self, addr: socket2::SockAddr) -> io::Result<()> {
        let addr = Box::new(addr);
        let entry = on_fd!(self.fd, Connect(addr.as_ptr().cast(), addr.len())).build();
        // SAFETY: the sockaddr is boxed in the op's data, the fd referenced by it.
        let (res, _, _) = unsafe { Op::submit(entry, (addr, self.fd.clone())) }.await;
        result(res).map(drop)
    }

    pub fn from_std_unix(s: std::os::unix::net::UnixStream) -> io::Result<Stream> {
        Ok(Stream::new(s.into_raw_fd(), false))
    }

    /// Reads into the spare capacity of `buf`, after its length.
    pub async fn read(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        if let Err(e) = self.flush_deferred().await {
            return (Err(e), buf);
        }
        read_fd(&self.fd, buf).await
    }

    /// Holds `bufs` back, to be sent linked with the next [`Stream::read_idle`]: the answer to
    /// a keep-alive request and the wait for the next one cost one completion and one wake-up.
    /// Any other operation on the stream sends them first, and a stream dropped with them still
    /// sends them. Returns `bufs` when they cannot wait (no linked ops or no buffer ring: write
    /// them now).
    pub fn defer_write(&mut self, bufs: crate::io::Pieces) -> Option<crate::io::Pieces> {
        if !super::linked_ops() || !BUFFER_RING.get() || self.deferred.is_some() {
            return Some(bufs);
        }
        let v = iovecs_for(bufs);
        if !v.bufs.is_empty() {
            self.deferred = Some(v);
        } else {
            give_iovecs(v);
        }
        None
    }

    /// Sends a deferred write now, if one is held. Every operation but the idle read starts
    /// with this, so the send is boxed (a recycled slot): inline, its state would grow every
    /// read and write future by its size for a case that is rare there.
    pub async fn flush_deferred(&mut self) -> io::Result<()> {
        match self.deferred.take() {
            Some(v) => crate::io::boxed(self.send_iovecs(v)).await,
            None => Ok(()),
        }
    }

    /// A SENDMSG of everything `v` holds (at most [`MAX_IOVECS`] buffers) that does not complete
    /// short: under `MSG_WAITALL` a short send retries in the kernel, and one that fails part
    /// way completes with what it sent. What a linked write needs (a short one would not break
    /// the chain, and the read would start with part of the request unsent), and a detached one.
    fn send_whole(&self, v: &mut IoVecs) -> squeue::Entry {
        self.send_entry(v, libc::MSG_NOSIGNAL | libc::MSG_WAITALL)
    }

    /// A send of what `v` holds (at most [`MAX_IOVECS`] buffers): a SEND for a single buffer (a
    /// backend request without a body, mostly), which spares the kernel copying in a msghdr and
    /// an iovec array; a SENDMSG for more.
    fn send_entry(&self, v: &mut IoVecs, flags: libc::c_int) -> squeue::Entry {
        if let [only] = &v.bufs[..] {
            return on_fd!(self.fd, Send(only.as_ptr(), only.len() as u32))
                .flags(flags)
                .build();
        }
        v.point_at(0);
        on_fd!(self.fd, SendMsg(&v.msg as *const libc::msghdr))
            .flags(flags as u32)
            .build()
    }

    /// Waits for data holding no buffer: the kernel takes one from the shard's provided-buffer
    /// ring when bytes arrive; they are copied into the buffer `take` gives then (grown to `min_cap`
    /// spare bytes) and the ring buffer goes straight back. Without a ring (kernels before 5.19, or switched off), or
    /// when it ran dry (`ENOBUFS`), a poll for readability (IORING_OP_POLL_ADD, 5.1) and then an
    /// ordinary read: still no buffer while idle, for one more operation per read.
    pub async fn read_idle(
        &mut self,
        take: impl FnOnce() -> BytesMut,
        min_cap: usize,
    ) -> (io::Result<usize>, BytesMut) {
        if BUFFER_RING.get() {
            let len = with_ring(|r| r.bufs.as_ref().map_or(0, bufring::BufRing::buf_len));
            let entry = on_fd!(self.fd, Recv(std::ptr::null_mut(), len as u32))
                .buf_group(bufring::GROUP)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT);
            let (res, flags) = match self.deferred.take() {
                None => {
                    // SAFETY: no buffer pointer: the kernel picks a ring buffer, which the ring
                    // owns.
                    let (res, flags, _) = unsafe { Op::submit(entry, self.fd.clone()) }.await;
                    (res, flags)
                }
                Some(mut v) => {
                    let write = self.send_whole(&mut v);
                    // SAFETY: the msghdr, iovecs and bytes live in the boxed `v`, which the
                    // pair's slab entry holds until the write's completion (release mode), and
                    // the op holds the fd until the read's, the last; the read names no buffer
                    // (a ring buffer). MSG_WAITALL on a stream socket, as `LinkedOp` requires.
                    let (out, _) =
                        unsafe { LinkedOp::submit(write, entry, self.fd.clone(), Some(v)) }.await;
                    match out {
                        Ok(done) => done,
                        Err(sent) => {
                            // The answer failed part way (its buffers are gone with the write's
                            // completion): the connection cannot go on.
                            let e = if sent < 0 {
                                io::Error::from_raw_os_error(-sent)
                            } else {
                                io::ErrorKind::WriteZero.into()
                            };
                            return (Err(e), BytesMut::new());
                        }
                    }
                }
            };
            let bid = cqueue::buffer_select(flags);
            match (res, bid) {
                (n, Some(bid)) if n > 0 => {
                    let n = n as usize;
                    let mut buf = take();
                    buf.reserve(min_cap.max(n));
                    with_ring(|r| {
                        let bufs = r.bufs.as_mut().expect("a ring buffer was selected");
                        buf.extend_from_slice(bufs.bytes(bid, n));
                        bufs.give_back(bid);
                    });
                    return (Ok(n), buf);
                }
                (n, bid) if n >= 0 => {
                    if let Some(bid) = bid {
                        with_ring(|r| r.bufs.as_mut().map(|b| b.give_back(bid)));
                    }
                    return (Ok(0), BytesMut::new());
                }
                (e, _) if -e == libc::ENOBUFS => {
                    RING_EXHAUSTED.set(RING_EXHAUSTED.get() + 1);
                }
                (e, _) => return (Err(io::Error::from_raw_os_error(-e)), BytesMut::new()),
            }
        }
        if let Err(e) = self.flush_deferred().await {
            return (Err(e), BytesMut::new());
        }
        let entry = on_fd!(self.fd, PollAdd(libc::POLLIN as u32)).build();
        // SAFETY: POLL_ADD names only the fd, which the op's data keeps open.
        let (res, _, _) = unsafe { Op::submit(entry, self.fd.clone()) }.await;
        if let Err(e) = result(res) {
            return (Err(e), BytesMut::new());
        }
        let mut buf = take();
        if buf.capacity() - buf.len() < min_cap {
            buf.reserve(min_cap);
        }
        // Boxed (a recycled slot): this read runs only once bytes are there, and inline its
        // state would triple the size of every idle connection's wait.
        crate::io::boxed(self.read(buf)).await
    }

    pub async fn write_all(&mut self, buf: Bytes) -> io::Result<()> {
        self.flush_deferred().await?;
        write_all_fd(&self.fd, buf).await.map(drop)
    }

    /// Writes every buffer with SENDMSG, as many iovecs per op as the kernel takes
    /// ([`MAX_IOVECS`]), resubmitting after a short write.
    pub async fn write_vectored_all(&mut self, bufs: crate::io::Pieces) -> io::Result<()> {
        self.flush_deferred().await?;
        let v = iovecs_for(bufs);
        self.send_iovecs(v).await
    }

    /// Writes `bufs` and reads into the spare capacity of `buf`, the read linked behind the
    /// write ([`LinkedOp`]): when the write goes whole, one completion for both, and the read
    /// starts in the kernel the moment the write is done. Returns the write's result, the
    /// read's (`None`: it did not run, because the write failed, or was short and was finished
    /// on its own), and the buffer.
    ///
    /// Without linked operations (switched off, kernels before 6.0) or for more buffers than
    /// one SENDMSG takes, it only writes.
    #[allow(clippy::manual_async_fn)] // on purpose: see the first comment
    pub fn write_vectored_then_read(
        &mut self,
        bufs: crate::io::Pieces,
        mut buf: BytesMut,
    ) -> impl Future<Output = (io::Result<()>, Option<io::Result<usize>>, BytesMut)> + '_ {
        // The pieces go into the iovec box before the future is built, so it holds 8 bytes,
        // not the 136-byte pieces twice (an async fn keeps its arguments twice, rust#62958):
        // every fan-out call and proxied exchange carries and moves this future.
        let linked = self.deferred.is_none()
            && super::linked_ops()
            && bufs.len() <= MAX_IOVECS
            && !bufs.iter().all(Bytes::is_empty);
        let mut v = iovecs_for(bufs);
        async move {
            if !linked {
                // Rare (a held-back answer first, no linked ops, a huge write): boxed.
                return (crate::io::boxed(self.flush_then_send(v)).await, None, buf);
            }
            if buf.capacity() == buf.len() {
                buf.reserve(4096);
            }
            let spare = buf.spare_capacity_mut();
            let (ptr, len) = (spare.as_mut_ptr().cast::<u8>(), spare.len());
            let write = self.send_whole(&mut v);
            let read = on_fd!(self.fd, Recv(ptr, len as u32)).build();
            // SAFETY: the msghdr, iovecs and the bytes they point at live in the boxed `v`, and
            // `ptr..ptr+len` is the spare capacity of `buf`'s heap allocation; the op owns both
            // (moving them moves no heap memory) and a reference to the fd until the pair's one
            // completion (the read's, or the write's if it broke the chain: the read never ran).
            // The send uses MSG_WAITALL on a stream socket (kernels with linked ops retry a short
            // send under it).
            let (out, (mut v, mut buf, _)) =
                unsafe { LinkedOp::submit(write, read, (v, buf, self.fd.clone()), None) }.await;
            match out {
                Ok((res, _)) => {
                    give_iovecs(v);
                    let read = result(res).inspect(|&n| {
                        // SAFETY: the kernel initialised `n <= len` bytes of the spare capacity.
                        unsafe { buf.set_len(buf.len() + n) };
                    });
                    (Ok(()), Some(read), buf)
                }
                Err(sent) if sent >= 0 => {
                    // Short (interrupted part way): finish the write unlinked; the read is the
                    // caller's.
                    v.advance(sent as usize);
                    (crate::io::boxed(self.send_iovecs(v)).await, None, buf)
                }
                Err(e) => {
                    give_iovecs(v);
                    (Err(io::Error::from_raw_os_error(-e)), None, buf)
                }
            }
        }
    }

    /// Sends a held-back write, then `v`.
    async fn flush_then_send(&mut self, v: Box<IoVecs>) -> io::Result<()> {
        self.flush_deferred().await?;
        self.send_iovecs(v).await
    }

    /// Sends what `v` holds with SENDMSG, resubmitting after short writes; keeps `v` for the
    /// next write.
    async fn send_iovecs(&mut self, mut v: Box<IoVecs>) -> io::Result<()> {
        // Bounded: each turn writes at least one byte (a zero-byte write is an error) of a
        // finite total.
        while !v.bufs.is_empty() {
            let entry = self.send_entry(&mut v, libc::MSG_NOSIGNAL);
            // SAFETY: the msghdr, the iovecs and the bytes they point at (or the one buffer a
            // SEND names) live in the boxed `v`, which the op owns until its completion; the fd
            // is referenced by it too.
            let (res, _, (back, _)) = unsafe { Op::submit(entry, (v, self.fd.clone())) }.await;
            v = back;
            match result(res) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => v.advance(n),
                Err(e) => return Err(e),
            }
        }
        give_iovecs(v);
        Ok(())
    }

    pub async fn tunnel(
        &mut self,
        other: &mut Stream,
        linger: Duration,
        moved: &crate::io::TunnelBytes,
    ) -> io::Result<()> {
        self.flush_deferred().await?;
        other.flush_deferred().await?;
        let (there, back) = (&moved.there, &moved.back);
        crate::io::join_directions(
            pump(&self.fd, &other.fd, there),
            pump(&other.fd, &self.fd, back),
            linger,
        )
        .await
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        if !self.tcp {
            return None;
        }
        socket2::SockRef::from(self).peer_addr().ok()?.as_socket()
    }

    /// A one-byte `recv(MSG_PEEK | MSG_DONTWAIT)` submitted as an io_uring RECV: the kernel runs
    /// it inline during the loop's next `io_uring_enter`. `Ok(0)` is a FIN, `Ok(1)` a waiting
    /// byte (not consumed), `WouldBlock` nothing: with MSG_DONTWAIT in the SQE the kernel
    /// completes with -EAGAIN instead of arming a poll.
    pub async fn peek_on_ring(&self) -> io::Result<usize> {
        let scratch = with_ring(|r| r.peek_scratch());
        let entry = on_fd!(self.fd, Recv(scratch, 1))
            .flags(libc::MSG_PEEK | libc::MSG_DONTWAIT)
            .build();
        // SAFETY: the scratch bytes belong to the ring, which outlives every op (the runtime
        // waits for in-flight ops before closing it); nothing reads them, so concurrent peeks
        // writing there race on nothing Rust looks at.
        let (res, _, _) = unsafe { Op::submit(entry, self.fd.clone()) }.await;
        result(res)
    }
}

/// One read into the spare capacity of `buf` (at least 1 byte of room is made).
async fn read_fd(fd: &Rc<Fd>, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
    if buf.capacity() == buf.len() {
        buf.reserve(4096);
    }
    let spare = buf.spare_capacity_mut();
    let (ptr, len) = (spare.as_mut_ptr().cast::<u8>(), spare.len());
    let entry = on_fd!(fd, Recv(ptr, len as u32)).build();
    // SAFETY: `ptr..ptr+len` is the spare capacity of `buf`'s heap allocation, which the op owns
    // (moving a BytesMut does not move its bytes) until the completion.
    let (res, _, (mut buf, _)) = unsafe { Op::submit(entry, (buf, fd.clone())) }.await;
    match result(res) {
        Ok(n) => {
            // SAFETY: the kernel initialised `n <= len` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n) };
            (Ok(n), buf)
        }
        Err(e) => (Err(e), buf),
    }
}

/// Sends all of `buf` (resubmitting after short sends); returns the bytes sent.
async fn write_all_fd(fd: &Rc<Fd>, mut buf: Bytes) -> io::Result<usize> {
    let total = buf.len();
    // Bounded: each turn sends at least one byte of a finite buffer.
    while !buf.is_empty() {
        let entry = on_fd!(fd, Send(buf.as_ptr(), buf.len() as u32))
            .flags(libc::MSG_NOSIGNAL)
            .build();
        // SAFETY: the bytes are owned by the `Bytes` the op holds until its completion.
        let (res, _, (b, _)) = unsafe { Op::submit(entry, (buf, fd.clone())) }.await;
        buf = b;
        match result(res)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => buf.advance(n),
        }
    }
    Ok(total)
}

/// One direction of a tunnel: reads `from` until EOF, writing everything to `to`, then shuts
/// down `to`'s write side so the half-close reaches the other peer.
async fn pump(from: &Rc<Fd>, to: &Rc<Fd>, moved: &Cell<u64>) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(crate::io::TUNNEL_BUF);
    loop {
        buf.clear();
        if buf.capacity() < crate::io::TUNNEL_BUF {
            buf = BytesMut::with_capacity(crate::io::TUNNEL_BUF);
        }
        let (res, b) = read_fd(from, buf).await;
        buf = b;
        match res {
            Ok(0) => {
                // The peer may already be gone; its own direction reports that.
                // SAFETY: shutdown(2) on an fd `to` keeps open; no pointers.
                unsafe { libc::shutdown(to.raw(), libc::SHUT_WR) };
                return Ok(());
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let chunk = buf.split().freeze();
        let n = write_all_fd(to, chunk).await?;
        // Counted once written, as the epoll driver does: the access log's bytes are bytes sent.
        moved.set(moved.get() + n as u64);
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.raw()
    }
}

impl std::os::fd::AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the fd stays open while `self` (which holds a reference to it) is borrowed.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd.raw()) }
    }
}

/// A listener on the ring.
pub struct Listener {
    fd: Rc<Fd>,
}

impl Listener {
    pub fn from_std(l: std::net::TcpListener) -> io::Result<Listener> {
        Ok(Listener {
            fd: Rc::new(Fd::plain(l.into_raw_fd())),
        })
    }

    pub fn incoming(&self, multishot: bool) -> Incoming<'_> {
        Incoming {
            listener: self,
            multishot,
            multi: None,
        }
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        // SAFETY: the fd is open while `self` lives; the borrowed socket is not closed (forgotten
        // via into_raw_fd).
        let s = unsafe { socket2::Socket::from_raw_fd(self.fd.raw()) };
        let addr = s.local_addr().ok().and_then(|a| a.as_socket());
        let _ = s.into_raw_fd();
        addr
    }
}

/// Accepts on the ring: one multishot accept kept armed (5.19), or one-shot accepts.
pub struct Incoming<'a> {
    listener: &'a Listener,
    multishot: bool,
    multi: Option<MultiOp<Rc<Fd>>>,
}

impl Incoming<'_> {
    pub async fn next(&mut self) -> io::Result<(Stream, Option<SocketAddr>)> {
        let fd = types::Fd(self.listener.fd.raw());
        let res = if self.multishot {
            let multi = self.multi.get_or_insert_with(|| {
                let entry = opcode::AcceptMulti::new(fd)
                    .flags(libc::SOCK_CLOEXEC)
                    .build();
                // SAFETY: no address buffers; the listener fd is kept open by the op's data.
                unsafe { MultiOp::submit(entry, self.listener.fd.clone()) }
            });
            match poll_fn(|cx| multi.poll_next(cx)).await {
                Some((res, flags)) => {
                    if !cqueue::more(flags) {
                        // The kernel ended the multishot (an error such as EMFILE, or
                        // overload): the next call arms a new one.
                        self.multi = None;
                    }
                    if res == -libc::EINVAL {
                        tracing::info!(
                            "multishot accept refused by the kernel; using one-shot accept"
                        );
                        self.multishot = false;
                        self.multi = None;
                        self.accept_one().await
                    } else {
                        res
                    }
                }
                None => {
                    self.multi = None;
                    self.accept_one().await
                }
            }
        } else {
            self.accept_one().await
        };
        let fd = result(res)? as RawFd;
        let s = Stream::new(fd, true);
        // Accepted from a TCP listener: set as the epoll driver does.
        socket2::SockRef::from(&s).set_tcp_nodelay(true)?;
        let peer = s.peer_addr();
        Ok((s, peer))
    }

    async fn accept_one(&self) -> i32 {
        let entry = opcode::Accept::new(
            types::Fd(self.listener.fd.raw()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_CLOEXEC)
        .build();
        // SAFETY: no address buffers; the listener fd is kept open by the op's data.
        let (res, _, _) = unsafe { Op::submit(entry, self.listener.fd.clone()) }
            .fd_result()
            .await;
        res
    }
}
