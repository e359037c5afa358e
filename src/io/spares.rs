//! A per-thread list of spare values (vectors, boxes) that a write takes and gives back, so a
//! warm shard does not allocate them per request: bounded by `server.free_list_max` (the shard
//! sets it, [`set_max`]) and reported with the shard's other free lists.

use std::cell::{Cell, RefCell};

/// One thread's spares of `T`, with the count of takes that found none.
pub struct Spares<T> {
    list: RefCell<Vec<T>>,
    max: Cell<usize>,
    misses: Cell<u64>,
}

impl<T> Spares<T> {
    /// An empty list keeping at most `max` (until [`Spares::set_max`]).
    pub const fn new(max: usize) -> Spares<T> {
        Spares {
            list: RefCell::new(Vec::new()),
            max: Cell::new(max),
            misses: Cell::new(0),
        }
    }

    /// A spare value, or `None` (counted as a miss: the caller makes a new one).
    pub fn take(&self) -> Option<T> {
        let v = self.list.borrow_mut().pop();
        if v.is_none() {
            self.misses.set(self.misses.get() + 1);
        }
        v
    }

    /// Keeps `v` for a later take, unless the list is full (then it is dropped).
    pub fn give(&self, v: T) {
        let mut l = self.list.borrow_mut();
        if l.len() < self.max.get() {
            l.push(v);
        }
    }

    /// Sets how many are kept, dropping any beyond it.
    pub fn set_max(&self, max: usize) {
        self.max.set(max);
        self.list.borrow_mut().truncate(max);
    }

    /// Spares kept now, and takes that found none since start (the metrics).
    pub fn stats(&self) -> (u64, u64) {
        (self.list.borrow().len() as u64, self.misses.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_what_was_given_up_to_its_bound_and_counts_misses() {
        let s: Spares<Vec<u8>> = Spares::new(2);
        assert!(s.take().is_none());
        s.give(vec![1]);
        s.give(vec![2]);
        s.give(vec![3]);
        assert_eq!(s.stats(), (2, 1), "the third was dropped; one miss");
        assert_eq!(s.take(), Some(vec![2]));
        s.set_max(0);
        assert_eq!(s.stats(), (0, 1));
        s.give(vec![4]);
        assert_eq!(s.stats(), (0, 1));
    }
}
