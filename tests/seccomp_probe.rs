//! The seccomp helper really blocks io_uring, and the probe explains it: a child copy of this test
//! binary, under a filter that answers EPERM to io_uring_setup (Docker's default), must see
//! `uring_features()` fail with EPERM and `auto_choice()` pick epoll with a reason naming both.

mod common;

use std::process::{Command, Output};

use ringway::io::probe::{AutoChoice, auto_choice, uring_features};

/// Set in the child's environment: `child_probe` does its work only when it is present.
const CHILD_ENV: &str = "RINGWAY_SECCOMP_PROBE_CHILD";

/// Runs only in the child (re-executed below); a plain `cargo test` passes over it.
#[test]
fn child_probe() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    match uring_features() {
        Ok(_) => println!("CHILD uring=ok"),
        Err(e) => println!("CHILD uring=err errno={} display={e}", e.errno),
    }
    match auto_choice() {
        AutoChoice::Uring => println!("CHILD auto=uring"),
        AutoChoice::Epoll { reason } => println!("CHILD auto=epoll reason={reason}"),
    }
}

fn run_child(deny_errno: Option<i32>) -> String {
    let exe = std::env::current_exe().expect("current test binary path");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "child_probe", "--nocapture"])
        .env(CHILD_ENV, "1");
    if let Some(errno) = deny_errno {
        common::seccomp::deny_io_uring(&mut cmd, errno);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("spawn child test binary");
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    assert!(
        status.success(),
        "child failed: {status}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&stderr)
    );
    stdout
}

fn line<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("expected a line starting {prefix:?}, child printed:\n{stdout}"))
}

#[test]
fn io_uring_denied_by_seccomp_falls_back_to_epoll() {
    let out = run_child(Some(libc::EPERM));
    println!("{out}");

    let uring = line(&out, "CHILD uring=");
    assert!(
        uring.starts_with(&format!("err errno={} ", libc::EPERM)),
        "expected uring_features() = Err(EPERM) under the filter, got: {uring}"
    );
    assert!(
        uring.contains("io_uring_setup failed: EPERM"),
        "expected the setup syscall and errno named, got: {uring}"
    );

    let auto = line(&out, "CHILD auto=");
    assert!(
        auto.starts_with("epoll reason=") && auto.contains("io_uring") && auto.contains("EPERM"),
        "expected auto_choice() = Epoll with a reason naming io_uring and EPERM, got: {auto}"
    );
}

#[test]
fn io_uring_denied_with_enosys_is_named() {
    let out = run_child(Some(libc::ENOSYS));
    let uring = line(&out, "CHILD uring=");
    assert!(
        uring.starts_with(&format!("err errno={} ", libc::ENOSYS)) && uring.contains("ENOSYS"),
        "expected uring_features() = Err(ENOSYS) under the filter, got: {uring}"
    );
}

#[test]
fn control_without_filter_sees_io_uring() {
    let out = run_child(None);
    assert_eq!(line(&out, "CHILD uring="), "ok", "child output:\n{out}");
    assert_eq!(line(&out, "CHILD auto="), "uring", "child output:\n{out}");
}
