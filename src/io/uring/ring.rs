//! The shard's ring: submission, the operation slab, completion dispatch, and the wait.
//!
//! Every operation has a slab entry whose index is its SQE's `user_data`. The future that
//! submitted it owns the buffers and the socket reference the kernel uses; if the future is
//! dropped before the completion, those move into the entry ([`OpState::Abandoned`]), an
//! ASYNC_CANCEL is submitted, and they are freed only when the final CQE arrives. So the kernel
//! never writes into memory Rust has freed, and never works on an fd number that was closed and
//! reused (the socket closes when its last reference, possibly the abandoned op's, goes).
//!
//! The wait needs no EXT_ARG (5.11): a deadline is a TIMEOUT SQE (5.4) submitted with the wait,
//! as liburing does, so the driver runs on every 5.10 kernel.

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::bufring::BufRing;
use super::iovecs::{IoVecs, give_iovecs};

/// `user_data` of the wait's TIMEOUT operations.
const TIMER_TOKEN: u64 = u64::MAX;
/// `user_data` of ASYNC_CANCEL operations (their own completions are not interesting).
const CANCEL_TOKEN: u64 = u64::MAX - 1;
/// Set in the `user_data` of a linked pair's first SQE (the write); the rest is the pair's slab
/// key, which the second SQE (the read) carries bare. Slab keys stay below 2^32.
const LINK_HEAD: u64 = 1 << 62;

/// One operation's slab entry.
enum OpState {
    /// Submitted; the future waits for the completion.
    Waiting(Option<Waker>),
    /// The completion arrived; the future takes it.
    Done { res: i32, flags: u32 },
    /// A multishot operation: completions queue until taken; `ended` once one came without
    /// IORING_CQE_F_MORE.
    Multi {
        waker: Option<Waker>,
        cqes: VecDeque<(i32, u32)>,
        ended: bool,
    },
    /// A write linked to a read ([`LinkedOp`]). Inline, not boxed: a box per exchange would be
    /// an allocation per request.
    Linked(Linked),
    /// The future was dropped. `keep` holds what the kernel may still use; `fd_results`: a
    /// completion's non-negative result is a new fd nobody will take (accept), so it is closed.
    Abandoned {
        _keep: Box<dyn Any>,
        fd_results: bool,
    },
}

/// A linked write-then-read's slab state.
///
/// Two modes. Skip (`write: None` at submit): the write's completion is skipped on success
/// (`IOSQE_CQE_SKIP_SUCCESS`), so exactly one completion comes for the pair: the write's if it
/// failed or was short (the kernel then posts nothing for the read it cancels:
/// REQ_F_SKIP_LINK_CQES), else the read's. Release (`write: Some`): the write's completion comes
/// always and gives its buffers back at once, without waking anyone; the read's always follows
/// (`-ECANCELED` if the write broke the chain) and is the last.
pub struct Linked {
    waker: Option<Waker>,
    head: Option<i32>,
    tail: Option<(i32, u32)>,
    /// Release mode: the write's buffers, held here until its completion.
    write: Option<Box<IoVecs>>,
    release: bool,
    /// The future was dropped: what it kept alive, freed with the entry.
    abandoned: Option<Box<dyn Any>>,
}

impl Linked {
    /// Whether the pair's last completion arrived.
    fn ended(&self) -> bool {
        self.tail.is_some() || (!self.release && self.head.is_some())
    }
}

pub struct Ring {
    uring: IoUring,
    ops: slab::Slab<OpState>,
    /// The earliest deadline a submitted TIMEOUT will wake the wait at, if one is in flight.
    timer_armed: Option<Instant>,
    /// TIMEOUTs in flight (a later one may outlive an earlier deadline that was re-armed).
    timers_in_flight: usize,
    /// The TIMEOUT's timespec: the kernel copies it when the SQE is prepared, during the enter
    /// that submits it, so it only has to outlive that call.
    timespec: Box<types::Timespec>,
    pub bufs: Option<BufRing>,
    /// Scratch for one-byte peeks: the kernel writes there, nobody reads it.
    peek_scratch: Box<[u8; 8]>,
    /// SQEs queued and CQEs reaped so far (the shard's metrics).
    sqes: u64,
    cqes: u64,
}

