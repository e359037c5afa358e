//! Boxed futures whose heap slots are recycled per thread: [`boxed`] is `Box::pin` without a
//! `malloc`/`free` per request once the shard is warm.
//!
//! Why box at all: a connection task's future is as large as the largest state it can be in, and
//! an idle keepalive connection pays for all of it. So the request's state (a proxy exchange, a
//! fan-out, a split head read) lives behind a pointer and only while it runs. Why recycle: those
//! boxes come and go with every request, and the allocator showed as about 4 of the last 4
//! allocations per proxied request (issue 19).
//!
//! Slots come in power-of-two size classes from 64 B to 32 KiB, 16-byte aligned; a future that
//! fits none (larger, or more strictly aligned) gets a plain `Box`. A dropped future's slot goes on
//! its thread's spare list for its class, up to [`set_max_spare`] slots per class (the shard sets
//! it from `server.free_list_max`); beyond that it is freed. A thread is a shard, so the lists
//! need no lock. A `Recycled` is neither `Send` nor `Sync` (it holds a raw pointer), so a slot
//! always goes back to the thread that took it.
//!
//! The `unsafe` here is the one place above the drivers that holds raw memory: a slot is written
//! once, pinned for its whole life, dropped in place once.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// Smallest slot: 64 bytes (`1 << MIN_SHIFT`).
const MIN_SHIFT: u32 = 6;

/// Size classes: 64 B, 128 B, ... 32 KiB.
const CLASSES: usize = 10;

/// Every slot's alignment: what `malloc` gives anyway (a stricter one costs glibc padding).
const ALIGN: usize = 16;

/// Spare slots kept per class when nobody set a limit.
pub const DEFAULT_MAX_SPARE: usize = 256;

/// A boxed future in a recycled slot (see the module doc). Dropping it drops the future in place
/// and gives the slot back.
pub struct Recycled<F> {
    slot: Slot<F>,
}

enum Slot<F> {
    /// In a slot of class `class`; the future is never moved out of it.
    Pooled { ptr: NonNull<F>, class: u8 },
    /// Too large or too aligned for a class.
    Boxed(Pin<Box<F>>),
}

/// The future `fut` on the heap, pinned, in a recycled slot when one of its class is spare.
pub fn boxed<F: Future>(fut: F) -> Recycled<F> {
    boxed_with(move || fut)
}

/// Like [`boxed`], with the future made by `make` straight into its slot: the compiler can then
/// build it there instead of on the stack and copy it over. An async fn's future is as large as
/// its largest state (a fan-out's is 6 KB), and the copy is of all of it, every request.
#[inline(always)]
pub fn boxed_with<F: Future>(make: impl FnOnce() -> F) -> Recycled<F> {
    let Some(class) = class_of(Layout::new::<F>()) else {
        return Recycled {
            slot: Slot::Boxed(Box::pin(make())),
        };
    };
    let raw = take(class).cast::<F>();
    // SAFETY: `raw` is a live allocation of `layout(class)`, at least as large and as aligned as
    // `F` (`class_of`), owned by nobody else (fresh, or popped off the spare list). If `make`
    // panics, the slot is lost (leaked), never used.
    unsafe { raw.as_ptr().write(make()) };
    Recycled {
        slot: Slot::Pooled {
            ptr: raw,
            class: class as u8,
        },
    }
}

// The future sits behind a pointer and never moves, whatever happens to the handle.
impl<F> Unpin for Recycled<F> {}

impl<F: Future> Future for Recycled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match &mut self.get_mut().slot {
            // SAFETY: the slot holds an initialized `F` until this handle drops it, and it is
            // never moved: pinning the place is sound.
            Slot::Pooled { ptr, .. } => unsafe { Pin::new_unchecked(ptr.as_mut()) }.poll(cx),
            Slot::Boxed(b) => b.as_mut().poll(cx),
        }
    }
}

impl<F> Drop for Recycled<F> {
    fn drop(&mut self) {
        if let Slot::Pooled { ptr, class } = self.slot {
            // Given back even if the future's drop panics.
            let _back = GiveBack {
                ptr: ptr.cast(),
                class: usize::from(class),
            };
            // SAFETY: the slot holds an initialized `F` (written in `boxed`) that nothing else
            // drops; after this the memory is only handed back, never read as `F`.
            unsafe { std::ptr::drop_in_place(ptr.as_ptr()) };
        }
    }
}

