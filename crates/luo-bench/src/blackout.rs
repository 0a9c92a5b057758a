//! Restart blackout with state: the demo's key-value service restarted
//! through luo, the same service saving to and reloading from a file on a
//! tmpfs, and memcached's warm restart, at each data size, one at a time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::agent::TempDir;
use crate::cli::Failure;
use crate::machine::meminfo;
use crate::memcached;
use crate::report::{ms, Fields, Num};
use crate::stats::Summary;

/// What the demo reported for one run.
#[derive(Debug)]
pub struct DemoRun {
    pub blackouts: Vec<Duration>,
    /// preserve + handover, or the save.
    pub stop: Vec<Duration>,
    /// retrieve + finish, or the reload.
    pub start: Vec<Duration>,
    pub answered: u64,
    pub failed: u64,
    /// Connections refused or reset while nothing listened (reload only).
    pub refused: u64,
}

#[derive(Debug)]
pub struct Size {
    pub bytes: u64,
    pub luo: DemoRun,
    pub reload: DemoRun,
    pub memcached: Option<memcached::Run>,
}

pub fn median_ns(v: &[Duration]) -> f64 {
    Summary::of(v).median_ns
}

impl Size {
    pub fn luo_ns(&self) -> f64 {
        median_ns(&self.luo.blackouts)
    }
    pub fn reload_ns(&self) -> f64 {
        median_ns(&self.reload.blackouts)
    }
    /// memcached's blackout, the wait for the next second included.
    pub fn memcached_ns(&self) -> Option<f64> {
        let m = self.memcached.as_ref()?;
        let v: Vec<Duration> = m.restarts.iter().map(|r| r.blackout).collect();
        Some(median_ns(&v))
    }
    /// memcached's blackout without that wait: its own work.
    pub fn memcached_own_ns(&self) -> Option<f64> {
        let m = self.memcached.as_ref()?;
        let v: Vec<Duration> = m
            .restarts
            .iter()
            .map(|r| r.blackout.saturating_sub(r.clock_wait))
            .collect();
        Some(median_ns(&v))
    }

    pub fn report(&self) -> SizeReport {
        let demo = |d: &DemoRun, stop: &'static str, start: &'static str| DemoReport {
            blackout_ms: Num(median_ns(&d.blackouts) / 1e6),
            blackout_runs_ms: ms(&d.blackouts),
            phases: Fields(vec![(stop, ms(&d.stop)), (start, ms(&d.start))]),
            requests_answered: d.answered,
            requests_failed: d.failed,
            connections_refused: d.refused,
        };
        let runs = |m: &memcached::Run, f: fn(&memcached::Restart) -> Duration| {
            ms(&m.restarts.iter().map(f).collect::<Vec<_>>())
        };
        SizeReport {
            bytes: self.bytes,
            records: self.bytes / memcached::RECORD,
            luo: demo(&self.luo, "preserve_handover_ms", "retrieve_finish_ms"),
            reload: demo(&self.reload, "save_ms", "reload_ms"),
            memcached: self.memcached.as_ref().map(|m| MemcachedReport {
                items: m.items,
                item_bytes: memcached::RECORD,
                bytes_stored: m.bytes_stored,
                fill_s: Num(m.fill.as_secs_f64()),
                blackout_ms: Num(self.memcached_ns().unwrap_or(f64::NAN) / 1e6),
                blackout_without_clock_wait_ms: Num(
                    self.memcached_own_ns().unwrap_or(f64::NAN) / 1e6
                ),
                blackout_runs_ms: runs(m, |r| r.blackout),
                stop_runs_ms: runs(m, |r| r.stop),
                clock_wait_runs_ms: runs(m, |r| r.clock_wait),
                start_runs_ms: runs(m, |r| r.start),
                data_verified: true,
            }),
            reload_over_luo: Num(self.reload_ns() / self.luo_ns()),
            memcached_over_luo: Num(self.memcached_own_ns().unwrap_or(f64::NAN) / self.luo_ns()),
        }
    }
}

/// A [`Size`] in the JSON report.
#[derive(Debug, Serialize)]
pub struct SizeReport {
    bytes: u64,
    records: u64,
    luo: DemoReport,
    reload: DemoReport,
    memcached: Option<MemcachedReport>,
    reload_over_luo: Num,
    memcached_over_luo: Num,
}

/// A [`DemoRun`] in the JSON report; the names of the stop and start
/// phases depend on the service.
#[derive(Debug, Serialize)]
pub struct DemoReport {
    blackout_ms: Num,
    blackout_runs_ms: Vec<Num>,
    #[serde(flatten)]
    phases: Fields<Vec<Num>>,
    requests_answered: u64,
    requests_failed: u64,
    connections_refused: u64,
}