thread_local! {
    static RING: RefCell<Option<Ring>> = const { RefCell::new(None) };
}

/// SQEs queued and CQEs reaped on this thread's ring so far (zeros without one).
pub fn counters() -> (u64, u64) {
    try_with_ring(|r| (r.sqes, r.cqes)).unwrap_or((0, 0))
}

/// Whether this thread has a ring that can take operations now (not during its teardown).
pub fn ring_alive() -> bool {
    try_with_ring(|_| ()).is_some()
}

/// Runs `f` on this thread's ring.
///
/// # Panics
/// Without a ring on this thread (a programming error: uring streams exist only inside a uring
/// runtime).
pub fn with_ring<R>(f: impl FnOnce(&mut Ring) -> R) -> R {
    RING.with_borrow_mut(|r| f(r.as_mut().expect("io_uring op outside a uring runtime")))
}

/// Like [`with_ring`], or `None` when the ring is gone (thread exit, runtime dropped).
fn try_with_ring<R>(f: impl FnOnce(&mut Ring) -> R) -> Option<R> {
    RING.try_with(|r| r.try_borrow_mut().ok().and_then(|mut r| r.as_mut().map(f)))
        .ok()
        .flatten()
}

/// Installs `ring` as this thread's.
///
/// # Errors
/// A ring already runs on this thread.
pub fn install(ring: Ring) -> io::Result<()> {
    RING.with_borrow_mut(|r| {
        if r.is_some() {
            return Err(io::Error::other(
                "a uring runtime already runs on this thread",
            ));
        }
        *r = Some(ring);
        Ok(())
    })
}

/// Removes this thread's ring, after waiting (bounded) for every operation in flight to complete
/// (the dropped tasks' cancellations), then unregisters the buffer ring and closes it.
pub fn uninstall() {
    let deadline = Instant::now() + Duration::from_secs(2);
    // Bounded by the deadline: each pass waits at most until it.
    loop {
        let left = try_with_ring(|r| {
            if r.ops.is_empty() {
                return 0;
            }
            let _ = r.wait(Some(Instant::now() + Duration::from_millis(50)));
            r.reap();
            r.ops.len()
        })
        .unwrap_or(0);
        if left == 0 || Instant::now() >= deadline {
            if left > 0 {
                tracing::warn!(
                    ops = left,
                    "io_uring operations still in flight at shutdown"
                );
            }
            break;
        }
    }
    let ring = RING.with_borrow_mut(Option::take);
    if let Some(ring) = ring {
        if let Some(bufs) = &ring.bufs {
            bufs.unregister(&ring.uring);
        }
        // Sockets dropped from here on only close their fds: the table goes with the ring.
        super::files::forget();
        // Ring closed first, then the buffer memory (the kernel no longer reads it).
        let Ring { uring, bufs, .. } = ring;
        drop(uring);
        drop(bufs);
    }
}

impl Ring {
    pub fn new(uring: IoUring) -> Ring {
        Ring {
            uring,
            ops: slab::Slab::with_capacity(256),
            timer_armed: None,
            timers_in_flight: 0,
            timespec: Box::new(types::Timespec::new()),
            bufs: None,
            peek_scratch: Box::new([0; 8]),
            sqes: 0,
            cqes: 0,
        }
    }

    pub fn uring(&self) -> &IoUring {
        &self.uring
    }

