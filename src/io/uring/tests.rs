//! The driver's own tests: cancellation with canaries, CQ overflow on a tiny ring, every setup
//! flag off, ENOBUFS from the buffer ring, short sends, EINTR on the wait, task panics, linked
//! write-then-read chains (one wake-up, a broken chain, a short write, random cancellation).

use std::cell::Cell;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::ring::with_ring;
use super::{Stream, UringOptions, exec, spawn};

/// A uring runtime through the seam, so `crate::io::sleep` and friends know the driver.
fn runtime(opts: &UringOptions) -> std::io::Result<crate::io::Runtime> {
    crate::io::Runtime::new(crate::io::Driver::Uring, opts)
}

const CANARY: u8 = 0xa5;

fn pair() -> (Stream, StdUnixStream) {
    let (a, b) = StdUnixStream::pair().expect("socketpair");
    (Stream::from_std_unix(a).expect("stream"), b)
}

/// A socket pair with 4 KiB socket buffers: big writes complete short or wait for room.
fn small_buffer_pair() -> (Stream, StdUnixStream) {
    let (s, p) = pair();
    socket2::SockRef::from(&p)
        .set_recv_buffer_size(4096)
        .unwrap();
    socket2::SockRef::from(&s)
        .set_send_buffer_size(4096)
        .unwrap();
    (s, p)
}

/// A tiny xorshift: deterministic "random" points without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn yield_now() -> impl std::future::Future<Output = ()> {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
}

/// Thousands of reads dropped at random points while peers write at random times. A dropped
/// read's buffer must stay owned until its completion: buffers allocated after the drop (which
/// the allocator hands out from freed memory first) must keep their canaries through later loop
/// turns, and no operation may be left in the slab at the end.
#[test]
fn random_cancellation_never_frees_a_buffer_the_kernel_owns() {
    let rt = runtime(&UringOptions {
        buffer_ring: false,
        ..UringOptions::default()
    })
    .expect("runtime");
    rt.block_on(async {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut peers = Vec::new();
        let mut streams = Vec::new();
        for _ in 0..16 {
            let (s, p) = pair();
            p.set_nonblocking(true).unwrap();
            streams.push(s);
            peers.push(p);
        }
        let mut held: Vec<BytesMut> = Vec::new();
        for round in 0..3000 {
            let i = (rng.next() % 16) as usize;
            let mut buf = BytesMut::with_capacity(512);
            buf.resize(512, CANARY);
            buf.clear();
            let read = streams[i].read(buf);
            let mut read = Box::pin(read);
            // Drop before the first poll, after one poll, or after a write that may complete it.
            match rng.next() % 3 {
                0 => {}
                1 => {
                    let _ = futures_util::poll!(read.as_mut());
                }
                _ => {
                    let _ = futures_util::poll!(read.as_mut());
                    let _ = peers[i].write(&[round as u8; 64]);
                    yield_now().await;
                }
            }
            drop(read);
            // Fresh canary buffers of the same size, likely on the memory just freed (if it had
            // been freed too early).
            canaries(&mut held, 64, round).await;
            // Drain what the peers' writes left, so later reads see fresh data.
            if round % 97 == 0 {
                let mut sink = [0u8; 4096];
                while peers[i].read(&mut sink).is_ok_and(|n| n > 0) {}
            }
        }
        // Every cancellation's completion arrives within a few turns.
        assert_no_ops_left().await;
    });
}

