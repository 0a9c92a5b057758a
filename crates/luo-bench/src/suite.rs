//! `luo-bench all`: every benchmark of issue 7 in one run, each side by side
//! with the baseline a user would pick instead, one table, one JSON file and
//! one plot.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use crate::agent::{Agent, Programs};
use crate::blackout;
use crate::cli::{positive, sorted, Failure};
use crate::fds;
use crate::index;
use crate::machine::{load1, Machine, MachineReport};
use crate::memcached;
use crate::plot;
use crate::report::{to_json, write, Fields, Num};
use crate::stats::{grouped, human};

/// `luo-bench all --help`'s description.
pub const ABOUT: &str = "\
Every benchmark, each against its baseline in the same run:
  agent     luod's start-up, and its memory per preserved fd (fresh agents)
  fds       preserve then retrieve N fds through luod vs raw SCM_RIGHTS
            between two processes in 253-fd batches, and vs the floor
            agent: the same calls to a minimal agent that only checks each
            file (F_GETFL, fstat, a socket's kind) and, iff luod has a
            keeper, sends it to a mirror process (the best any agent that
            keeps luod's promises can do)
  index     the double-management check at the Nth file vs a linear kcmp
            scan (systemd's fd store)
  blackout  the demo key-value service restarted through luo vs the same
            service saving to and reloading from a tmpfs file, and vs
            memcached's warm restart (-e on a tmpfs, SIGUSR1)
Prints a table and writes JSON and an SVG plot of the blackouts.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    Agent,
    Fds,
    Index,
    Blackout,
}

impl Section {
    const ALL: [Section; 4] = [
        Section::Agent,
        Section::Fds,
        Section::Index,
        Section::Blackout,
    ];
}

/// `luo-bench all`'s options; [`Options`] with the defaults filled in.
#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Data sizes for the blackout (default 256M,1G,4G), run one after the
    /// other
    #[arg(long, value_name = "S,S,...", value_delimiter = ',', value_parser = blackout_size)]
    sizes: Option<Vec<u64>>,
    /// fd counts for the throughput (default 1000,16000); the agent's memory
    /// is measured at the largest
    #[arg(long, value_name = "N,N,...", value_delimiter = ',', value_parser = positive)]
    fds: Option<Vec<usize>>,
    /// fd kinds for the throughput (default memfd,socket,eventfd)
    #[arg(long, value_name = "K,K,...", value_delimiter = ',', value_parser = fd_kind)]
    kinds: Option<Vec<fds::Kind>>,
    /// File counts for the identity check (default 1000,4000,16000)
    #[arg(long, value_name = "N,N,...", value_delimiter = ',', value_parser = positive)]
    index_sizes: Option<Vec<usize>>,
    /// Restarts per size and service (default 5)
    #[arg(long, value_name = "N", value_parser = positive)]
    restarts: Option<usize>,
    /// Throughput rounds per count and kind (default 3)
    #[arg(long, value_name = "N", value_parser = positive)]
    rounds: Option<usize>,
    /// Identity-index repetitions (default 3)
    #[arg(long, value_name = "N", value_parser = positive)]
    reps: Option<usize>,
    /// Which of agent,fds,index,blackout to run (default all)
    #[arg(long, value_name = "LIST", value_enum, value_delimiter = ',')]
    sections: Option<Vec<Section>>,
    /// Small and fast: --sizes 16M --fds 200 --index-sizes 100,200,400
    /// --restarts 1 --rounds 1 --reps 1 (flags given explicitly still apply)
    #[arg(long)]
    quick: bool,
    /// Skip the memcached baseline
    #[arg(long)]
    no_memcached: bool,
    /// Run the suite's luod with its crash-safety mirror (auto, luod's
    /// default) or without it (off), to see its cost
    #[arg(long, value_name = "MODE", value_parser = ["auto", "off"])]
    keeper: Option<String>,
    /// Never install memcached; fail if it is missing (by default, as root
    /// with apt-get, a missing memcached is installed from Debian's package,
    /// saying so first)
    #[arg(long)]
    no_install: bool,
    /// tmpfs for the reload file and memcached's -e file (default /dev/shm)
    #[arg(long, value_name = "DIR")]
    tmpfs: Option<PathBuf>,
    /// Default: target/luo-bench/results.json
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Default: target/luo-bench/blackout.svg
    #[arg(long, value_name = "PATH")]
    svg: Option<PathBuf>,
    /// luod (default: next to luo-bench, built if missing)
    #[arg(long, value_name = "PATH")]
    luod: Option<PathBuf>,
    /// The service-restart example (likewise)
    #[arg(long, value_name = "PATH")]
    demo: Option<PathBuf>,
}

/// `--sizes`: a size of at least one record.
fn blackout_size(s: &str) -> Result<u64, String> {
    parse_size(s)
        .filter(|n| *n >= memcached::RECORD)
        .ok_or_else(|| "expected sizes like 256M,1G,4G".to_string())
}

fn fd_kind(s: &str) -> Result<fds::Kind, String> {
    fds::Kind::parse(s.trim()).ok_or_else(|| "memfd, socket or eventfd".to_string())
}

#[derive(Debug)]
struct Options {
    sizes: Vec<u64>,
    fds: Vec<usize>,
    kinds: Vec<fds::Kind>,
    index_sizes: Vec<usize>,
    restarts: usize,
    rounds: usize,
    reps: usize,
    sections: Vec<Section>,
    memcached: bool,
    install: bool,
    tmpfs: PathBuf,
    json: PathBuf,
    svg: PathBuf,
    luod: Option<PathBuf>,
    demo: Option<PathBuf>,
}

/// `256M`, `1G`, `4GiB`, `65536`: bytes, suffixes in powers of 1024.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let mult: u64 = match unit.to_ascii_uppercase().trim_end_matches("IB") {
        "" | "B" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return None,
    };
    num.trim()
        .parse::<u64>()
        .ok()?
        .checked_mul(mult)
        .filter(|n| *n > 0)
}