    /// Queues `entry`; when the submission queue is full, submits what is there first.
    ///
    /// # Safety
    /// Every buffer and fd `entry` names must stay valid until its completion: the caller's
    /// [`Op`] owns them, and gives them to the slab entry if it is dropped first.
    unsafe fn push(&mut self, entry: &squeue::Entry) {
        // Bounded: a submit empties the queue (or fails, and then the ring is unusable anyway:
        // the second push attempt is the last).
        for _ in 0..2 {
            // SAFETY: as the caller promised.
            if unsafe { self.uring.submission().push(entry) }.is_ok() {
                self.sqes += 1;
                return;
            }
            if let Err(e) = self.uring.submit() {
                tracing::error!("io_uring submit failed: {e}");
            }
        }
        // The queue stayed full: complete the op with an error rather than lose it.
        let key = entry.get_user_data();
        if key < CANCEL_TOKEN {
            self.complete(key, -libc::EBUSY, 0);
        }
    }

    /// Queues `first` and `second` next to each other (a linked chain must not be split by a
    /// submit in between: the kernel would run the first alone).
    ///
    /// # Safety
    /// As [`Ring::push`], for both entries.
    unsafe fn push_pair(&mut self, first: &squeue::Entry, second: &squeue::Entry) {
        let free = {
            let sq = self.uring.submission();
            sq.capacity() - sq.len()
        };
        if free < 2
            && let Err(e) = self.uring.submit()
        {
            tracing::error!("io_uring submit failed: {e}");
        }
        // SAFETY: as the caller promised; the queue has room for both now (a ring has at least
        // 64 entries and the submit emptied it), so neither push below submits.
        unsafe {
            self.push(first);
            self.push(second);
        }
    }

