//! wrk as an external check of the suite's own load generator (hello and proxy-small).
//!
//! If both clients rank the targets alike, the ranking is not an artefact of our client. wrk
//! runs as a child of this process, so it inherits the client CPUs' pinning. Its latency is
//! closed-loop and not used; only req/s and errors are.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// What one wrk run reported.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WrkResult {
    /// `Requests/sec:`.
    pub rps: f64,
    /// Completed requests (`N requests in ...`).
    pub requests: u64,
    /// Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses.
    pub errors: u64,
}

/// Runs `wrk -t<threads> -c<conns> -d<secs>` against `http://<host_port><path>`.
///
/// # Errors
/// wrk missing, failing, or printing no `Requests/sec:` line.
pub fn run(
    wrk: &Path,
    host_port: &str,
    path: &str,
    connections: usize,
    threads: usize,
    duration: Duration,
) -> Result<WrkResult, String> {
    // wrk wants whole seconds; at least one.
    let secs = duration.as_secs().max(1);
    let threads = threads.clamp(1, connections.max(1));
    let out = Command::new(wrk)
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"))
        .arg("--timeout")
        .arg("5s")
        .arg(format!("http://{host_port}{path}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse(&text).ok_or_else(|| format!("no Requests/sec in wrk output: {text}"))
}

/// Parses wrk's text output.
pub fn parse(text: &str) -> Option<WrkResult> {
    let mut r = WrkResult::default();
    let mut seen_rps = false;
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().ok()?;
            seen_rps = true;
        } else if let Some((n, _)) = l.split_once(" requests in ") {
            r.requests = n.trim().parse().unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("Socket errors:") {
            // Socket errors: connect 0, read 0, write 0, timeout 0
            r.errors += v
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += v.trim().parse::<u64>().unwrap_or(0);
        }
    }
    seen_rps.then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let text = "Running 3s test @ http://127.0.0.1:8080/item\n\
                    \x20 1 threads and 64 connections\n\
                    \x20 Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
                    \x20   Latency     2.89ms    1.20ms  22.00ms   80.00%\n\
                    \x20 61234 requests in 3.00s, 20.1MB read\n\
                    \x20 Socket errors: connect 0, read 2, write 0, timeout 1\n\
                    \x20 Non-2xx or 3xx responses: 4\n\
                    Requests/sec:  20411.33\n\
                    Transfer/sec:      6.70MB\n";
        let r = parse(text).expect("parses");
        assert_eq!(r.requests, 61234);
        assert_eq!(r.errors, 7);
        assert!((r.rps - 20411.33).abs() < 1e-6);
        assert_eq!(parse("garbage"), None);
    }
}