/// A 64-entry ring (CQ 128) with 600 reads completing in one go: the CQ overflows, NODROP keeps
/// the rest, and every read still completes with its own bytes.
#[test]
fn cq_overflow_on_a_tiny_ring_loses_no_completion() {
    let rt = runtime(&UringOptions {
        capacity: 64,
        buffer_ring: false,
        ..UringOptions::default()
    })
    .expect("runtime");
    rt.block_on(async {
        let done = Rc::new(Cell::new(0usize));
        let mut peers = Vec::new();
        for i in 0..600u32 {
            let (mut s, mut p) = pair();
            p.write_all(&i.to_le_bytes()).unwrap();
            peers.push(p);
            let done = done.clone();
            spawn(async move {
                let (r, buf) = s.read(BytesMut::with_capacity(16)).await;
                assert_eq!(r.expect("read"), 4);
                assert_eq!(
                    &buf[..],
                    &i.to_le_bytes()[..],
                    "read {i} got another's bytes"
                );
                done.set(done.get() + 1);
            });
        }
        for _ in 0..500 {
            if done.get() == 600 {
                break;
            }
            crate::io::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(done.get(), 600, "every read completed");
    });
}

/// One exchange each way, with a timer, on a ring built with the given options.
fn echo_on(opts: &UringOptions, what: &str) {
    let rt = runtime(opts).unwrap_or_else(|e| panic!("{what}: {e}"));
    rt.block_on(async {
        let (mut s, mut p) = pair();
        p.write_all(b"ping").unwrap();
        let (r, buf) = s.read_idle(BytesMut::new, 64).await;
        assert_eq!(r.unwrap(), 4, "{what}");
        assert_eq!(&buf[..], b"ping", "{what}");
        s.write_all(Bytes::from_static(b"pong")).await.unwrap();
        let mut got = [0u8; 4];
        p.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong", "{what}");
        crate::io::sleep(Duration::from_millis(5)).await;
    });
}

#[test]
fn every_setup_flag_off_one_at_a_time() {
    let base = UringOptions::default();
    echo_on(&base, "all on");
    type TurnOff = fn(&mut UringOptions);
    let variants: [(&str, TurnOff); 8] = [
        ("coop_taskrun off", |o| o.coop_taskrun = false),
        ("single_issuer off", |o| o.single_issuer = false),
        ("defer_taskrun off", |o| o.defer_taskrun = false),
        ("multishot_accept off", |o| o.multishot_accept = false),
        ("buffer_ring off", |o| o.buffer_ring = false),
        ("pool_peek off", |o| o.pool_peek = false),
        ("linked_ops off", |o| o.linked_ops = false),
        ("registered_files off", |o| o.registered_files = 0),
    ];
    for (what, off) in variants {
        let mut o = base.clone();
        off(&mut o);
        echo_on(&o, what);
    }
}

/// A buffer ring of one buffer, two idle reads with data at once: one gets the buffer, the other
/// ENOBUFS, counted, and falls back to poll + read. Both get their bytes.
#[test]
fn buffer_ring_exhaustion_falls_back_to_an_ordinary_read() {
    let rt = runtime(&UringOptions {
        buffer_ring_entries: 1,
        ..UringOptions::default()
    })
    .expect("runtime");
    rt.block_on(async {
        if !super::BUFFER_RING.get() {
            println!("SKIPPED: buffer ring exhaustion: this kernel has no buffer ring");
            return;
        }
        let before = super::buffer_ring_exhausted();
        let (mut a, mut pa) = pair();
        let (mut b, mut pb) = pair();
        pa.write_all(b"first").unwrap();
        pb.write_all(b"second").unwrap();
        let ra = a.read_idle(BytesMut::new, 64);
        let rb = b.read_idle(BytesMut::new, 64);
        let ((ra, ba), (rb, bb)) = futures_util::join!(ra, rb);
        assert_eq!((ra.unwrap(), &ba[..]), (5, &b"first"[..]));
        assert_eq!((rb.unwrap(), &bb[..]), (6, &b"second"[..]));
        assert!(
            super::buffer_ring_exhausted() > before,
            "one read found the ring empty"
        );
    });
}

/// A send bigger than the socket buffer completes short; the driver resubmits the rest, in
/// order, for both plain and vectored writes.
#[test]
fn short_sends_are_resubmitted_in_order() {
    let rt = runtime(&UringOptions::default()).expect("runtime");
    rt.block_on(async {
        let (mut s, p) = small_buffer_pair();
        let body: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        let expect = body.clone();
        let reader = std::thread::spawn(move || {
            let mut p = p;
            let mut got = Vec::new();
            let mut chunk = [0u8; 1000];
            while got.len() < 2 * expect.len() {
                let n = p.read(&mut chunk).unwrap();
                assert!(n > 0, "EOF too early");
                got.extend_from_slice(&chunk[..n]);
                // A slow reader: the sender's writes come back short.
                if got.len() % 50_000 < 1000 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            assert_eq!(&got[..expect.len()], &expect[..], "write_all in order");
            assert_eq!(&got[expect.len()..], &expect[..], "vectored in order");
        });
        let body = Bytes::from(body);
        s.write_all(body.clone()).await.unwrap();
        let parts: Vec<Bytes> = (0..body.len())
            .step_by(3333)
            .map(|i| body.slice(i..(i + 3333).min(body.len())))
            .collect();
        s.write_vectored_all(parts.into()).await.unwrap();
        reader.join().expect("reader");
    });
}

/// A signal delivered to the thread while it waits in `io_uring_enter` (EINTR) is retried: the
/// timer still fires on time and nothing fails.
#[test]
fn eintr_on_enter_is_retried() {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(libc::SIGUSR2, flag.clone()).expect("handler");
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() } as usize;
    let kicker = std::thread::spawn(move || {
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(10));
            // SAFETY: `me` is the test thread, alive until `kicker` is joined below.
            unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGUSR2) };
        }
    });
    let rt = runtime(&UringOptions::default()).expect("runtime");
    let started = std::time::Instant::now();
    rt.block_on(crate::io::sleep(Duration::from_millis(120)));
    let took = started.elapsed();
    kicker.join().unwrap();
    assert!(
        flag.load(std::sync::atomic::Ordering::Relaxed),
        "signals arrived"
    );
    assert!(
        took >= Duration::from_millis(120) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

/// A panic in a spawned task ends the runtime (the panic is passed on) and closes the sockets of
/// every task, the panicking one's included.
#[test]
fn a_panicking_task_closes_every_tasks_sockets() {
    let (a, mut pa) = StdUnixStream::pair().unwrap();
    let (b, mut pb) = StdUnixStream::pair().unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let rt = runtime(&UringOptions::default()).expect("runtime");
        rt.block_on(async move {
            let mut a = Stream::from_std_unix(a).unwrap();
            let mut b = Stream::from_std_unix(b).unwrap();
            spawn(async move {
                let _ = a.read(BytesMut::with_capacity(8)).await;
            });
            spawn(async move {
                let _ = b.read_idle(BytesMut::new, 8).await;
                unreachable!("nothing is sent");
            });
            spawn(async {
                crate::io::sleep(Duration::from_millis(10)).await;
                panic!("task boom");
            });
            std::future::pending::<()>().await;
        });
    }));
    assert!(caught.is_err(), "the task's panic is passed on");
    assert_eq!(exec::task_count(), 0, "every task dropped");
    for p in [&mut pa, &mut pb] {
        p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(p.read(&mut byte).expect("EOF, not a timeout"), 0);
    }
}