    /// Submits queued SQEs and waits for at least one completion, or until `deadline`.
    ///
    /// # Errors
    /// Anything but EINTR/EBUSY/ETIME from `io_uring_enter`.
    pub fn wait(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        if let Some(d) = deadline
            && self.timer_armed.is_none_or(|armed| d < armed)
        {
            // From the turn's clock: one read per turn (the wait is at most a turn late).
            let left = d.saturating_duration_since(super::now());
            *self.timespec = types::Timespec::from(left);
            let entry = opcode::Timeout::new(&*self.timespec as *const _)
                .build()
                .user_data(TIMER_TOKEN);
            // SAFETY: the timespec is boxed in the ring and read by the kernel during the enter
            // below that submits the SQE.
            unsafe { self.push(&entry) };
            self.timer_armed = Some(d);
            self.timers_in_flight += 1;
        }
        match self.uring.submit_and_wait(1) {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                // EBUSY: the CQ overflowed (NODROP keeps the rest in the kernel); reap and retry.
                Some(libc::EINTR | libc::EBUSY | libc::ETIME) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// Submits queued SQEs without waiting (there is runnable work).
    pub fn submit(&mut self) {
        let sq = self.uring.submission();
        // Nothing to submit, no deferred completions to run (TASKRUN flag), no overflow: no
        // syscall.
        if sq.is_empty() && !sq.taskrun() && !sq.cq_overflow() {
            return;
        }
        drop(sq);
        match self.uring.submit() {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
            Err(e) => tracing::error!("io_uring submit failed: {e}"),
        }
    }

    /// Takes every completion off the CQ, waking the futures they belong to. Returns how many.
    pub fn reap(&mut self) -> usize {
        let mut n = 0;
        // Bounded by the CQ's size per pass; the batch is copied out so completing an entry may
        // borrow the rest of the ring.
        let mut batch: [(u64, i32, u32); 64] = [(0, 0, 0); 64];
        loop {
            let mut len = 0;
            {
                let mut cq = self.uring.completion();
                cq.sync();
                for cqe in cq.by_ref().take(batch.len()) {
                    batch[len] = (cqe.user_data(), cqe.result(), cqe.flags());
                    len += 1;
                }
            }
            for &(key, res, flags) in &batch[..len] {
                self.complete(key, res, flags);
            }
            n += len;
            self.cqes += len as u64;
            if len < batch.len() {
                return n;
            }
        }
    }

    fn complete(&mut self, key: u64, res: i32, flags: u32) {
        match key {
            TIMER_TOKEN => {
                self.timers_in_flight = self.timers_in_flight.saturating_sub(1);
                // Re-armed conservatively: a wait after this one arms its own deadline.
                self.timer_armed = None;
                return;
            }
            CANCEL_TOKEN => return,
            k if k & LINK_HEAD != 0 => {
                // A linked write's completion: in skip mode only when it failed or was short,
                // and then the pair's only one (the read it cancels posts none); in release mode
                // always, giving its buffers back, with the read's still to come.
                let key = (k & !LINK_HEAD) as usize;
                let Some(OpState::Linked(l)) = self.ops.get_mut(key) else {
                    debug_assert!(false, "linked write's completion without its pair");
                    return;
                };
                l.head = Some(res);
                if let Some(v) = l.write.take() {
                    give_iovecs(v);
                }
                if l.ended() {
                    if l.abandoned.is_some() {
                        self.ops.remove(key);
                    } else if let Some(w) = l.waker.take() {
                        w.wake();
                    }
                }
                return;
            }
            _ => {}
        }
        let key = key as usize;
        let more = cqueue::more(flags);
        let Some(state) = self.ops.get_mut(key) else {
            debug_assert!(false, "completion for a free op slot {key}");
            return;
        };
        match state {
            OpState::Waiting(w) => {
                let w = w.take();
                *state = OpState::Done { res, flags };
                if let Some(w) = w {
                    w.wake();
                }
            }
            OpState::Linked(l) => {
                l.tail = Some((res, flags));
                if l.abandoned.is_some() {
                    if let Some(bid) = cqueue::buffer_select(flags)
                        && let Some(bufs) = &mut self.bufs
                    {
                        bufs.give_back(bid);
                    }
                    self.ops.remove(key);
                } else if let Some(w) = l.waker.take() {
                    w.wake();
                }
            }
            OpState::Multi { waker, cqes, ended } => {
                cqes.push_back((res, flags));
                *ended |= !more;
                if let Some(w) = waker.take() {
                    w.wake();
                }
            }
            OpState::Abandoned { fd_results, .. } => {
                if *fd_results && res >= 0 {
                    // SAFETY: an accept's result is a new fd that nothing else owns.
                    unsafe { libc::close(res) };
                }
                if let Some(bid) = cqueue::buffer_select(flags)
                    && let Some(bufs) = &mut self.bufs
                {
                    bufs.give_back(bid);
                }
                if !more {
                    self.ops.remove(key);
                }
            }
            OpState::Done { .. } => debug_assert!(false, "second completion for op {key}"),
        }
    }

    /// Submits an ASYNC_CANCEL for op `key`.
    fn cancel(&mut self, key: usize) {
        self.cancel_user_data(key as u64);
    }

    fn cancel_user_data(&mut self, user_data: u64) {
        let entry = opcode::AsyncCancel::new(user_data)
            .build()
            .user_data(CANCEL_TOKEN);
        // SAFETY: ASYNC_CANCEL names no memory, only the user_data of the op to cancel.
        unsafe { self.push(&entry) };
    }

    /// The peek scratch byte's address (see [`Ring::peek_scratch`]).
    pub fn peek_scratch(&mut self) -> *mut u8 {
        self.peek_scratch.as_mut_ptr()
    }

    /// Operations in flight (tests).
    #[cfg(test)]
    pub fn ops_in_flight(&self) -> usize {
        self.ops.len()
    }
}

/// A submitted one-shot operation: resolves to its result (`res`, negative errno), CQE flags,
/// and the resources `T` it kept alive (buffers, the socket reference).
pub struct Op<T: 'static> {
    key: usize,
    data: Option<T>,
    /// A non-negative result is a new fd (accept): closed if nobody takes it.
    fd_result: bool,
}

impl<T: 'static> Op<T> {
    /// Submits `entry`, whose buffers and fd live in `data`.
    ///
    /// # Safety
    /// Every pointer in `entry` must point into heap memory owned by `data` (or memory that
    /// outlives the ring), and the fd must be kept open by `data`: they stay valid until the
    /// completion, whether or not this `Op` is dropped first.
    pub unsafe fn submit(entry: squeue::Entry, data: T) -> Op<T> {
        let key = with_ring(|r| {
            let key = r.ops.insert(OpState::Waiting(None));
            // SAFETY: as the caller promised; `data` moves into the returned Op, and into the
            // slab on drop, without its heap memory moving.
            unsafe { r.push(&entry.user_data(key as u64)) };
            key
        });
        Op {
            key,
            data: Some(data),
            fd_result: false,
        }
    }

