//! Response integrity under load (issue 7, part 2): many client connections through a two-shard
//! gateway to two echo backends that are killed and restarted at random, with clients aborting
//! at random. Every completed response must carry the id of its own request (no mix-up, ever);
//! every failure must be a proper 5xx or a close; fds and RSS stay flat.
//!
//! Bounded: ~30 s of chaos per driver (plus a few seconds of warm-up), longer with
//! `RINGWAY_SOAK_SECS`.

mod common;

use ringway::both_drivers;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::echo::EchoBackend;
use common::gateway::{Client, Gateway, Response, preamble};
use common::procfs;

/// Client threads, each with its own keepalive connection (reconnecting after a close).
const CLIENTS: usize = 24;

/// Seconds of chaos per driver unless `RINGWAY_SOAK_SECS` says otherwise.
const DEFAULT_SECS: u64 = 30;

/// A response slower than this is counted as a hang (the gateway's own deadlines are shorter).
const HANG: Duration = Duration::from_secs(8);

/// xorshift64: reproducible randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the clients saw.
#[derive(Debug, Default, Clone)]
struct Counts {
    /// Requests sent (aborted ones included).
    sent: u64,
    /// 200s carrying their own id.
    ok: u64,
    /// 502 / 503 / 504 answers from the gateway.
    s502: u64,
    s503: u64,
    s504: u64,
    /// The connection closed or reset before a whole response.
    closed: u64,
    /// Requests the client abandoned on purpose.
    aborted: u64,
    /// A 200 carrying another request's id (must stay 0).
    mixups: u64,
    /// Any other status, or a gateway error without its JSON body (must stay 0).
    unexpected: u64,
    /// No answer and no close within `HANG` (must stay 0).
    hung: u64,
    /// The first few oddities, for the failure message.
    notes: Vec<String>,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.ok += o.ok;
        self.s502 += o.s502;
        self.s503 += o.s503;
        self.s504 += o.s504;
        self.closed += o.closed;
        self.aborted += o.aborted;
        self.mixups += o.mixups;
        self.unexpected += o.unexpected;
        self.hung += o.hung;
        self.notes.extend(o.notes.iter().take(10).cloned());
    }

    fn note(&mut self, s: String) {
        if self.notes.len() < 10 {
            self.notes.push(s);
        }
    }
}

fn connect(addr: SocketAddr) -> Option<Client> {
    let s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(HANG)).ok()?;
    s.set_write_timeout(Some(HANG)).ok()?;
    s.set_nodelay(true).ok()?;
    Some(Client {
        reader: std::io::BufReader::new(s),
    })
}

/// Judges one answer to request `id`.
fn judge(c: &mut Counts, id: &str, r: &Response) {
    match r.status {
        200 => {
            let echoed = r.header("x-echo-id").unwrap_or("");
            let in_body = r.text().contains(&format!("\"request_id\":\"{id}\""));
            if echoed == id && in_body {
                c.ok += 1;
            } else {
                c.mixups += 1;
                let text = r.text();
                c.note(format!(
                    "MIX-UP: request {id} got X-Echo-Id {echoed:?}, body {:?}",
                    &text[..text.len().min(80)]
                ));
            }
        }
        502..=504 if r.text().starts_with("{\"error\":\"upstream_") => match r.status {
            502 => c.s502 += 1,
            503 => c.s503 += 1,
            _ => c.s504 += 1,
        },
        _ => {
            c.unexpected += 1;
            c.note(format!(
                "request {id}: unexpected {} {:?}",
                r.status,
                r.text()
            ));
        }
    }
}

/// One client thread: requests (GET, POST with a body, intentional aborts) until `end`.
fn client_loop(addr: SocketAddr, t: usize, end: Instant, stop: Arc<AtomicBool>) -> Counts {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((t as u64 + 1) << 32));
    let mut c = Counts::default();
    let mut conn: Option<Client> = None;
    let mut seq = 0u64;
    // Bounded by `end` (each pass takes at most ~2 × HANG).
    while Instant::now() < end && !stop.load(Ordering::SeqCst) {
        if conn.is_none() {
            conn = connect(addr);
        }
        let Some(cl) = conn.as_mut() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        seq += 1;
        let id = format!("c{t}-{seq}");
        let kind = rng.below(100);
        let body_len = if (65..85).contains(&kind) {
            rng.below(100_000) as usize
        } else {
            0
        };
        let head = if body_len > 0 || (85..90).contains(&kind) {
            format!(
                "POST /echo/{id} HTTP/1.1\r\nHost: t\r\nx-request-id: {id}\r\nContent-Length: {}\r\n\r\n",
                if (85..90).contains(&kind) {
                    1000
                } else {
                    body_len
                }
            )
        } else {
            format!("GET /echo/{id} HTTP/1.1\r\nHost: t\r\nx-request-id: {id}\r\n\r\n")
        };
        c.sent += 1;
        let mut wrote = cl.stream().write_all(head.as_bytes()).is_ok();
        match kind {
            85..90 => {
                // Abort mid-body: part of the declared body, then gone.
                let _ = cl.stream().write_all(&[b'x'; 10]);
                c.aborted += 1;
                conn = None;
                continue;
            }
            90..95 => {
                // Abort before reading the answer.
                c.aborted += 1;
                conn = None;
                continue;
            }
            95..100 => {
                // Abort mid-response: read a little, then gone.
                let mut some = [0u8; 100];
                let _ = cl.reader.read(&mut some);
                c.aborted += 1;
                conn = None;
                continue;
            }
            _ => {}
        }
        if body_len > 0 && wrote {
            wrote = cl.stream().write_all(&vec![b'b'; body_len]).is_ok();
        }
        let t0 = Instant::now();
        let r = if wrote { cl.read_response(false) } else { None };
        match r {
            Some(r) => {
                judge(&mut c, &id, &r);
                if r.header("connection") == Some("close") {
                    conn = None;
                }
            }
            None => {
                if t0.elapsed() >= HANG {
                    c.hung += 1;
                    c.note(format!("request {id}: no answer in {HANG:?}"));
                } else {
                    c.closed += 1;
                }
                conn = None;
            }
        }
    }
    c
}

