//! A recording TCP tap between the gateway and a test backend: forwards bytes both ways and keeps
//! every byte the gateway sent toward the backend, so a test can prove that nothing smuggled (not
//! even a partial request the backend would never log as a head) crossed the gateway.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What crossed the tap.
#[derive(Default, Debug)]
pub struct TapSeen {
    /// Bytes the gateway sent, one entry per connection, in accept order.
    pub conns: Mutex<Vec<Arc<Mutex<Vec<u8>>>>>,
    /// Connections currently open through the tap.
    pub open: AtomicUsize,
}

/// A running tap on 127.0.0.1 (OS-chosen port) forwarding to `target`.
pub struct Tap {
    pub addr: SocketAddr,
    pub seen: Arc<TapSeen>,
    stop: Arc<AtomicBool>,
}

impl Tap {
    /// Starts a tap in front of `target`.
    pub fn new(target: SocketAddr) -> Tap {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(TapSeen::default());
        let stop = Arc::new(AtomicBool::new(false));
        {
            let seen = seen.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                for s in l.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(down) = s else { continue };
                    let Ok(up) = TcpStream::connect(target) else {
                        continue;
                    };
                    let _ = down.set_nodelay(true);
                    let _ = up.set_nodelay(true);
                    let record = Arc::new(Mutex::new(Vec::new()));
                    seen.conns.lock().unwrap().push(record.clone());
                    seen.open.fetch_add(1, Ordering::SeqCst);
                    let (down2, up2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
                    let seen2 = seen.clone();
                    // Gateway → backend, recorded.
                    thread::spawn(move || {
                        pump(down, up, Some(&record));
                        seen2.open.fetch_sub(1, Ordering::SeqCst);
                    });
                    // Backend → gateway.
                    thread::spawn(move || pump(up2, down2, None));
                }
            });
        }
        Tap { addr, seen, stop }
    }

    /// The endpoint string for ringway's config.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Every byte the gateway sent through the tap, all connections concatenated.
    pub fn received(&self) -> Vec<u8> {
        let conns = self.seen.conns.lock().unwrap();
        conns
            .iter()
            .flat_map(|c| c.lock().unwrap().clone())
            .collect()
    }

    /// Connections the gateway opened through the tap so far.
    pub fn connections(&self) -> usize {
        self.seen.conns.lock().unwrap().len()
    }

    /// Forgets what was recorded so far (connection records stay, emptied).
    pub fn clear(&self) {
        for c in self.seen.conns.lock().unwrap().iter() {
            c.lock().unwrap().clear();
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

/// Copies `from` → `to` until EOF or an error, then shuts both down so the other direction ends too.
fn pump(mut from: TcpStream, mut to: TcpStream, record: Option<&Mutex<Vec<u8>>>) {
    let mut buf = vec![0u8; 65536];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(r) = record {
                    r.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
