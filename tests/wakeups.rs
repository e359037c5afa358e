//! Task wake-ups and io_uring completions per request, from the shard's driver counters
//! (`ringway_shard_task_polls_total`, `ringway_shard_uring_sqes_total`,
//! `ringway_shard_uring_cqes_total`), on one keepalive connection in steady state.
//!
//! On uring, a proxied request costs: the client's read (one RECV from the buffer ring, or a
//! POLL_ADD and a RECV without it), the pooled connection's reuse check (`io_uring.pool_peek`;
//! skipped for a connection checked in less than `pool.reuse_check_after` ago, which is every
//! reuse here, so it is measured once more with that set to `0s`), the backend exchange (the request's write linked to the answer's read with
//! `io_uring.linked_ops`: one completion, else two), and the answer's write (held back and
//! linked with the next request's read when linked ops and the buffer ring are on: its
//! completion then wakes nobody). Each is
//! one completion and one wake-up. The bounds follow from the features the gateway logged it
//! uses, so the test holds on every kernel and with `RINGWAY_TEST_URING_FEATURES=off`. On epoll
//! the counters exist and stay zero (tokio's executor keeps its own). On both, no shard free
//! list misses (allocates) in steady state.

mod common;

use ringway::both_drivers;

use common::backend::{Backend, BackendSpec};
use common::gateway::{Client, Gateway, fanout_calls, preamble};

/// Requests measured after the warm-up.
const N: u64 = 2000;

/// Whether the gateway's start-up line says it uses io_uring feature `key`.
fn uses(gw: &Gateway, key: &str) -> bool {
    gw.stderr().contains(&format!("{key}=true"))
}

/// (task polls, SQEs, CQEs) per request over `N` GETs of `path` on one connection.
fn per_request(gw: &Gateway, path: &str) -> (f64, f64, f64) {
    let mut c = Client::connect(gw.addr);
    for _ in 0..200 {
        assert_eq!(c.get(path).status, 200);
    }
    let read = |name: &str| gw.metric(&format!("{name}{{shard=\"0\"}}")).unwrap_or(0.0);
    let names = [
        "ringway_shard_task_polls_total",
        "ringway_shard_uring_sqes_total",
        "ringway_shard_uring_cqes_total",
    ];
    let lists = [
        "upstream_read",
        "client_read",
        "head_scratch",
        "request_state",
        "answer_parts",
        "write_iovecs",
    ];
    let misses = || -> Vec<f64> {
        lists
            .iter()
            .map(|l| {
                gw.metric(&format!(
                    "ringway_free_list_misses_total{{shard=\"0\",list=\"{l}\"}}"
                ))
                .unwrap_or_else(|| panic!("free list {l} is reported"))
            })
            .collect()
    };
    let before: Vec<f64> = names.iter().map(|n| read(n)).collect();
    let misses_before = misses();
    for _ in 0..N {
        assert_eq!(c.get(path).status, 200);
    }
    let after: Vec<f64> = names.iter().map(|n| read(n)).collect();
    // Steady state: every free list (buffers, request state, answer vectors, iovec boxes) has a
    // spare for each take, on both drivers.
    for ((l, b), a) in lists.iter().zip(misses_before).zip(misses()) {
        assert_eq!(a, b, "{path}: free list {l} allocated in steady state");
    }
    // A scrape is not a shard task: the admin listener runs on its own thread.
    let d = |i: usize| (after[i] - before[i]) / N as f64;
    (d(0), d(1), d(2))
}

