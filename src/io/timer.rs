//! The uring driver's timers: one hierarchical timing wheel per shard, millisecond ticks.
//!
//! compio, the driver before ringway's own, kept its timers in a `BTreeMap` shared through
//! `Rc<RefCell<..>>`, and a fan-out request arms and cancels half a dozen of them; in a
//! side-by-side profile of `fanout-4` that bookkeeping cost more than tokio's whole wheel on the
//! epoll driver. Almost every ringway timer
//! is cancelled long before it fires (an idle wait, a call timeout), so arming and cancelling must
//! be O(1) and allocation-free: entries live in a slab, linked into per-slot lists, with a bitmap
//! of occupied slots per level so the next deadline is found with a few bit operations.
//!
//! Level `l` has 64 slots of `64^l` ms each; a timer sits at the level of the highest bit in which
//! its deadline differs from the wheel's current tick, so lower levels always hold earlier
//! deadlines. When a higher-level slot comes due its entries move down (or fire). Deadlines are
//! rounded up to the next millisecond, so a timer never fires early, and at most about 1 ms late.
//!
//! The wheel is pure data: [`super::uring::Runtime::block_on`] advances it after every wait and
//! bounds each wait by [`Wheel::next_deadline`].

use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

const LEVELS: usize = 6;
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
/// Farthest a timer is filed ahead of the wheel, in ticks: one turn of the top level (about 2.2
/// years). A longer timer is filed that far and filed again from there.
const MAX_TICKS: u64 = (1 << (SLOT_BITS * LEVELS as u32)) - 1;
/// End of a slot list / the free list.
const NIL: u32 = u32::MAX;

/// Identifies an armed timer; stale once the timer was removed (the generation differs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerKey {
    idx: u32,
    generation: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    Armed { level: u8, slot: u8 },
    Fired,
}

#[derive(Debug)]
struct Entry {
    /// Deadline tick (ms since the wheel's epoch, rounded up).
    due: u64,
    /// Tick the entry is filed under: `due`, or at most one turn of the top level ahead of the
    /// wheel for a longer timer, which is filed again when that comes round.
    when: u64,
    state: State,
    generation: u32,
    waker: Option<Waker>,
    /// Slot list links (the free list uses `next`).
    prev: u32,
    next: u32,
}

#[derive(Debug)]
struct Level {
    /// Bit `s` set: slot `s` has entries.
    occupied: u64,
    heads: [u32; SLOTS],
}

/// A timing wheel (see the module docs).
#[derive(Debug)]
pub struct Wheel {
    epoch: Instant,
    /// Every slot before this tick has been processed.
    elapsed: u64,
    entries: Vec<Entry>,
    free: u32,
    levels: [Level; LEVELS],
    armed: usize,
}

/// The level a deadline `when` belongs to, seen from tick `elapsed`.
fn level_for(elapsed: u64, when: u64) -> usize {
    let differing = (elapsed ^ when) | (SLOTS as u64 - 1);
    let top_bit = 63 - differing.leading_zeros();
    ((top_bit / SLOT_BITS) as usize).min(LEVELS - 1)
}

impl Wheel {
    /// An empty wheel whose tick 0 is `epoch`.
    pub fn new(epoch: Instant) -> Wheel {
        Wheel {
            epoch,
            elapsed: 0,
            entries: Vec::new(),
            free: NIL,
            levels: std::array::from_fn(|_| Level {
                occupied: 0,
                heads: [NIL; SLOTS],
            }),
            armed: 0,
        }
    }