/// Runs `CLIENTS` client threads for `secs` against `addr`; with `chaos`, a thread kills and
/// restarts the backends at random meanwhile.
fn traffic(
    addr: SocketAddr,
    secs: f64,
    backends: &Mutex<Vec<EchoBackend>>,
    chaos: bool,
) -> (Counts, u64) {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || client_loop(addr, t, end, stop))
        })
        .collect();
    let mut kills = 0;
    if chaos {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        // Bounded by `end`.
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(200 + rng.below(1000)));
            if Instant::now() >= end {
                break;
            }
            let i = rng.below(2) as usize;
            let down_for = Duration::from_millis(rng.below(300));
            let mut bs = backends.lock().unwrap();
            let at = bs[i].addr;
            bs[i].kill();
            kills += 1;
            std::thread::sleep(down_for);
            bs[i] = EchoBackend::start_on(at);
        }
    }
    let mut total = Counts::default();
    for c in clients {
        total.add(&c.join().unwrap());
    }
    (total, kills)
}

fn soak_secs() -> f64 {
    std::env::var("RINGWAY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECS as f64)
}

both_drivers!(responses_never_mix_under_chaos, |driver: &str| {
    let backends = Mutex::new(vec![
        EchoBackend::start_on("127.0.0.1:0".parse().unwrap()),
        EchoBackend::start_on("127.0.0.1:0".parse().unwrap()),
    ]);
    let eps: Vec<String> = backends
        .lock()
        .unwrap()
        .iter()
        .map(|b| format!("\"{}\"", b.addr))
        .collect();
    let (mut cfg, addr, admin) = preamble(driver, 2);
    cfg.push_str(&format!(
        "[timeouts]\nupstream_connect = \"300ms\"\nupstream_response = \"3s\"\nclient_idle = \"5s\"\n\n[[upstream]]\nname = \"b\"\nendpoints = [{}]\npool = {{ max_idle = 16, idle_timeout = \"2s\" }}\nhealth = {{ fail_threshold = 3, eject_for = \"300ms\" }}\n\n[[route]]\npath_prefix = \"/\"\nupstream = \"b\"\n",
        eps.join(", ")
    ));
    let gw = Gateway::start(&cfg, addr, admin);
    let pid = gw.child.id();

    // Warm-up without chaos, so allocator pools and buffers reach their working size; then the
    // baseline, with no client connected.
    let (warm, _) = traffic(addr, 3.0, &backends, false);
    assert_eq!(
        warm.mixups + warm.unexpected + warm.hung,
        0,
        "{driver} warm-up: {warm:?}"
    );
    let quiet0 =
        procfs::assert_back_to_baseline(&gw, "b", usize::MAX, Duration::from_secs(10), "warm-up");
    let fds0 = gw.open_fds().saturating_sub(quiet0.pool_idle as usize);
    let rss0 = procfs::rss_kib(pid);

    let secs = soak_secs();
    let t0 = Instant::now();
    let (c, kills) = traffic(addr, secs, &backends, true);
    let took = t0.elapsed();

    // Quiet again: every client gone, no pool slot in use, fds back (idle pooled ones aside).
    let quiet =
        procfs::assert_back_to_baseline(&gw, "b", fds0, Duration::from_secs(10), "after the soak");
    let fds = gw.open_fds().saturating_sub(quiet.pool_idle as usize);
    let rss = procfs::rss_kib(pid);
    eprintln!(
        "{driver}: soak {took:.1?}: {} requests sent ({:.0}/s), {} ok, 502 {}, 503 {}, 504 {}, closed {}, aborted {}, mix-ups {}, unexpected {}, hung {}; {kills} backend kills; fds {fds0} -> {fds} (+ idle pooled), RSS {rss0} KiB -> {rss} KiB",
        c.sent,
        c.sent as f64 / took.as_secs_f64(),
        c.ok,
        c.s502,
        c.s503,
        c.s504,
        c.closed,
        c.aborted,
        c.mixups,
        c.unexpected,
        c.hung
    );
    assert_eq!(c.mixups, 0, "{driver}: responses mixed up: {:?}", c.notes);
    assert_eq!(
        c.unexpected, 0,
        "{driver}: improper failures: {:?}",
        c.notes
    );
    assert_eq!(c.hung, 0, "{driver}: hung requests: {:?}", c.notes);
    assert!(
        kills >= (secs as u64 / 3).max(1),
        "{driver}: chaos ran: {kills} kills"
    );
    assert!(
        c.ok * 2 > c.sent,
        "{driver}: most requests succeed despite the chaos: {} of {}",
        c.ok,
        c.sent
    );
    assert!(fds <= fds0, "{driver}: fds {fds0} -> {fds}");
    assert!(
        rss <= rss0 + rss0 / 4 + 8 * 1024,
        "{driver}: RSS grew from {rss0} KiB to {rss} KiB"
    );
});
