//! `ringway-bench ab`: a paired A/B of two ringway builds or two drivers, the measurement every
//! speed claim of the project cites.
//!
//! Both gateways run at once, pinned to the same target CPU, behind the same backend. The load
//! alternates between them in slices: pair *i* loads one, then the other, and the order flips
//! every pair (A B, B A, A B, ...), because the first-loaded gateway of a pair was measured
//! 6–12% faster on this project's VMs. Each slice reads the loaded gateway's utime and stime
//! around the load; nothing is attached to either process. Per pair, B/A ratios of CPU per
//! request (total, user, kernel) and of req/s; reported are their medians, a bootstrap 95%
//! interval of each median, and the pairs B won.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::BackendHandle;
use crate::procfs;
use crate::stats::{self, Paired};
use crate::suite::host::Host;
use crate::suite::scenarios::{self, Scenario};
use crate::suite::targets::{self, RunningTarget, TargetSetup};

/// Descriptor limit asked for (proxy-256 needs two per connection in each gateway).
const NOFILE: u64 = 65_536;

/// What to compare and how long.
#[derive(Debug, Clone)]
pub struct AbOptions {
    /// Build A.
    pub a: PathBuf,
    /// Build B.
    pub b: PathBuf,
    /// Extra `ringway run` arguments of A (e.g. `--io epoll`).
    pub a_args: Vec<String>,
    /// Extra `ringway run` arguments of B.
    pub b_args: Vec<String>,
    /// A closed-loop scenario of the suite (proxy-256, fanout-4, ...).
    pub scenario: String,
    /// Pairs of slices.
    pub pairs: usize,
    /// Length of one slice.
    pub slice: Duration,
    /// Warm-up of each gateway before the first pair.
    pub warmup: Duration,
    /// Directory for ab.json and ab.md (none: print only).
    pub out: Option<PathBuf>,
}

/// Which gateway a slice loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    /// Build A.
    A,
    /// Build B.
    B,
}

/// The load order of pair `i`: A first in even pairs, B first in odd ones.
pub fn order(pair: usize) -> [Side; 2] {
    if pair.is_multiple_of(2) {
        [Side::A, Side::B]
    } else {
        [Side::B, Side::A]
    }
}

/// One slice's measurement of one gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    /// Completed responses.
    pub requests: u64,
    /// Errors.
    pub errors: u64,
    /// Responses per second.
    pub rps: f64,
    /// utime per request, µs.
    pub user_us: f64,
    /// stime per request, µs.
    pub sys_us: f64,
    /// Loaded first in its pair.
    pub first: bool,
}

impl Slice {
    /// utime + stime per request, µs.
    pub fn cpu_us(&self) -> f64 {
        self.user_us + self.sys_us
    }
}

/// One pair: A's and B's slices.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    /// A's slice.
    pub a: Slice,
    /// B's slice.
    pub b: Slice,
}

/// The comparison over all pairs (ratios are B / A).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// CPU per request, user + kernel (< 1: B cheaper).
    pub cpu: Option<Paired>,
    /// User-space CPU per request.
    pub user: Option<Paired>,
    /// Kernel CPU per request.
    pub sys: Option<Paired>,
    /// Requests per second (> 1: B faster).
    pub rps: Option<Paired>,
}

/// Compares the pairs.
pub fn compare(pairs: &[Pair]) -> Comparison {
    let col = |f: &dyn Fn(&Slice) -> f64| -> (Vec<f64>, Vec<f64>) {
        (
            pairs.iter().map(|p| f(&p.a)).collect(),
            pairs.iter().map(|p| f(&p.b)).collect(),
        )
    };
    let p = |f: &dyn Fn(&Slice) -> f64, lower: bool| {
        let (a, b) = col(f);
        stats::paired(&a, &b, lower)
    };
    Comparison {
        cpu: p(&Slice::cpu_us, true),
        user: p(&|s| s.user_us, true),
        sys: p(&|s| s.sys_us, true),
        rps: p(&|s| s.rps, false),
    }
}

/// Runs `pairs` pairs, measuring each slice with `measure(side, first_in_pair)`, in the
/// flipping order of [`order`].
///
/// # Errors
/// The first error of `measure`.
pub fn run_pairs(
    pairs: usize,
    mut measure: impl FnMut(Side, bool) -> Result<Slice, String>,
) -> Result<Vec<Pair>, String> {
    let mut out = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let [first, second] = order(i);
        let s1 = measure(first, true)?;
        let s2 = measure(second, false)?;
        out.push(match first {
            Side::A => Pair { a: s1, b: s2 },
            Side::B => Pair { a: s2, b: s1 },
        });
    }
    Ok(out)
}