    /// Lets the operation run to its completion with nobody waiting for it: its resources move
    /// into the slab entry (as a dropped op's do) but nothing cancels it. For a write that must
    /// still go out after its stream is dropped.
    pub fn detach(mut self) {
        let Some(data) = self.data.take() else { return };
        let key = self.key;
        let _ = try_with_ring(move |r| match &r.ops[key] {
            OpState::Done { .. } => {
                r.ops.remove(key);
            }
            _ => {
                r.ops[key] = OpState::Abandoned {
                    _keep: Box::new(data),
                    fd_results: false,
                };
            }
        });
    }

    /// Marks a non-negative result as a new fd this op must close if it is dropped.
    pub fn fd_result(mut self) -> Self {
        self.fd_result = true;
        self
    }
}

impl<T: 'static> Future for Op<T> {
    type Output = (i32, u32, T);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let key = self.key;
        let done = with_ring(|r| match &mut r.ops[key] {
            OpState::Done { res, flags } => {
                let out = (*res, *flags);
                r.ops.remove(key);
                Some(out)
            }
            OpState::Waiting(w) => {
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
                None
            }
            _ => unreachable!("one-shot op in a multishot, linked or abandoned state"),
        });
        match done {
            Some((res, flags)) => {
                // SAFETY-free: the Op is Unpin-agnostic; `data` is only moved out here, once.
                let data = self.data.take().expect("polled after completion");
                Poll::Ready((res, flags, data))
            }
            None => Poll::Pending,
        }
    }
}

// The op never hands out pinned references to `data`.
impl<T: 'static> Unpin for Op<T> {}

impl<T: 'static> Drop for Op<T> {
    fn drop(&mut self) {
        let Some(data) = self.data.take() else { return };
        let (key, fd_result) = (self.key, self.fd_result);
        let mut data = Some(data);
        let ran = try_with_ring(|r| match &r.ops[key] {
            OpState::Done { res, flags } => {
                let (res, flags) = (*res, *flags);
                r.ops.remove(key);
                if fd_result && res >= 0 {
                    // SAFETY: a completed accept's fd that nobody took.
                    unsafe { libc::close(res) };
                }
                if let Some(bid) = cqueue::buffer_select(flags)
                    && let Some(bufs) = &mut r.bufs
                {
                    bufs.give_back(bid);
                }
            }
            _ => {
                r.ops[key] = OpState::Abandoned {
                    _keep: Box::new(data.take()),
                    fd_results: fd_result,
                };
                r.cancel(key);
            }
        });
        if ran.is_none() {
            leak_if_ring_borrowed(data);
        }
    }
}

/// A write and a read submitted as one chain (`IOSQE_IO_LINK`): the read starts when the write
/// has completed whole, and only the read's completion wakes the task (the write's is skipped on
/// success, `IOSQE_CQE_SKIP_SUCCESS`, 5.17). So a request to a backend and the read of its
/// answer cost one wake-up instead of two.
///
/// Resolves to `Ok((res, flags))`, the read's completion (the write went whole), or `Err(res)`,
/// the write's when it failed or was short (the read never ran), and the resources `T`.
///
/// With `release` buffers given at submit, the write's completion is not skipped: it hands them
/// back the moment the write is done, so a read that may wait long (a keep-alive client's next
/// request) does not pin the answer's memory. Still one wake-up: the write's completion wakes
/// nobody.
pub struct LinkedOp<T: 'static> {
    key: usize,
    data: Option<T>,
    /// Release mode: the write's length (its completion's result when it went whole).
    write_len: Option<usize>,
}

