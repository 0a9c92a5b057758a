//! `luo-bench upgrade`: luod's in-place upgrade with N custody descriptors,
//! from the request to the new agent's answer, against the alternative:
//! stopping luod and starting it again (the new one takes the files back
//! from the keeper, and every client connection is lost).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::agent::{Agent, Programs};
use crate::cli::{count, positive, sorted, Failure};
use crate::machine::Machine;
use crate::report::{write_json, Num};
use crate::stats::{grouped, Summary};

/// `luo-bench upgrade --help`'s description.
pub const ABOUT: &str = "\
luod's in-place upgrade (luoctl agent upgrade) with N memfds in custody,
timed from the request to the new agent's answer, side by side with stopping
luod and starting it again (the keeper hands the files back). The per-file
cost is the slope between the smallest and the largest N, and extrapolates
to 1,000,000 files (and 1,048,576, the kernel's per-process ceiling).";

/// 40 ms at 16,000 files, and a per-file cost that keeps a million under 2 s.
const TARGET_16K: Duration = Duration::from_millis(40);
const TARGET_MILLION: Duration = Duration::from_secs(2);
/// The million, and the kernel's per-process ceiling.
const MILLION: f64 = 1_000_000.0;
const CEILING: f64 = 1_048_576.0;

/// `luo-bench upgrade`'s options.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Custody sizes
    #[arg(
        long,
        value_name = "N,N,...",
        value_delimiter = ',',
        value_parser = count,
        default_values_t = [0, 1000, 4000, 16000]
    )]
    fds: Vec<usize>,
    /// Upgrades per size (the median is reported)
    #[arg(long, value_name = "R", value_parser = positive, default_value_t = 7)]
    rounds: usize,
    /// Also write the results as JSON
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// The luod binary (default: next to luo-bench, built if missing)
    #[arg(long, value_name = "PATH")]
    luod: Option<PathBuf>,
}

/// What the two per-file system calls of an upgrade cost here now: the new
/// image's `fstat` check and the old image's close-on-exec flip. A VM's
/// system calls vary by the hour; the per-file cost follows them.
fn syscall_costs() -> Result<(f64, f64), Failure> {
    let fds: Vec<OwnedFd> = (0..256)
        .map(|i| luo_sys::memfd_create(&format!("c{i}"), 0))
        .collect::<Result<_, _>>()?;
    let rounds = 20;
    let t = Instant::now();
    for _ in 0..rounds {
        for f in &fds {
            luo_sys::fstat(f.as_fd())?;
        }
    }
    let fstat = t.elapsed().as_nanos() as f64 / (rounds * fds.len()) as f64;
    let t = Instant::now();
    for _ in 0..rounds {
        for f in &fds {
            luo_sys::set_cloexec(f.as_fd(), true)?;
        }
    }
    let fcntl = t.elapsed().as_nanos() as f64 / (rounds * fds.len()) as f64;
    Ok((fstat, fcntl))
}

/// One size: the upgrade and the restart, and luod's own split of the
/// upgrade (state written before `exec`, state taken over after).
struct Row {
    fds: usize,
    upgrade: Summary,
    prepared_us: f64,
    taken_over_us: f64,
    restart: Summary,
}

/// `luo-bench upgrade`'s JSON report.
#[derive(Debug, Serialize)]
struct UpgradeReport {
    machine: String,
    fstat_ns: Num,
    fcntl_setfd_ns: Num,
    rows: Vec<RowReport>,
    per_fd_ns: Num,
    million_fds_ns: Num,
    ceiling_fds_ns: Num,
}

/// A [`Row`] as JSON.
#[derive(Debug, Serialize)]
struct RowReport {
    fds: usize,
    upgrade: Summary,
    state_written_us: Num,
    taken_over_us: Num,
    restart: Summary,
}