/// Everything `ab` writes to ab.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AbResult {
    /// The machine.
    pub host: Host,
    /// UTC date.
    pub date: String,
    /// Scenario.
    pub scenario: String,
    /// A's binary and arguments.
    pub a: String,
    /// B's binary and arguments.
    pub b: String,
    /// Slice length, seconds.
    pub slice_s: f64,
    /// Every pair.
    pub pairs: Vec<Pair>,
    /// The comparison.
    pub comparison: Comparison,
}

fn describe(bin: &std::path::Path, args: &[String]) -> String {
    if args.is_empty() {
        bin.display().to_string()
    } else {
        format!("{} {}", bin.display(), args.join(" "))
    }
}

/// Loads one gateway for one slice and reads its CPU around the load.
fn slice(
    rt: &RunningTarget,
    sc: &Scenario,
    threads: usize,
    d: Duration,
    cpus: (&[usize], &[usize]),
    first: bool,
) -> Result<Slice, String> {
    let cfg = crate::suite::measure::load_config(threads, sc, rt, d);
    let w = crate::suite::measure::load_window(rt.pid(), &cfg, cpus.0, cpus.1)?;
    let n = w.load.requests.max(1) as f64;
    if w.load.requests == 0 {
        return Err(format!("no responses (errors: {:?})", w.load.errors));
    }
    Ok(Slice {
        requests: w.load.requests,
        errors: w.load.errors.total(),
        rps: w.load.rps(),
        user_us: w.cpu.user.as_secs_f64() * 1e6 / n,
        sys_us: w.cpu.sys.as_secs_f64() * 1e6 / n,
        first,
    })
}

