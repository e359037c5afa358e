//! ringway: an HTTP/1.1 gateway for Linux, thread-per-core, on io_uring or epoll.
//!
//! Layers, top to bottom (dependencies point down only, no import cycle among these modules):
//! `server` → `shard` → `conn` → `gateway` → `proxy`, `fanout`, `respond` → `client`, `upstream`
//! → `http`, `io`; `local` is the request path's view of its shard. `config`, `metrics`, `clock`,
//! `error`, `router`, `access_log` are leaves. `http` is a pure codec with no I/O. Code above `io`
//! never names tokio or io_uring. `docs/architecture.md` walks through the files.

pub mod access_log;
pub mod admin;
mod audit;
pub mod client;
pub mod clock;
pub mod config;
pub mod conn;
pub mod demo;
pub mod error;
pub mod fanout;
pub mod gateway;
pub mod http;
pub mod io;
pub mod json;
pub mod local;
pub mod metrics;
pub mod proxy;
pub mod respond;
pub mod router;
pub mod server;
pub mod shard;
#[doc(hidden)]
pub mod testing;
pub mod upstream;
