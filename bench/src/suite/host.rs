//! The host a result comes from: CPU, its speculative-execution mitigations, kernel, hypervisor
//! and the peers' versions.
//!
//! A syscall costs several times more on a CPU with retpoline/SRSO than on one with eIBRS, and
//! that alone reorders the targets (issue 18), so every result names its host. Read-only: this
//! module only reads /proc, /sys and runs `-v` of the peers.

use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// What the report names about the machine.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Host {
    /// /proc/cpuinfo `model name`.
    pub cpu_model: String,
    /// /proc/cpuinfo `vendor_id` (`AuthenticAMD`, `GenuineIntel`, ...).
    pub cpu_vendor: String,
    /// Short name for directory names: `amd-epyc`, `intel-xeon-platinum-8375c`.
    pub cpu_short: String,
    /// `name: text` of every /sys/devices/system/cpu/vulnerabilities entry that says "Mitigation".
    pub mitigations: Vec<String>,
    /// Kernel release.
    pub kernel: String,
    /// Whether the CPU reports the `hypervisor` flag (a VM).
    pub hypervisor: bool,
    /// Who the hypervisor says it is (DMI sys_vendor / product_name), when readable.
    pub hypervisor_vendor: Option<String>,
    /// nginx version (`nginx -v`), when installed.
    pub nginx: Option<String>,
    /// HAProxy version (first line of `haproxy -v`), when installed.
    pub haproxy: Option<String>,
    /// wrk version (first line of `wrk -v`), when installed.
    pub wrk: Option<String>,
    /// perf version, when installed.
    pub perf: Option<String>,
}

/// First non-empty line of a command's stdout+stderr.
pub fn cmd_first_line(bin: &Path, args: &[&str]) -> Option<String> {
    let o = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    text.lines()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

/// The value of the first `key : value` line of /proc/cpuinfo text.
fn cpuinfo_field(cpuinfo: &str, key: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// `AMD EPYC 7B13 64-Core Processor` → `amd-epyc-7b13`; `Intel(R) Xeon(R) Platinum 8375C CPU @
/// 2.90GHz` → `intel-xeon-platinum-8375c`. At most four words, only `[a-z0-9-]`.
pub fn short_cpu_name(model: &str) -> String {
    let model = model.split('@').next().unwrap_or(model);
    let words: Vec<String> = model
        .replace("(R)", " ")
        .replace("(r)", " ")
        .replace("(TM)", " ")
        .replace("(tm)", " ")
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .filter(|w| !matches!(w.as_str(), "cpu" | "processor" | "with"))
        .filter(|w| !w.ends_with("-core"))
        .map(|w| {
            w.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .take(4)
        .collect();
    if words.is_empty() {
        "unknown-cpu".into()
    } else {
        words.join("-")
    }
}

/// The `name: text` lines of a vulnerabilities directory whose text says "Mitigation".
pub fn mitigations_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let text = std::fs::read_to_string(e.path()).ok()?;
                    let text = text.trim();
                    text.contains("Mitigation")
                        .then(|| format!("{}: {text}", e.file_name().to_string_lossy()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn read_trim(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

impl Host {
    /// Reads the host. `nginx`, `haproxy`, `wrk` are the binaries the suite found.
    pub fn detect(nginx: Option<&Path>, haproxy: Option<&Path>, wrk: Option<&Path>) -> Host {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo_field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into());
        let hypervisor = cpuinfo_field(&cpuinfo, "flags")
            .is_some_and(|f| f.split_whitespace().any(|x| x == "hypervisor"));
        let hypervisor_vendor = if hypervisor {
            let parts: Vec<String> = [
                "/sys/class/dmi/id/sys_vendor",
                "/sys/class/dmi/id/product_name",
            ]
            .iter()
            .filter_map(|p| read_trim(p))
            .collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        } else {
            None
        };
        let perf = super::targets::which("perf");
        Host {
            cpu_short: short_cpu_name(&cpu_model),
            cpu_model,
            cpu_vendor: cpuinfo_field(&cpuinfo, "vendor_id").unwrap_or_else(|| "unknown".into()),
            mitigations: mitigations_in(Path::new("/sys/devices/system/cpu/vulnerabilities")),
            kernel: crate::procfs::kernel(),
            hypervisor,
            hypervisor_vendor,
            nginx: nginx.and_then(|b| cmd_first_line(b, &["-v"])),
            haproxy: haproxy.and_then(|b| cmd_first_line(b, &["-v"])),
            wrk: wrk.and_then(|b| cmd_first_line(b, &["-v"])),
            perf: perf.and_then(|b| cmd_first_line(&b, &["--version"])),
        }
    }

    /// One line: `AMD EPYC (AuthenticAMD), VM (KVM), kernel 6.18.44`.
    pub fn summary(&self) -> String {
        let vm = match (&self.hypervisor, &self.hypervisor_vendor) {
            (true, Some(v)) => format!("VM ({v})"),
            (true, None) => "VM".to_string(),
            (false, _) => "bare metal (no hypervisor flag)".to_string(),
        };
        format!(
            "{} ({}), {vm}, kernel {}",
            self.cpu_model, self.cpu_vendor, self.kernel
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(short_cpu_name("AMD EPYC"), "amd-epyc");
        assert_eq!(
            short_cpu_name("AMD EPYC 7B13 64-Core Processor"),
            "amd-epyc-7b13"
        );
        assert_eq!(
            short_cpu_name("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"),
            "intel-xeon-platinum-8375c"
        );
        assert_eq!(short_cpu_name("  "), "unknown-cpu");
    }

    #[test]
    fn mitigation_lines_only() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("meltdown"), "Not affected\n").expect("write");
        std::fs::write(
            d.path().join("spectre_v2"),
            "Mitigation: Retpolines; IBPB: conditional\n",
        )
        .expect("write");
        std::fs::write(d.path().join("mds"), "Vulnerable\n").expect("write");
        assert_eq!(
            mitigations_in(d.path()),
            ["spectre_v2: Mitigation: Retpolines; IBPB: conditional"]
        );
        assert!(mitigations_in(&d.path().join("absent")).is_empty());
    }

    #[test]
    fn cpuinfo_fields() {
        let c = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu hypervisor\n";
        assert_eq!(
            cpuinfo_field(c, "vendor_id").as_deref(),
            Some("AuthenticAMD")
        );
        assert_eq!(cpuinfo_field(c, "model name").as_deref(), Some("AMD EPYC"));
        assert!(cpuinfo_field(c, "flags").is_some_and(|f| f.contains("hypervisor")));
        assert_eq!(cpuinfo_field(c, "model"), None);
    }
}