/// Runs the A/B and prints (and with `out`, writes) the result.
///
/// # Errors
/// Unknown or unsuitable scenario, a gateway that does not start, a slice with no responses.
pub fn run(o: &AbOptions) -> anyhow::Result<AbResult> {
    let sc = scenarios::by_name(&o.scenario)
        .filter(|s| s.idle_connections.is_none() && !s.open_loop)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "ab needs a closed-loop scenario (hello, proxy-small, proxy-256, proxy-64k, proxy-uds, fanout-4, pipelined), got {:?}",
                o.scenario
            )
        })?;
    anyhow::ensure!(o.pairs > 0, "--pairs must be at least 1");
    let nofile = procfs::raise_nofile(NOFILE);
    let allowed = procfs::allowed_cpus();
    let target_cpus = vec![*allowed.last().unwrap_or(&0)];
    let client_cpus: Vec<usize> = if allowed.len() > 1 {
        allowed[..allowed.len() - 1].to_vec()
    } else {
        allowed.clone()
    };
    if let Err(e) = procfs::set_affinity(0, &client_cpus) {
        eprintln!("warning: could not pin the load generator to {client_cpus:?}: {e}");
    }
    let threads = client_cpus.len();
    let host = Host::detect(None, None, None);
    let tmp = std::env::temp_dir().join(format!("ringway-bench-ab-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let be = crate::suite::measure::start_backends(&sc, &tmp, threads)?;
    let addrs = be.as_ref().map_or(&[][..], BackendHandle::addrs);
    let setup = TargetSetup {
        scenario: &sc,
        backends: addrs,
        dir: &tmp,
        cpus: &target_cpus,
        nofile,
    };
    let result = (|| -> anyhow::Result<AbResult> {
        let ra = targets::start_ringway_build(&o.a, &o.a_args, "a", &setup)
            .map_err(|e| anyhow::anyhow!("A: {e}"))?;
        let rb = match targets::start_ringway_build(&o.b, &o.b_args, "b", &setup) {
            Ok(rb) => rb,
            Err(e) => {
                ra.stop();
                anyhow::bail!("B: {e}");
            }
        };
        eprintln!(
            "ab on {}: {} pairs × 2 slices of {:.1} s, {}, A = {}, B = {}",
            host.summary(),
            o.pairs,
            o.slice.as_secs_f64(),
            sc.name,
            describe(&o.a, &o.a_args),
            describe(&o.b, &o.b_args)
        );
        let cpus = (&client_cpus[..], &target_cpus[..]);
        let res = (|| -> Result<Vec<Pair>, String> {
            for rt in [&ra, &rb] {
                slice(rt, &sc, threads, o.warmup, cpus, true)
                    .map_err(|e| format!("warm-up: {e}"))?;
            }
            let mut i = 0usize;
            run_pairs(o.pairs, |side, first| {
                let rt = if side == Side::A { &ra } else { &rb };
                let s = slice(rt, &sc, threads, o.slice, cpus, first)?;
                eprintln!(
                    "pair {:>2} {:?}{}  {:>9.0} req/s  cpu {:.1} (user {:.1} + kernel {:.1}) us/req",
                    i / 2 + 1,
                    side,
                    if first { " (first)" } else { "        " },
                    s.rps,
                    s.cpu_us(),
                    s.user_us,
                    s.sys_us
                );
                i += 1;
                Ok(s)
            })
        })();
        ra.stop();
        rb.stop();
        let pairs = res.map_err(anyhow::Error::msg)?;
        Ok(AbResult {
            host: host.clone(),
            date: crate::suite::utc_now(),
            scenario: sc.name.into(),
            a: describe(&o.a, &o.a_args),
            b: describe(&o.b, &o.b_args),
            slice_s: o.slice.as_secs_f64(),
            comparison: compare(&pairs),
            pairs,
        })
    })();
    if let Some(be) = be {
        be.stop();
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let r = result?;
    let text = markdown(&r);
    println!("{text}");
    if let Some(out) = &o.out {
        std::fs::create_dir_all(out)?;
        std::fs::write(out.join("ab.json"), serde_json::to_string_pretty(&r)?)?;
        std::fs::write(out.join("ab.md"), &text)?;
        eprintln!("written {}/ab.json and ab.md", out.display());
    }
    Ok(r)
}

fn line(what: &str, p: &Option<Paired>, better: &str) -> String {
    match p {
        Some(p) => format!(
            "| {what} | {:.3} | {:.3} – {:.3} | {}/{} | {better} |",
            p.median_ratio, p.ci95.0, p.ci95.1, p.b_won, p.n
        ),
        None => format!("| {what} | – | – | – | {better} |"),
    }
}

/// One sentence to cite: "B's CPU per request is 0.954× A's (95% interval 0.93–0.98), B
/// cheaper in 10 of 12 pairs", and whether the interval excludes 1.
pub fn verdict(c: &Comparison) -> String {
    let Some(p) = &c.cpu else {
        return "no pairs to compare".into();
    };
    let call = if p.ci95.1 < 1.0 {
        "B is cheaper: the interval excludes 1"
    } else if p.ci95.0 > 1.0 {
        "B is dearer: the interval excludes 1"
    } else {
        "no difference shown: the interval includes 1"
    };
    format!(
        "B's CPU per request is {:.3}× A's (95% interval {:.3}–{:.3}), B cheaper in {} of {} pairs; {call}.",
        p.median_ratio, p.ci95.0, p.ci95.1, p.b_won, p.n
    )
}

/// The A/B as markdown: host, the ratio table, every pair.
pub fn markdown(r: &AbResult) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# A/B: {}\n\n- host: {}\n- mitigations: {}\n- date: {}\n- A: `{}`\n- B: `{}`\n- {} pairs × 2 slices of {:.1} s, both gateways up at once on the same CPU, order flipped every pair\n",
        r.scenario,
        r.host.summary(),
        if r.host.mitigations.is_empty() {
            "none reported".to_string()
        } else {
            r.host.mitigations.join("; ")
        },
        r.date,
        r.a,
        r.b,
        r.pairs.len(),
        r.slice_s
    );
    let _ = writeln!(
        s,
        "| B / A | paired median ratio | bootstrap 95% interval | pairs B won | better |\n|---|---:|---:|---:|---|"
    );
    let c = &r.comparison;
    for l in [
        line("CPU µs/request (user + kernel)", &c.cpu, "< 1"),
        line("user-space CPU µs/request", &c.user, "< 1"),
        line("kernel CPU µs/request", &c.sys, "< 1"),
        line("req/s", &c.rps, "> 1"),
    ] {
        let _ = writeln!(s, "{l}");
    }
    let _ = writeln!(s, "\n{}", verdict(c));
    let med = |f: &dyn Fn(&Slice) -> f64, side: Side| {
        let v: Vec<f64> = r
            .pairs
            .iter()
            .map(|p| f(if side == Side::A { &p.a } else { &p.b }))
            .collect();
        stats::median(&v).unwrap_or(0.0)
    };
    let _ = writeln!(
        s,
        "\nMedians: A {:.1} µs/req ({:.1} user + {:.1} kernel), {:.0} req/s; B {:.1} µs/req ({:.1} + {:.1}), {:.0} req/s.\n",
        med(&Slice::cpu_us, Side::A),
        med(&|x| x.user_us, Side::A),
        med(&|x| x.sys_us, Side::A),
        med(&|x| x.rps, Side::A),
        med(&Slice::cpu_us, Side::B),
        med(&|x| x.user_us, Side::B),
        med(&|x| x.sys_us, Side::B),
        med(&|x| x.rps, Side::B),
    );
    let _ = writeln!(
        s,
        "| pair | first | A µs/req (user + kernel) | B µs/req (user + kernel) | B/A CPU | A req/s | B req/s | errors A · B |\n|---:|---|---:|---:|---:|---:|---:|---|"
    );
    for (i, p) in r.pairs.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} ({:.1} + {:.1}) | {:.1} ({:.1} + {:.1}) | {:.3} | {:.0} | {:.0} | {} · {} |",
            i + 1,
            if p.a.first { "A" } else { "B" },
            p.a.cpu_us(),
            p.a.user_us,
            p.a.sys_us,
            p.b.cpu_us(),
            p.b.user_us,
            p.b.sys_us,
            if p.a.cpu_us() > 0.0 {
                p.b.cpu_us() / p.a.cpu_us()
            } else {
                0.0
            },
            p.a.rps,
            p.b.rps,
            p.a.errors,
            p.b.errors
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_flips_every_pair() {
        assert_eq!(order(0), [Side::A, Side::B]);
        assert_eq!(order(1), [Side::B, Side::A]);
        assert_eq!(order(2), [Side::A, Side::B]);
        let mut seen = Vec::new();
        let pairs = run_pairs(4, |side, first| {
            seen.push((side, first));
            Ok(Slice::default())
        })
        .expect("pairs");
        assert_eq!(pairs.len(), 4);
        let firsts: Vec<Side> = seen.iter().filter(|(_, f)| *f).map(|(s, _)| *s).collect();
        assert_eq!(firsts, [Side::A, Side::B, Side::A, Side::B]);
    }

    /// Two identical builds with a 10% first-loaded advantage: the flipping order cancels it
    /// (paired median 1.0, B wins half), where a fixed A-first order would report B 10% dearer.
    #[test]
    fn first_loaded_bias_cancels() {
        let measure = |_: Side, first: bool| {
            let cpu = if first { 20.0 } else { 22.0 };
            Ok(Slice {
                requests: 1000,
                rps: 1e6 / cpu,
                user_us: cpu * 0.4,
                sys_us: cpu * 0.6,
                first,
                ..Slice::default()
            })
        };
        let pairs = run_pairs(12, measure).expect("pairs");
        let c = compare(&pairs);
        let cpu = c.cpu.expect("cpu");
        assert_eq!(cpu.n, 12);
        assert!((cpu.median_ratio - 1.0).abs() < 0.01, "{cpu:?}");
        assert_eq!(cpu.b_won, 6);
        assert!(cpu.ci95.0 < 1.0 && cpu.ci95.1 > 1.0, "{cpu:?}");
        let rps = c.rps.expect("rps");
        assert_eq!(rps.b_won, 6);
        // The pairs keep each side's slice on its own side.
        assert!(pairs.iter().all(|p| p.a.first != p.b.first));
    }

    /// B really 8% cheaper, plus the same first-loaded bias: found, and its interval excludes 1.
    #[test]
    fn a_real_gain_is_found_through_the_bias() {
        let measure = |side: Side, first: bool| {
            let base = if side == Side::B { 18.4 } else { 20.0 };
            let cpu = if first { base } else { base * 1.1 };
            Ok(Slice {
                requests: 1000,
                rps: 1e6 / cpu,
                user_us: cpu * 0.5,
                sys_us: cpu * 0.5,
                first,
                ..Slice::default()
            })
        };
        let c = compare(&run_pairs(12, measure).expect("pairs"));
        let cpu = c.cpu.clone().expect("cpu");
        // Ratios alternate 0.92 × 1.1 and 0.92 / 1.1: their median is between, near 0.92.
        assert!(cpu.median_ratio < 0.97, "{cpu:?}");
        assert_eq!(
            cpu.b_won, 6,
            "B first always wins, B second loses 1.012 vs 1"
        );
        let user = c.user.clone().expect("user");
        assert!((user.median_ratio - cpu.median_ratio).abs() < 1e-9);
        let md = markdown(&AbResult {
            host: Host::default(),
            date: "d".into(),
            scenario: "proxy-256".into(),
            a: "a".into(),
            b: "b".into(),
            slice_s: 1.0,
            pairs: Vec::new(),
            comparison: c,
        });
        assert!(
            md.contains("| CPU µs/request (user + kernel) | 0.9"),
            "{md}"
        );
        assert!(md.contains("| 6/12 | < 1 |"), "{md}");
        // 6 ratios at 1.012 and 6 at 0.836: the interval spans 1, so no claim.
        assert!(
            md.contains(
                "B cheaper in 6 of 12 pairs; no difference shown: the interval includes 1."
            ),
            "{md}"
        );
        let clear = compare(
            &run_pairs(12, |side, first| {
                let cpu = if side == Side::B { 18.0 } else { 20.0 };
                Ok(Slice {
                    requests: 1,
                    rps: 1.0,
                    user_us: cpu / 2.0,
                    sys_us: cpu / 2.0,
                    first,
                    ..Slice::default()
                })
            })
            .expect("pairs"),
        );
        assert_eq!(
            verdict(&clear),
            "B's CPU per request is 0.900× A's (95% interval 0.900–0.900), B cheaper in 12 of 12 pairs; B is cheaper: the interval excludes 1."
        );
    }
}
