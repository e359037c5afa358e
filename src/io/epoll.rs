//! The epoll driver: tokio's current-thread runtime, one per shard, with a `LocalSet` so tasks
//! may hold `Rc` shard state. This is the strongest readiness-based stack in Rust, so uring vs
//! epoll is an honest comparison.

use std::cell::Cell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Most iovecs handed to one `writev` here (an array of them is built on the stack in each poll);
/// the kernel's limit is [`super::MAX_IOVECS`].
const WRITEV_BATCH: usize = 64;

/// One shard's tokio runtime.
pub struct Runtime {
    rt: tokio::runtime::Runtime,
    local: tokio::task::LocalSet,
}

impl Runtime {
    pub fn new() -> io::Result<Runtime> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Runtime {
            rt,
            local: tokio::task::LocalSet::new(),
        })
    }

    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.local.block_on(&self.rt, fut)
    }
}

pub fn spawn<F: Future<Output = ()> + 'static>(fut: F) {
    drop(tokio::task::spawn_local(fut));
}

pub async fn sleep_until(deadline: std::time::Instant) {
    tokio::time::sleep_until(deadline.into()).await
}

/// A TCP or Unix stream registered with epoll.
pub enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Stream {
    pub async fn connect_tcp(addr: SocketAddr) -> io::Result<Stream> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Stream::Tcp(s))
    }

    pub async fn connect_unix(path: &Path) -> io::Result<Stream> {
        tokio::net::UnixStream::connect(path)
            .await
            .map(Stream::Unix)
    }

    pub fn from_std_unix(s: std::os::unix::net::UnixStream) -> io::Result<Stream> {
        s.set_nonblocking(true)?;
        tokio::net::UnixStream::from_std(s).map(Stream::Unix)
    }

    pub async fn read(&mut self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        let res = match self {
            Stream::Tcp(s) => s.read_buf(&mut buf).await,
            Stream::Unix(s) => s.read_buf(&mut buf).await,
        };
        (res, buf)
    }

    /// Waits for readiness holding no buffer, then reads into `buf` (grown to `min_cap` spare
    /// bytes first): an idle connection costs no receive buffer.
    pub async fn read_idle(
        &mut self,
        take: impl FnOnce() -> BytesMut,
        min_cap: usize,
    ) -> (io::Result<usize>, BytesMut) {
        let mut take = Some(take);
        let mut buf = BytesMut::new();
        loop {
            let ready = match self {
                Stream::Tcp(s) => s.readable().await,
                Stream::Unix(s) => s.readable().await,
            };
            if let Err(e) = ready {
                return (Err(e), buf);
            }
            if let Some(take) = take.take() {
                buf = take();
            }
            if buf.capacity() - buf.len() < min_cap {
                buf.reserve(min_cap);
            }
            let res = match self {
                Stream::Tcp(s) => s.try_read_buf(&mut buf),
                Stream::Unix(s) => s.try_read_buf(&mut buf),
            };
            match res {
                // Readiness was stale (tokio clears it on WouldBlock): wait again, and give
                // the buffer back meanwhile unless it holds bytes.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if buf.is_empty() {
                        buf = BytesMut::new();
                    }
                }
                res => return (res, buf),
            }
        }
    }

    pub async fn write_all(&mut self, buf: Bytes) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(&buf).await,
            Stream::Unix(s) => s.write_all(&buf).await,
        }
    }

    pub async fn write_vectored_all(&mut self, mut bufs: super::Pieces) -> io::Result<()> {
        let mut first = 0;
        while first < bufs.len() {
            // The iovec array is built inside each poll, so it never lives in this future:
            // held across an await it made every future above the seam 1 KiB larger.
            let n = std::future::poll_fn(|cx| {
                let mut slices = [IoSlice::new(&[]); WRITEV_BATCH];
                let mut count = 0;
                for b in bufs[first..]
                    .iter()
                    .filter(|b| !b.is_empty())
                    .take(WRITEV_BATCH)
                {
                    slices[count] = IoSlice::new(b);
                    count += 1;
                }
                if count == 0 {
                    return std::task::Poll::Ready(Ok(0));
                }
                match self {
                    Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, &slices[..count]),
                    Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, &slices[..count]),
                }
            })
            .await?;
            if n == 0 {
                if bufs[first..].iter().all(|b| b.is_empty()) {
                    return Ok(());
                }
                return Err(io::ErrorKind::WriteZero.into());
            }
            // Advance past what the kernel took; a partial buffer is sliced, never copied.
            let mut left = n;
            while left > 0 && first < bufs.len() {
                let len = bufs[first].len();
                if left >= len {
                    left -= len;
                    first += 1;
                } else {
                    bufs[first].advance(left);
                    left = 0;
                }
            }
            while first < bufs.len() && bufs[first].is_empty() {
                first += 1;
            }
        }
        super::give_parts(bufs);
        Ok(())
    }

    pub async fn tunnel(
        &mut self,
        other: &mut Stream,
        linger: Duration,
        moved: &super::TunnelBytes,
    ) -> io::Result<()> {
        let (there, back) = (&moved.there, &moved.back);
        // Borrowed halves (`split`, no allocation, no lock): both directions run at once.
        macro_rules! both_ways {
            ($a:expr, $b:expr) => {{
                let (ar, aw) = $a.split();
                let (br, bw) = $b.split();
                super::join_directions(pump(ar, bw, there), pump(br, aw, back), linger).await
            }};
        }
        match (self, other) {
            (Stream::Tcp(a), Stream::Tcp(b)) => both_ways!(a, b),
            (Stream::Tcp(a), Stream::Unix(b)) => both_ways!(a, b),
            (Stream::Unix(a), Stream::Tcp(b)) => both_ways!(a, b),
            (Stream::Unix(a), Stream::Unix(b)) => both_ways!(a, b),
        }
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().ok(),
            Stream::Unix(_) => None,
        }
    }
}

/// One direction of a tunnel: reads `from` until EOF, writing everything to `to`, then shuts
/// down `to`'s write side so the half-close reaches the other peer.
async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut from: R,
    mut to: W,
    moved: &Cell<u64>,
) -> io::Result<()> {
    let mut buf = vec![0u8; super::TUNNEL_BUF];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => {
                // The peer may already be gone; its own direction reports that.
                let _ = to.shutdown().await;
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n]).await?;
        moved.set(moved.get() + n as u64);
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

/// A listener registered with epoll.
pub struct Listener {
    inner: tokio::net::TcpListener,
}

impl Listener {
    pub fn from_std(l: std::net::TcpListener) -> io::Result<Listener> {
        l.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(l).map(|inner| Listener { inner })
    }

    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        let (s, peer) = self.inner.accept().await?;
        s.set_nodelay(true)?;
        Ok((Stream::Tcp(s), peer))
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr().ok()
    }
}
