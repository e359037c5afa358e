//! A shard-local latch: set once, awaited by many tasks on the same thread (drain, shutdown).
//!
//! Plain `Rc<RefCell>`: it never crosses threads, so it needs no atomics and works on both drivers.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct Inner {
    set: bool,
    /// One slot per pending [`Wait`]; a dropped `Wait` frees its slot, so waiting repeatedly
    /// (once per keepalive request) never grows this.
    waiters: slab::Slab<Waker>,
}

/// A one-way flag whose [`wait`](LocalEvent::wait) completes once [`set`](LocalEvent::set) ran.
#[derive(Clone, Default)]
pub struct LocalEvent {
    inner: Rc<RefCell<Inner>>,
}

impl LocalEvent {
    /// A new, unset event.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the event and wakes every waiter. Idempotent.
    pub fn set(&self) {
        let waiters = {
            let mut inner = self.inner.borrow_mut();
            inner.set = true;
            std::mem::take(&mut inner.waiters)
        };
        for (_, w) in waiters {
            w.wake();
        }
    }

    /// Whether [`set`](LocalEvent::set) has run.
    pub fn is_set(&self) -> bool {
        self.inner.borrow().set
    }

    /// Completes when the event is set (at once if it already is).
    pub fn wait(&self) -> Wait {
        Wait {
            event: self.clone(),
            slot: None,
        }
    }
}

/// The future of [`LocalEvent::wait`].
pub struct Wait {
    event: LocalEvent,
    slot: Option<usize>,
}

impl Future for Wait {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut inner = this.event.inner.borrow_mut();
        if inner.set {
            this.slot = None;
            return Poll::Ready(());
        }
        match this.slot {
            Some(slot) => match inner.waiters.get_mut(slot) {
                Some(w) => w.clone_from(cx.waker()),
                None => this.slot = Some(inner.waiters.insert(cx.waker().clone())),
            },
            None => this.slot = Some(inner.waiters.insert(cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let mut inner = self.event.inner.borrow_mut();
            if !inner.set && inner.waiters.contains(slot) {
                inner.waiters.remove(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn dropped_waits_free_their_slots() {
        let ev = LocalEvent::new();
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..1000 {
            let mut w = Box::pin(ev.wait());
            assert!(w.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(ev.inner.borrow().waiters.len(), 0);
        let mut w = Box::pin(ev.wait());
        assert!(w.as_mut().poll(&mut cx).is_pending());
        ev.set();
        assert!(w.as_mut().poll(&mut cx).is_ready());
        assert!(ev.is_set());
    }
}