/// Allocates two canary buffers of 512 bytes (likely on memory a dropped operation just gave up,
/// if it gave it up too early) and, once more than `every` are held, lets a loop turn pass and
/// checks that none was written.
async fn canaries(held: &mut Vec<BytesMut>, every: usize, round: usize) {
    for _ in 0..2 {
        let mut b = BytesMut::with_capacity(512);
        b.resize(512, CANARY);
        held.push(b);
    }
    if held.len() > every {
        yield_now().await;
        for b in held.drain(..) {
            assert!(
                b.iter().all(|&x| x == CANARY),
                "round {round}: a buffer was written after it was handed out again"
            );
        }
    }
}

/// Waits (bounded: 200 loop turns of 1 ms) for every operation's completion, then checks that
/// none is left in the slab.
async fn assert_no_ops_left() {
    for _ in 0..200 {
        if with_ring(|r| r.ops_in_flight()) == 0 {
            break;
        }
        crate::io::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(with_ring(|r| r.ops_in_flight()), 0, "ops left in the slab");
}

/// Polls `fut` to completion, counting its polls (a wake-up is a poll after the first).
async fn counting_polls<F: std::future::Future>(fut: F) -> (F::Output, u32) {
    let mut fut = std::pin::pin!(fut);
    let mut polls = 0;
    let out = std::future::poll_fn(|cx| {
        polls += 1;
        fut.as_mut().poll(cx)
    })
    .await;
    (out, polls)
}

/// A peer that reads `want` request bytes, waits `delay`, and answers `answer`; returns what it
/// read.
fn answering_peer(
    p: StdUnixStream,
    want: usize,
    delay: Duration,
    answer: &'static [u8],
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut p = p;
        p.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = vec![0u8; want];
        p.read_exact(&mut got).expect("the whole request");
        std::thread::sleep(delay);
        p.write_all(answer).unwrap();
        got
    })
}

