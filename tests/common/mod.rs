//! Shared helpers for integration tests.

#![allow(dead_code)]

pub mod backend;
pub mod differential;
pub mod echo;
pub mod framing_gen;
pub mod gateway;
pub mod procfs;
pub mod reference;
pub mod scripted;
pub mod seccomp;
pub mod tap;

/// Reports a test that cannot run here, visibly: `SKIPPED: <test>: <why>` goes straight to the
/// process's stderr, past libtest's output capture, so the line shows in a CI log even though
/// the test passes. In CI as root (`RINGWAY_CI=1`, effective uid 0), where everything a test
/// needs is installed or can be raised, a skip is a failure instead.
pub fn skip(test: &str, why: &str) {
    use std::io::Write;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root && std::env::var("RINGWAY_CI").as_deref() == Ok("1") {
        panic!("{test} must run in CI as root, but: {why}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why}");
}