/// The median of luod's "prepared in N us" and "taken over in N us".
fn split_from_log(log: &str) -> (f64, f64) {
    let grab = |key: &str| {
        let mut v: Vec<f64> = log
            .lines()
            .filter_map(|l| {
                let at = l.find(key)? + key.len();
                l[at..].split_whitespace().next()?.parse().ok()
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    (grab("prepared in "), grab("taken over in "))
}

fn measure(luod: &std::path::Path, n: usize, rounds: usize) -> Result<Row, Failure> {
    let agent = Agent::start_args(luod, &format!("upgrade-{n}"), &["--log-level", "info"])?;
    let c = agent.client()?;
    // The files luod holds: memfds in one session, handed over.
    let fds: Vec<OwnedFd> = (0..n)
        .map(|i| luo_sys::memfd_create(&format!("u{i}"), 0))
        .collect::<Result<_, _>>()?;
    let s = c
        .create_session("upgrade")
        .map_err(|e| Failure::run(e.to_string()))?;
    let list: Vec<(u64, BorrowedFd<'_>)> = fds
        .iter()
        .enumerate()
        .map(|(i, f)| (i as u64, f.as_fd()))
        .collect();
    if !list.is_empty() {
        s.preserve_batch(&list)
            .map_err(|e| Failure::run(e.to_string()))?;
    }
    s.handover().map_err(|e| Failure::run(e.to_string()))?;
    drop(list);
    drop((fds, s));
    let pid = agent.pid();
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let reply = c
            .upgrade_agent(None)
            .map_err(|e| Failure::run(e.to_string()))?;
        samples.push(t.elapsed());
        let same = reply.pid == pid;
        if !same {
            return Err(Failure::run("the upgrade changed luod's pid"));
        }
    }
    if c.status().map_err(|e| Failure::run(e.to_string()))?.files != n as u64 {
        return Err(Failure::run("files went missing across the upgrades"));
    }
    let (prepared_us, taken_over_us) = split_from_log(&agent.log_text());
    drop(c);
    // The alternative: stop luod and start it again; the keeper hands the
    // files back. Timed from the stop to the new agent's first answer.
    let mut restarts = Vec::with_capacity(rounds);
    let mut agent = agent;
    for _ in 0..rounds {
        let (t, next) = agent.restart()?;
        agent = next;
        restarts.push(t);
        let files = agent
            .client()?
            .status()
            .map_err(|e| Failure::run(e.to_string()))?
            .files;
        if files != n as u64 {
            return Err(Failure::run(format!(
                "the restarted luod took back {files} files of {n}"
            )));
        }
    }
    Ok(Row {
        fds: n,
        upgrade: Summary::of(&samples),
        prepared_us,
        taken_over_us,
        restart: Summary::of(&restarts),
    })
}

pub fn main(mut o: Options) -> Result<(), Failure> {
    o.fds = sorted(o.fds);
    if o.fds.len() < 2 {
        return Err(Failure::usage(
            "--fds needs at least two sizes for a per-file cost",
        ));
    }
    let machine = Machine::setup()?;
    let max = *o.fds.last().expect("two sizes");
    if max + 256 > machine.nofile.0 as usize {
        return Err(Failure::usage(format!(
            "{max} files need {} descriptors here and in luod each; RLIMIT_NOFILE is {}",
            max + 256,
            machine.nofile.0
        )));
    }
    eprintln!("machine: {}", machine.describe());
    let (fstat_ns, fcntl_ns) = syscall_costs()?;
    let programs = Programs::locate(o.luod.clone(), None)?;
    let mut rows = Vec::new();
    for &n in &o.fds {
        eprintln!(
            "upgrade with {} custody files: {} rounds ...",
            grouped(n as u64),
            o.rounds
        );
        rows.push(measure(&programs.luod, n, o.rounds)?);
    }
    let (first, last) = (&rows[0], &rows[rows.len() - 1]);
    let per_fd_ns =
        (last.upgrade.median_ns - first.upgrade.median_ns) / (last.fds - first.fds) as f64;
    let million_ns = first.upgrade.median_ns + per_fd_ns * (MILLION - first.fds as f64);
    let ceiling_ns = first.upgrade.median_ns + per_fd_ns * (CEILING - first.fds as f64);
    let at_16k = rows.iter().find(|r| r.fds == 16_000);
    let ms = |ns: f64| format!("{:.1} ms", ns / 1e6);
    println!("luo-bench upgrade: luoctl agent upgrade vs stopping and starting luod");
    println!("machine: {}", machine.describe());
    println!(
        "this machine's system calls now (hot, per call): fstat {fstat_ns:.0} ns, fcntl(F_SETFD) {fcntl_ns:.0} ns"
    );
    println!();
    println!(
        "{:>8}  {:>10}  {:>14}  {:>14}  {:>12}  {:>10}",
        "files", "upgrade", "state written", "taken over", "restart", "restart/up"
    );
    for r in &rows {
        println!(
            "{:>8}  {:>10}  {:>14}  {:>14}  {:>12}  {:>9.1}x",
            grouped(r.fds as u64),
            ms(r.upgrade.median_ns),
            ms(r.prepared_us * 1e3),
            ms(r.taken_over_us * 1e3),
            ms(r.restart.median_ns),
            r.restart.median_ns / r.upgrade.median_ns
        );
    }
    println!();
    println!(
        "per custody file: {:.2} us (slope from {} to {} files)",
        per_fd_ns / 1e3,
        first.fds,
        last.fds
    );
    println!(
        "1,000,000 files, extrapolated: {:.2} s (target < {} s: {}); 1,048,576 (the kernel's ceiling): {:.2} s",
        million_ns / 1e9,
        TARGET_MILLION.as_secs(),
        if million_ns < TARGET_MILLION.as_nanos() as f64 { "met" } else { "MISSED" },
        ceiling_ns / 1e9
    );
    if let Some(r) = at_16k {
        println!(
            "16,000 files: {} (target < {} ms: {})",
            ms(r.upgrade.median_ns),
            TARGET_16K.as_millis(),
            if r.upgrade.median_ns < TARGET_16K.as_nanos() as f64 {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    if let Some(path) = &o.json {
        let v = UpgradeReport {
            machine: machine.describe(),
            fstat_ns: Num(fstat_ns),
            fcntl_setfd_ns: Num(fcntl_ns),
            rows: rows
                .iter()
                .map(|r| RowReport {
                    fds: r.fds,
                    upgrade: r.upgrade,
                    state_written_us: Num(r.prepared_us),
                    taken_over_us: Num(r.taken_over_us),
                    restart: r.restart,
                })
                .collect(),
            per_fd_ns: Num(per_fd_ns),
            million_fds_ns: Num(million_ns),
            ceiling_fds_ns: Num(ceiling_ns),
        };
        write_json(path, &v)?;
    }
    Ok(())
}
