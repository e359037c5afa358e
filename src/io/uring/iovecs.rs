//! The boxed msghdr and iovec array of a SENDMSG, and the thread's spares of them. Boxed so the
//! kernel's pointers stay valid while the op (and the box) moves; per thread, not per stream, so
//! an idle connection holds none.

use bytes::{Buf, Bytes};

use super::MAX_IOVECS;
use crate::io::spares::Spares;

/// What a SENDMSG points at: its msghdr and iovecs, boxed so the kernel's pointers stay valid
/// while the op (and the box) moves.
pub(super) struct IoVecs {
    pub(super) msg: libc::msghdr,
    pub(super) iov: Vec<libc::iovec>,
    pub(super) bufs: Vec<Bytes>,
}

thread_local! {
    /// Iovec boxes between writes, bounded by `server.free_list_max`. Per thread, not per
    /// stream: an idle connection holds none (kept on the stream, one cost ~340 bytes per idle
    /// keepalive client). Boxed: an op takes the box, and the kernel's pointers into the msghdr
    /// must not move.
    static SPARE_IOVECS: Spares<Box<IoVecs>> =
        const { Spares::new(crate::io::recycle::DEFAULT_MAX_SPARE) };
}

/// Sets how many spare iovec boxes this thread keeps.
pub(super) fn set_spares(max: usize) {
    let _ = SPARE_IOVECS.try_with(|l| l.set_max(max));
}

/// This thread's spare iovec boxes: (spare, misses), for the metrics.
pub(super) fn stats() -> (u64, u64) {
    SPARE_IOVECS.try_with(Spares::stats).unwrap_or_default()
}

/// Gives an iovec box back to the thread's spares once its write is done (its pieces dropped).
pub(super) fn give_iovecs(mut v: Box<IoVecs>) {
    v.bufs.clear();
    if v.bufs.capacity() > crate::io::MAX_IOVECS {
        // One huge write must not pin its vectors for good.
        return;
    }
    let _ = SPARE_IOVECS.try_with(|l| l.give(v));
}

/// An iovec box from the thread's spares (a new one if none is left), holding `bufs` minus
/// empty ones.
pub(super) fn iovecs_for(bufs: crate::io::Pieces) -> Box<IoVecs> {
    let mut v = SPARE_IOVECS
        .try_with(Spares::take)
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            Box::new(IoVecs {
                // SAFETY: an all-zero msghdr is a valid empty one.
                msg: unsafe { std::mem::zeroed() },
                iov: Vec::new(),
                bufs: Vec::new(),
            })
        });
    // Moved into the kept Vec (no allocation once it has grown): the op owns them.
    v.bufs.clear();
    let mut bufs = bufs;
    v.bufs.extend(bufs.drain(..).filter(|b| !b.is_empty()));
    crate::io::give_parts(bufs);
    v
}

impl IoVecs {
    /// Points the msghdr at `bufs[first..]`, at most [`MAX_IOVECS`] of them.
    pub(super) fn point_at(&mut self, first: usize) {
        let end = self.bufs.len().min(first + MAX_IOVECS);
        self.iov.clear();
        for b in &self.bufs[first..end] {
            self.iov.push(libc::iovec {
                iov_base: b.as_ptr().cast_mut().cast(),
                iov_len: b.len(),
            });
        }
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = self.iov.len();
    }

    /// Drops the first `n` bytes written: whole buffers go, a partly written one keeps its
    /// rest (sliced, not copied).
    pub(super) fn advance(&mut self, mut n: usize) {
        let mut done = 0;
        while n > 0 && done < self.bufs.len() {
            let b = &mut self.bufs[done];
            if n >= b.len() {
                n -= b.len();
                done += 1;
            } else {
                b.advance(n);
                n = 0;
            }
        }
        self.bufs.drain(..done);
    }
}
