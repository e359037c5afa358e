//! The reuse check ([`Stream::quiet_for_reuse`]) on both drivers, over real sockets: quiet when
//! nothing is pending; not quiet for a waiting byte (which stays unread), a FIN or a reset; and
//! still exact after a read left the socket empty (compio's own `peek` would then set
//! POLL_FIRST, and a POLL_FIRST recv with MSG_DONTWAIT answers -EAGAIN whatever is waiting).

use std::io::Write;
use std::net::{Shutdown, TcpListener};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::{Driver, Runtime, Stream, UringOptions, connect_tcp};

const DRIVERS: [Driver; 2] = [Driver::Uring, Driver::Epoll];

/// Waits (bounded) for `stream` to stop being quiet; loopback TCP may deliver a moment later.
async fn turns_unquiet(stream: &Stream) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if !stream.quiet_for_reuse().await {
            return true;
        }
        super::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[test]
fn unix_stream_bytes_and_fin() {
    for driver in DRIVERS {
        let rt = Runtime::new(driver, &UringOptions::default()).expect("runtime");
        let (ours, mut peer) = StdUnixStream::pair().expect("socketpair");
        rt.block_on(async move {
            let mut s = Stream::from_std_unix(ours).expect("stream");
            assert!(
                s.quiet_for_reuse().await,
                "{driver}: nothing sent yet: quiet"
            );

            peer.write_all(b"a").unwrap();
            assert!(!s.quiet_for_reuse().await, "{driver}: a waiting byte");
            // Twice: the peek consumed nothing.
            assert!(
                !s.quiet_for_reuse().await,
                "{driver}: the byte is still there"
            );
            let (res, buf) = s.read(BytesMut::with_capacity(16)).await;
            assert_eq!(
                (res.unwrap(), &buf[..]),
                (1, &b"a"[..]),
                "{driver}: read it"
            );

            // The read left the socket empty; bytes arriving after it must still be seen.
            assert!(s.quiet_for_reuse().await, "{driver}: empty again: quiet");
            peer.write_all(b"stray").unwrap();
            assert!(
                !s.quiet_for_reuse().await,
                "{driver}: stray bytes after a read"
            );
            let (res, buf) = s.read(BytesMut::with_capacity(16)).await;
            assert_eq!((res.unwrap(), &buf[..]), (5, &b"stray"[..]));

            peer.shutdown(Shutdown::Write).unwrap();
            assert!(!s.quiet_for_reuse().await, "{driver}: a FIN");
        });
    }
}

#[test]
fn tcp_stream_bytes_and_fin() {
    for driver in DRIVERS {
        let rt = Runtime::new(driver, &UringOptions::default()).expect("runtime");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        rt.block_on(async move {
            let mut s = connect_tcp(addr, Duration::from_secs(2))
                .await
                .expect("connect");
            // The handshake is done, so the connection waits in the backlog: no blocking here.
            let (mut peer, _) = listener.accept().expect("accept");
            assert!(s.quiet_for_reuse().await, "{driver}: quiet connection");

            peer.write_all(b"x").unwrap();
            assert!(turns_unquiet(&s).await, "{driver}: a waiting byte");
            let (res, buf) = s.read(BytesMut::with_capacity(16)).await;
            assert_eq!((res.unwrap(), &buf[..]), (1, &b"x"[..]), "{driver}: unread");
            assert!(s.quiet_for_reuse().await, "{driver}: empty again: quiet");

            peer.shutdown(Shutdown::Write).unwrap();
            assert!(turns_unquiet(&s).await, "{driver}: a FIN");
        });
    }
}

#[test]
fn tcp_reset_on_an_empty_connection() {
    for driver in DRIVERS {
        let rt = Runtime::new(driver, &UringOptions::default()).expect("runtime");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        rt.block_on(async move {
            let s = connect_tcp(addr, Duration::from_secs(2))
                .await
                .expect("connect");
            let (peer, _) = listener.accept().expect("accept");
            assert!(s.quiet_for_reuse().await, "{driver}: quiet connection");
            socket2::SockRef::from(&peer)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(peer);
            assert!(
                turns_unquiet(&s).await,
                "{driver}: a reset on an idle connection"
            );
        });
    }
}

/// A panic in the runtime's main future is passed on, and the tasks it leaves behind are dropped
/// with their sockets (closed, so their peers see EOF) rather than leaked open.
#[test]
fn a_panic_closes_the_sockets_of_every_task() {
    use std::io::Read;
    for driver in DRIVERS {
        let (ours, mut peer) = StdUnixStream::pair().expect("socketpair");
        // The runtime is dropped by the unwind, as a shard's is when its thread panics.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let rt = Runtime::new(driver, &UringOptions::default()).expect("runtime");
            rt.block_on(async move {
                let mut s = Stream::from_std_unix(ours).expect("stream");
                super::spawn(async move {
                    // Waits for bytes that never come; holds the socket until dropped.
                    let _ = s.read(BytesMut::with_capacity(16)).await;
                    std::future::pending::<()>().await;
                });
                super::sleep(Duration::from_millis(20)).await;
                panic!("boom");
            })
        }));
        assert!(caught.is_err(), "{driver}: the panic is passed on");
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(
            peer.read(&mut buf).expect("EOF, not a timeout"),
            0,
            "{driver}: the task's socket was closed"
        );
    }
}
