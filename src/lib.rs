//! ringway: an HTTP/1.1 gateway for Linux, thread-per-core, on io_uring or epoll.
//!
//! Layers, top to bottom (dependencies point down only):
//! `server`/`shard` → `conn` → `router`, `proxy`, `fanout`, `respond` → `upstream` → `io`. `http` is a pure
//! codec with no I/O; `config` is data. Code above `io` never names compio, tokio or io_uring.

pub mod access_log;
pub mod admin;
mod audit;
pub mod clock;
pub mod config;
pub mod conn;
pub mod demo;
pub mod fanout;
pub mod gateway;
pub mod http;
pub mod io;
pub mod json;
pub mod metrics;
pub mod proxy;
pub mod respond;
pub mod router;
pub mod server;
pub mod shard;
pub mod upstream;