/// Puts a slot back when dropped (after the future in it was dropped).
struct GiveBack {
    ptr: NonNull<u8>,
    class: usize,
}

impl Drop for GiveBack {
    fn drop(&mut self) {
        give_back(self.ptr, self.class);
    }
}

/// The class whose slots fit `l`; `None` if none does.
fn class_of(l: Layout) -> Option<usize> {
    // A zero-sized future needs no memory: `Box` allocates none, a slot would take 64 bytes.
    if l.align() > ALIGN || l.size() == 0 {
        return None;
    }
    let size = l.size().next_power_of_two().max(1 << MIN_SHIFT);
    let class = (size.trailing_zeros() - MIN_SHIFT) as usize;
    (class < CLASSES).then_some(class)
}

/// The layout of every slot of `class`.
fn layout(class: usize) -> Layout {
    // Cannot fail: a power of two up to 32 KiB, aligned to `ALIGN`.
    Layout::from_size_align(1 << (MIN_SHIFT as usize + class), ALIGN).expect("slot layout")
}

/// One thread's spare slots and counters.
struct Spares {
    lists: [Vec<NonNull<u8>>; CLASSES],
    max: usize,
    fresh: u64,
    reused: u64,
}

impl Drop for Spares {
    fn drop(&mut self) {
        for (class, list) in self.lists.iter_mut().enumerate() {
            for p in list.drain(..) {
                // SAFETY: every spare slot was allocated with `layout(class)` and is owned by
                // this list alone.
                unsafe { alloc::dealloc(p.as_ptr(), layout(class)) };
            }
        }
    }
}

thread_local! {
    static SPARES: RefCell<Spares> = const {
        RefCell::new(Spares {
            lists: [const { Vec::new() }; CLASSES],
            max: DEFAULT_MAX_SPARE,
            fresh: 0,
            reused: 0,
        })
    };
}

/// A slot of `class`: a spare one, else a fresh allocation.
fn take(class: usize) -> NonNull<u8> {
    let spare = SPARES
        .try_with(|s| {
            let mut s = s.borrow_mut();
            let p = s.lists[class].pop();
            if p.is_some() {
                s.reused += 1;
            } else {
                s.fresh += 1;
            }
            p
        })
        .ok()
        .flatten();
    spare.unwrap_or_else(|| {
        let l = layout(class);
        // SAFETY: `l` has a non-zero size.
        let p = unsafe { alloc::alloc(l) };
        NonNull::new(p).unwrap_or_else(|| alloc::handle_alloc_error(l))
    })
}

/// Keeps the emptied slot `p` of `class` for later, or frees it when the list is full (or the
/// thread is exiting).
fn give_back(p: NonNull<u8>, class: usize) {
    let kept = SPARES
        .try_with(|s| {
            let mut s = s.borrow_mut();
            if s.lists[class].len() < s.max {
                s.lists[class].push(p);
                true
            } else {
                false
            }
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: `p` was allocated with `layout(class)` and nothing refers to it any more.
        unsafe { alloc::dealloc(p.as_ptr(), layout(class)) };
    }
}

/// Sets how many spare slots this thread keeps per size class (the shard's
/// `server.free_list_max`), freeing any beyond it. Does nothing once the thread's lists are gone
/// (called from another thread-local's destructor).
pub fn set_max_spare(max: usize) {
    let freed: Vec<(usize, Vec<NonNull<u8>>)> = SPARES
        .try_with(|s| {
            let mut s = s.borrow_mut();
            s.max = max;
            s.lists
                .iter_mut()
                .enumerate()
                .filter(|(_, l)| l.len() > max)
                .map(|(c, l)| (c, l.split_off(max)))
                .collect()
        })
        .unwrap_or_default();
    for (class, list) in freed {
        for p in list {
            // SAFETY: a spare slot of `class`, taken off its list: nothing else refers to it.
            unsafe { alloc::dealloc(p.as_ptr(), layout(class)) };
        }
    }
}

/// This thread's slot counters: for the shard's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotStats {
    /// Slots allocated fresh (no spare of the class was left).
    pub fresh: u64,
    /// Slots taken off a spare list.
    pub reused: u64,
    /// Slots on the spare lists now.
    pub spare: usize,
    /// Bytes those spare slots hold.
    pub spare_bytes: usize,
}