/// With linked operations the write and the read after it complete with one wake-up: the task
/// is polled twice (the first poll, then the read's completion), against three unlinked.
#[test]
fn a_linked_write_and_read_wake_the_task_once() {
    for linked in [true, false] {
        let rt = runtime(&UringOptions {
            linked_ops: linked,
            ..UringOptions::default()
        })
        .expect("runtime");
        rt.block_on(async {
            if linked && !super::linked_ops() {
                println!("SKIPPED: linked ops: this kernel has no CQE_SKIP_SUCCESS / 6.0");
                return;
            }
            let (mut s, p) = pair();
            let peer = answering_peer(p, 12, Duration::from_millis(20), b"answer");
            let parts: Vec<Bytes> = vec![
                Bytes::from_static(b"GET /"),
                Bytes::from_static(b" now!\r\n"),
            ];
            let ((w, r, buf), polls) = counting_polls(
                s.write_vectored_then_read(parts.into(), BytesMut::with_capacity(64)),
            )
            .await;
            w.expect("written");
            assert_eq!(peer.join().unwrap(), b"GET / now!\r\n");
            if linked {
                assert_eq!(r.expect("linked read ran").expect("read"), 6);
                assert_eq!(&buf[..], b"answer");
                assert_eq!(polls, 2, "one wake-up for the write and the read");
            } else {
                assert!(r.is_none(), "unlinked: the read is the caller's");
                let (n, buf) = s.read(buf).await;
                assert_eq!((n.unwrap(), &buf[..]), (6, &b"answer"[..]));
            }
        });
    }
}

/// A write that fails (the peer is gone) breaks the chain: the write's error comes back, the
/// read never ran, and no operation is left behind.
#[test]
fn a_failed_linked_write_breaks_the_chain() {
    let rt = runtime(&UringOptions::default()).expect("runtime");
    rt.block_on(async {
        if !super::linked_ops() {
            println!("SKIPPED: linked ops: this kernel has no CQE_SKIP_SUCCESS / 6.0");
            return;
        }
        let (mut s, p) = pair();
        drop(p);
        let (w, r, _) = s
            .write_vectored_then_read(
                smallvec::smallvec![Bytes::from_static(b"hello")],
                BytesMut::with_capacity(64),
            )
            .await;
        assert_eq!(w.expect_err("peer gone").raw_os_error(), Some(libc::EPIPE));
        assert!(r.is_none(), "the read was cancelled with the chain");
        assert_eq!(with_ring(|r| r.ops_in_flight()), 0);
    });
}

/// A request far bigger than the socket buffers, to a slow reader: the linked send waits for
/// room (MSG_WAITALL) instead of completing short, the bytes arrive whole and in order, and the
/// answer is read after.
#[test]
fn a_linked_write_bigger_than_the_socket_buffer_goes_whole_before_the_read() {
    let rt = runtime(&UringOptions::default()).expect("runtime");
    rt.block_on(async {
        let (mut s, p) = small_buffer_pair();
        let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let body = Bytes::from(body);
        let parts: Vec<Bytes> = (0..body.len())
            .step_by(4999)
            .map(|i| body.slice(i..(i + 4999).min(body.len())))
            .collect();
        let peer = answering_peer(p, body.len(), Duration::ZERO, b"done");
        let (w, r, buf) = s
            .write_vectored_then_read(parts.into(), BytesMut::with_capacity(64))
            .await;
        w.expect("written");
        let (n, buf) = match r {
            Some(r) => (r, buf),
            None => s.read(buf).await,
        };
        assert_eq!((n.unwrap(), &buf[..]), (4, &b"done"[..]));
        assert_eq!(peer.join().unwrap(), &body[..], "in order, whole");
    });
}

