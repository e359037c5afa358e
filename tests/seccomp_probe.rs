//! The seccomp helper really blocks io_uring, and the probe explains it: a child copy of this test
//! binary, under a filter that answers EPERM to io_uring_setup (Docker's default), must see
//! `uring_features()` fail with EPERM and `auto_choice()` pick epoll with a reason naming both.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

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

/// Runs only in the child: a compio runtime doing one timed wait, the way every shard does.
#[test]
fn child_compio_timed_wait() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let runtime = compio::runtime::Runtime::new().expect("compio runtime");
    runtime.block_on(compio::runtime::time::sleep(Duration::from_millis(10)));
    println!("CHILD compio=ok");
}

fn child_command(test: &str) -> Command {
    let exe = std::env::current_exe().expect("current test binary path");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--nocapture"])
        .env(CHILD_ENV, "1");
    cmd
}

fn run_child(deny_errno: Option<i32>) -> String {
    let mut cmd = child_command("child_probe");
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

/// Why `ext_arg` is in `UringFeatures::missing_required`: compio 0.19 sends every timed wait with
/// `IORING_ENTER_EXT_ARG`, and a 5.10 kernel (simulated: the filter answers EINVAL as 5.10 does)
/// makes its runtime panic. If this test starts failing because the child succeeds, compio has
/// gained a fallback: drop `ext_arg` from the required list and let 5.10 run the uring driver.
#[test]
fn compio_needs_enter_ext_arg() {
    let control = child_command("child_compio_timed_wait")
        .output()
        .expect("spawn child");
    assert!(
        String::from_utf8_lossy(&control.stdout).contains("CHILD compio=ok"),
        "control run without the filter should work; stderr:\n{}",
        String::from_utf8_lossy(&control.stderr)
    );

    let mut cmd = child_command("child_compio_timed_wait");
    common::seccomp::deny_enter_ext_arg(&mut cmd);
    let out = cmd.output().expect("spawn child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("Invalid argument"),
        "expected compio to fail with EINVAL without EXT_ARG (5.10 behaviour), got {}\nstdout:\n{}\nstderr:\n{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}