/// memcached's warm restarts in the JSON report.
#[derive(Debug, Serialize)]
pub struct MemcachedReport {
    items: u64,
    item_bytes: u64,
    bytes_stored: u64,
    fill_s: Num,
    blackout_ms: Num,
    blackout_without_clock_wait_ms: Num,
    blackout_runs_ms: Vec<Num>,
    stop_runs_ms: Vec<Num>,
    clock_wait_runs_ms: Vec<Num>,
    start_runs_ms: Vec<Num>,
    data_verified: bool,
}

/// The directory must be on a tmpfs, or the baselines would measure a disk.
pub fn check_tmpfs(dir: &Path) -> Result<(), Failure> {
    use std::os::fd::AsFd;
    let f = std::fs::File::open(dir)
        .map_err(|e| Failure::run(format!("opening {}: {e}", dir.display())))?;
    if luo_sys::fstatfs_type(f.as_fd())? != luo_sys::TMPFS_MAGIC {
        return Err(Failure::run(format!(
            "{} is not a tmpfs: pass --tmpfs DIR with a tmpfs directory (mount -t tmpfs tmpfs DIR)",
            dir.display()
        )));
    }
    Ok(())
}

fn demo(
    bin: &Path,
    bytes: u64,
    restarts: usize,
    reload_from: Option<&Path>,
) -> Result<DemoRun, Failure> {
    let dir = TempDir::new("demo")?;
    let out = dir.0.join("demo.json");
    let mut cmd = Command::new(bin);
    cmd.args([
        "--size",
        &bytes.to_string(),
        "--restarts",
        &restarts.to_string(),
    ])
    .arg("--json")
    .arg(&out);
    if let Some(p) = reload_from {
        cmd.arg("--reload-from").arg(p);
    }
    // The demo's narrative is the progress report.
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .map_err(|e| Failure::run(format!("running {}: {e}", bin.display())))?;
    if !status.success() {
        return Err(Failure::run(format!(
            "the demo failed ({status}); its output is above"
        )));
    }
    let text =
        std::fs::read(&out).map_err(|e| Failure::run(format!("reading {}: {e}", out.display())))?;
    let v: Value =
        serde_json::from_slice(&text).map_err(|e| Failure::run(format!("the demo's JSON: {e}")))?;
    let num = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| Failure::run(format!("the demo's JSON has no {k}")))
    };
    let us = |v: &Value, k: &str| num(v, k).map(Duration::from_micros);
    let mut run = DemoRun {
        blackouts: Vec::new(),
        stop: Vec::new(),
        start: Vec::new(),
        answered: num(&v, "answered")?,
        failed: num(&v, "failed")?,
        refused: num(&v, "refused")?,
    };
    for r in v
        .get("restarts")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        run.blackouts.push(us(r, "blackout_us")?);
        run.stop.push(us(r, "stop_us")?);
        run.start.push(us(r, "start_us")?);
    }
    if run.blackouts.len() != restarts {
        return Err(Failure::run(format!(
            "the demo reported {} of {restarts} restarts",
            run.blackouts.len()
        )));
    }
    Ok(run)
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// Warns when a size may not fit in memory: the reload baseline holds the
/// data twice (memfd and file), memcached about 2.5 times (chunks, hash).
fn warn_memory(bytes: u64) {
    let need = bytes * 5 / 2 + (512 << 20);
    if let Some(avail) = meminfo("MemAvailable") {
        if avail < need {
            eprintln!(
                "warning: {:.1} GiB available, the baselines at {:.1} GiB of data need about {:.1} GiB",
                gib(avail),
                gib(bytes),
                gib(need)
            );
        }
    }
}

pub struct Plan<'a> {
    pub demo: &'a Path,
    pub memcached: Option<&'a Path>,
    pub tmpfs: &'a Path,
    pub restarts: usize,
}

pub fn run(plan: &Plan<'_>, sizes: &[u64]) -> Result<Vec<Size>, Failure> {
    check_tmpfs(plan.tmpfs)?;
    let state: PathBuf = plan
        .tmpfs
        .join(format!("luo-bench-reload-{}.state", std::process::id()));
    let mut out = Vec::new();
    for &bytes in sizes {
        warn_memory(bytes);
        let label = crate::suite::size_label(bytes);
        eprintln!("\nblackout at {label}: the demo restarted through luo ...");
        let luo = demo(plan.demo, bytes, plan.restarts, None)?;
        eprintln!(
            "\nblackout at {label}: the demo saving to and reloading from {} ...",
            state.display()
        );
        let reload = demo(plan.demo, bytes, plan.restarts, Some(&state))?;
        let _ = std::fs::remove_file(&state);
        let memcached = match plan.memcached {
            None => None,
            Some(bin) => {
                eprintln!("\nblackout at {label}: memcached, warm restart ...");
                Some(memcached::run(bin, bytes, plan.restarts, plan.tmpfs)?)
            }
        };
        out.push(Size {
            bytes,
            luo,
            reload,
            memcached,
        });
    }
    Ok(out)
}
