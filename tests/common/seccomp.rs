//! Seccomp helper for integration tests: run a child process in which io_uring is refused, the
//! way Docker's default seccomp profile refuses it, to test `--io auto`'s fallback and the
//! `--io uring` error message without a container.
//!
//! Depends only on `seccompiler` (dev-dependency) and `libc`. Linux x86_64 and aarch64.

// Each integration test compiles `common` on its own and uses only some of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::Command;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// The io_uring syscalls a container profile blocks: all three, so a filter that let setup
/// through would still be caught at enter/register.
const IO_URING_SYSCALLS: [i64; 3] = [
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
];

/// Configures `cmd` so the child installs, before exec, a seccomp filter that makes
/// `io_uring_setup`, `io_uring_enter` and `io_uring_register` fail with `errno` (pass
/// `libc::EPERM` to mimic Docker's default profile; `libc::ENOSYS` mimics older profiles and
/// sandboxes); every other syscall is allowed.
///
/// The BPF program is compiled here, in the parent; the child only installs it (no allocation
/// after fork). The filter also sets `no_new_privs` in the child, which is what lets an
/// unprivileged process install it; it does not otherwise change a test binary's behaviour.
///
/// # Panics
///
/// If the filter cannot be compiled (a bug, not an environment problem). If the child cannot
/// install it, `cmd.spawn()` returns that error instead.
pub fn deny_io_uring(cmd: &mut Command, errno: i32) {
    let errno = u32::try_from(errno).expect("errno is a positive number");
    let rules: BTreeMap<i64, Vec<SeccompRule>> = IO_URING_SYSCALLS
        .iter()
        .map(|&nr| (nr, Vec::new())) // no conditions: match the syscall unconditionally
        .collect();
    install_before_exec(cmd, rules, SeccompAction::Errno(errno));
}

/// `IORING_ENTER_EXT_ARG` (include/uapi/linux/io_uring.h), added in Linux 5.11.
const IORING_ENTER_EXT_ARG: u64 = 1 << 3;

/// Configures `cmd` so that, in the child, `io_uring_enter` calls carrying
/// `IORING_ENTER_EXT_ARG` fail with `EINVAL`, which is what a 5.10 kernel answers (it knows no
/// such flag). Everything else, io_uring included, works. This tests behaviour on 5.10 from a
/// newer kernel.
pub fn deny_enter_ext_arg(cmd: &mut Command) {
    // io_uring_enter(fd, to_submit, min_complete, flags, arg, argsz): flags is argument 3.
    let flags_has_ext_arg = SeccompCondition::new(
        3,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(IORING_ENTER_EXT_ARG),
        IORING_ENTER_EXT_ARG,
    )
    .expect("seccomp condition on io_uring_enter flags");
    let rule = SeccompRule::new(vec![flags_has_ext_arg]).expect("seccomp rule");
    let rules = BTreeMap::from([(libc::SYS_io_uring_enter, vec![rule])]);
    install_before_exec(cmd, rules, SeccompAction::Errno(libc::EINVAL as u32));
}

/// Configures `cmd` so that, in the child, `io_uring_setup` of a ring with more than `entries`
/// entries fails with `ENOMEM`: what a kernel that charges rings to RLIMIT_MEMLOCK answers
/// (io_uring before 5.12) when the ring does not fit the limit. Smaller rings set up normally.
pub fn enomem_for_rings_over(cmd: &mut Command, entries: u32) {
    // io_uring_setup(entries, params): entries is argument 0.
    let too_big = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Gt,
        u64::from(entries),
    )
    .expect("seccomp condition on io_uring_setup entries");
    let rule = SeccompRule::new(vec![too_big]).expect("seccomp rule");
    let rules = BTreeMap::from([(libc::SYS_io_uring_setup, vec![rule])]);
    install_before_exec(cmd, rules, SeccompAction::Errno(libc::ENOMEM as u32));
}

/// Compiles `rules` (matching syscalls get `on_match`, all others are allowed) in the parent and
/// makes the child install the program between fork and exec.
fn install_before_exec(
    cmd: &mut Command,
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    on_match: SeccompAction,
) {
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, on_match, ARCH)
        .expect("seccomp filter compiles");
    let program: BpfProgram = filter.try_into().expect("seccomp filter converts to BPF");
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe work
    // is allowed (another parent thread may have held the allocator lock at fork). It does none
    // that is not: `program` was built above, in the parent, and is only borrowed. We checked
    // `seccompiler::apply_filter` 0.5.0 (src/lib.rs, `apply_filter_with_flags`): it builds a
    // `sock_fprog` on the stack, then calls `prctl(PR_SET_NO_NEW_PRIVS)` and
    // `syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)`; its errors are
    // `io::Error::last_os_error()` (an `Os` repr, no heap) wrapped in an enum, and we turn them
    // back into a raw-OS `io::Error`, which does not allocate either.
    unsafe {
        cmd.pre_exec(move || {
            seccompiler::apply_filter(&program).map_err(|e| match e {
                seccompiler::Error::Prctl(io) | seccompiler::Error::Seccomp(io) => io,
                _ => std::io::Error::from_raw_os_error(libc::EINVAL),
            })
        });
    }
}
