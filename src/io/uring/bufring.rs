//! The shard's provided-buffer ring (IORING_REGISTER_PBUF_RING, 5.19): idle reads name the
//! buffer group instead of a buffer, and the kernel picks one only when bytes arrive. A buffer
//! is lent from its completion until its bytes are copied out, then written back at the tail.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

/// The buffer group id reads select from.
pub const GROUP: u16 = 0;

pub struct BufRing {
    /// `entries` ring slots, page-aligned as the kernel requires.
    ring: *mut BufRingEntry,
    layout: Layout,
    /// The buffers themselves, `entries * buf_len` bytes.
    bufs: Box<[u8]>,
    entries: u16,
    buf_len: usize,
    /// Our copy of the tail; published to the kernel after each return.
    tail: u16,
}

impl BufRing {
    /// Allocates `entries` buffers of `buf_len` bytes (`entries` a power of two) and registers
    /// them with `ring` as group [`GROUP`], every buffer available.
    ///
    /// # Errors
    /// The kernel refused (before 5.19: EINVAL).
    pub fn register(ring: &IoUring, entries: u16, buf_len: usize) -> io::Result<BufRing> {
        let entries = entries.max(1).next_power_of_two();
        let layout = Layout::from_size_align(
            usize::from(entries) * std::mem::size_of::<BufRingEntry>(),
            4096,
        )
        .map_err(io::Error::other)?;
        // SAFETY: the layout has a nonzero size (at least one 16-byte entry).
        let ring_mem = unsafe { alloc_zeroed(layout) }.cast::<BufRingEntry>();
        if ring_mem.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut br = BufRing {
            ring: ring_mem,
            layout,
            bufs: vec![0u8; usize::from(entries) * buf_len].into_boxed_slice(),
            entries,
            buf_len,
            tail: 0,
        };
        // SAFETY: `ring_mem` is a zeroed, page-aligned array of `entries` entries that lives
        // until `unregister` (called before it is freed, see Drop of the driver's Ring).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(ring_mem as u64, entries, GROUP, 0)?;
        }
        for bid in 0..entries {
            br.push(bid);
        }
        br.publish();
        Ok(br)
    }

    /// The bytes the kernel wrote into buffer `bid`.
    pub fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * self.buf_len;
        &self.bufs[start..start + len.min(self.buf_len)]
    }

    /// The size of each buffer.
    pub fn buf_len(&self) -> usize {
        self.buf_len
    }

    /// Gives buffer `bid` back to the kernel.
    pub fn give_back(&mut self, bid: u16) {
        if bid < self.entries {
            self.push(bid);
            self.publish();
        }
    }

    fn push(&mut self, bid: u16) {
        let slot = usize::from(self.tail & (self.entries - 1));
        let addr = self.bufs.as_ptr() as u64 + u64::from(bid) * self.buf_len as u64;
        // SAFETY: `slot < entries`, inside the ring allocation; the kernel reads entries only up
        // to the published tail, and this one is past it until `publish`.
        let e = unsafe { &mut *self.ring.add(slot) };
        e.set_addr(addr);
        e.set_len(self.buf_len as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field is the `resv` of the ring's first entry, a u16 inside the ring
        // allocation; the kernel reads it concurrently, hence the atomic release store (the
        // entries written before it become visible first).
        unsafe {
            let tail = BufRingEntry::tail(self.ring).cast_mut();
            (*tail.cast::<AtomicU16>()).store(self.tail, Ordering::Release);
        }
    }

    /// Unregisters the group; call before the ring memory goes.
    pub fn unregister(&self, ring: &IoUring) {
        let _ = ring.submitter().unregister_buf_ring(GROUP);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `register` with this layout; the group was unregistered (or the
        // ring closed) before the driver drops this.
        unsafe { dealloc(self.ring.cast(), self.layout) }
    }
}