    /// Whole milliseconds from the epoch to `t`, rounded down (ticks that have fully passed).
    fn tick_floor(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.epoch);
        d.as_secs() * 1000 + u64::from(d.subsec_millis())
    }

    /// Milliseconds from the epoch to `t`, rounded up: a timer never fires before its deadline.
    fn tick_ceil(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.epoch);
        let floor = d.as_secs() * 1000 + u64::from(d.subsec_millis());
        if d.subsec_nanos().is_multiple_of(1_000_000) {
            floor
        } else {
            floor + 1
        }
    }

    /// Timers armed and not yet fired.
    pub fn armed(&self) -> usize {
        self.armed
    }

    /// Arms a timer for `deadline` that wakes `waker`; `None` when the deadline has already
    /// passed (the caller is ready at once).
    pub fn insert(&mut self, deadline: Instant, waker: &Waker) -> Option<TimerKey> {
        let when = self.tick_ceil(deadline);
        if when <= self.elapsed {
            return None;
        }
        let due = when;
        let when = due.min(self.elapsed + MAX_TICKS);
        let idx = if self.free != NIL {
            let idx = self.free;
            self.free = self.entries[idx as usize].next;
            idx
        } else {
            self.entries.push(Entry {
                due: 0,
                when: 0,
                state: State::Free,
                generation: 0,
                waker: None,
                prev: NIL,
                next: NIL,
            });
            (self.entries.len() - 1) as u32
        };
        let e = &mut self.entries[idx as usize];
        e.due = due;
        e.when = when;
        e.waker = Some(waker.clone());
        let generation = e.generation;
        self.link(idx);
        self.armed += 1;
        Some(TimerKey { idx, generation })
    }

    /// Ready once the timer fired; otherwise keeps `waker` as the one to wake.
    pub fn poll(&mut self, key: TimerKey, waker: &Waker) -> Poll<()> {
        let Some(e) = self.entries.get_mut(key.idx as usize) else {
            return Poll::Ready(());
        };
        if e.generation != key.generation {
            return Poll::Ready(());
        }
        match e.state {
            State::Armed { .. } => {
                match &e.waker {
                    Some(w) if w.will_wake(waker) => {}
                    _ => e.waker = Some(waker.clone()),
                }
                Poll::Pending
            }
            State::Fired | State::Free => Poll::Ready(()),
        }
    }

    /// Cancels the timer (or forgets a fired one); its slab entry is reused.
    pub fn remove(&mut self, key: TimerKey) {
        let Some(e) = self.entries.get(key.idx as usize) else {
            return;
        };
        if e.generation != key.generation {
            return;
        }
        match e.state {
            State::Free => return,
            State::Armed { .. } => {
                self.unlink(key.idx);
                self.armed -= 1;
            }
            State::Fired => {}
        }
        let free = self.free;
        let e = &mut self.entries[key.idx as usize];
        e.state = State::Free;
        e.waker = None;
        e.generation = e.generation.wrapping_add(1);
        e.next = free;
        self.free = key.idx;
    }

    /// Puts armed entry `idx` into the slot its deadline belongs to.
    fn link(&mut self, idx: u32) {
        let when = self.entries[idx as usize].when;
        let level = level_for(self.elapsed, when);
        let slot = ((when >> (SLOT_BITS * level as u32)) as usize) & (SLOTS - 1);
        let head = self.levels[level].heads[slot];
        if head != NIL {
            self.entries[head as usize].prev = idx;
        }
        let e = &mut self.entries[idx as usize];
        e.state = State::Armed {
            level: level as u8,
            slot: slot as u8,
        };
        e.prev = NIL;
        e.next = head;
        self.levels[level].heads[slot] = idx;
        self.levels[level].occupied |= 1 << slot;
    }

    /// Takes armed entry `idx` out of its slot list.
    fn unlink(&mut self, idx: u32) {
        let e = &self.entries[idx as usize];
        let State::Armed { level, slot } = e.state else {
            return;
        };
        let (prev, next) = (e.prev, e.next);
        let (level, slot) = (level as usize, slot as usize);
        if prev == NIL {
            self.levels[level].heads[slot] = next;
            if next == NIL {
                self.levels[level].occupied &= !(1 << slot);
            }
        } else {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
    }

    /// The earliest occupied slot: its level, index and start tick.
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        // Lower levels hold earlier deadlines, so the first occupied level has the next one.
        for (level, lv) in self.levels.iter().enumerate() {
            if lv.occupied == 0 {
                continue;
            }
            let shift = SLOT_BITS * level as u32;
            let now_slot = ((self.elapsed >> shift) as usize) & (SLOTS - 1);
            // Search from the slot after the current one, so the current one comes last: below the
            // top level it is always empty, and at the top level it holds only the next turn's
            // timers, which must not hide this turn's later slots.
            let from = (now_slot + 1) & (SLOTS - 1);
            let slot = (lv.occupied.rotate_right(from as u32).trailing_zeros() as usize + from)
                & (SLOTS - 1);
            let level_span = 1u64 << (shift + SLOT_BITS);
            let mut start = (self.elapsed & !(level_span - 1)) + ((slot as u64) << shift);
            if start <= self.elapsed {
                // Only the top level wraps: its slots before the current one are the next turn.
                start += level_span;
            }
            return Some((level, slot, start));
        }
        None
    }

    /// When the next timer may be due (the start of the earliest occupied slot).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_slot()
            .map(|(_, _, start)| self.epoch + Duration::from_millis(start))
    }

    /// Fires every timer due at `now`, pushing their wakers onto `wake` (woken by the caller,
    /// outside any borrow of the wheel). Returns how many fired.
    pub fn advance(&mut self, now: Instant, wake: &mut Vec<Waker>) -> usize {
        let now_tick = self.tick_floor(now);
        let mut fired = 0;
        // Bounded: each turn empties one slot whose start is at most `now_tick`; its entries fire
        // or move to a lower level, and `elapsed` only grows.
        while let Some((level, slot, start)) = self.next_slot() {
            if start > now_tick {
                break;
            }
            let mut idx = self.levels[level].heads[slot];
            self.levels[level].heads[slot] = NIL;
            self.levels[level].occupied &= !(1 << slot);
            self.elapsed = start;
            while idx != NIL {
                let e = &mut self.entries[idx as usize];
                let next = e.next;
                if e.due <= now_tick {
                    e.state = State::Fired;
                    if let Some(w) = e.waker.take() {
                        wake.push(w);
                    }
                    self.armed -= 1;
                    fired += 1;
                } else {
                    e.when = e.due.min(self.elapsed + MAX_TICKS);
                    self.link(idx);
                }
                idx = next;
            }
        }
        self.elapsed = self.elapsed.max(now_tick);
        fired
    }
}

#[cfg(test)]
#[path = "timer_tests.rs"]
mod tests;