/// `268435456` as `256 MiB`.
pub fn size_label(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes % (1 << 30) == 0 {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 1 << 20 {
        format!("{} MiB", (bytes as f64 / (1u64 << 20) as f64).round())
    } else {
        format!("{bytes} B")
    }
}

impl Options {
    fn new(f: Args) -> Options {
        if let Some(k) = &f.keeper {
            crate::agent::set_keeper(k == "auto");
        }
        let q = f.quick;
        let out_dir = default_out_dir();
        Options {
            sizes: f.sizes.map(sorted).unwrap_or_else(|| {
                if q {
                    vec![16 << 20]
                } else {
                    vec![256 << 20, 1 << 30, 4 << 30]
                }
            }),
            fds: f
                .fds
                .map(sorted)
                .unwrap_or_else(|| if q { vec![200] } else { vec![1_000, 16_000] }),
            kinds: f.kinds.unwrap_or_else(|| fds::Kind::ALL.to_vec()),
            index_sizes: f.index_sizes.map(sorted).unwrap_or_else(|| {
                if q {
                    vec![100, 200, 400]
                } else {
                    index::DEFAULT_SIZES.to_vec()
                }
            }),
            restarts: f.restarts.unwrap_or(if q { 1 } else { 5 }),
            rounds: f.rounds.unwrap_or(if q { 1 } else { 3 }),
            reps: f.reps.unwrap_or(if q { 1 } else { 3 }),
            sections: f.sections.unwrap_or_else(|| Section::ALL.to_vec()),
            memcached: !f.no_memcached,
            install: !f.no_install,
            tmpfs: f.tmpfs.unwrap_or_else(|| "/dev/shm".into()),
            json: f.json.unwrap_or_else(|| out_dir.join("results.json")),
            svg: f.svg.unwrap_or_else(|| out_dir.join("blackout.svg")),
            luod: f.luod,
            demo: f.demo,
        }
    }

    fn has(&self, s: Section) -> bool {
        self.sections.contains(&s)
    }
}

/// `target/luo-bench` when running from `target/<profile>/`, else `./luo-bench`.
fn default_out_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.join("luo-bench")))
        .unwrap_or_else(|| PathBuf::from("luo-bench"))
}