/// This thread's slot counters (all zero once the thread's lists are gone).
pub fn stats() -> SlotStats {
    SPARES
        .try_with(|s| {
            let s = s.borrow();
            let spare = s.lists.iter().map(Vec::len).sum();
            let spare_bytes = s
                .lists
                .iter()
                .enumerate()
                .map(|(c, l)| l.len() * layout(c).size())
                .sum();
            SlotStats {
                fresh: s.fresh,
                reused: s.reused,
                spare,
                spare_bytes,
            }
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::task::Waker;

    fn poll_once<F: Future>(f: &mut Recycled<F>) -> Poll<F::Output> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(f).poll(&mut cx)
    }

    #[test]
    fn classes_fit_and_round_up() {
        assert_eq!(
            class_of(Layout::new::<()>()),
            None,
            "zero-sized: a Box allocates nothing"
        );
        assert_eq!(class_of(Layout::new::<u8>()), Some(0));
        assert_eq!(class_of(Layout::new::<[u8; 64]>()), Some(0));
        assert_eq!(class_of(Layout::new::<[u8; 65]>()), Some(1));
        assert_eq!(class_of(Layout::new::<[u8; 32768]>()), Some(9));
        assert_eq!(class_of(Layout::new::<[u8; 32769]>()), None);
        #[repr(align(32))]
        struct Wide;
        assert_eq!(class_of(Layout::new::<Wide>()), None);
    }

    #[test]
    fn a_dropped_slot_is_reused_and_the_future_dropped_once() {
        let drops = Rc::new(Cell::new(0));
        struct Counted(Rc<Cell<u32>>, [u8; 200]);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        // One future type, so both take a slot of the same class.
        async fn make(c: Counted) -> u8 {
            std::future::ready(()).await;
            c.1[199]
        }
        let before = stats();
        let mut f = boxed(make(Counted(drops.clone(), [7; 200])));
        assert_eq!(drops.get(), 0);
        assert_eq!(poll_once(&mut f), Poll::Ready(7));
        drop(f);
        assert_eq!(drops.get(), 1);
        // Dropped before it ran: the captured value is dropped, once.
        drop(boxed(make(Counted(drops.clone(), [9; 200]))));
        assert_eq!(drops.get(), 2);
        let after = stats();
        assert_eq!(
            (after.fresh - before.fresh, after.reused - before.reused),
            (1, 1),
            "{before:?} -> {after:?}"
        );
    }

    #[test]
    fn pending_futures_keep_their_own_slots() {
        // Several live at once: each has its slot; values do not bleed between them.
        let mut live: Vec<_> = (0u64..50)
            .map(|i| {
                boxed(async move {
                    let v = [i; 20];
                    std::future::pending::<()>().await;
                    v[19]
                })
            })
            .collect();
        for f in &mut live {
            assert!(poll_once(f).is_pending());
        }
        let ptrs: std::collections::HashSet<usize> = live
            .iter()
            .map(|f| match &f.slot {
                Slot::Pooled { ptr, .. } => ptr.as_ptr() as usize,
                Slot::Boxed(_) => 0,
            })
            .collect();
        assert_eq!(ptrs.len(), 50);
    }

    #[test]
    fn oversized_futures_fall_back_to_box() {
        let big = [3u8; 40_000];
        let mut f = boxed(async move { big[39_999] });
        assert!(matches!(f.slot, Slot::Boxed(_)));
        assert_eq!(poll_once(&mut f), Poll::Ready(3));
    }

    #[test]
    fn boxed_with_builds_in_a_recycled_slot() {
        let big = [4u8; 3000];
        let before = stats();
        for _ in 0..3 {
            let mut f = boxed_with(|| async move { big[2999] });
            assert!(matches!(f.slot, Slot::Pooled { .. }));
            assert_eq!(poll_once(&mut f), Poll::Ready(4));
        }
        let after = stats();
        assert_eq!(
            (after.fresh - before.fresh, after.reused - before.reused),
            (1, 2),
            "one slot, reused"
        );
    }

    #[test]
    fn zero_sized_futures_take_no_slot() {
        let f = boxed(std::future::pending::<()>());
        assert_eq!(std::mem::size_of::<std::future::Pending<()>>(), 0);
        assert!(matches!(f.slot, Slot::Boxed(_)));
    }

    #[test]
    fn spare_lists_are_capped() {
        // Runs on its own test thread: its lists are its own.
        set_max_spare(2);
        let fs: Vec<_> = (0..5).map(|_| boxed(async {})).collect();
        drop(fs);
        assert_eq!(stats().spare, 2);
        set_max_spare(0);
        assert_eq!(stats().spare, 0);
    }
}
