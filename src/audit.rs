//! Zero-copy audit, for tests only: records the buffers bytes were read into and the pieces
//! written out, so a test can check that every body piece lies inside a read buffer (it was never
//! copied). Outside `cfg(test)` the hooks are empty inline functions: they compile to nothing.
//!
//! Shard-local like everything else: thread-local records, one shard (runtime) per test thread.

pub(crate) use imp::*;

#[cfg(not(test))]
mod imp {
    use bytes::{Bytes, BytesMut};

    #[inline(always)]
    pub fn read(_: &BytesMut) {}

    #[inline(always)]
    pub fn written(_: &[Bytes]) {}
}

#[cfg(test)]
mod imp {
    use std::cell::RefCell;
    use std::ops::Range;

    use bytes::{Bytes, BytesMut};

    thread_local! {
        static READS: RefCell<Vec<Range<usize>>> = const { RefCell::new(Vec::new()) };
        static WRITTEN: RefCell<Vec<Range<usize>>> = const { RefCell::new(Vec::new()) };
    }

    /// Records `buf`'s whole allocation (a read lands somewhere in it).
    pub fn read(buf: &BytesMut) {
        let start = buf.as_ptr() as usize;
        READS.with(|r| r.borrow_mut().push(start..start + buf.capacity()));
    }

    /// Records every piece handed to a write, empty ones included, in order.
    pub fn written(pieces: &[Bytes]) {
        WRITTEN.with(|w| {
            w.borrow_mut().extend(pieces.iter().map(|p| {
                let start = p.as_ptr() as usize;
                start..start + p.len()
            }))
        });
    }

    /// Forgets everything recorded on this thread.
    pub fn reset() {
        READS.with(|r| r.borrow_mut().clear());
        WRITTEN.with(|w| w.borrow_mut().clear());
    }

    /// The read buffers recorded on this thread.
    pub fn reads() -> Vec<Range<usize>> {
        READS.with(|r| r.borrow().clone())
    }

    /// The written pieces recorded on this thread.
    pub fn writes() -> Vec<Range<usize>> {
        WRITTEN.with(|w| w.borrow().clone())
    }
}
