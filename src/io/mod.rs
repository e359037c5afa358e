//! THE SEAM: owned-buffer streams and listeners over two drivers (io_uring via compio, epoll via tokio).
pub mod probe;
