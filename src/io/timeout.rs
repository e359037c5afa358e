//! Deadlines on futures: [`timeout`] / [`timeout_at`] run an operation with the current
//! driver's sleep beside it.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use super::{deadline_after, sleep_until};

/// The deadline passed before the operation finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// Runs `fut` for at most `dur`.
///
/// A plain struct of the future and a sleep (not an `async fn`): an idle keepalive connection
/// sits in one of these, so its size is the connection's memory cost.
///
/// # Cancellation
/// On timeout `fut` is dropped. An I/O operation inside it is cancelled, but a read may already
/// have consumed bytes: close the connection it ran on.
pub fn timeout<F: Future>(dur: Duration, fut: F) -> Timeout<F, impl Future<Output = ()>> {
    timeout_at(deadline_after(dur), fut)
}

/// Runs `fut` until `deadline` at the latest. See [`timeout`].
pub fn timeout_at<F: Future>(deadline: Instant, fut: F) -> Timeout<F, impl Future<Output = ()>> {
    Timeout {
        fut,
        sleep: sleep_until(deadline),
    }
}

/// Runs `fut` until `stop` ends: `fut`'s output, or [`Elapsed`] if `stop` ended first (a drain
/// signal beside an idle read). One struct, no state machine around the two.
pub fn until<F: Future, S: Future<Output = ()>>(fut: F, stop: S) -> Timeout<F, S> {
    Timeout { fut, sleep: stop }
}

pin_project_lite::pin_project! {
    /// The future of [`timeout`]: `fut`'s output, or [`Elapsed`] once the sleep ends first.
    pub struct Timeout<F, S> {
        #[pin]
        fut: F,
        #[pin]
        sleep: S,
    }
}

impl<F: Future, S: Future<Output = ()>> Future for Timeout<F, S> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        // The operation first: a result that is ready wins over a deadline that is also due.
        if let std::task::Poll::Ready(v) = this.fut.poll(cx) {
            return std::task::Poll::Ready(Ok(v));
        }
        match this.sleep.poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(Elapsed)),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}