/// Linked chains dropped at random points (before the write ran, while the read waits, while the
/// write waits for socket room): both halves are cancelled, the read's buffer stays owned until
/// the chain's last completion (canaries), and no operation is left.
#[test]
fn random_cancellation_of_linked_chains_frees_nothing_early() {
    let rt = runtime(&UringOptions::default()).expect("runtime");
    rt.block_on(async {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut held: Vec<BytesMut> = Vec::new();
        let big = Bytes::from(vec![7u8; 256 * 1024]);
        for round in 0..600 {
            let (mut s, p) = pair();
            p.set_nonblocking(true).unwrap();
            socket2::SockRef::from(&s)
                .set_send_buffer_size(4096)
                .unwrap();
            let mut buf = BytesMut::with_capacity(512);
            buf.resize(512, CANARY);
            buf.clear();
            // A small request (the read then waits) or one the peer never drains (the write
            // waits for room).
            let req = if rng.next().is_multiple_of(2) {
                Bytes::from_static(b"ping")
            } else {
                big.clone()
            };
            let mut chain = Box::pin(s.write_vectored_then_read(smallvec::smallvec![req], buf));
            match rng.next() % 3 {
                0 => {}
                1 => {
                    let _ = futures_util::poll!(chain.as_mut());
                }
                _ => {
                    let _ = futures_util::poll!(chain.as_mut());
                    yield_now().await;
                    // Sometimes the answer arrives as the chain is dropped.
                    let _ = (&p).write(&[round as u8; 32]);
                }
            }
            drop(chain);
            canaries(&mut held, 32, round).await;
            drop(p);
        }
        assert_no_ops_left().await;
    });
}

/// A write held back by `defer_write` goes out linked with the next idle read (one wake-up),
/// is sent first by any other operation (order kept), and still goes out when the stream is
/// dropped with it.
#[test]
fn a_deferred_write_goes_out_with_the_next_read_or_before_anything_else() {
    let rt = runtime(&UringOptions::default()).expect("runtime");
    rt.block_on(async {
        let (mut s, mut p) = pair();
        let parts =
            |t: &'static [u8]| -> crate::io::Pieces { smallvec::smallvec![Bytes::from_static(t)] };
        if s.defer_write(parts(b"answer-1")).is_some() {
            println!("SKIPPED: deferred writes: no linked ops or buffer ring on this kernel");
            return;
        }
        // Held back: nothing on the wire until the next read.
        p.set_nonblocking(true).unwrap();
        let mut got = [0u8; 64];
        assert!(p.read(&mut got).is_err(), "nothing sent yet");
        p.set_nonblocking(false).unwrap();
        p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // The idle read sends it; the peer answers; one completion for both.
        let peer = std::thread::spawn(move || {
            let mut got = [0u8; 8];
            p.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"answer-1");
            p.write_all(b"next").unwrap();
            p
        });
        let ((r, buf), polls) = counting_polls(s.read_idle(BytesMut::new, 64)).await;
        assert_eq!((r.unwrap(), &buf[..]), (4, &b"next"[..]));
        // The write's completion gives its buffers back and wakes nobody.
        assert_eq!(polls, 2, "the write and the read: one wake-up");
        let mut p = peer.join().unwrap();
        // Another write sends the held one first: order kept.
        assert!(s.defer_write(parts(b"answer-2")).is_none());
        s.write_all(Bytes::from_static(b"+more")).await.unwrap();
        let mut got = [0u8; 13];
        p.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"answer-2+more");
        // Dropped while holding one: it is still sent, then the socket closes.
        assert!(s.defer_write(parts(b"last")).is_none());
        drop(s);
        // Loop turns: one submits the detached write, a later one reaps it and closes the fd.
        crate::io::sleep(Duration::from_millis(20)).await;
        let mut rest = Vec::new();
        p.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"last");
        assert_no_ops_left().await;
    });
}

