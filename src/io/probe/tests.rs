//! Unit tests for the probe: parsing, errno explanations, the auto decision, and a live probe.

use std::io;

use super::explain::{Context, explain};
use super::*;

#[test]
fn kernel_release_parsing() {
    type Case = (&'static str, Option<(u32, u32, u32)>);
    let cases: &[Case] = &[
        ("5.10.0-28-amd64", Some((5, 10, 0))),
        ("6.1.0-13-cloud-amd64", Some((6, 1, 0))),
        ("6.18.44-fc-v782", Some((6, 18, 44))),
        ("5.15.0-1051-azure", Some((5, 15, 0))),
        ("4.19.0", Some((4, 19, 0))),
        ("6.8.0-rc3", Some((6, 8, 0))),
        ("5.14.0-427.13.1.el9_4.x86_64", Some((5, 14, 0))),
        ("6.6", Some((6, 6, 0))),
        ("6.6.", Some((6, 6, 0))),
        ("6", None),
        ("", None),
        ("linux", None),
    ];
    for (release, want) in cases {
        let got = KernelVersion::parse(release).map(|k| (k.major, k.minor, k.patch));
        assert_eq!(got, *want, "parsing {release:?}");
    }
}

#[test]
fn version_ordering() {
    let v = |s| KernelVersion::parse(s).unwrap();
    assert!(v("5.19.0") > v("5.10.200"));
    assert!(v("6.0.0-1") >= v("5.19.17"));
    assert!(v("5.19.0").at_least(5, 19));
    assert!(!v("5.18.99").at_least(5, 19));
    assert!(v("6.1.0").at_least(5, 19));
}

fn err_for(errno: i32, io_uring_disabled: Option<u32>, kernel: &str) -> UringUnavailable {
    let ctx = Context {
        io_uring_disabled,
        kernel: KernelVersion::parse(kernel),
        memlock: Some(64 * 1024),
    };
    let err = io::Error::from_raw_os_error(errno);
    UringUnavailable {
        errno,
        cause: explain(errno, &err, &ctx),
        syscall: "io_uring_setup",
    }
}

#[test]
fn errno_messages() {
    let cases: &[(i32, Option<u32>, &str, &[&str])] = &[
        (
            libc::EPERM,
            None,
            "6.1.0",
            &[
                "io_uring_setup failed: EPERM (errno 1):",
                "seccomp",
                "io_uring_disabled=2",
            ],
        ),
        (
            libc::EPERM,
            Some(0),
            "6.8.0",
            &["EPERM", "seccomp", "Docker"],
        ),
        (
            libc::EPERM,
            Some(1),
            "6.8.0",
            &["EPERM", "io_uring_disabled=1", "io_uring_group"],
        ),
        (
            libc::EPERM,
            Some(2),
            "6.8.0",
            &["EPERM", "io_uring_disabled=2", "all processes"],
        ),
        (
            libc::ENOSYS,
            None,
            "5.10.0",
            &["ENOSYS (errno 38)", "CONFIG_IO_URING", "gVisor"],
        ),
        (
            libc::ENOMEM,
            None,
            "5.10.0",
            &[
                "ENOMEM (errno 12)",
                "RLIMIT_MEMLOCK (64 KiB)",
                "< 5.12",
                "LimitMEMLOCK",
            ],
        ),
        (libc::ENOMEM, None, "6.1.0", &["ENOMEM", "memory cgroup"]),
        (libc::EINVAL, None, "5.4.0", &["EINVAL (errno 22)", "5.10"]),
        (libc::EMFILE, None, "6.1.0", &["EMFILE", "file descriptors"]),
    ];
    for (errno, sysctl, kernel, needles) in cases {
        let shown = err_for(*errno, *sysctl, kernel).to_string();
        for needle in *needles {
            assert!(shown.contains(needle), "expected {needle:?} in {shown:?}");
        }
    }
}

#[test]
fn eperm_without_sysctl_matches_documented_text() {
    assert_eq!(
        err_for(libc::EPERM, None, "6.1.0").to_string(),
        "io_uring_setup failed: EPERM (errno 1): io_uring is blocked — likely a container \
         seccomp profile (Docker's default blocks io_uring) or kernel.io_uring_disabled=2"
    );
}

#[test]
fn auto_falls_back_with_reason() {
    let err = err_for(libc::EPERM, Some(0), "6.8.0");
    match choose(&Err(err)) {
        AutoChoice::Epoll { reason } => {
            assert!(
                reason.contains("io_uring") && reason.contains("EPERM"),
                "{reason}"
            )
        }
        other => panic!("expected Epoll, got {other:?}"),
    }
    // A 5.10 kernel: every required opcode, no IORING_FEAT_EXT_ARG (the driver does not need it).
    let kernel_5_10 = UringFeatures {
        accept: true,
        timeout: true,
        connect: true,
        send: true,
        recv: true,
        sendmsg: true,
        poll_add: true,
        async_cancel: true,
        fast_poll: true,
        ..UringFeatures::default()
    };
    match choose(&Ok(kernel_5_10)) {
        AutoChoice::Uring => {}
        other => panic!("expected Uring on a 5.10 kernel without EXT_ARG, got {other:?}"),
    }
    match choose(&Ok(UringFeatures {
        timeout: false,
        ..kernel_5_10
    })) {
        AutoChoice::Epoll { reason } => assert!(reason.contains("timeout"), "{reason}"),
        other => panic!("expected Epoll without the TIMEOUT opcode, got {other:?}"),
    }
    match choose(&Ok(UringFeatures::default())) {
        AutoChoice::Epoll { reason } => assert!(reason.contains("accept"), "{reason}"),
        other => panic!("expected Epoll for a ring without opcodes, got {other:?}"),
    }
}

/// Live: this machine (Linux 6.18, io_uring enabled) must report io_uring usable, with the
/// version-gated features agreeing with the kernel version.
#[test]
fn live_probe_on_this_machine() {
    let features = match uring_features() {
        Ok(f) => f,
        Err(e) => panic!("expected io_uring to be available here, got: {e}"),
    };
    let k = kernel_version().expect("uname release parses");
    assert_eq!(features.multishot_accept, k.at_least(5, 19));
    assert_eq!(features.recv_multishot, k.at_least(6, 0));
    assert_eq!(
        features.buffer_ring,
        k.at_least(5, 19),
        "pbuf ring registration"
    );
    assert_eq!(features.send_zc, k.at_least(6, 0), "SEND_ZC opcode");
    assert!(features.registered_files, "a sparse file table (5.5+)");
    assert_eq!(features.coop_taskrun, k.at_least(5, 19));
    assert_eq!(features.taskrun_flag, k.at_least(5, 19));
    assert_eq!(features.single_issuer, k.at_least(6, 0));
    assert_eq!(features.defer_taskrun, k.at_least(6, 1));
    assert_eq!(features.ext_arg, k.at_least(5, 11));
    assert!(features.fast_poll && features.nodrop && features.submit_stable);
    assert!(features.missing_required().is_empty(), "{features:?}");
    assert!(features.splice && features.provide_buffers);
    assert_eq!(auto_choice(), AutoChoice::Uring);

    let report = probe();
    let shown = report.to_string();
    println!("{shown}");
    assert!(shown.contains("io_uring: available"), "{shown}");
    assert!(shown.ends_with("auto would pick: uring"), "{shown}");
}

/// The report answers from trials: a self-test failure overrides the feature bits (the 5.10.262
/// lesson), and a full-size ring that does not fit memlock is named with its fix.
#[test]
fn report_follows_the_self_test_and_the_trial_ring() {
    let mut report = probe();
    report.uring = Ok(UringFeatures {
        ext_arg: true,
        timeout: true,
        accept: true,
        connect: true,
        send: true,
        sendmsg: true,
        recv: true,
        poll_add: true,
        async_cancel: true,
        ..UringFeatures::default()
    });
    report.full_ring = Err(libc::ENOMEM);
    report.self_test = Some(Err(
        "io_uring self-test failed at \"tcp connect\": Bad file descriptor (os error 9)".into(),
    ));
    let shown = report.to_string();
    assert!(
        shown.contains("4096-entry ring does not set up (ENOMEM)")
            && shown.contains("LimitMEMLOCK"),
        "{shown}"
    );
    assert!(
        shown.ends_with(
            "auto would pick: epoll (because io_uring self-test failed at \"tcp connect\": Bad file descriptor (os error 9))"
        ),
        "{shown}"
    );
    report.self_test = Some(Ok(()));
    report.full_ring = Ok(());
    let shown = report.to_string();
    assert!(
        shown.contains("self-test through a uring runtime: passed"),
        "{shown}"
    );
    assert!(shown.ends_with("auto would pick: uring"), "{shown}");
}
