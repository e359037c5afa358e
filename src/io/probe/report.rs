//! `ringway probe`'s report: gathering every probe result and printing it for a person.
//!
//! Printing only; it decides nothing (the `--io auto` decision is [`super::auto_choice`]).

use std::fmt;

use super::{
    AutoChoice, KernelVersion, UringFeatures, UringUnavailable, choose, io_uring_disabled_sysctl,
    kernel_release, memlock_limit, uring_features,
};

/// Everything `ringway probe` prints.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// `uname -r`.
    pub kernel_release: String,
    /// Parsed `kernel_release`.
    pub kernel: Option<KernelVersion>,
    /// The result of [`uring_features`].
    pub uring: Result<UringFeatures, UringUnavailable>,
    /// `/proc/sys/kernel/io_uring_disabled` (kernel 6.6+); `None` when absent or unreadable.
    pub io_uring_disabled_sysctl: Option<u32>,
    /// RLIMIT_MEMLOCK soft limit in bytes; `None` = unlimited.
    pub memlock_limit: Option<u64>,
    /// Whether a ring of the driver's full size sets up under that limit (`Err(errno)` if not).
    pub full_ring: Result<(), i32>,
    /// The start-up self-test through a uring runtime, when the caller ran it (`ringway probe`
    /// does; the probe module itself never starts a runtime): `Err` says which step failed.
    pub self_test: Option<Result<(), String>>,
}

/// Runs every probe once.
pub fn probe() -> ProbeReport {
    let kernel_release = kernel_release();
    ProbeReport {
        kernel: KernelVersion::parse(&kernel_release),
        kernel_release,
        uring: uring_features(),
        io_uring_disabled_sysctl: io_uring_disabled_sysctl(),
        memlock_limit: memlock_limit(),
        full_ring: super::ring_fits(full_ring()),
        self_test: None,
    }
}

/// The uring driver's ring size before any shrinking.
fn full_ring() -> u32 {
    crate::io::UringOptions::default().capacity
}

/// One row of the feature table: name, first mainline kernel, what ringway does with it.
struct FeatureRow {
    name: &'static str,
    since: &'static str,
    used_for: &'static str,
    get: fn(&UringFeatures) -> bool,
}

