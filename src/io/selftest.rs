//! The start-up self-test: every operation the gateway needs, once, through the shard's own ring.
//!
//! Feature bits and opcode probes say what a kernel *claims*; they did not catch Debian's
//! 5.10.262, where the ring set up, the probe passed, and every upstream connect then failed
//! (issue 15). So before a shard serves, it runs the operations it will use on real loopback
//! sockets: accept and connect over TCP, connect over a Unix socket, bytes each way on both, the
//! pooled-connection reuse check, an idle read, a timer that fires on a pending read, and that
//! read's cancellation (the bytes sent after it must reach the next read, not the cancelled one).
//! A failure names its step and error; `--io auto` then runs epoll and `--io uring` exits.
//!
//! It uses only the seam's public operations, so it tests exactly what the gateway calls, and
//! it runs on either driver (tests run it on both). Everything is bounded by [`STEP_LIMIT`]; it
//! costs a few milliseconds and nothing after start-up.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::{Listener, Stream, connect_tcp, connect_unix, sleep, timeout};

/// Most any one step may take; a healthy kernel needs microseconds. Generous because CI runs
/// the tests on loaded machines and the kernel matrix runs under emulation.
pub const STEP_LIMIT: Duration = Duration::from_secs(5);

/// How long the pending read waits for its timer: long enough to be really in flight.
const PENDING_READ: Duration = Duration::from_millis(20);

/// Which self-test step failed, and how.
#[derive(Debug)]
pub struct SelfTestFailure {
    /// What was being tried, e.g. `"unix connect"`.
    pub step: &'static str,
    /// What the kernel (or the driver) answered.
    pub error: io::Error,
}

impl fmt::Display for SelfTestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "io_uring self-test failed at \"{}\": {}",
            self.step, self.error
        )
    }
}

impl std::error::Error for SelfTestFailure {}

/// A test hook: `RINGWAY_SELFTEST_FAIL=<step>` makes that step fail as if the kernel had
/// answered EIO, so the fallback can be tested on a kernel where everything works.
fn injected(step: &'static str) -> io::Result<()> {
    match std::env::var("RINGWAY_SELFTEST_FAIL") {
        Ok(s) if s == step => Err(io::Error::other(
            "failure injected by RINGWAY_SELFTEST_FAIL",
        )),
        _ => Ok(()),
    }
}

/// Runs one step within [`STEP_LIMIT`], naming it in the failure.
async fn step<T>(
    name: &'static str,
    fut: impl Future<Output = io::Result<T>>,
) -> Result<T, SelfTestFailure> {
    let fail = |error| SelfTestFailure { step: name, error };
    injected(name).map_err(fail)?;
    match timeout(STEP_LIMIT, fut).await {
        Ok(r) => r.map_err(fail),
        Err(_) => Err(fail(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {STEP_LIMIT:?}"),
        ))),
    }
}

/// Runs the self-test on the current shard's driver. `multishot` accepts as the shard will.
///
/// # Errors
/// The first step that failed, with its error.
pub async fn run(multishot: bool) -> Result<(), SelfTestFailure> {
    let (mut tcp_client, mut tcp_server) = tcp_pair(multishot).await?;
    round_trip("tcp send/receive", &mut tcp_client, &mut tcp_server).await?;
    reuse_check(&mut tcp_client, &mut tcp_server).await?;
    cancelled_read(&mut tcp_client, &mut tcp_server).await?;
    let (mut unix_client, mut unix_server) = unix_pair().await?;
    round_trip("unix send/receive", &mut unix_client, &mut unix_server).await?;
    Ok(())
}

/// Builds a uring runtime with every feature `features` offers (as shards do with the default
/// config) and runs the self-test on it: `ringway probe`'s final answer.
///
/// # Errors
/// The ring could not be set up, or the step that failed; as text for the report.
pub fn run_on_new_ring(features: &super::probe::UringFeatures) -> Result<(), String> {
    let opts = super::UringOptions::default().limited_to(Some(features));
    let rt = super::Runtime::new(super::Driver::Uring, &opts).map_err(|e| e.to_string())?;
    rt.block_on(run(opts.multishot_accept))
        .map_err(|f| f.to_string())
}

/// A listener on 127.0.0.1, a connection to it and its accepted end.
async fn tcp_pair(multishot: bool) -> Result<(Stream, Stream), SelfTestFailure> {
    let listener = step("tcp listen", async {
        let l = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let addr = l.local_addr()?;
        Ok((Listener::from_std(l)?, addr))
    })
    .await;
    let (listener, addr) = listener?;
    let client = step("tcp connect", connect_tcp(addr, STEP_LIMIT)).await?;
    let (server, _) = step("tcp accept", listener.incoming(multishot).next()).await?;
    Ok((client, server))
}

