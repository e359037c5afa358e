//! Streams and listeners on the ring: connect, owned-buffer reads and writes, the reuse-check
//! peek, tunnels, accept (multishot where the kernel has it).

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use compio::BufResult;
use compio::driver::ToSharedFd;
use compio::driver::op::{Recv, RecvFlags};
use compio::io::{AsyncRead, AsyncReadExt, AsyncReadManaged, AsyncWrite, AsyncWriteExt};
use futures_util::StreamExt;

use super::{BUFFER_RING, MAX_IOVECS, RING_EXHAUSTED};

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
        moved: &crate::io::TunnelBytes,
    ) -> io::Result<()> {
        let (there, back) = (&moved.there, &moved.back);
        // `&TcpStream`/`&UnixStream` implement compio's AsyncRead and AsyncWrite, so both
        // directions run at once on shared references, each with its own owned buffer.
        match (&*self, &*other) {
            (Stream::Tcp(a), Stream::Tcp(b)) => {
                crate::io::join_directions(pump(a, b, there), pump(b, a, back), linger).await
            }
            (Stream::Tcp(a), Stream::Unix(b)) => {
                crate::io::join_directions(pump(a, b, there), pump(b, a, back), linger).await
            }
            (Stream::Unix(a), Stream::Tcp(b)) => {
                crate::io::join_directions(pump(a, b, there), pump(b, a, back), linger).await
            }
            (Stream::Unix(a), Stream::Unix(b)) => {
                crate::io::join_directions(pump(a, b, there), pump(b, a, back), linger).await
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
    let mut buf = Vec::with_capacity(crate::io::TUNNEL_BUF);
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
