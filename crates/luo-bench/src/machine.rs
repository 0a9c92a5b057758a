//! The machine a benchmark ran on, reported with every result: figures
//! without their machine cannot be compared.

use crate::cli::Failure;
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct Machine {
    /// CPUs this process may run on (what `nproc` prints).
    pub nproc: usize,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// The first `model name` of `/proc/cpuinfo`.
    pub cpu: String,
    /// `RLIMIT_NOFILE` (soft, hard) after raising the soft limit.
    pub nofile: (u64, u64),
    /// `MemTotal` of `/proc/meminfo`, in bytes.
    pub memory: u64,
}

impl Machine {
    /// Raises the soft `RLIMIT_NOFILE` to the hard limit (the benchmarks hold
    /// thousands of fds) and reads the machine's facts.
    pub fn setup() -> Result<Machine, Failure> {
        let nofile = luo_sys::raise_nofile_limit()
            .map_err(|e| Failure::run(format!("raising RLIMIT_NOFILE: {e}")))?;
        Ok(Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |s| s.trim().to_string()),
            cpu: cpu_model().unwrap_or_else(|| "unknown".into()),
            nofile,
            memory: meminfo("MemTotal").unwrap_or(0),
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "{}, {} CPUs, {:.1} GiB, Linux {}; RLIMIT_NOFILE soft {} hard {}",
            self.cpu,
            self.nproc,
            self.memory as f64 / (1u64 << 30) as f64,
            self.kernel,
            self.nofile.0,
            self.nofile.1
        )
    }

    pub fn report(&self) -> MachineReport<'_> {
        MachineReport {
            cpu: &self.cpu,
            nproc: self.nproc,
            kernel: &self.kernel,
            nofile_soft: self.nofile.0,
            nofile_hard: self.nofile.1,
            memory_bytes: self.memory,
        }
    }
}

/// A [`Machine`] in the JSON reports.
#[derive(Debug, Serialize)]
pub struct MachineReport<'a> {
    cpu: &'a str,
    nproc: usize,
    kernel: &'a str,
    nofile_soft: u64,
    nofile_hard: u64,
    memory_bytes: u64,
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == "model name")
        .map(|(_, v)| v.trim().to_string())
}

/// A `/proc/meminfo` field in bytes (`MemAvailable`, `MemTotal`, ...).
pub fn meminfo(field: &str) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.split(':').next() == Some(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The 1-minute load average: other work on the machine disturbs timings.
pub fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
