//! `luo-bench mirror`: a program that preserves its files one request at a
//! time, through luod with the keeper on. After each request luod mirrors
//! what it changed into the keeper; that work must follow the change (one
//! file), not the session's size, so the 16,000th request must cost about
//! what the 1,000th does. The same run with `--keeper off` is the baseline:
//! what a request costs without any mirror.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::agent::{Agent, Programs};
use crate::cli::{positive, sorted, Failure};
use crate::machine::Machine;
use crate::report::{write_json, Num};
use crate::stats::{grouped, Summary};

/// `luo-bench mirror --help`'s description.
pub const ABOUT: &str = "\
Preserves N memfds in one session, one `preserve` request each, through luod
with its keeper (the crash-safety mirror) and, as the baseline, with
--keeper off, and reports what the request that brings the session to each
--at size costs: the median of the W requests up to it, over R rounds. The
target: the last size's request costs at most 1.2 times the first's.";

/// The 16,000th request may cost at most this times the 1,000th.
const TARGET_RATIO: f64 = 1.2;

/// `luo-bench mirror`'s options.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Files preserved per round
    #[arg(long, value_name = "N", value_parser = positive, default_value_t = 16_000)]
    files: usize,
    /// Sizes reported (each at most --files)
    #[arg(
        long,
        value_name = "N,N,...",
        value_delimiter = ',',
        value_parser = positive,
        default_values_t = [1000, 16000]
    )]
    at: Vec<usize>,
    /// Requests per reported median
    #[arg(long, value_name = "W", value_parser = positive, default_value_t = 200)]
    window: usize,
    /// Rounds per agent (each a new session)
    #[arg(long, value_name = "R", value_parser = positive, default_value_t = 3)]
    rounds: usize,
    /// Also write the results as JSON
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// The luod binary (default: next to luo-bench, built if missing)
    #[arg(long, value_name = "PATH")]
    luod: Option<PathBuf>,
}

#[derive(Serialize)]
struct AtReport {
    files: usize,
    request: Summary,
}

#[derive(Serialize)]
struct RowReport {
    keeper: bool,
    at: Vec<AtReport>,
}

#[derive(Serialize)]
struct MirrorReport {
    machine: String,
    files: usize,
    window: usize,
    rounds: usize,
    rows: Vec<RowReport>,
    ratio_with_keeper: Num,
}

/// Every request's time, in order, over `rounds` sessions of `n` files
/// preserved one at a time (`times[r][i]`: round r's request i+1).
fn preserve_one_by_one(
    agent: &Agent,
    n: usize,
    rounds: usize,
) -> Result<Vec<Vec<Duration>>, Failure> {
    (0..rounds)
        .map(|round| crate::requests::native_round(agent, n, &format!("one-by-one-{round}")))
        .collect()
}

/// The median of the `window` requests up to request `at` (1-based), over
/// every round.
fn at_size(times: &[Vec<Duration>], at: usize, window: usize) -> Summary {
    let from = at.saturating_sub(window);
    let samples: Vec<Duration> = times
        .iter()
        .flat_map(|r| r[from..at].iter().copied())
        .collect();
    Summary::of(&samples)
}

struct Row {
    keeper: bool,
    at: Vec<(usize, Summary)>,
}

/// Checks the sizes to report (`--at`, sorted in place: at least two, each
/// at most `files`) and that luod and its keeper may hold `files`
/// descriptors; the machine, set up.
pub(crate) fn setup(at: &mut Vec<usize>, files: usize) -> Result<Machine, Failure> {
    *at = sorted(std::mem::take(at));
    if at.len() < 2 || *at.last().expect("two") > files {
        return Err(Failure::usage(
            "--at needs at least two sizes, each at most --files",
        ));
    }
    let machine = Machine::setup()?;
    if files + 256 > machine.nofile.0 as usize {
        return Err(Failure::usage(format!(
            "{} files need {} descriptors in luod and in its keeper; RLIMIT_NOFILE is {}",
            files,
            files + 256,
            machine.nofile.0
        )));
    }
    Ok(machine)
}

pub fn main(mut o: Options) -> Result<(), Failure> {
    let machine = setup(&mut o.at, o.files)?;
    eprintln!("machine: {}", machine.describe());
    let programs = Programs::locate(o.luod.clone(), None)?;
    let mut rows = Vec::new();
    for keeper in [true, false] {
        eprintln!(
            "{} files preserved one request at a time, keeper {}: {} rounds ...",
            grouped(o.files as u64),
            if keeper { "on" } else { "off" },
            o.rounds
        );
        let args: &[&str] = if keeper {
            &["--log-level", "warn", "--keeper", "auto"]
        } else {
            &["--log-level", "warn", "--keeper", "off"]
        };
        let agent = Agent::start_args(&programs.luod, "mirror", args)?;
        if keeper && agent.keeper_pid().is_none() {
            return Err(Failure::run("luod started no keeper"));
        }
        let times = preserve_one_by_one(&agent, o.files, o.rounds)?;
        rows.push(Row {
            keeper,
            at: o
                .at
                .iter()
                .map(|&n| (n, at_size(&times, n, o.window)))
                .collect(),
        });
    }
    let us = |ns: f64| format!("{:.1} us", ns / 1e3);
    println!("luo-bench mirror: preserving files one request at a time through luod");
    println!("machine: {}", machine.describe());
    println!(
        "each figure: the median of the {} requests up to that size, over {} rounds",
        o.window, o.rounds
    );
    println!();
    let mut head = format!("{:>12}", "keeper");
    for &n in &o.at {
        head.push_str(&format!(
            "  {:>16}",
            format!("request {}", grouped(n as u64))
        ));
    }
    head.push_str(&format!("  {:>10}", "last/first"));
    println!("{head}");
    for r in &rows {
        let mut line = format!("{:>12}", if r.keeper { "on" } else { "off" });
        for (_, s) in &r.at {
            line.push_str(&format!("  {:>16}", us(s.median_ns)));
        }
        let ratio = r.at.last().expect("two").1.median_ns / r.at[0].1.median_ns;
        line.push_str(&format!("  {ratio:>9.2}x"));
        println!("{line}");
    }
    let on = &rows[0];
    let ratio = on.at.last().expect("two").1.median_ns / on.at[0].1.median_ns;
    println!();
    println!(
        "with the keeper, request {} costs {ratio:.2}x request {} (target at most {TARGET_RATIO}x: {})",
        grouped(on.at.last().expect("two").0 as u64),
        grouped(on.at[0].0 as u64),
        if ratio <= TARGET_RATIO { "met" } else { "MISSED" }
    );
    if let Some(path) = &o.json {
        let v = MirrorReport {
            machine: machine.describe(),
            files: o.files,
            window: o.window,
            rounds: o.rounds,
            rows: rows
                .iter()
                .map(|r| RowReport {
                    keeper: r.keeper,
                    at: r
                        .at
                        .iter()
                        .map(|&(files, request)| AtReport { files, request })
                        .collect(),
                })
                .collect(),
            ratio_with_keeper: Num(ratio),
        };
        write_json(path, &v)?;
    }
    Ok(())
}