/// One line of the summary table.
#[derive(Debug)]
struct Line {
    what: String,
    luo: String,
    baseline: String,
    ratio: String,
    target: String,
    met: Option<bool>,
    json: LineReport,
}

/// A [`Line`] as JSON.
#[derive(Debug, Clone, Serialize)]
struct LineReport {
    measurement: String,
    luo: Num,
    unit: &'static str,
    baseline: String,
    baseline_value: Num,
    ratio: Num,
    ratio_is: &'static str,
    target: String,
    met: Option<bool>,
}

#[allow(clippy::too_many_arguments)]
fn line(
    what: String,
    (luo, luo_v, unit): (String, f64, &'static str),
    (baseline, base_name, base_v): (String, &str, f64),
    (ratio, ratio_v, ratio_is): (String, f64, &'static str),
    target: &str,
    met: Option<bool>,
) -> Line {
    let json = LineReport {
        measurement: what.clone(),
        luo: Num(luo_v),
        unit,
        baseline: base_name.to_string(),
        baseline_value: Num(base_v),
        ratio: Num(ratio_v),
        ratio_is,
        target: target.to_string(),
        met,
    };
    Line {
        what,
        luo,
        baseline,
        ratio,
        target: target.to_string(),
        met,
        json,
    }
}

fn rate(fds_per_s: f64) -> String {
    if fds_per_s >= 1e6 {
        format!("{:.2} M fds/s", fds_per_s / 1e6)
    } else {
        format!("{:.0} k fds/s", fds_per_s / 1e3)
    }
}

fn ms(ns: f64) -> String {
    human(ns)
}

/// `luo-bench all`'s JSON report.
#[derive(Debug, Serialize)]
struct SuiteReport<'a> {
    suite: &'static str,
    command: String,
    unix_time: u64,
    machine: MachineReport<'a>,
    load1_before: Option<Num>,
    load1_after: Option<Num>,
    seconds: Num,
    memcached_version: Option<String>,
    summary: Vec<LineReport>,
    agent: AgentReport,
    fd_throughput: Vec<fds::ThroughputReport>,
    syscall_ns_hot: Fields<Num>,
    identity: Option<index::IndexReport<'a>>,
    blackout: Vec<blackout::SizeReport>,
}

/// The agent's start-up and memory.
#[derive(Debug, Serialize)]
struct AgentReport {
    startup: Option<fds::StartupReport>,
    memory: Vec<fds::MemoryReport>,
}

#[derive(Debug, Default)]
struct Results {
    startup: Option<fds::Startup>,
    memory: Vec<fds::Memory>,
    throughput: Vec<fds::Throughput>,
    syscalls: Vec<(&'static str, f64)>,
    index: Option<index::Report>,
    blackout: Vec<blackout::Size>,
    memcached_version: Option<String>,
}

pub fn main(args: Args) -> Result<(), Failure> {
    let o = Options::new(args);
    let machine = Machine::setup()?;
    eprintln!("machine: {}", machine.describe());
    let load_before = load1();
    let started = std::time::Instant::now();

    // Check for everything before the long parts start.
    let programs = Programs::locate(o.luod.clone(), o.demo.clone())?;
    let mc_bin = if o.has(Section::Blackout) && o.memcached {
        Some(memcached::find(o.install)?)
    } else {
        None
    };
    if o.has(Section::Blackout) {
        blackout::check_tmpfs(&o.tmpfs)?;
    }
    let mut r = Results {
        memcached_version: mc_bin.as_deref().map(memcached::version),
        ..Results::default()
    };
    let max_fds = o.fds.iter().copied().max().unwrap_or(0);

    if o.has(Section::Agent) {
        r.startup = Some(fds::startup(&programs.luod, 2.max(o.rounds) + 2)?);
        for kind in [fds::Kind::Memfd, fds::Kind::Socket, fds::Kind::Eventfd] {
            r.memory
                .push(fds::memory(&programs.luod, kind, max_fds.max(1))?);
        }
    }
    if o.has(Section::Fds) {
        r.syscalls = fds::syscall_costs()?;
        eprintln!(
            "per-call cost here (ns, hot): {}",
            r.syscalls
                .iter()
                .map(|(k, v)| format!("{k} {v:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let agent = Agent::start(&programs.luod, "fds")?;
        r.throughput = fds::throughput(&agent, &o.fds, &o.kinds, o.rounds)?;
    }
    if o.has(Section::Index) {
        eprintln!("identity index: the existing `luo-bench index` benchmark, --quick ...");
        let report = index::for_suite(
            machine.clone(),
            o.index_sizes.clone(),
            o.reps,
            index::DEFAULT_WINDOW,
        )?;
        eprint!("{}", report.table());
        r.index = Some(report);
    }
    if o.has(Section::Blackout) {
        let plan = blackout::Plan {
            demo: &programs.demo,
            memcached: mc_bin.as_deref(),
            tmpfs: &o.tmpfs,
            restarts: o.restarts,
        };
        r.blackout = blackout::run(&plan, &o.sizes)?;
    }
    let load_after = load1();
    let elapsed = started.elapsed();

    let lines = summary(&r);
    let mut table = String::new();
    table.push_str("luo-bench all: luo against the baselines people use today\n");
    table.push_str(&format!("machine: {}\n", machine.describe()));
    if let Some(v) = &r.memcached_version {
        table.push_str(&format!("baseline: {v}\n"));
    }
    table.push_str(&format!(
        "load average (1 min): {} before, {} after; took {:.0} s\n\n",
        load_before.map_or("?".into(), |l| format!("{l:.2}")),
        load_after.map_or("?".into(), |l| format!("{l:.2}")),
        elapsed.as_secs_f64()
    ));
    table.push_str(&render(&lines));
    print!("{table}");

    let json = SuiteReport {
        suite: "all",
        command: command(),
        unix_time: unix_time(),
        machine: machine.report(),
        load1_before: load_before.map(Num),
        load1_after: load_after.map(Num),
        seconds: Num(elapsed.as_secs_f64()),
        memcached_version: r.memcached_version.clone(),
        summary: lines.iter().map(|l| l.json.clone()).collect(),
        agent: AgentReport {
            startup: r.startup.as_ref().map(fds::Startup::report),
            memory: r.memory.iter().map(fds::Memory::report).collect(),
        },
        fd_throughput: r.throughput.iter().map(fds::Throughput::report).collect(),
        syscall_ns_hot: Fields(r.syscalls.iter().map(|&(k, v)| (k, Num(v))).collect()),
        identity: r.index.as_ref().map(index::Report::report),
        blackout: r.blackout.iter().map(blackout::Size::report).collect(),
    };
    write(&o.json, &to_json(&json))?;
    if !r.blackout.is_empty() {
        write(&o.svg, &svg(&r, &machine))?;
    }
    Ok(())
}

fn command() -> String {
    std::iter::once("luo-bench".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn summary(r: &Results) -> Vec<Line> {
    let mut out = Vec::new();
    for t in &r.throughput {
        let target = t
            .kind
            .target()
            .map_or("(information)".to_string(), |x| format!(">= {x}x raw"));
        out.push(line(
            format!("fd round trip, {} {}s", grouped(t.n as u64), t.kind.name()),
            (rate(t.luo_rate()), t.luo_rate(), "fds/s"),
            (
                format!("raw SCM_RIGHTS {}", rate(t.raw_rate())),
                "raw SCM_RIGHTS, 253-fd batches",
                t.raw_rate(),
            ),
            (
                format!("{:.2}x raw", t.ratio()),
                t.ratio(),
                "luo throughput / raw throughput",
            ),
            &target,
            t.kind.target().map(|x| t.ratio() >= x),
        ));
        out.push(line(
            format!(
                "fd round trip, {} {}s, vs the floor agent",
                grouped(t.n as u64),
                t.kind.name()
            ),
            (rate(t.luo_rate()), t.luo_rate(), "fds/s"),
            (
                format!(
                    "floor agent {} ({:.2}x raw)",
                    rate(t.floor_rate()),
                    t.floor_ratio()
                ),
                if t.floor_mirror {
                    "floor agent: F_GETFL, fstat, socket kind, a mirror process"
                } else {
                    "floor agent: F_GETFL, fstat, socket kind, no mirror"
                },
                t.floor_rate(),
            ),
            (
                format!("{:.2}x the floor", t.luo_to_floor()),
                t.luo_to_floor(),
                "luo throughput / floor agent throughput",
            ),
            "(information)",
            None,
        ));
    }
    if let Some(ix) = &r.index {
        for row in &ix.rows {
            out.push(line(
                format!(
                    "preserving the {}th {}",
                    grouped(row.size as u64),
                    row.kind.name()
                ),
                (ms(row.luo.median_ns), row.luo.median_ns, "ns"),
                (
                    format!("linear scan {}", ms(row.linear.median_ns)),
                    "linear kcmp scan (systemd fd store)",
                    row.linear.median_ns,
                ),
                (
                    format!("{:.0}x faster", row.ratio()),
                    row.ratio(),
                    "linear / luo",
                ),
                "",
                None,
            ));
        }
        let (min, max) = (
            ix.rows.first().map(|r| r.size),
            ix.rows.last().map(|r| r.size),
        );
        for (kind, g) in ix.growth() {
            out.push(line(
                format!(
                    "{} growth, {}th / {}th",
                    kind.name(),
                    grouped(max.unwrap_or(0) as u64),
                    grouped(min.unwrap_or(0) as u64)
                ),
                (format!("{g:.2}x"), g, "ratio"),
                (String::new(), "", f64::NAN),
                (
                    format!("{g:.2}x"),
                    g,
                    "cost at the largest N / cost at the smallest",
                ),
                "<= 1.5x",
                Some(g <= index::GROWTH_TARGET),
            ));
        }
    }
    let last = r.blackout.len().saturating_sub(1);
    for (i, s) in r.blackout.iter().enumerate() {
        let label = size_label(s.bytes);
        let (luo, reload) = (s.luo_ns(), s.reload_ns());
        // The 100x target is set at the largest size.
        let (target, met) = if i == last {
            (">= 100x", Some(reload / luo >= 100.0))
        } else {
            ("", None)
        };
        out.push(line(
            format!("blackout at {label}, vs reload from tmpfs"),
            (ms(luo), luo / 1e6, "ms"),
            (
                format!("reload {}", ms(reload)),
                "save to and reload from a tmpfs file",
                reload / 1e6,
            ),
            (
                format!("{:.0}x shorter", reload / luo),
                reload / luo,
                "baseline / luo",
            ),
            target,
            met,
        ));
        if let (Some(own), Some(all)) = (s.memcached_own_ns(), s.memcached_ns()) {
            out.push(line(
                format!("blackout at {label}, vs memcached warm restart"),
                (ms(luo), luo / 1e6, "ms"),
                (
                    format!("memcached {} (+{} clock wait)", ms(own), ms(all - own)),
                    "memcached -e on tmpfs, SIGUSR1, without the wait for the next second",
                    own / 1e6,
                ),
                (
                    format!("{:.0}x shorter", own / luo),
                    own / luo,
                    "baseline / luo",
                ),
                "",
                None,
            ));
        }
    }
    if let (Some(first), Some(last)) = (r.blackout.first(), r.blackout.last()) {
        if r.blackout.len() > 1 {
            let g = last.luo_ns() / first.luo_ns();
            out.push(line(
                format!(
                    "luo blackout growth, {} / {}",
                    size_label(last.bytes),
                    size_label(first.bytes)
                ),
                (format!("{g:.2}x"), g, "ratio"),
                (
                    format!("reload grew {:.0}x", last.reload_ns() / first.reload_ns()),
                    "reload growth",
                    last.reload_ns() / first.reload_ns(),
                ),
                (
                    format!("{g:.2}x"),
                    g,
                    "luo at the largest size / at the smallest",
                ),
                "<= 1.5x (flat)",
                Some(g <= 1.5),
            ));
        }
    }
    for m in &r.memory {
        out.push(line(
            format!(
                "agent memory per fd, {} {}s",
                grouped(m.n as u64),
                m.kind.name()
            ),
            (format!("{:.0} B", m.per_fd()), m.per_fd(), "bytes"),
            (String::new(), "", f64::NAN),
            (String::new(), f64::NAN, ""),
            "<= 256 B",
            Some(m.per_fd() <= fds::MEMORY_TARGET),
        ));
    }
    if let Some(s) = &r.startup {
        out.push(line(
            "agent start-up (exec to first answer)".into(),
            (ms(s.luod_ns()), s.luod_ns() / 1e6, "ms"),
            (
                format!("exec /bin/true {}", ms(s.floor_ns())),
                "spawn and reap /bin/true",
                s.floor_ns() / 1e6,
            ),
            (
                format!("{:.1}x the floor", s.luod_ns() / s.floor_ns()),
                s.luod_ns() / s.floor_ns(),
                "luo / baseline",
            ),
            "",
            None,
        ));
    }
    out
}

fn render(lines: &[Line]) -> String {
    let heads = [
        "measurement",
        "luo",
        "baseline",
        "ratio",
        "target",
        "result",
    ];
    let cells: Vec<[String; 6]> = lines
        .iter()
        .map(|l| {
            [
                l.what.clone(),
                l.luo.clone(),
                l.baseline.clone(),
                l.ratio.clone(),
                l.target.clone(),
                match l.met {
                    Some(true) => "met".into(),
                    Some(false) => "MISSED".into(),
                    None => String::new(),
                },
            ]
        })
        .collect();
    let mut width = heads.map(|h| h.chars().count());
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let row = |c: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in c.iter().zip(width).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(cell);
            s.push_str(&" ".repeat(w - cell.chars().count()));
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = row(&heads.map(String::from));
    out.push_str(&row(&width.map(|w| "-".repeat(w))));
    for c in &cells {
        out.push_str(&row(c));
    }
    out
}

/// One data size on the plot, in milliseconds.
#[derive(Debug)]
struct PlotPoint {
    bytes: f64,
    luo: f64,
    reload: f64,
    memcached: Option<f64>,
    memcached_with_wait: Option<f64>,
}

fn svg(r: &Results, machine: &Machine) -> String {
    let points: Vec<PlotPoint> = r
        .blackout
        .iter()
        .map(|s| PlotPoint {
            bytes: s.bytes as f64,
            luo: s.luo_ns() / 1e6,
            reload: s.reload_ns() / 1e6,
            memcached: s.memcached_own_ns().map(|n| n / 1e6),
            memcached_with_wait: s.memcached_ns().map(|n| n / 1e6),
        })
        .collect();
    let restarts = r.blackout.first().map_or(0, |s| s.luo.blackouts.len());
    svg_of(&points, restarts, machine.nproc as u64, &machine.kernel)
}

fn svg_of(points: &[PlotPoint], restarts: usize, nproc: u64, kernel: &str) -> String {
    let series = |name: &str, color, dashed, f: &dyn Fn(&PlotPoint) -> Option<f64>| plot::Series {
        name: name.into(),
        color,
        dashed,
        points: points
            .iter()
            .filter_map(|p| Some((p.bytes, f(p)?)))
            .collect(),
    };
    let mut all = vec![
        series("luo", "#1f77b4", false, &|p| Some(p.luo)),
        series("reload from a tmpfs file", "#d62728", false, &|p| {
            Some(p.reload)
        }),
        series("memcached warm restart", "#2ca02c", false, &|p| p.memcached),
        series("memcached + clock wait", "#2ca02c", true, &|p| {
            p.memcached_with_wait
        }),
    ];
    all.retain(|s| !s.points.is_empty());
    plot::blackout_svg(
        "Restart blackout against the data the service holds",
        &format!("median of {restarts} restarts each; {nproc} CPUs, Linux {kernel}; luo-bench all"),
        &all,
    )
}

/// `luo-bench plot --help`'s description.
pub const PLOT_ABOUT: &str = "\
Draws the blackout plot again from the JSON of an earlier `luo-bench all`
(default target/luo-bench/results.json) without running anything.";

/// `luo-bench plot`'s options.
#[derive(Debug, clap::Args)]
pub struct PlotArgs {
    /// The JSON of an earlier run (default: target/luo-bench/results.json)
    #[arg(value_name = "RESULTS.json")]
    input: Option<PathBuf>,
    /// Default: target/luo-bench/blackout.svg
    #[arg(long, value_name = "PATH")]
    svg: Option<PathBuf>,
}

/// `luo-bench plot`: the SVG from an earlier run's JSON.
pub fn replot(args: PlotArgs) -> Result<(), Failure> {
    let input = args
        .input
        .unwrap_or_else(|| default_out_dir().join("results.json"));
    let out = args
        .svg
        .unwrap_or_else(|| default_out_dir().join("blackout.svg"));
    let text = std::fs::read(&input)
        .map_err(|e| Failure::run(format!("reading {}: {e}", input.display())))?;
    let v: Value = serde_json::from_slice(&text)
        .map_err(|e| Failure::run(format!("{}: {e}", input.display())))?;
    let at = |v: &Value, path: &[&str]| {
        let mut cur = v;
        for k in path {
            cur = cur.get(k)?;
        }
        cur.as_f64()
    };
    let missing = |what: &str| Failure::run(format!("{}: no {what}", input.display()));
    let sizes = v
        .get("blackout")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| missing("blackout results"))?;
    let mut points = Vec::new();
    for s in sizes {
        points.push(PlotPoint {
            bytes: at(s, &["bytes"]).ok_or_else(|| missing("bytes"))?,
            luo: at(s, &["luo", "blackout_ms"]).ok_or_else(|| missing("luo.blackout_ms"))?,
            reload: at(s, &["reload", "blackout_ms"])
                .ok_or_else(|| missing("reload.blackout_ms"))?,
            memcached: at(s, &["memcached", "blackout_without_clock_wait_ms"]),
            memcached_with_wait: at(s, &["memcached", "blackout_ms"]),
        });
    }
    let restarts = sizes[0]
        .get("luo")
        .and_then(|l| l.get("blackout_runs_ms"))
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let nproc = at(&v, &["machine", "nproc"]).unwrap_or(0.0) as u64;
    let kernel = v
        .get("machine")
        .and_then(|m| m.get("kernel"))
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    write(&out, &svg_of(&points, restarts, nproc, kernel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("4GiB"), Some(4 << 30));
        assert_eq!(parse_size("64"), Some(64));
        assert_eq!(parse_size("1X"), None);
        assert_eq!(parse_size("0"), None);
        assert_eq!(size_label(4 << 30), "4 GiB");
        assert_eq!(size_label(256 << 20), "256 MiB");
    }

    #[test]
    fn quick_defaults_yield_to_explicit_flags() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            let all = ["luo-bench", "all"].iter().chain(args);
            match crate::Cli::try_parse_from(all).map(|c| c.command) {
                Ok(crate::Bench::All(a)) => Ok(Options::new(*a)),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e),
            }
        };
        let o = parse(&["--quick", "--fds", "50,10", "--sections", "fds,agent"]).unwrap();
        assert_eq!(o.fds, vec![10, 50]);
        assert_eq!(o.sizes, vec![16 << 20]);
        assert_eq!(o.restarts, 1);
        assert!(o.has(Section::Agent) && !o.has(Section::Blackout));
        assert!(parse(&["--sections", "nope"]).is_err());
        assert!(parse(&["--fds", "0"]).is_err());
        assert!(parse(&["--sizes", "1X"]).is_err());
    }
}
