//! `ringway-bench`: the benchmark suite's parts, usable from the CLI and from ringway's tests.
//!
//! - [`backend`]: a fast HTTP/1.1 keepalive backend that answers a fixed body and counts what it saw.
//! - [`load`]: closed-loop and open-loop (coordinated-omission corrected) load generator.
//! - [`ab`]: a paired A/B of two ringway builds or drivers, order flipped every pair.
//! - [`suite`]: starts backends and targets, pins them, runs scenarios × targets in interleaved
//!   rounds and writes `results.json`, `report.md` and SVG charts.
//!
//! Nothing here may send traffic anywhere but 127.0.0.1 or Unix sockets: every address the suite
//! uses is built from loopback constants or paths in its own temporary directory.

pub mod ab;
pub mod addr;
pub mod backend;
pub mod http1;
pub mod load;
pub mod procfs;
pub mod stats;
pub mod suite;
