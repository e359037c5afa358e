//! The shard's task executor: a slab of boxed task futures and a FIFO of the ones woken.
//!
//! A waker is the task's slab index and generation packed into the waker's data word, so
//! cloning, waking and dropping one never allocates or counts references (compio clones an
//! `Arc`-like task handle per operation). A wake pushes the index once onto the run queue; a
//! stale waker (its task ended, the slot reused) fails the generation check and does nothing.
//! Wakers are only ever used on the shard's own thread; one used elsewhere reaches that thread's
//! executor (if any), where at worst it polls a task spuriously, which futures must tolerate.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

type TaskFuture = Pin<Box<dyn Future<Output = ()>>>;

struct Task {
    /// None while the task is being polled (taken out so that the slab is not borrowed then).
    fut: Option<TaskFuture>,
    generation: u32,
    queued: bool,
}

#[derive(Default)]
struct Exec {
    tasks: RefCell<slab::Slab<Task>>,
    queue: RefCell<VecDeque<(u32, u32)>>,
    /// The block_on future was woken.
    main_woken: Cell<bool>,
    next_generation: Cell<u32>,
    /// Task polls so far (each is a wake-up but a task's first): for the shard's metrics.
    polls: Cell<u64>,
}

thread_local! {
    static EXEC: Exec = Exec::default();
}

/// The data word of the block_on future's waker.
const MAIN: usize = usize::MAX;

fn pack(index: u32, generation: u32) -> usize {
    // usize is 64 bits on every target ringway builds for (Linux x86-64 and aarch64).
    ((index as usize) << 32) | generation as usize
}

fn unpack(data: usize) -> (u32, u32) {
    ((data >> 32) as u32, data as u32)
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone_raw, wake_raw, wake_raw, drop_raw);

fn clone_raw(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

fn wake_raw(data: *const ()) {
    wake(data as usize);
}

fn drop_raw(_: *const ()) {}

fn waker(data: usize) -> Waker {
    // SAFETY: the vtable's functions treat the data word as a plain integer (never
    // dereferenced), and clone/wake/drop uphold the RawWaker contract trivially: nothing is
    // owned, so nothing can leak or be freed twice.
    unsafe { Waker::from_raw(RawWaker::new(data as *const (), &VTABLE)) }
}

fn wake(data: usize) {
    // At thread exit the executor may be gone: nothing is left to wake then.
    let _ = EXEC.try_with(|ex| {
        if data == MAIN {
            ex.main_woken.set(true);
            return;
        }
        let (index, generation) = unpack(data);
        let mut tasks = ex.tasks.borrow_mut();
        if let Some(t) = tasks.get_mut(index as usize)
            && t.generation == generation
            && !t.queued
        {
            t.queued = true;
            ex.queue.borrow_mut().push_back((index, generation));
        }
    });
}

/// Spawns a detached task on this thread's executor; it is first polled in the next turn.
pub fn spawn<F: Future<Output = ()> + 'static>(fut: F) {
    EXEC.with(|ex| {
        let generation = ex.next_generation.get().wrapping_add(1);
        ex.next_generation.set(generation);
        let index = ex.tasks.borrow_mut().insert(Task {
            fut: Some(Box::pin(fut)),
            generation,
            queued: true,
        });
        let index = u32::try_from(index).expect("fewer than 2^32 tasks");
        ex.queue.borrow_mut().push_back((index, generation));
    });
}

/// Polls `fut` (the block_on future) if it was woken, or on `first`. Ready ends the loop.
pub fn poll_main<F: Future>(fut: Pin<&mut F>, first: bool) -> Poll<F::Output> {
    let woken = EXEC.with(|ex| ex.main_woken.replace(false));
    if !woken && !first {
        return Poll::Pending;
    }
    let w = waker(MAIN);
    fut.poll(&mut Context::from_waker(&w))
}

/// Polls up to `budget` woken tasks, in wake order. Returns whether more are still queued (the
/// loop then reaps completions without waiting, and comes back).
pub fn run_tasks(budget: usize) -> bool {
    EXEC.with(|ex| {
        for _ in 0..budget {
            let Some((index, generation)) = ex.queue.borrow_mut().pop_front() else {
                return ex.main_woken.get();
            };
            let fut = {
                let mut tasks = ex.tasks.borrow_mut();
                match tasks.get_mut(index as usize) {
                    Some(t) if t.generation == generation => {
                        t.queued = false;
                        t.fut.take()
                    }
                    _ => None,
                }
            };
            let Some(mut fut) = fut else { continue };
            let w = waker(pack(index, generation));
            ex.polls.set(ex.polls.get() + 1);
            let done = fut.as_mut().poll(&mut Context::from_waker(&w)).is_ready();
            let mut tasks = ex.tasks.borrow_mut();
            if done {
                tasks.remove(index as usize);
                // Dropped outside the borrow: a task's drop may spawn or wake.
                drop(tasks);
                drop(fut);
            } else if let Some(t) = tasks.get_mut(index as usize) {
                t.fut = Some(fut);
            }
        }
        !ex.queue.borrow().is_empty() || ex.main_woken.get()
    })
}

/// How many times this thread's executor has polled a task.
pub fn task_polls() -> u64 {
    EXEC.try_with(|ex| ex.polls.get()).unwrap_or(0)
}

/// Whether a task or the main future waits to be polled.
pub fn has_work() -> bool {
    EXEC.with(|ex| ex.main_woken.get() || !ex.queue.borrow().is_empty())
}

/// Drops every task (cancelling their operations and closing their sockets), for a runtime that
/// stops. Tasks dropped here may spawn or wake others; those are dropped too.
pub fn drop_all_tasks() {
    // Bounded: each pass drops every task present; a drop that spawns again is drained by the
    // next pass, and a task tree is finite.
    for _ in 0..64 {
        let tasks = EXEC.with(|ex| {
            ex.queue.borrow_mut().clear();
            ex.main_woken.set(false);
            std::mem::take(&mut *ex.tasks.borrow_mut())
        });
        if tasks.is_empty() {
            return;
        }
        drop(tasks);
    }
}

/// How many tasks exist on this thread (tests).
#[cfg(test)]
pub fn task_count() -> usize {
    EXEC.with(|ex| ex.tasks.borrow().len())
}