both_drivers!(wake_ups_and_completions_per_request, |driver: &str| {
    let backend = Backend::tcp(BackendSpec {
        body: Some(br#"{"data":"x"}"#.to_vec()),
        ..BackendSpec::default()
    });
    let (mut cfg, addr, admin) = preamble(driver, 1);
    let ep = backend.endpoint();
    let calls = fanout_calls("b", &["a", "b", "c", "d"]);
    cfg.push_str(&format!(
        "[log]\naccess = \"off\"\n\n[[upstream]]\nname = \"b\"\nendpoints = [\"{ep}\"]\n\n\
         [[route]]\npath_prefix = \"/page\"\n[route.fanout]\ntimeout = \"2s\"\n{calls}\n\
         [[route]]\npath_prefix = \"/\"\nupstream = \"b\"\n"
    ));
    let gw = Gateway::start(&cfg, addr, admin);
    let (polls, sqes, cqes) = per_request(&gw, "/x");
    let (f_polls, f_sqes, f_cqes) = per_request(&gw, "/page");
    // The same with every reuse checked (`pool.reuse_check_after = "0s"`): one requests after
    // another on one connection reuse their backend connection within the default 10 ms, so
    // above the check is skipped, here it runs each time.
    let (mut cfg0, addr0, admin0) = preamble(driver, 1);
    cfg0.push_str(&format!(
        "[log]\naccess = \"off\"\n\n[[upstream]]\nname = \"b\"\nendpoints = [\"{ep}\"]\n\
         pool = {{ reuse_check_after = \"0s\" }}\n\n[[route]]\npath_prefix = \"/\"\nupstream = \"b\"\n"
    ));
    let gw0 = Gateway::start(&cfg0, addr0, admin0);
    let (c_polls, c_sqes, c_cqes) = per_request(&gw0, "/x");
    println!(
        "{driver}: per proxied request {polls:.2} wake-ups, {sqes:.2} SQEs, {cqes:.2} CQEs \
         (every reuse checked: {c_polls:.2}, {c_sqes:.2}, {c_cqes:.2}); \
         per fan-out-4 request {f_polls:.2}, {f_sqes:.2}, {f_cqes:.2}"
    );
    if driver == "epoll" {
        assert_eq!(
            (polls, sqes, cqes, f_polls, c_polls),
            (0.0, 0.0, 0.0, 0.0, 0.0)
        );
        return;
    }
    let linked = uses(&gw, "linked_ops");
    let peek = uses(&gw, "pool_peek");
    // The client's read and the answer's write: a RECV from the buffer ring and a SENDMSG; when
    // linked, the answer waits to go out with the next read and its completion (which gives its
    // buffers back) wakes nobody. Without the buffer ring: a POLL_ADD, a RECV and the write.
    let ring = uses(&gw, "buffer_ring");
    let (client_cqes, client_wakes) = match (ring, linked) {
        (true, true) => (2.0, 1.0),
        (true, false) => (2.0, 2.0),
        (false, _) => (3.0, 3.0),
    };
    // The backend's write and read: one completion when linked (the write's is skipped on
    // success). The reuse check is skipped for a connection checked in moments before.
    let exchange = if linked { 1.0 } else { 2.0 };
    let checked = exchange + f64::from(u8::from(peek));
    let proxied = client_cqes + exchange;
    let proxied_wakes = client_wakes + exchange;
    // Four calls, each an exchange (their connections were checked in by the request before:
    // no reuse check).
    let fanout = client_cqes + 4.0 * exchange;
    let slack = 0.05;
    assert!(
        cqes <= proxied + slack,
        "{cqes:.2} CQEs per proxied request, expected {proxied} (linked_ops {linked}, pool_peek {peek})"
    );
    assert!(
        polls <= proxied_wakes + slack,
        "{polls:.2} wake-ups per proxied request, expected at most {proxied_wakes}"
    );
    // Checked every time: exactly one completion (and wake-up) more per request with the peek
    // on the ring; a syscall instead (no completion) with `pool_peek` off.
    assert!(
        (c_cqes - (client_cqes + checked)).abs() <= slack
            && c_polls <= client_wakes + checked + slack,
        "{c_cqes:.2} CQEs, {c_polls:.2} wake-ups per proxied request with every reuse checked, \
         expected {}",
        client_cqes + checked
    );
    assert!(
        f_cqes <= fanout + slack,
        "{f_cqes:.2} CQEs per fan-out-4 request, expected {fanout}"
    );
    // The fan-out's calls run inside the connection's task: completions of one loop turn wake it
    // once, so it wakes no more often than a proxied request's read, calls and write would.
    assert!(
        f_polls <= f_cqes + slack && f_polls >= 2.0,
        "{f_polls:.2} wake-ups per fan-out-4 request"
    );
});