#[rustfmt::skip]
const FEATURE_ROWS: &[FeatureRow] = &[
    FeatureRow { name: "multishot_accept", since: "5.19", used_for: "one accept SQE yields every new connection", get: |f| f.multishot_accept },
    FeatureRow { name: "buffer_ring", since: "5.19", used_for: "reads on idle keepalive client connections (no buffer held while idle)", get: |f| f.buffer_ring },
    FeatureRow { name: "registered_files", since: "5.5", used_for: "sockets named by their slot in the ring's file table: no file reference per operation", get: |f| f.registered_files },
    FeatureRow { name: "linked_send_recv", since: "6.0", used_for: "a write and the read after it as one chain, one wake-up (CQE_SKIP 5.17 + MSG_WAITALL send 5.18)", get: |f| f.linked_send_recv },
    FeatureRow { name: "send_zc", since: "6.0", used_for: "not used: sends to local sockets are copied anyway", get: |f| f.send_zc },
    FeatureRow { name: "recv_multishot", since: "6.0", used_for: "not used: one batched RECV SQE per read is enough", get: |f| f.recv_multishot },
    FeatureRow { name: "coop_taskrun", since: "5.19", used_for: "no IPI per completion: run at next enter", get: |f| f.coop_taskrun },
    FeatureRow { name: "taskrun_flag", since: "5.19", used_for: "see pending task work without a syscall", get: |f| f.taskrun_flag },
    FeatureRow { name: "single_issuer", since: "6.0", used_for: "one ring per shard thread: less locking", get: |f| f.single_issuer },
    FeatureRow { name: "defer_taskrun", since: "6.1", used_for: "completions run only when the shard waits", get: |f| f.defer_taskrun },
    FeatureRow { name: "ext_arg", since: "5.11", used_for: "not used: waits are bounded by a TIMEOUT SQE (so 5.10 runs the driver)", get: |f| f.ext_arg },
    FeatureRow { name: "fast_poll", since: "5.7", used_for: "socket ops poll in-kernel, no io-wq thread", get: |f| f.fast_poll },
    FeatureRow { name: "submit_stable", since: "5.5", used_for: "SQE data may be dropped after submit", get: |f| f.submit_stable },
    FeatureRow { name: "nodrop", since: "5.5", used_for: "no completion lost on CQ overflow", get: |f| f.nodrop },
    FeatureRow { name: "accept", since: "5.5", used_for: "accept client connections (required)", get: |f| f.accept },
    FeatureRow { name: "connect", since: "5.5", used_for: "connect to upstreams (required)", get: |f| f.connect },
    FeatureRow { name: "send", since: "5.6", used_for: "write to sockets (required)", get: |f| f.send },
    FeatureRow { name: "sendmsg", since: "5.3", used_for: "vectored writes: fan-out answers, head + body (required)", get: |f| f.sendmsg },
    FeatureRow { name: "recv", since: "5.6", used_for: "reads; the pooled-connection reuse check (required)", get: |f| f.recv },
    FeatureRow { name: "poll_add", since: "5.1", used_for: "idle reads without a buffer ring wait for readiness (required)", get: |f| f.poll_add },
    FeatureRow { name: "async_cancel", since: "5.5", used_for: "cancel an operation whose future was dropped (required)", get: |f| f.async_cancel },
    FeatureRow { name: "timeout", since: "5.4", used_for: "bound the ring wait by the next timer (required)", get: |f| f.timeout },
    FeatureRow { name: "linked_timeout", since: "5.5", used_for: "not used: timeouts are the shard's own timer wheel", get: |f| f.linked_timeout },
    FeatureRow { name: "socket", since: "5.19", used_for: "not used: sockets come from socket(2) ", get: |f| f.socket },
    FeatureRow { name: "splice", since: "5.7", used_for: "not yet (bodies go through Bytes)", get: |f| f.splice },
    FeatureRow { name: "provide_buffers", since: "5.7", used_for: "not used (buffer_ring supersedes it)", get: |f| f.provide_buffers },
];

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kernel {
            Some(k) => writeln!(f, "kernel: {} (version {k})", self.kernel_release)?,
            None => writeln!(f, "kernel: {:?} (version not parsed)", self.kernel_release)?,
        }
        match &self.uring {
            Ok(_) => writeln!(f, "io_uring: available")?,
            Err(e) => writeln!(f, "io_uring: unavailable ({e})")?,
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<17} {:<7} {:<9}  ringway uses it for",
            "feature", "kernel", "supported"
        )?;
        for row in FEATURE_ROWS {
            let supported = match &self.uring {
                Ok(features) if (row.get)(features) => "yes",
                Ok(_) => "no",
                Err(_) => "-",
            };
            writeln!(
                f,
                "{:<17} {:<7} {:<9}  {}",
                row.name, row.since, supported, row.used_for
            )?;
        }
        writeln!(f)?;
        match self.io_uring_disabled_sysctl {
            Some(v) => writeln!(f, "kernel.io_uring_disabled: {v} ({})", sysctl_meaning(v))?,
            None => writeln!(f, "kernel.io_uring_disabled: absent (kernel < 6.6)")?,
        }
        let limit = match self.memlock_limit {
            Some(b) => format!("{} KiB", b / 1024),
            None => "unlimited".to_string(),
        };
        match self.full_ring {
            Ok(()) => writeln!(
                f,
                "RLIMIT_MEMLOCK: {limit}; a {}-entry ring (the driver's size) sets up under it",
                full_ring()
            )?,
            Err(errno) => writeln!(
                f,
                "RLIMIT_MEMLOCK: {limit}; a {}-entry ring does not set up ({}): the driver \
                 shrinks its ring to fit, down to 64 entries; raise the limit for full size \
                 (systemd LimitMEMLOCK=, ulimit -l)",
                full_ring(),
                super::errno_name(errno)
            )?,
        }
        match &self.self_test {
            Some(Ok(())) => writeln!(f, "self-test through a uring runtime: passed")?,
            Some(Err(e)) => writeln!(f, "self-test through a uring runtime: {e}")?,
            None => {}
        }
        if let (AutoChoice::Uring, Some(Err(e))) = (choose(&self.uring), &self.self_test) {
            return write!(f, "auto would pick: epoll (because {e})");
        }
        match choose(&self.uring) {
            AutoChoice::Uring => write!(f, "auto would pick: uring"),
            AutoChoice::Epoll { reason } => write!(f, "auto would pick: epoll (because {reason})"),
        }
    }
}

fn sysctl_meaning(v: u32) -> &'static str {
    match v {
        0 => "enabled for all",
        1 => "only CAP_SYS_ADMIN or members of kernel.io_uring_group",
        2 => "disabled for all",
        _ => "unknown value",
    }
}