/// A file table of 2 slots and 4 sockets: two named by slot, two by fd, all working (linked
/// chains, idle reads, plain writes). A registered socket that is dropped closes at once (its
/// peer reads EOF: the table's reference goes with the fd), and its slot is reused.
#[test]
fn registered_files_beyond_the_table_use_plain_fds_and_close_at_once() {
    let rt = runtime(&UringOptions {
        registered_files: 2,
        ..UringOptions::default()
    })
    .expect("runtime");
    rt.block_on(async {
        assert_eq!(super::registered_files(), (0, 2));
        let mut socks: Vec<_> = (0..4).map(|_| pair()).collect();
        assert_eq!(super::registered_files(), (2, 2), "two slots, both used");
        assert!(socks[0].0.file_slot().is_some() && socks[1].0.file_slot().is_some());
        assert!(socks[2].0.file_slot().is_none() && socks[3].0.file_slot().is_none());
        for (i, (s, p)) in socks.iter_mut().enumerate() {
            let msg = format!("ping {i}");
            let mut parts = crate::io::Pieces::new();
            parts.push(Bytes::from(msg.clone().into_bytes()));
            p.write_all(b"pong").unwrap();
            let (w, r, buf) = s
                .write_vectored_then_read(parts, BytesMut::with_capacity(64))
                .await;
            w.expect("write");
            let n = match r {
                Some(r) => r.expect("linked read"),
                None => {
                    let (r, b) = s.read(buf.clone()).await;
                    assert_eq!(&b[..], b"pong", "socket {i}");
                    r.expect("read")
                }
            };
            assert_eq!(n, 4, "socket {i}");
            let mut got = vec![0u8; msg.len()];
            p.read_exact(&mut got).unwrap();
            assert_eq!(got, msg.as_bytes(), "socket {i}");
            p.write_all(b"idle").unwrap();
            let (r, buf) = s.read_idle(BytesMut::new, 64).await;
            assert_eq!(r.expect("idle read"), 4, "socket {i}");
            assert_eq!(&buf[..], b"idle", "socket {i}");
        }
        // Dropped: the registered socket's peer sees EOF now, not when the ring closes.
        let (s0, mut p0) = socks.remove(0);
        drop(s0);
        assert_eq!(super::registered_files(), (1, 2), "the slot was cleared");
        p0.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(p0.read(&mut b).expect("EOF, not a timeout"), 0);
        // The freed slot goes to the next socket, which works on it.
        let (mut s4, mut p4) = pair();
        assert!(s4.file_slot().is_some(), "the freed slot was reused");
        assert_eq!(super::registered_files(), (2, 2));
        s4.write_all(Bytes::from_static(b"again")).await.unwrap();
        let mut got = [0u8; 5];
        p4.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"again");
    });
}

/// A second runtime refused on a thread that has one leaves the first one's file table and
/// settings alone: its sockets still get slots and work.
#[test]
fn a_refused_second_runtime_keeps_the_first_ones_file_table() {
    let rt = runtime(&UringOptions {
        registered_files: 4,
        ..UringOptions::default()
    })
    .expect("runtime");
    let second = runtime(&UringOptions {
        registered_files: 8,
        linked_ops: false,
        ..UringOptions::default()
    });
    assert!(second.is_err(), "one uring runtime per thread");
    assert_eq!(super::registered_files(), (0, 4), "the first ring's table");
    // The first ring was set up with linked ops on (options as given, not probed).
    assert!(super::linked_ops(), "the first ring's settings");
    rt.block_on(async {
        let (mut s, mut p) = pair();
        assert!(s.file_slot().is_some());
        s.write_all(Bytes::from_static(b"still")).await.unwrap();
        let mut got = [0u8; 5];
        p.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"still");
    });
}