impl<T: 'static> LinkedOp<T> {
    /// Submits `write` linked to `read`.
    ///
    /// # Safety
    /// As [`Op::submit`], for both entries. `write` must fail rather than complete short (a
    /// stream socket's send with `MSG_WAITALL`, 5.18), or the read would start with part of the
    /// request unsent.
    pub unsafe fn submit(
        write: squeue::Entry,
        read: squeue::Entry,
        data: T,
        release: Option<Box<IoVecs>>,
    ) -> LinkedOp<T> {
        let write_len = release
            .as_ref()
            .map(|v| v.bufs.iter().map(Bytes::len).sum::<usize>());
        let key = with_ring(|r| {
            let flags = if release.is_some() {
                squeue::Flags::IO_LINK
            } else {
                squeue::Flags::IO_LINK | squeue::Flags::SKIP_SUCCESS
            };
            let key = r.ops.insert(OpState::Linked(Linked {
                waker: None,
                head: None,
                tail: None,
                release: release.is_some(),
                write: release,
                abandoned: None,
            }));
            let write = write.flags(flags).user_data(key as u64 | LINK_HEAD);
            // SAFETY: as the caller promised; `data` moves into the returned op, and into the
            // slab on drop, without its heap memory moving.
            unsafe { r.push_pair(&write, &read.user_data(key as u64)) };
            key
        });
        LinkedOp {
            key,
            data: Some(data),
            write_len,
        }
    }
}

impl<T: 'static> Future for LinkedOp<T> {
    type Output = (Result<(i32, u32), i32>, T);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (key, write_len) = (self.key, self.write_len);
        let done = with_ring(|r| {
            let OpState::Linked(l) = &mut r.ops[key] else {
                unreachable!("linked op in another state");
            };
            if !l.ended() {
                if !l.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    l.waker = Some(cx.waker().clone());
                }
                return None;
            }
            let whole = |h: i32| write_len.is_some_and(|n| usize::try_from(h) == Ok(n));
            let out = match (l.head, l.tail) {
                // Release mode: the write's completion came; it broke the chain unless whole.
                (Some(h), Some(done)) if l.release && whole(h) => Ok(done),
                (Some(h), _) => Err(h),
                (None, Some(done)) => Ok(done),
                (None, None) => unreachable!("ended without a completion"),
            };
            r.ops.remove(key);
            Some(out)
        });
        match done {
            Some(out) => {
                let data = self.data.take().expect("polled after completion");
                Poll::Ready((out, data))
            }
            None => Poll::Pending,
        }
    }
}

// The op never hands out pinned references to `data`.
impl<T: 'static> Unpin for LinkedOp<T> {}

impl<T: 'static> Drop for LinkedOp<T> {
    fn drop(&mut self) {
        let Some(data) = self.data.take() else { return };
        let key = self.key;
        let mut data = Some(data);
        let ran = try_with_ring(|r| {
            let OpState::Linked(l) = &mut r.ops[key] else {
                unreachable!("linked op in another state");
            };
            if l.ended() {
                let tail = l.tail;
                r.ops.remove(key);
                if let Some((_, flags)) = tail
                    && let Some(bid) = cqueue::buffer_select(flags)
                    && let Some(bufs) = &mut r.bufs
                {
                    bufs.give_back(bid);
                }
                return;
            }
            l.abandoned = Some(Box::new(data.take()));
            // Both halves: the write may still be waiting for socket room (the read then has
            // not started and cannot be found); its cancellation ends the pair.
            r.cancel_user_data(key as u64 | LINK_HEAD);
            r.cancel(key);
        });
        if ran.is_none() {
            leak_if_ring_borrowed(data);
        }
    }
}

/// For an op dropped when its ring could not be reached: if the ring exists but is borrowed (a
/// bug: no op is dropped inside a ring borrow), leaking what the kernel may still write beats
/// freeing it. Otherwise the ring is gone: it closed after every op completed (see
/// `uninstall`), and `data` is dropped.
fn leak_if_ring_borrowed<T>(data: Option<T>) {
    if let Some(d) = data
        && RING
            .try_with(|r| r.try_borrow_mut().is_err())
            .unwrap_or(false)
    {
        debug_assert!(false, "io_uring op dropped inside a ring borrow");
        std::mem::forget(d);
    }
}

