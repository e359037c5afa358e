//! Registered files (IORING_REGISTER_FILES, sparse since 5.5): each socket the ring works on is
//! put in a slot of the ring's file table as well, and its operations name the slot
//! (`IOSQE_FIXED_FILE`) instead of the fd. The kernel then looks the file up in the table rather
//! than taking and dropping a reference per operation (`fget`/`fput`, about 1.5% of a proxying
//! shard's CPU on 6.18: several operations per request).
//!
//! The fd stays open beside the slot (setsockopt, getpeername, `shutdown` and the reuse check's
//! peek use it), so an fd's slot is only a faster name for it. A table that is full, or refused,
//! leaves sockets on their plain fds: nothing fails for want of a slot.
//!
//! The table lives in its own thread-local, apart from the ring's: an fd is dropped (and its slot
//! cleared) wherever its last reference goes, which is often inside a completion the ring is
//! dispatching. A slot is cleared before the fd is closed, and the file stays referenced by the
//! table until then: a socket is closed (its FIN sent) when both are gone.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;

/// The most slots a table gets: 5.10's limit (IORING_MAX_FIXED_FILES, 1 << 15); later kernels
/// allow more, but a shard with more sockets than this is beyond what the table is for.
pub const MAX_SLOTS: u32 = 1 << 15;

/// `IORING_REGISTER_FILES_UPDATE` (5.5).
const REGISTER_FILES_UPDATE: libc::c_uint = 6;

/// `struct io_uring_files_update` (5.5; the later `io_uring_rsrc_update` has the same layout).
#[repr(C)]
struct FilesUpdate {
    offset: u32,
    resv: u32,
    fds: u64,
}

/// One ring's file table: which slots are free.
struct Table {
    /// The ring's fd, for `io_uring_register`.
    ring_fd: RawFd,
    /// Slots in the table.
    len: u32,
    /// Slots below this were handed out at least once; those not in `free` are in use.
    next: u32,
    /// Slots given back, reused first (their table pages are warm).
    free: Vec<u32>,
}

thread_local! {
    static TABLE: RefCell<Option<Table>> = const { RefCell::new(None) };
}

/// Registers a sparse table of `len` slots on `ring` and makes it this thread's.
///
/// # Errors
/// The kernel refused the table (too old, RLIMIT_NOFILE below `len`, no memory).
pub fn register(ring: &io_uring::IoUring, len: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = len.min(MAX_SLOTS);
    // Sparse: -1 marks an empty slot (5.5); `register_files_sparse` would need 5.19.
    ring.submitter().register_files(&vec![-1; len as usize])?;
    TABLE.set(Some(Table {
        ring_fd: ring.as_raw_fd(),
        len,
        next: 0,
        free: Vec::new(),
    }));
    Ok(())
}

/// Forgets this thread's table (the ring is about to close, and the table with it). Sockets
/// dropped after this only close their fds.
pub fn forget() {
    TABLE.set(None);
}

/// Puts `fd` in a free slot; `None` when there is no table, no free slot, or the kernel refused.
pub fn insert(fd: RawFd) -> Option<u32> {
    TABLE.with_borrow_mut(|t| {
        let t = t.as_mut()?;
        let slot = match t.free.pop() {
            Some(s) => s,
            None if t.next < t.len => {
                t.next += 1;
                t.next - 1
            }
            None => return None,
        };
        match update(t.ring_fd, slot, fd) {
            Ok(()) => Some(slot),
            Err(e) => {
                t.free.push(slot);
                tracing::debug!("registering a socket with io_uring failed ({e}); plain fd");
                None
            }
        }
    })
}

/// Empties `slot` (before its fd is closed). Without a table (the ring is gone) there is
/// nothing to empty.
pub fn remove(slot: u32) {
    TABLE.with_borrow_mut(|t| {
        let Some(t) = t.as_mut() else { return };
        match update(t.ring_fd, slot, -1) {
            Ok(()) => t.free.push(slot),
            // Cannot happen for a slot we filled; if it did, the slot is not reused (the file
            // stays referenced until the ring closes).
            Err(e) => tracing::warn!(slot, "clearing a registered file slot failed: {e}"),
        }
    });
}

/// Slots in use and slots in the table on this thread (zeros without a table).
pub fn usage() -> (u32, u32) {
    TABLE.with_borrow(|t| {
        t.as_ref()
            .map_or((0, 0), |t| (t.next - t.free.len() as u32, t.len))
    })
}

/// Sets `slot` to `fd` (-1: empty) with IORING_REGISTER_FILES_UPDATE. A synchronous call, so an
/// operation queued right after can name the slot; it does not quiesce the ring. The raw
/// syscall, not the io-uring crate's `register_files_update`: that needs the `IoUring`, which
/// lives borrowed in the ring's thread-local while completions drop sockets.
fn update(ring_fd: RawFd, slot: u32, fd: RawFd) -> io::Result<()> {
    let fds = [fd];
    let arg = FilesUpdate {
        offset: slot,
        resv: 0,
        fds: fds.as_ptr() as u64,
    };
    // SAFETY: `arg` and the one-element `fds` array it points at live across the call, which
    // only reads them; `ring_fd` is this thread's open ring (the table is forgotten before the
    // ring closes).
    let n = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring_fd,
            REGISTER_FILES_UPDATE,
            &arg as *const FilesUpdate,
            1 as libc::c_uint,
        )
    };
    match n {
        1 => Ok(()),
        n if n < 0 => Err(io::Error::last_os_error()),
        _ => Err(io::Error::other("io_uring file update applied no slot")),
    }
}
