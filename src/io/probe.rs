//! Kernel and io_uring feature probe (`ringway probe`, and `--io auto`'s decision).
//!
//! Owns the answer to "can this process use io_uring, and which of its features?". It finds out
//! by *trying*: a real `io_uring_setup`, a real `io_uring_enter` (one NOP), `IORING_REGISTER_PROBE`
//! for opcodes, one extra ring per setup flag, and a tiny provided-buffer ring registration. The
//! kernel version is used only where the kernel offers no way to ask (multishot flags).
//!
//! It must never start a runtime (no compio, no tokio here) and never panic: a missing `/proc`,
//! an odd `uname` string or a refused syscall all become data in the report.

use std::ffi::CStr;
use std::fmt;
use std::io;

use io_uring::{IoUring, opcode};

mod explain;
mod report;

pub use explain::errno_name;
pub use report::{ProbeReport, probe};

/// Ring size for every probe ring: small, so probing costs a few pages at most.
const PROBE_ENTRIES: u32 = 8;

/// A Linux kernel version, parsed from `uname -r` (e.g. `"6.18.44-fc-v782"` → 6.18.44).
///
/// Ordering is by (major, minor, patch). Distribution kernels backport io_uring features, so a
/// version check is a floor, not proof: the probe prefers asking the kernel directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KernelVersion {
    /// Parses a kernel release string: leading `major.minor[.patch]`, anything after the first
    /// character that is neither a digit nor a dot (`-28-amd64`, `+`, `_rc1`) is ignored.
    /// Returns `None` when there is no `major.minor`.
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let end = release
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(release.len());
        let mut parts = release[..end].split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            None | Some("") => 0,
            Some(p) => p.parse().ok()?,
        };
        Some(KernelVersion {
            major,
            minor,
            patch,
        })
    }

    /// Whether this kernel is `major.minor` or newer.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// io_uring cannot be used by this process: which syscall failed, its errno, and the likely cause.
///
/// Display: `io_uring_setup failed: EPERM (errno 1): io_uring is blocked — likely a container
/// seccomp profile (Docker's default blocks io_uring) or kernel.io_uring_disabled=2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UringUnavailable {
    /// The raw errno the syscall returned.
    pub errno: i32,
    /// Human explanation of the likely cause and what to do about it.
    pub cause: String,
    /// The syscall that failed: `io_uring_setup` almost always; `io_uring_enter` or
    /// `io_uring_register` when a filter blocks only those.
    pub syscall: &'static str,
}

impl fmt::Display for UringUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed: {} (errno {}): {}",
            self.syscall,
            errno_name(self.errno),
            self.errno,
            self.cause
        )
    }
}

impl std::error::Error for UringUnavailable {}

