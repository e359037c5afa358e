//! A shard's spare read buffers, so an exchange or a client request does not allocate one (plus
//! the shared header `bytes` adds at the first split) each time. One list per use and size:
//! backend reads ([`ReadBufs::default`], 16 KiB), client request reads and the client's head
//! scratch (see `ShardLocal`).
//!
//! Zero copy is unchanged: body pieces are still split off the buffer and written as they are.
//! A buffer goes back only after the exchange, and only the room its handle owns exclusively is
//! reused (`BytesMut::try_reclaim`): it never overlaps a piece still held elsewhere (a write
//! cancelled mid-flight, the access log); if that room is too small, the buffer is dropped.

use std::cell::{Cell, RefCell};

use bytes::BytesMut;

/// Size of a backend connection's read buffer (and the most a response body read takes at once).
pub const UPSTREAM_READ_BUF: usize = 16 * 1024;

/// Most spare backend read buffers [`ReadBufs::default`] keeps (a shard's list is sized by
/// `server.free_list_max`).
const MAX_SPARE_READ_BUFS: usize = 64;

/// Largest spare read buffer kept: one that grew for a big head goes back to the allocator.
pub const MAX_SPARE_READ_BUF: usize = 4 * UPSTREAM_READ_BUF;

/// Held buffers a take looks at before it allocates: about the answers in flight at once on a
/// shard (with 64 keep-alive clients, looking at 4 left a head scratch buffer allocated for one
/// request in four; at 64, one in a hundred).
const HELD_SCAN: usize = 64;

/// The spare read buffers of one shard, of one size (see the module doc).
pub struct ReadBufs {
    spare: RefCell<Vec<BytesMut>>,
    /// Buffers given back while pieces of them were still held (a write in flight, such as a
    /// client answer held back to go out with the next read): reclaimed by a later `take`
    /// once those pieces are gone.
    held: RefCell<std::collections::VecDeque<BytesMut>>,
    /// Room every buffer handed out has.
    size: usize,
    /// Most buffers kept.
    max_spare: usize,
    /// Largest buffer kept: one that grew for a big head goes back to the allocator.
    max_size: usize,
    /// Buffers handed out when the list was empty (allocated).
    misses: Cell<u64>,
}

impl Default for ReadBufs {
    /// Backend read buffers: [`UPSTREAM_READ_BUF`] each, at most [`MAX_SPARE_READ_BUFS`].
    fn default() -> Self {
        ReadBufs::new(UPSTREAM_READ_BUF, MAX_SPARE_READ_BUFS, MAX_SPARE_READ_BUF)
    }
}

impl ReadBufs {
    /// A list of buffers of `size` bytes, keeping at most `max_spare` of at most `max_size`.
    pub fn new(size: usize, max_spare: usize, max_size: usize) -> ReadBufs {
        ReadBufs {
            spare: RefCell::new(Vec::new()),
            held: RefCell::new(std::collections::VecDeque::new()),
            size,
            max_spare,
            max_size,
            misses: Cell::new(0),
        }
    }

    /// An empty buffer with room for `size` bytes: a spare one if any.
    pub fn take(&self) -> BytesMut {
        if let Some(b) = self.spare.borrow_mut().pop() {
            return b;
        }
        if let Some(b) = self.reclaim_held() {
            return b;
        }
        self.misses.set(self.misses.get() + 1);
        BytesMut::with_capacity(self.size)
    }

    /// A held buffer whose pieces are all gone now, oldest first (those went back longest ago,
    /// so their writes are the likeliest done), looking at [`HELD_SCAN`] at most. Order is kept:
    /// a buffer still shared stays where it is, so it never hides older free ones behind it.
    fn reclaim_held(&self) -> Option<BytesMut> {
        let mut held = self.held.borrow_mut();
        let mut i = 0;
        // Bounded: each pass moves `i` on or removes an entry, within HELD_SCAN entries.
        while i < held.len().min(HELD_SCAN) {
            if !held[i].try_reclaim(self.size) {
                i += 1;
                continue;
            }
            let b = held.remove(i)?;
            if b.capacity() <= self.max_size {
                return Some(b);
            }
            // Unshared now but grown too big: back to the allocator.
        }
        None
    }