/// A submitted multishot operation (accept): a stream of completions until one comes without
/// IORING_CQE_F_MORE.
pub struct MultiOp<T: 'static> {
    key: Option<usize>,
    data: Option<T>,
}

impl<T: 'static> MultiOp<T> {
    /// Submits a multishot `entry` whose non-negative results are new fds.
    ///
    /// # Safety
    /// As [`Op::submit`].
    pub unsafe fn submit(entry: squeue::Entry, data: T) -> MultiOp<T> {
        let key = with_ring(|r| {
            let key = r.ops.insert(OpState::Multi {
                waker: None,
                cqes: VecDeque::new(),
                ended: false,
            });
            // SAFETY: as the caller promised.
            unsafe { r.push(&entry.user_data(key as u64)) };
            key
        });
        MultiOp {
            key: Some(key),
            data: Some(data),
        }
    }

    /// The next completion, or `None` once the operation ended (and every completion was
    /// taken).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(i32, u32)>> {
        let Some(key) = self.key else {
            return Poll::Ready(None);
        };
        let next = with_ring(|r| {
            let OpState::Multi { waker, cqes, ended } = &mut r.ops[key] else {
                unreachable!("multishot op in a one-shot state");
            };
            if let Some(c) = cqes.pop_front() {
                return Poll::Ready(Some(c));
            }
            if *ended {
                r.ops.remove(key);
                return Poll::Ready(None);
            }
            *waker = Some(cx.waker().clone());
            Poll::Pending
        });
        if let Poll::Ready(None) = next {
            self.key = None;
        }
        next
    }
}

impl<T: 'static> Drop for MultiOp<T> {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let data = self.data.take();
        try_with_ring(move |r| {
            let OpState::Multi { cqes, ended, .. } = &mut r.ops[key] else {
                return;
            };
            for (res, _) in cqes.drain(..) {
                if res >= 0 {
                    // SAFETY: accepted fds nobody took.
                    unsafe { libc::close(res) };
                }
            }
            if *ended {
                r.ops.remove(key);
            } else {
                r.ops[key] = OpState::Abandoned {
                    _keep: Box::new(data),
                    fd_results: true,
                };
                r.cancel(key);
            }
        });
    }
}

/// A socket fd shared by a stream and its in-flight operations: closed when the last goes.
#[derive(Debug)]
pub struct Fd {
    raw: RawFd,
    /// Its slot in the ring's file table, if it got one (`files.rs`).
    slot: Option<u32>,
}

impl Fd {
    /// Owns `raw`, putting it in a slot of the ring's file table where there is one free.
    pub fn registered(raw: RawFd) -> Fd {
        Fd {
            raw,
            slot: super::files::insert(raw),
        }
    }

    /// Owns `raw`, named by its fd only (listeners: few, and not worth a slot).
    pub fn plain(raw: RawFd) -> Fd {
        Fd { raw, slot: None }
    }

    pub fn raw(&self) -> RawFd {
        self.raw
    }

    /// The file-table slot operations should name (with `IOSQE_FIXED_FILE`), if any.
    pub fn slot(&self) -> Option<u32> {
        self.slot
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // The slot first: the table holds its own reference to the file, and the socket must
        // close (send its FIN) now, not when the slot is next reused. No op names the slot any
        // more: each holds a reference to this value until its final completion.
        if let Some(slot) = self.slot {
            super::files::remove(slot);
        }
        // SAFETY: the fd is owned by this value alone (made from an accepted, connected or
        // handed-over socket) and closed exactly once, here.
        unsafe { libc::close(self.raw) };
    }
}

/// Turns an op's `res` into a byte count or the errno's error.
pub fn result(res: i32) -> io::Result<usize> {
    if res >= 0 {
        Ok(res as usize)
    } else {
        Err(io::Error::from_raw_os_error(-res))
    }
}