/// The io_uring features THIS kernel offers to THIS process (each field: supported or not).
///
/// Kernel versions in the field docs are mainline's first release with the feature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UringFeatures {
    /// 5.19: `IORING_ACCEPT_MULTISHOT`. By kernel version (see [`uring_features`]).
    pub multishot_accept: bool,
    /// 5.19: `IORING_REGISTER_PBUF_RING`, by registering a one-entry ring.
    pub buffer_ring: bool,
    /// 5.5: a sparse table of registered files (`-1` slots) and `IORING_REGISTER_FILES_UPDATE`,
    /// by registering a one-slot table and putting an fd in it.
    pub registered_files: bool,
    /// A send linked to a receive with the send's completion skipped on success: needs
    /// `IORING_FEAT_CQE_SKIP` (5.17) and a send that retries a short write under `MSG_WAITALL`
    /// instead of completing short (5.18). By the feature flag and kernel version 6.0 (see
    /// [`uring_features`]).
    pub linked_send_recv: bool,
    /// 6.0: opcode `SEND_ZC`, by opcode probe.
    pub send_zc: bool,
    /// 6.0: `IORING_RECV_MULTISHOT`. By kernel version (see [`uring_features`]).
    pub recv_multishot: bool,
    /// 5.19: setup flag `IORING_SETUP_COOP_TASKRUN`, by trying it.
    pub coop_taskrun: bool,
    /// 5.19: setup flag `IORING_SETUP_TASKRUN_FLAG` (tried together with COOP_TASKRUN, which it needs).
    pub taskrun_flag: bool,
    /// 6.0: setup flag `IORING_SETUP_SINGLE_ISSUER`, by trying it.
    pub single_issuer: bool,
    /// 6.1: setup flag `IORING_SETUP_DEFER_TASKRUN` (tried with SINGLE_ISSUER, which it needs).
    pub defer_taskrun: bool,
    /// 5.11: `IORING_FEAT_EXT_ARG` (timeout passed to `io_uring_enter`).
    pub ext_arg: bool,
    /// 5.7: `IORING_FEAT_FAST_POLL` (socket ops poll internally, no io-wq thread).
    pub fast_poll: bool,
    /// 5.5: `IORING_FEAT_SUBMIT_STABLE`.
    pub submit_stable: bool,
    /// 5.5: `IORING_FEAT_NODROP` (CQ overflow is kept, not dropped).
    pub nodrop: bool,
    /// 5.5: opcode `LINK_TIMEOUT`.
    pub linked_timeout: bool,
    /// 5.4: opcode `TIMEOUT`.
    pub timeout: bool,
    /// 5.3: opcode `SENDMSG` (vectored writes).
    pub sendmsg: bool,
    /// 5.1: opcode `POLL_ADD`.
    pub poll_add: bool,
    /// 5.5: opcode `ASYNC_CANCEL`.
    pub async_cancel: bool,
    /// 5.19: opcode `SOCKET`.
    pub socket: bool,
    /// 5.5: opcode `ACCEPT`.
    pub accept: bool,
    /// 5.5: opcode `CONNECT`.
    pub connect: bool,
    /// 5.6: opcode `SEND`.
    pub send: bool,
    /// 5.6: opcode `RECV`.
    pub recv: bool,
    /// 5.7: opcode `SPLICE`.
    pub splice: bool,
    /// 5.7: opcode `PROVIDE_BUFFERS`.
    pub provide_buffers: bool,
}

impl UringFeatures {
    /// Features the uring driver cannot work without; an empty list means it can run.
    ///
    /// Exactly what the driver (`io/uring/`) submits, and nothing it does not: `accept`,
    /// `connect`, `recv`, `send`, `sendmsg` (vectored writes), `poll_add` (an idle read waits for
    /// readiness when there is no buffer ring), `async_cancel` (a dropped operation, e.g. a read
    /// ended by a timeout, is cancelled) and `timeout` (a wait with a deadline is bounded by a
    /// TIMEOUT SQE).
    ///
    /// Not here: `EXT_ARG` (5.11; compio, the driver before, needed it for every timed wait, so
    /// 5.10 kernels without the 5.15 backport could not run it), `LINK_TIMEOUT` (timeouts are
    /// the shard's own timer wheel) and `SOCKET` (sockets come from `socket(2)`). The start-up
    /// self-test is the final word: it runs these operations for real.
    pub fn missing_required(&self) -> Vec<&'static str> {
        [
            ("accept", self.accept),
            ("connect", self.connect),
            ("send", self.send),
            ("sendmsg", self.sendmsg),
            ("recv", self.recv),
            ("poll_add", self.poll_add),
            ("async_cancel", self.async_cancel),
            ("timeout", self.timeout),
        ]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect()
    }
}

/// The running kernel's version, from `uname(2)`; `None` if the release string does not parse.
pub fn kernel_version() -> Option<KernelVersion> {
    KernelVersion::parse(&kernel_release())
}

/// The raw `uname -r` string (`"6.18.44-fc-v782"`); empty if `uname` fails.
pub fn kernel_release() -> String {
    // SAFETY: `utsname` is plain old data (arrays of c_char); all-zero is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable `utsname` for the duration of the call.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::new();
    }
    // SAFETY: on success the kernel NUL-terminates `release` within its 65 bytes.
    let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
    release.to_string_lossy().into_owned()
}

