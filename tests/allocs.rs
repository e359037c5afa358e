//! Heap allocations per request on the shard threads, in steady state: a counting global
//! allocator counts every `alloc`/`realloc` made on a thread inside a shard's event loop, per
//! driver (`ringway::io::shard_driver`: both drivers' tests run at once in this process), while a keepalive client drives a gateway running in this
//! process. Issue 19's goal is ≤ 0.1 per proxied request and ≤ 1 per fan-out-4 request on the
//! uring driver (both bounds are 0.1 here); the bounds below hold it (with a few stray allocations of slack over the run),
//! and the printed figures are what the README quotes.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::backend::{Backend, BackendSpec};
use common::gateway::{fanout_calls, free_port};
use ringway::both_drivers;
use ringway::io::Driver;

struct Counting;

/// Allocations on shard threads: `[uring, epoll]`.
static SHARD_ALLOCS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

fn count() {
    match ringway::io::shard_driver() {
        Some(Driver::Uring) => SHARD_ALLOCS[0].fetch_add(1, Ordering::Relaxed),
        Some(Driver::Epoll) => SHARD_ALLOCS[1].fetch_add(1, Ordering::Relaxed),
        None => 0,
    };
}

fn counted(driver: &str) -> u64 {
    SHARD_ALLOCS[usize::from(driver == "epoll")].load(Ordering::Relaxed)
}

// SAFETY: every call is forwarded to the system allocator unchanged; counting touches only an
// atomic and a const thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Starts a one-shard gateway in this process (a thread running `ringway::server::run`) with a
/// proxy route and a fan-out of four calls to `backend`.
fn start_gateway(driver: &str, backend: &Backend) -> SocketAddr {
    let port = free_port();
    let admin = free_port();
    let ep = backend.endpoint();
    let calls = fanout_calls("b", &["a", "b", "c", "d"]);
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nshards = 1\nio = \"{driver}\"\npin_cpus = false\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[log]\naccess = \"off\"\n\n\
         [[upstream]]\nname = \"b\"\nendpoints = [\"{ep}\"]\n\n\
         [[route]]\npath_prefix = \"/page\"\n[route.fanout]\ntimeout = \"2s\"\n{calls}\n\
         [[route]]\npath_prefix = \"/\"\nupstream = \"b\"\n"
    );
    let config = ringway::config::Config::parse(&text, "allocs.toml").expect("config");
    std::thread::spawn(move || {
        let _ = ringway::server::run(config, ringway::server::RunOptions::default());
    });
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..200 {
        if TcpStream::connect(addr).is_ok() {
            return addr;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("gateway did not start on {addr}");
}

/// One keepalive GET; returns the status. Reads exactly the Content-Length body.
fn get(r: &mut BufReader<TcpStream>, path: &str) -> u16 {
    // One write: piecewise writes would meet Nagle and delayed ACKs (40 ms a request).
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    r.get_mut().write_all(req.as_bytes()).unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut len = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    status
}

/// Allocations per request on `path`, after a warm-up, over `n` requests on one connection.
fn allocs_per_request(driver: &str, addr: SocketAddr, path: &str, n: u64) -> f64 {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s);
    for _ in 0..500 {
        assert_eq!(get(&mut r, path), 200);
    }
    let before = counted(driver);
    for _ in 0..n {
        assert_eq!(get(&mut r, path), 200);
    }
    (counted(driver) - before) as f64 / n as f64
}

both_drivers!(steady_state_allocations_per_request, |driver: &str| {
    // A fixed small JSON body, as the benchmark's backend answers.
    let backend = Backend::tcp(BackendSpec {
        body: Some(
            br#"{"data":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#.to_vec(),
        ),
        ..BackendSpec::default()
    });
    let addr = start_gateway(driver, &backend);
    let proxied = allocs_per_request(driver, addr, "/x", 3000);
    let fanout = allocs_per_request(driver, addr, "/page", 1000);
    println!(
        "{driver}: {proxied:.2} allocations per proxied request, {fanout:.2} per fan-out-4 request; backend accepted {} connections for {} requests",
        backend.accepted(),
        backend.requests()
    );
    // Today (debug build, 2026-12-07): uring 0.00 and 0.00; epoll 0.2-1.3 and 0.7-2.7 from run
    // to run (tokio's own, which the baseline keeps). The fan-out answer's vector of pieces
    // comes from the thread's spares (crate::io::take_parts) since 2026-12-07 (was 1.00).
    // Before the recycled request-state slots (crate::io::recycle): uring 4.0 and 9.0.
    let (max_proxied, max_fanout) = if driver == "uring" {
        (0.1, 0.1)
    } else {
        (2.0, 4.0)
    };
    assert!(
        proxied <= max_proxied,
        "{driver}: {proxied:.2} allocations per proxied request"
    );
    assert!(
        fanout <= max_fanout,
        "{driver}: {fanout:.2} allocations per fan-out-4 request"
    );
});