/// A Unix socket in the abstract namespace (no file to clean up, works on a read-only file
/// system), a connection to it over the ring, and the accepted end.
async fn unix_pair() -> Result<(Stream, Stream), SelfTestFailure> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "ringway-selftest-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let listener = step("unix listen", async {
        let l = UnixListener::bind_addr(&UnixAddr::from_abstract_name(name.as_bytes())?)?;
        l.set_nonblocking(true)?;
        Ok(l)
    })
    .await?;
    // A leading NUL is how a path names the abstract namespace.
    let path = std::path::PathBuf::from(format!("\0{name}"));
    let client = step("unix connect", connect_unix(&path, STEP_LIMIT)).await?;
    // A connected Unix stream is queued on the listener before connect returns.
    let server = step("unix accept", async {
        let (s, _) = listener.accept()?;
        s.set_nonblocking(false)?;
        Stream::from_std_unix(s)
    })
    .await?;
    Ok((client, server))
}

/// Bytes each way: a write on one end arrives by a read on the other.
async fn round_trip(
    name: &'static str,
    a: &mut Stream,
    b: &mut Stream,
) -> Result<(), SelfTestFailure> {
    step(name, async {
        a.write_all(Bytes::from_static(b"ping")).await?;
        expect(b, b"ping").await?;
        b.write_vectored_all(vec![Bytes::from_static(b"po"), Bytes::from_static(b"ng")])
            .await?;
        expect(a, b"pong").await
    })
    .await
}

/// The pooled-connection check: quiet while nothing was sent, not quiet once a byte waits
/// (which an idle read then takes, as on a keepalive client connection).
async fn reuse_check(client: &mut Stream, server: &mut Stream) -> Result<(), SelfTestFailure> {
    step("reuse check", async {
        if !client.quiet_for_reuse().await {
            return Err(io::Error::other("a quiet connection was reported busy"));
        }
        server.write_all(Bytes::from_static(b"x")).await?;
        // The byte is on its way over loopback; a bounded number of looks sees it.
        for _ in 0..100 {
            if !client.quiet_for_reuse().await {
                return Ok(());
            }
            sleep(Duration::from_millis(1)).await;
        }
        Err(io::Error::other(
            "a connection with a waiting byte was reported quiet",
        ))
    })
    .await?;
    step("idle read", async {
        let (res, buf) = client.read_idle(BytesMut::new, 64).await;
        match res? {
            1 if &buf[..] == b"x" => Ok(()),
            n => Err(io::Error::other(format!(
                "idle read got {n} bytes: {buf:?}"
            ))),
        }
    })
    .await
}

/// A read that nothing answers is ended by a timer and cancelled by being dropped; bytes sent
/// afterwards must reach the next read, so the cancelled one really is gone.
async fn cancelled_read(client: &mut Stream, server: &mut Stream) -> Result<(), SelfTestFailure> {
    step("timer on a pending read", async {
        match timeout(PENDING_READ, client.read(BytesMut::with_capacity(64))).await {
            Err(_) => Ok(()),
            Ok((res, _)) => Err(io::Error::other(format!(
                "a read with nothing sent completed: {res:?}"
            ))),
        }
    })
    .await?;
    step("cancelled read", async {
        // One loop turn for the cancellation to reach the kernel before the bytes do.
        sleep(Duration::from_millis(1)).await;
        server.write_all(Bytes::from_static(b"late")).await?;
        expect(client, b"late").await
    })
    .await
}

/// Reads until `want.len()` bytes came; they must be `want`.
async fn expect(s: &mut Stream, want: &[u8]) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(64);
    // Bounded: each read adds at least one byte or ends the loop.
    while buf.len() < want.len() {
        let (res, b) = s.read(buf).await;
        buf = b;
        if res? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("peer closed after {:?}", &buf[..]),
            ));
        }
    }
    if &buf[..] == want {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "sent {want:?}, received {:?}",
            &buf[..]
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Driver, Runtime, UringOptions};

    fn on(driver: Driver) -> Result<(), SelfTestFailure> {
        let rt = Runtime::new(driver, &UringOptions::default()).expect("runtime");
        rt.block_on(run(false))
    }

    #[test]
    fn passes_on_epoll() {
        on(Driver::Epoll).unwrap();
    }

    #[test]
    fn passes_on_uring() {
        on(Driver::Uring).unwrap();
    }

    #[test]
    fn passes_on_uring_with_multishot_accept() {
        let rt = Runtime::new(Driver::Uring, &UringOptions::default()).expect("runtime");
        rt.block_on(run(true)).unwrap();
    }

    #[test]
    fn failure_names_step_and_error() {
        let f = SelfTestFailure {
            step: "unix connect",
            error: io::Error::from_raw_os_error(libc::EBADF),
        };
        let shown = f.to_string();
        assert!(shown.contains("\"unix connect\""), "{shown}");
        assert!(shown.contains("os error 9"), "{shown}");
    }
}