/// Probes io_uring for real and reports what this kernel supports.
///
/// Steps: `io_uring_setup` of an 8-entry ring (its `IORING_FEAT_*` bits give ext_arg, fast_poll,
/// submit_stable, nodrop); one NOP through `io_uring_enter`; `IORING_REGISTER_PROBE` for opcodes;
/// one extra ring per setup flag (an unknown flag is `EINVAL`); registering and unregistering a
/// one-entry provided-buffer ring. Multishot accept and multishot recv are **by kernel version**
/// (≥ 5.19 and ≥ 6.0) plus their opcode: they are flags on the ACCEPT/RECV SQEs, which the opcode
/// probe cannot see, and asking for real would take a socket and an in-flight operation. A distro
/// kernel that backported them reports `false` here: safe, merely slower.
///
/// # Errors
///
/// [`UringUnavailable`] when `io_uring_setup`, `io_uring_enter` or `io_uring_register` is refused
/// (seccomp, `kernel.io_uring_disabled`, no `CONFIG_IO_URING`, memlock). A kernel older than 5.6
/// without `IORING_REGISTER_PROBE` (`EINVAL`) is not an error: every opcode reads `false`.
pub fn uring_features() -> Result<UringFeatures, UringUnavailable> {
    let unavailable = |syscall, err: io::Error| UringUnavailable::from_error(syscall, &err);

    let mut ring: IoUring = IoUring::builder()
        .build(PROBE_ENTRIES)
        .map_err(|e| unavailable("io_uring_setup", e))?;

    // A filter may allow setup but refuse enter (or register): the driver needs all three.
    let nop = opcode::Nop::new().build().user_data(1);
    // SAFETY: a NOP references no memory; the queue has room (fresh ring of PROBE_ENTRIES).
    let pushed = unsafe { ring.submission().push(&nop) };
    if pushed.is_ok() {
        ring.submit_and_wait(1)
            .map_err(|e| unavailable("io_uring_enter", e))?;
        ring.completion().for_each(drop);
    }

    let mut probe = io_uring::Probe::new();
    let has_probe = match ring.submitter().register_probe(&mut probe) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => false, // kernel < 5.6
        Err(e) => return Err(unavailable("io_uring_register", e)),
    };
    let op = |code: u8| has_probe && probe.is_supported(code);

    let params = ring.params();
    let kernel = kernel_version();
    let since = |major, minor| kernel.is_some_and(|k| k.at_least(major, minor));

    let accept = op(opcode::Accept::CODE);
    let recv = op(opcode::Recv::CODE);
    Ok(UringFeatures {
        multishot_accept: accept && since(5, 19),
        buffer_ring: buffer_ring_registers(&ring),
        registered_files: files_register(&ring),
        linked_send_recv: params.is_feature_skip_cqe_on_success()
            && op(opcode::SendMsg::CODE)
            && recv
            && since(6, 0),
        send_zc: op(opcode::SendZc::CODE),
        recv_multishot: recv && since(6, 0),
        coop_taskrun: setup_accepts(|b| b.setup_coop_taskrun()),
        taskrun_flag: setup_accepts(|b| b.setup_coop_taskrun().setup_taskrun_flag()),
        single_issuer: setup_accepts(|b| b.setup_single_issuer()),
        defer_taskrun: setup_accepts(|b| b.setup_single_issuer().setup_defer_taskrun()),
        ext_arg: params.is_feature_ext_arg(),
        fast_poll: params.is_feature_fast_poll(),
        submit_stable: params.is_feature_submit_stable(),
        nodrop: params.is_feature_nodrop(),
        linked_timeout: op(opcode::LinkTimeout::CODE),
        timeout: op(opcode::Timeout::CODE),
        sendmsg: op(opcode::SendMsg::CODE),
        poll_add: op(opcode::PollAdd::CODE),
        async_cancel: op(opcode::AsyncCancel::CODE),
        socket: op(opcode::Socket::CODE),
        accept,
        connect: op(opcode::Connect::CODE),
        send: op(opcode::Send::CODE),
        recv,
        splice: op(opcode::Splice::CODE),
        provide_buffers: op(opcode::ProvideBuffers::CODE),
    })
}

/// Whether `io_uring_setup` accepts the flags `configure` sets (the kernel answers `EINVAL` for
/// flags it does not know or combinations it refuses).
fn setup_accepts(configure: impl FnOnce(&mut io_uring::Builder) -> &mut io_uring::Builder) -> bool {
    let mut builder = IoUring::builder();
    configure(&mut builder);
    builder.build(PROBE_ENTRIES).is_ok()
}