    /// Keeps `buf` for later, emptied, when it can take `size` bytes without growing.
    pub fn put_back(&self, mut buf: BytesMut) {
        let mut spare = self.spare.borrow_mut();
        if spare.len() >= self.max_spare || buf.capacity() > self.max_size {
            return;
        }
        buf.clear();
        // Checked again after the reclaim: it rewinds the handle over the whole allocation, so
        // only now does `capacity` show a buffer that grew for a big head (and is not kept).
        if buf.try_reclaim(self.size) {
            if buf.capacity() <= self.max_size {
                spare.push(buf);
            }
            return;
        }
        // Pieces of it are still out (a write in flight): reclaimed by a later take. Not an
        // empty handle (`BytesMut::new()`, a connection that had no buffer yet): it owns no
        // room and would never be reclaimed, only clog the list.
        if buf.capacity() == 0 {
            return;
        }
        let mut held = self.held.borrow_mut();
        if held.len() < self.max_spare {
            held.push_back(buf);
        }
    }

    /// Buffers on the list now (metrics, tests).
    pub fn spare(&self) -> usize {
        self.spare.borrow().len()
    }

    /// Buffers handed out when the list was empty, so allocated (metrics).
    pub fn misses(&self) -> u64 {
        self.misses.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head and a body split off a read buffer, as an exchange does.
    fn exchange(buf: &mut BytesMut) -> (bytes::Bytes, bytes::Bytes) {
        buf.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        let head = buf.split_to(buf.len() - 5).freeze();
        let body = buf.split_to(5).freeze();
        (head, body)
    }

    #[test]
    fn spare_read_buffer_is_reused_whole() {
        let bufs = ReadBufs::default();
        let mut buf = bufs.take();
        let start = buf.as_ptr();
        let (head, body) = exchange(&mut buf);
        // Written and dropped: nothing points into the buffer any more.
        drop((head, body));
        bufs.put_back(buf);
        let again = bufs.take();
        assert_eq!(again.as_ptr(), start, "the same allocation, from its start");
        assert!(again.is_empty() && again.capacity() >= UPSTREAM_READ_BUF);
    }

    #[test]
    fn spare_read_buffer_with_a_piece_still_held_is_not_kept() {
        let bufs = ReadBufs::default();
        let mut buf = bufs.take();
        let first = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.capacity();
        // A piece still held elsewhere (e.g. by a write cancelled mid-flight): the allocation is
        // shared, so it must not go back on the list (its room could not be reclaimed anyway).
        let (_head, body) = exchange(&mut buf);
        bufs.put_back(buf);
        let again = bufs.take();
        let at = again.as_ptr() as usize;
        assert!(
            !first.contains(&at),
            "a buffer whose allocation is still shared came back from the spare list"
        );
        assert_eq!(&body[..], b"hello");
    }

    #[test]
    fn spare_read_buffer_that_grew_is_not_kept() {
        let bufs = ReadBufs::default();
        let mut buf = bufs.take();
        // A big response head made it grow past what a spare buffer may hold.
        buf.extend_from_slice(&vec![b'h'; MAX_SPARE_READ_BUF + 1]);
        let head = buf.split().freeze();
        drop(head);
        bufs.put_back(buf);
        // Not by address: the allocator may hand the freed room straight back to the next take.
        assert_eq!(bufs.spare(), 0, "a grown buffer was kept");
        assert!(bufs.take().capacity() <= MAX_SPARE_READ_BUF);
    }
}

#[cfg(test)]
mod held_tests {
    use super::*;

    /// Buffers given back while a piece of each is still out (a held-back write) are reclaimed
    /// by later takes once the pieces are gone: no allocation in steady state, whatever the
    /// order pieces are dropped in.
    #[test]
    fn buffers_given_back_while_shared_are_reclaimed_later() {
        let bufs = ReadBufs::new(1024, 256, 4096);
        // Connections that had no buffer yet give back empty handles: they must not clog the
        // held list (they own no room and are never reclaimable).
        for _ in 0..300 {
            bufs.put_back(BytesMut::new());
        }
        let mut out: Vec<bytes::Bytes> = Vec::new();
        let mut handles: Vec<BytesMut> = (0..64).map(|_| bufs.take()).collect();
        let warm = bufs.misses();
        for round in 0..50 {
            for h in handles.iter_mut() {
                h.extend_from_slice(&[round as u8; 200]);
                out.push(h.split().freeze());
                h.extend_from_slice(&[round as u8; 150]);
                out.push(h.split().freeze());
            }
            for h in handles.drain(..) {
                bufs.put_back(h);
            }
            // Half the writes complete (pieces dropped), newest first, before half the takes;
            // the rest after: a take must find the free ones among those still shared.
            out.reverse();
            let later = out.split_off(out.len() / 2);
            out.clear();
            handles = (0..32).map(|_| bufs.take()).collect();
            drop(later);
            handles.extend((0..32).map(|_| bufs.take()));
        }
        assert_eq!(
            bufs.misses(),
            warm,
            "a take allocated although held buffers were free"
        );
    }
}
