//! The traced window: `perf stat` counting the target's syscalls and heap allocations.
//!
//! A tracer is never attached while CPU is measured. The `raw_syscalls:sys_enter` tracepoint
//! sends every syscall through the kernel's slow path, and a uprobe on `malloc` traps on every
//! call, so both bill the target for the measurement, and the syscall-heavy targets (nginx,
//! HAProxy, the epoll build) pay the most. Counts come from a separate, shorter window after
//! the CPU window; its CPU figures are thrown away.
//!
//! Allocations are counted with uprobes on libc's `malloc`, `calloc` and `realloc`
//! (`perf probe -x <libc> malloc`, event `probe_libc:malloc`). `posix_memalign` with an
//! alignment of 16 or less goes through `malloc` inside glibc and is counted there; larger
//! alignments and allocators other than libc's are not counted. Probes this module creates are
//! deleted again by [`Probes::remove`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Time perf needs to attach before the counted load starts.
pub const PERF_ATTACH: Duration = Duration::from_millis(300);
/// How long `perf stat` may take to print its counts after SIGINT.
const PERF_STOP: Duration = Duration::from_secs(5);
/// The syscall tracepoint.
const SYSCALL_EVENT: &str = "raw_syscalls:sys_enter";
/// The libc functions counted as heap allocations.
const ALLOC_FUNCS: [&str; 3] = ["malloc", "calloc", "realloc"];

/// True when `perf stat -e raw_syscalls:sys_enter` works here (needs tracefs and permissions).
pub fn perf_works() -> bool {
    event_works(SYSCALL_EVENT)
}

fn event_works(event: &str) -> bool {
    Command::new("perf")
        .args(["stat", "-x,", "-e", event, "--", "true"])
        .stdout(Stdio::null())
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stderr).contains(event))
        .unwrap_or(false)
}

/// The libc this process runs on (the targets are linked against the same one).
fn libc_path() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            Path::new(p)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libc.so") || n.starts_with("libc-"))
        })
        .map(PathBuf::from)
}

/// The uprobe events for libc's allocation functions.
#[derive(Debug, Default)]
pub struct Probes {
    /// Events that work (`probe_libc:malloc`, ...).
    pub events: Vec<String>,
    /// Events this run created (deleted by [`Probes::remove`]).
    created: Vec<String>,
    /// Why there are none, when there are none.
    pub why_not: Option<String>,
}

impl Probes {
    /// No probes, saying why.
    pub fn none(why: &str) -> Probes {
        Probes {
            why_not: Some(why.into()),
            ..Probes::default()
        }
    }

    /// Finds or creates `probe_libc:{malloc,calloc,realloc}`. Never fails: without perf or
    /// uprobes the result has no events and says why.
    pub fn setup() -> Probes {
        let mut p = Probes::default();
        let Some(libc) = libc_path() else {
            p.why_not = Some("libc not found in /proc/self/maps".into());
            return p;
        };
        for f in ALLOC_FUNCS {
            let ev = format!("probe_libc:{f}");
            if !event_works(&ev) {
                let ok = Command::new("perf")
                    .args(["probe", "-q", "-x"])
                    .arg(&libc)
                    .args(["-a", f])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    p.created.push(ev.clone());
                }
            }
            if event_works(&ev) {
                p.events.push(ev);
            }
        }
        if p.events.len() < ALLOC_FUNCS.len() {
            p.why_not = Some(format!(
                "uprobes on {} unavailable (perf probe failed; needs root and CONFIG_UPROBE_EVENTS)",
                libc.display()
            ));
            p.events.clear();
        }
        p
    }

    /// Deletes the probe events this run created.
    pub fn remove(&self) {
        for ev in &self.created {
            let _ = Command::new("perf")
                .args(["probe", "-q", "-d", ev])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Counts from one traced window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    /// Syscalls entered.
    pub syscalls: Option<u64>,
    /// malloc + calloc + realloc calls (None without probes).
    pub allocs: Option<u64>,
}

/// A running `perf stat` on the target's processes.
pub struct PerfCount {
    child: Child,
    out: PathBuf,
    alloc_events: Vec<String>,
}

impl PerfCount {
    /// Starts counting syscalls (and `alloc_events`) of `pids`; None if perf cannot start.
    pub fn start(pids: &[u32], alloc_events: &[String], out: PathBuf) -> Option<PerfCount> {
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        let mut events = vec![SYSCALL_EVENT.to_string()];
        events.extend(alloc_events.iter().cloned());
        let child = Command::new("perf")
            .args([
                "stat",
                "-x,",
                "-e",
                &events.join(","),
                "-p",
                &list.join(","),
            ])
            .arg("-o")
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(PerfCount {
            child,
            out,
            alloc_events: alloc_events.to_vec(),
        })
    }

    /// Stops perf (SIGINT makes it print its counts) and returns them.
    pub fn finish(mut self) -> Counts {
        // SAFETY: kill(2) on our own un-waited child: the pid cannot have been reused.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let until = Instant::now() + PERF_STOP;
        // Bounded by PERF_STOP, then killed.
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        parse_counts(&text, &self.alloc_events)
    }
}

/// Parses `perf stat -x,` output: `count,unit,event,...` lines.
pub fn parse_counts(text: &str, alloc_events: &[String]) -> Counts {
    let count = |ev: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.split(',').nth(2).is_some_and(|e| e.trim() == ev))
            .and_then(|l| l.split(',').next())
            .and_then(|n| n.trim().parse().ok())
    };
    let allocs = if alloc_events.is_empty() {
        None
    } else {
        alloc_events.iter().map(|e| count(e)).sum::<Option<u64>>()
    };
    Counts {
        syscalls: count(SYSCALL_EVENT),
        allocs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_parsed_per_event_and_summed_for_allocations() {
        let text = "# started on Sun Dec  6\n\n\
                    5230,,raw_syscalls:sys_enter,1000,100.00,,\n\
                    700,,probe_libc:malloc,1000,100.00,,\n\
                    20,,probe_libc:calloc,1000,100.00,,\n\
                    30,,probe_libc:realloc,1000,100.00,,\n";
        let evs: Vec<String> = ALLOC_FUNCS
            .iter()
            .map(|f| format!("probe_libc:{f}"))
            .collect();
        assert_eq!(
            parse_counts(text, &evs),
            Counts {
                syscalls: Some(5230),
                allocs: Some(750)
            }
        );
        assert_eq!(
            parse_counts(text, &[]),
            Counts {
                syscalls: Some(5230),
                allocs: None
            }
        );
        // An event perf could not count makes the sum unknown, not smaller.
        let partial = text.replace("20,,probe_libc:calloc", "<not counted>,,probe_libc:calloc");
        assert_eq!(parse_counts(&partial, &evs).allocs, None);
        assert_eq!(parse_counts("", &evs), Counts::default());
    }
}