/// Registers a one-slot sparse file table on `ring`, puts a socket in the slot and clears it
/// again (what the driver does per socket), then unregisters the table. For real, as the buffer
/// ring: a policy could refuse `io_uring_register` opcodes one by one. (Not the ring's own fd:
/// the kernel never takes an io_uring fd into a file table.)
fn files_register(ring: &IoUring) -> bool {
    use std::os::fd::AsRawFd;
    let Ok((sock, _peer)) = std::os::unix::net::UnixStream::pair() else {
        return false;
    };
    let s = ring.submitter();
    if s.register_files(&[-1]).is_err() {
        return false;
    }
    let ok = s.register_files_update(0, &[sock.as_raw_fd()]).is_ok()
        && s.register_files_update(0, &[-1]).is_ok();
    let _ = s.unregister_files();
    ok
}

/// Registers a one-entry provided-buffer ring (group 0) on `ring`, then unregisters it.
///
/// Done for real rather than by version (5.19) because the register opcode is what the driver
/// needs, and a seccomp or LSM policy could refuse it while allowing the rest.
fn buffer_ring_registers(ring: &IoUring) -> bool {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let Ok(layout) = std::alloc::Layout::from_size_align(page, page) else {
        return false;
    };
    // SAFETY: `layout` has a non-zero size (a page).
    let mem = unsafe { std::alloc::alloc_zeroed(layout) };
    if mem.is_null() {
        return false;
    }
    // SAFETY: `mem` is a zeroed, page-aligned page (the kernel requires page alignment), big
    // enough for one 16-byte `io_uring_buf`; it stays allocated until the ring is unregistered
    // below, and is leaked rather than freed if unregistering fails.
    let registered = unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(mem as u64, 1, 0, 0)
            .is_ok()
    };
    if registered && ring.submitter().unregister_buf_ring(0).is_err() {
        return true; // Leak `mem`: the kernel may still reference it.
    }
    // SAFETY: `mem` came from `alloc_zeroed(layout)` and the kernel no longer references it.
    unsafe { std::alloc::dealloc(mem, layout) };
    registered
}

/// What `--io auto` would pick on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoChoice {
    /// io_uring works and has every operation the uring driver needs.
    Uring,
    /// io_uring is unavailable (or lacks a required opcode); `reason` says why, for the one log line.
    Epoll { reason: String },
}

/// Decides `--io auto`: [`AutoChoice::Uring`] when [`uring_features`] is `Ok` and nothing in
/// [`UringFeatures::missing_required`] is missing (in practice: kernel 5.6+; RECV and SEND are 5.6), else
/// [`AutoChoice::Epoll`] with the [`UringUnavailable`] Display as the reason.
pub fn auto_choice() -> AutoChoice {
    choose(&uring_features())
}

fn choose(uring: &Result<UringFeatures, UringUnavailable>) -> AutoChoice {
    match uring {
        Err(e) => AutoChoice::Epoll {
            reason: e.to_string(),
        },
        Ok(f) => match f.missing_required() {
            missing if missing.is_empty() => AutoChoice::Uring,
            missing => AutoChoice::Epoll {
                reason: format!(
                    "io_uring lacks what ringway's uring driver needs: {} (needs Linux 5.6+)",
                    missing.join(", ")
                ),
            },
        },
    }
}

/// Whether a ring of `entries` entries sets up for this process now: the question
/// RLIMIT_MEMLOCK poses on kernels whose io_uring charges rings to it (before 5.12, and not on
/// 5.10.162+, which carries 5.15's io_uring). Asked by trying, since the version string cannot
/// tell a backport. `Err(errno)` when refused.
pub fn ring_fits(entries: u32) -> Result<(), i32> {
    IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder()
        .build(entries)
        .map(drop)
        .map_err(|e| e.raw_os_error().unwrap_or(0))
}

/// `kernel.io_uring_disabled`: 0 enabled, 1 only privileged or `kernel.io_uring_group`, 2 off.
pub fn io_uring_disabled_sysctl() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// RLIMIT_MEMLOCK soft limit in bytes; `None` when unlimited or unreadable.
pub fn memlock_limit() -> Option<u64> {
    // SAFETY: `rlimit` is plain old data; all-zero is valid.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is a valid, writable `rlimit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(lim.rlim_cur)
}

#[cfg(test)]
mod tests;
