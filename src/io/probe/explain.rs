//! Why io_uring was refused: errno names and the likely cause (seccomp, sysctl, memlock, kernel).
//!
//! Reads the environment (sysctl, rlimit, uname) only through the parent module's helpers, so the
//! mapping itself, [`explain`], is a pure function the tests drive with made-up contexts.

use std::io;

use super::{
    KernelVersion, UringUnavailable, io_uring_disabled_sysctl, kernel_version, memlock_limit,
};

/// The symbolic name of the errnos io_uring setup can return; `"E?"` for others.
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOSYS => "ENOSYS",
        libc::ENOMEM => "ENOMEM",
        libc::EINVAL => "EINVAL",
        libc::EFAULT => "EFAULT",
        libc::EACCES => "EACCES",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::EBUSY => "EBUSY",
        libc::EAGAIN => "EAGAIN",
        libc::ENXIO => "ENXIO",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EINTR => "EINTR",
        _ => "E?",
    }
}

/// What the environment says about a refusal, so the explanation names the real cause.
#[derive(Debug, Clone, Copy)]
pub(super) struct Context {
    pub(super) io_uring_disabled: Option<u32>,
    pub(super) kernel: Option<KernelVersion>,
    pub(super) memlock: Option<u64>,
}

impl UringUnavailable {
    /// Builds the error for `syscall` failing with `err`, reading the sysctl, kernel version and
    /// memlock limit to explain the errno.
    pub fn from_error(syscall: &'static str, err: &io::Error) -> UringUnavailable {
        let ctx = Context {
            io_uring_disabled: io_uring_disabled_sysctl(),
            kernel: kernel_version(),
            memlock: memlock_limit(),
        };
        let errno = err.raw_os_error().unwrap_or(0);
        UringUnavailable {
            errno,
            cause: explain(errno, err, &ctx),
            syscall,
        }
    }
}

const SECCOMP_HINT: &str = "likely a container seccomp profile (Docker's default blocks io_uring)";

/// Maps an errno from io_uring_setup/enter/register to its likely cause and remedy.
pub(super) fn explain(errno: i32, err: &io::Error, ctx: &Context) -> String {
    match errno {
        libc::EPERM => match ctx.io_uring_disabled {
            Some(2) => {
                "io_uring is disabled for all processes by sysctl kernel.io_uring_disabled=2"
                    .to_string()
            }
            Some(1) => {
                "io_uring is restricted by sysctl kernel.io_uring_disabled=1 to CAP_SYS_ADMIN \
                        and members of kernel.io_uring_group, and this process is neither"
                    .to_string()
            }
            Some(_) => {
                format!("io_uring is blocked — {SECCOMP_HINT}; kernel.io_uring_disabled is 0")
            }
            None => format!("io_uring is blocked — {SECCOMP_HINT} or kernel.io_uring_disabled=2"),
        },
        libc::ENOSYS => "the kernel has no io_uring (built without CONFIG_IO_URING, or a sandbox \
                         such as gVisor or a seccomp profile answers ENOSYS)"
            .to_string(),
        libc::ENOMEM => match (ctx.kernel, ctx.memlock) {
            (Some(k), _) if k.at_least(5, 12) => {
                "out of memory for the ring (this kernel charges rings to the memory cgroup)"
                    .to_string()
            }
            (_, Some(limit)) => format!(
                "RLIMIT_MEMLOCK ({} KiB) too low: kernels < 5.12 charge rings to it; raise it \
                 (systemd LimitMEMLOCK=, ulimit -l)",
                limit / 1024
            ),
            (_, None) => "out of memory for the ring".to_string(),
        },
        libc::EINVAL => "the kernel rejected the ring parameters (io_uring too old? ringway needs \
                         Linux 5.10+)"
            .to_string(),
        libc::EMFILE | libc::ENFILE => {
            "out of file descriptors (RLIMIT_NOFILE or fs.file-max)".to_string()
        }
        libc::EACCES => format!("permission denied — {SECCOMP_HINT} or an LSM policy"),
        _ => format!("unexpected error: {err}"),
    }
}
