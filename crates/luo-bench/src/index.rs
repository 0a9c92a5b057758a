//! `luo-bench index`: the identity index (double-management check) against a
//! linear scan of held files, as systemd's fd store does it.
//!
//! Every eventfd shares one anonymous inode, so all preserved eventfds land in
//! one index bucket, ordered by `kcmp(KCMP_FILE)`: luo's worst case, on a
//! kernel that does not show eventfd ids (before 5.2; from 5.2 each eventfd
//! is keyed by its id, alone, and compared with nothing). memfds have
//! distinct inodes and land in buckets of one. The baseline compares each
//! new fd with every held fd through `kcmp` before keeping it.

use std::cmp::Ordering;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use luo_core::{FileOrder, IndexMode, Limits, Luo, SessionHandle};
use luo_sys::Errno;
use serde::Serialize;

use crate::cli::{positive, sorted, Failure};
use crate::machine::{Machine, MachineReport};
use crate::report::{ms, write_json, Num};
use crate::stats::{grouped, human, Summary};

/// `luo-bench index --help`'s description.
pub const ABOUT: &str = "\
Cost of preserving the Nth file through luo (identity index, O(log n) kcmp
calls per insert) against a linear kcmp scan of every held file (O(n)), for
eventfds (one shared inode: one index bucket) and memfds (distinct inodes);
then the total time to index 10,000 eventfds both ways.";

pub const DEFAULT_SIZES: [usize; 3] = [1_000, 4_000, 16_000];
pub const DEFAULT_WINDOW: usize = 64;
/// Each repetition builds a new tree (kcmp's order differs per run): pooling
/// a few evens out tree shape and a neighbour's burst of load.
const DEFAULT_REPS: usize = 3;
/// Files in the "index 10,000 eventfds" totals.
const TOTAL_FILES: usize = 10_000;
const TOTAL_TARGET_MS: f64 = 50.0;
/// The luo total is short and so easily disturbed: take the median of a few.
const LUO_TOTAL_RUNS: usize = 3;
/// Target for cost(largest N) / cost(smallest N) of luo's eventfd inserts.
pub const GROWTH_TARGET: f64 = 1.5;
/// The kernel's default per-process fd ceiling (`/proc/sys/fs/nr_open`).
const NR_OPEN: f64 = 1_048_576.0;
/// fds beyond the measured ones: stdio, the fd being inserted, luo's probe pipe.
const HEADROOM: usize = 64;

/// `luo-bench index`'s options.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// File counts at which to measure the per-insert cost (bounded by
    /// RLIMIT_NOFILE)
    #[arg(
        long,
        value_name = "N,N,...",
        value_delimiter = ',',
        value_parser = positive,
        default_values_t = DEFAULT_SIZES
    )]
    sizes: Vec<usize>,
    /// The cost at N is the median of the W inserts ending at N, pooled over
    /// the repetitions
    #[arg(long, value_name = "W", value_parser = positive, default_value_t = DEFAULT_WINDOW)]
    window: usize,
    /// Repeat the per-insert measurements R times, each on a fresh luo and a
    /// fresh scan
    #[arg(long, value_name = "R", value_parser = positive, default_value_t = DEFAULT_REPS)]
    reps: usize,
    /// Also write the results as JSON to PATH
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Skip the full linear scan of 10,000 eventfds (50 million kcmp calls:
    /// seconds to a minute) and extrapolate it from the per-insert figures
    #[arg(long)]
    quick: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Eventfd,
    Memfd,
}

impl Kind {
    const ALL: [Kind; 2] = [Kind::Eventfd, Kind::Memfd];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Eventfd => "eventfd",
            Kind::Memfd => "memfd",
        }
    }

    fn open(self) -> Result<OwnedFd, Errno> {
        match self {
            Kind::Eventfd => luo_sys::eventfd(0),
            // Empty: a memfd costs an inode, no pages.
            Kind::Memfd => luo_sys::memfd_create("luo-bench", 0),
        }
    }
}

/// Somewhere to keep files that refuses a file it already holds.
trait Store {
    /// The measured operation: check, then keep.
    fn insert(&mut self, fd: OwnedFd, n: usize) -> Result<(), Failure>;

    /// Keeps a file outside the measured windows. By default the full insert,
    /// so that the structure is exactly what `n` real inserts build.
    fn fill(&mut self, fd: OwnedFd, n: usize) -> Result<(), Failure> {
        self.insert(fd, n)
    }
}

/// luo's real API: one session, the file's ordinal as its token.
#[derive(Debug)]
struct LuoStore {
    luo: Luo,
    session: SessionHandle,
}

impl LuoStore {
    fn new() -> Result<LuoStore, Failure> {
        let mut luo = Luo::with_default_handlers();
        if let IndexMode::InodeFallback(e) = luo.index().mode() {
            return Err(Failure::run(format!(
                "kcmp is unavailable here ({e}): luo falls back to inode identity and \
                 refuses a second eventfd, so there is nothing to measure"
            )));
        }
        let session = luo.create_session(0, b"luo-bench-index")?;
        Ok(LuoStore { luo, session })
    }
}

impl Store for LuoStore {
    fn insert(&mut self, fd: OwnedFd, n: usize) -> Result<(), Failure> {
        Ok(self.luo.preserve(self.session, fd, n as u64)?)
    }
}

/// The baseline: every new fd is compared with every held fd.
#[derive(Debug, Default)]
struct LinearStore {
    held: Vec<OwnedFd>,
}

impl Store for LinearStore {
    fn insert(&mut self, fd: OwnedFd, _n: usize) -> Result<(), Failure> {
        for h in &self.held {
            if luo_sys::kcmp_file(fd.as_fd(), h.as_fd())? == Ordering::Equal {
                return Err(Failure::run("linear scan: the new fd is already held"));
            }
        }
        self.held.push(fd);
        Ok(())
    }

    // Building the prefix with the scan would cost seconds and measure nothing.
    fn fill(&mut self, fd: OwnedFd, _n: usize) -> Result<(), Failure> {
        self.held.push(fd);
        Ok(())
    }
}

/// Inserts files 1..=max(sizes) of `kind` into `store`, timing each insert
/// that falls in the `window` ending at some size (the fd is opened before the
/// clock starts); returns each size's window of timings.
fn per_insert(
    store: &mut impl Store,
    kind: Kind,
    sizes: &[usize],
    window: usize,
) -> Result<Vec<Vec<Duration>>, Failure> {
    let max = sizes.iter().copied().max().unwrap_or(0);
    let mut timed = vec![false; max];
    for &n in sizes {
        timed[n.saturating_sub(window)..n].fill(true);
    }
    let mut times = vec![Duration::ZERO; max];
    for i in 0..max {
        let fd = kind.open()?;
        if timed[i] {
            let t = Instant::now();
            store.insert(fd, i)?;
            times[i] = t.elapsed();
        } else {
            store.fill(fd, i)?;
        }
    }
    Ok(windows(&times, sizes, window))
}

/// Time to insert `n` already-open files of `kind`, one after the other.
fn total(store: &mut impl Store, kind: Kind, n: usize) -> Result<Duration, Failure> {
    let fds = (0..n).map(|_| kind.open()).collect::<Result<Vec<_>, _>>()?;
    let t = Instant::now();
    for (i, fd) in fds.into_iter().enumerate() {
        store.insert(fd, i)?;
    }
    Ok(t.elapsed())
}

/// `kcmp` that counts its calls: unlike their time, the number of comparisons
/// an insert makes does not depend on the machine.
#[derive(Debug, Clone, Default)]
struct CountingKcmp(Arc<AtomicU64>);

impl CountingKcmp {
    fn calls(&self) -> u64 {
        self.0.load(AtomicOrdering::Relaxed)
    }
}

impl FileOrder for CountingKcmp {
    fn compare(&self, a: RawFd, b: RawFd) -> Result<Ordering, Errno> {
        self.0.fetch_add(1, AtomicOrdering::Relaxed);
        luo_sys::kcmp_raw(a, b)
    }
    // As the real order: eventfds keyed by id where the kernel shows it,
    // so that the count is of what the timed pass does.
    fn eventfd_ids(&self) -> bool {
        true
    }
}

/// `kcmp` calls of each insert in the window ending at each size, on a luo set
/// up like [`LuoStore`] but for the counting order (an untimed pass).
fn kcmp_calls(kind: Kind, sizes: &[usize], window: usize) -> Result<Vec<Vec<u64>>, Failure> {
    let order = CountingKcmp::default();
    let mut luo = Luo::with_order(Limits::default(), Box::new(order.clone()));
    for h in luo_core::handler::default_handlers() {
        luo.register_handler(h)?;
    }
    let session = luo.create_session(0, b"luo-bench-index")?;
    let max = sizes.iter().copied().max().unwrap_or(0);
    let mut calls = Vec::with_capacity(max);
    for i in 0..max {
        let fd = kind.open()?;
        let before = order.calls();
        luo.preserve(session, fd, i as u64)?;
        calls.push(order.calls() - before);
    }
    Ok(windows(&calls, sizes, window))
}

/// The `window` values ending at each size.
fn windows<T: Copy>(values: &[T], sizes: &[usize], window: usize) -> Vec<Vec<T>> {
    sizes
        .iter()
        .map(|&n| values[n.saturating_sub(window)..n].to_vec())
        .collect()
}

/// Empty sample pools, indexed `[kind][size]`.
fn pools<T: Clone>(sizes: &[usize]) -> Vec<Vec<Vec<T>>> {
    vec![vec![Vec::new(); sizes.len()]; Kind::ALL.len()]
}

/// Appends each size's window of one repetition to the pooled ones.
fn pool<T>(pooled: &mut [Vec<T>], run: Vec<Vec<T>>) {
    for (p, r) in pooled.iter_mut().zip(run) {
        p.extend(r);
    }
}

/// One `kcmp(KCMP_FILE)` call, for reading the per-insert figures.
fn kcmp_cost() -> Result<f64, Failure> {
    const CALLS: u32 = 20_000;
    let (a, b) = (luo_sys::eventfd(0)?, luo_sys::eventfd(0)?);
    let mut batches = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..CALLS {
            std::hint::black_box(luo_sys::kcmp_file(a.as_fd(), b.as_fd())?);
        }
        batches.push(t.elapsed() / CALLS);
    }
    Ok(Summary::of(&batches).median_ns)
}

/// Fails early, rather than with `EMFILE` halfway, when `need` more fds do not fit.
fn ensure_room(need: usize, soft: u64) -> Result<(), Failure> {
    let open = luo_sys::open_fd_count()?;
    let fits = (open + need + HEADROOM) as u64 <= soft;
    if fits {
        return Ok(());
    }
    Err(Failure::run(format!(
        "{need} more fds do not fit: {open} are open and RLIMIT_NOFILE is {soft} \
         (lower --sizes, or raise the hard limit)"
    )))
}

/// One size and kind, luo and the baseline side by side.
#[derive(Debug)]
pub struct Row {
    pub size: usize,
    pub kind: Kind,
    pub luo: Summary,
    /// Mean `kcmp` calls per luo insert (the scan makes `size - 1`).
    pub luo_kcmps: f64,
    pub linear: Summary,
}

impl Row {
    pub fn ratio(&self) -> f64 {
        self.linear.median_ns / self.luo.median_ns
    }
}

#[derive(Debug)]
struct Totals {
    luo_runs: Vec<Duration>,
    luo_ns: f64,
    linear_ns: f64,
    /// False under `--quick`: `linear_ns` is extrapolated.
    linear_measured: bool,
}

/// Per-insert figures extended to the kernel's fd ceiling.
#[derive(Debug)]
struct Extrapolation {
    /// luo eventfd: the measured growth per doubling, continued.
    luo_fitted_ns: Option<f64>,
    /// luo eventfd: the largest size plus one scan comparison per doubling.
    luo_model_ns: f64,
    luo_kcmps: f64,
    linear_ns: f64,
}

#[derive(Debug)]
pub struct Report {
    machine: Machine,
    opts: Options,
    /// One kcmp in a tight loop on two fds.
    pub kcmp_ns: f64,
    /// One kcmp within the linear scan (cold files), from the largest size.
    pub scan_cmp_ns: f64,
    eventfd_bucket: usize,
    pub rows: Vec<Row>,
    totals: Totals,
    at_nr_open: Extrapolation,
}

pub fn main(mut opts: Options) -> Result<(), Failure> {
    opts.sizes = sorted(opts.sizes);
    if opts.sizes.is_empty() {
        return Err(Failure::usage("--sizes is empty"));
    }
    let machine = Machine::setup()?;
    eprintln!("machine: {}", machine.describe());
    let report = run(machine, opts)?;
    print!("{}", report.table());
    if let Some(path) = &report.opts.json {
        write_json(path, &report.report())?;
    }
    Ok(())
}

/// The suite's part: per-insert costs only (the 10,000-fd totals take the
/// `--quick` path: luo measured, the linear scan extrapolated).
pub fn for_suite(
    machine: Machine,
    sizes: Vec<usize>,
    reps: usize,
    window: usize,
) -> Result<Report, Failure> {
    let opts = Options {
        sizes,
        window,
        reps,
        json: None,
        quick: true,
    };
    run(machine, opts)
}

fn run(machine: Machine, opts: Options) -> Result<Report, Failure> {
    let soft = machine.nofile.0;
    let (sizes, window) = (&opts.sizes, opts.window);
    let max = *sizes.last().expect("sizes is not empty");
    let n_max = grouped(max as u64);

    ensure_room(max.max(TOTAL_FILES), soft)?;
    let kcmp_ns = kcmp_cost()?;
    eprintln!("kcmp(KCMP_FILE): {kcmp_ns:.0} ns per call");

    // One phase at a time, each store dropped (its fds closed) before the
    // next, so that no more than max(sizes) files are held at once. Indexed
    // [kind][size], each a pool of samples over the repetitions.
    let (mut luo, mut linear) = (pools::<Duration>(sizes), pools::<Duration>(sizes));
    let mut kcmps = pools::<u64>(sizes);
    let mut eventfd_bucket = 0;
    for rep in 1..=opts.reps {
        for (k, kind) in Kind::ALL.into_iter().enumerate() {
            let name = kind.name();
            eprintln!("[{rep}/{}] luo, {name}: preserving {n_max} ...", opts.reps);
            ensure_room(max, soft)?;
            let mut store = LuoStore::new()?;
            pool(&mut luo[k], per_insert(&mut store, kind, sizes, window)?);
            if kind == Kind::Eventfd {
                let st = luo_sys::fstat(kind.open()?.as_fd())?;
                eventfd_bucket = store.luo.index().bucket_len(st.dev, st.ino);
            }
            drop(store);

            eprintln!("[{rep}/{}] luo, {name}: counting kcmp calls ...", opts.reps);
            ensure_room(max, soft)?;
            pool(&mut kcmps[k], kcmp_calls(kind, sizes, window)?);

            eprintln!(
                "[{rep}/{}] linear scan, {name}: {n_max} held ...",
                opts.reps
            );
            ensure_room(max, soft)?;
            let mut store = LinearStore::default();
            pool(&mut linear[k], per_insert(&mut store, kind, sizes, window)?);
        }
    }
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    let mut rows = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        for (k, kind) in Kind::ALL.into_iter().enumerate() {
            rows.push(Row {
                size,
                kind,
                luo: Summary::of(&luo[k][i]),
                luo_kcmps: mean(&kcmps[k][i]),
                linear: Summary::of(&linear[k][i]),
            });
        }
    }
    let eventfd_row = |i: usize| &rows[i * Kind::ALL.len()];
    // The Nth insert of the scan makes N-1 comparisons and little else.
    let scan_cmp_ns = eventfd_row(sizes.len() - 1).linear.median_ns / (max.max(2) - 1) as f64;

    eprintln!("luo: indexing {} eventfds ...", grouped(TOTAL_FILES as u64));
    let mut luo_runs = Vec::new();
    for _ in 0..LUO_TOTAL_RUNS {
        ensure_room(TOTAL_FILES, soft)?;
        luo_runs.push(total(&mut LuoStore::new()?, Kind::Eventfd, TOTAL_FILES)?);
    }
    let (linear_ns, linear_measured) = if opts.quick {
        let n = TOTAL_FILES as f64;
        (scan_cmp_ns * n * (n - 1.0) / 2.0, false)
    } else {
        eprintln!(
            "linear scan: indexing {} eventfds in full (a minute or less; --quick skips it) ...",
            grouped(TOTAL_FILES as u64)
        );
        ensure_room(TOTAL_FILES, soft)?;
        let d = total(&mut LinearStore::default(), Kind::Eventfd, TOTAL_FILES)?;
        (d.as_nanos() as f64, true)
    };
    let totals = Totals {
        luo_ns: Summary::of(&luo_runs).median_ns,
        luo_runs,
        linear_ns,
        linear_measured,
    };

    let at_nr_open = {
        let min = sizes[0];
        let (first, last) = (eventfd_row(0), eventfd_row(sizes.len() - 1));
        let (kcmps_last, first, last) = (last.luo_kcmps, first.luo.median_ns, last.luo.median_ns);
        let doublings = (NR_OPEN / max as f64).log2();
        Extrapolation {
            luo_fitted_ns: (max > min)
                .then(|| last + (last - first) / (max as f64 / min as f64).log2() * doublings),
            // Each doubling of the bucket deepens the tree by about one level.
            luo_model_ns: last + scan_cmp_ns * doublings,
            luo_kcmps: kcmps_last + doublings,
            linear_ns: scan_cmp_ns * (NR_OPEN - 1.0),
        }
    };
    Ok(Report {
        machine,
        opts,
        kcmp_ns,
        scan_cmp_ns,
        eventfd_bucket,
        rows,
        totals,
        at_nr_open,
    })
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

impl Report {
    /// luo's growth per kind: cost at the largest size over the smallest.
    pub fn growth(&self) -> Vec<(Kind, f64)> {
        Kind::ALL
            .into_iter()
            .map(|kind| {
                let mut rows = self.rows.iter().filter(|r| r.kind == kind);
                let first = rows.next().map_or(f64::NAN, |r| r.luo.median_ns);
                let last = rows.next_back().map_or(first, |r| r.luo.median_ns);
                (kind, last / first)
            })
            .collect()
    }

    fn luo_total_met(&self) -> bool {
        self.totals.luo_ns < TOTAL_TARGET_MS * 1e6
    }

    pub fn table(&self) -> String {
        let o = &self.opts;
        let (min, max) = (o.sizes[0], o.sizes[o.sizes.len() - 1]);
        let mut s = String::new();
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        line(
            "luo-bench index: identity index (double-management check) vs linear kcmp scan".into(),
        );
        line(format!("machine: {}", self.machine.describe()));
        line(format!(
            "kcmp(KCMP_FILE): {:.0} ns per call in a tight loop, {:.0} ns within the scan",
            self.kcmp_ns, self.scan_cmp_ns
        ));
        line(format!(
            "all {} preserved eventfds share one index bucket",
            grouped(self.eventfd_bucket as u64)
        ));
        line(format!(
            "ns/insert at N: median of the {} inserts ending at N, pooled over {} runs; \
             kcmp/insert: their mean\n",
            o.window, o.reps
        ));
        line(format!(
            "{:>8}  {:<8}  {:>14}  {:>12}  {:>17}  {:>11}",
            "N", "kind", "luo ns/insert", "kcmp/insert", "linear ns/insert", "linear/luo"
        ));
        for r in &self.rows {
            line(format!(
                "{:>8}  {:<8}  {:>14}  {:>12.1}  {:>17}  {:>10.1}x",
                grouped(r.size as u64),
                r.kind.name(),
                grouped(r.luo.median_ns.round() as u64),
                r.luo_kcmps,
                grouped(r.linear.median_ns.round() as u64),
                r.ratio()
            ));
        }
        let t = &self.totals;
        line(format!(
            "\n{} eventfds indexed:",
            grouped(TOTAL_FILES as u64)
        ));
        line(format!(
            "  luo          {:>10}  (median of {}; target < {TOTAL_TARGET_MS} ms: {})",
            human(t.luo_ns),
            t.luo_runs.len(),
            met(self.luo_total_met())
        ));
        line(format!(
            "  linear scan  {:>10}  ({}; {:.0}x luo)",
            human(t.linear_ns),
            if t.linear_measured {
                "measured"
            } else {
                "extrapolated, --quick"
            },
            t.linear_ns / t.luo_ns
        ));
        line("\nluo per-insert growth:".into());
        for (kind, ratio) in self.growth() {
            let target = if kind == Kind::Eventfd {
                format!(
                    " (target <= {GROWTH_TARGET}: {})",
                    met(ratio <= GROWTH_TARGET)
                )
            } else {
                String::new()
            };
            line(format!(
                "  {:<8} {}th / {}th insert: {ratio:.2}x{target}",
                kind.name(),
                grouped(max as u64),
                grouped(min as u64),
            ));
        }
        let x = &self.at_nr_open;
        line(format!(
            "\nestimated per-insert cost at {} fds (the kernel's per-process ceiling):",
            grouped(NR_OPEN as u64)
        ));
        if let Some(f) = x.luo_fitted_ns {
            line(format!(
                "  luo eventfd  {:>10}  (measured growth per doubling, continued)",
                human(f)
            ));
        }
        line(format!(
            "  luo eventfd  {:>10}  ({:.1} kcmp/insert: one more per doubling)",
            human(x.luo_model_ns),
            x.luo_kcmps
        ));
        line(format!("  linear scan  {:>10}", human(x.linear_ns)));
        s
    }

    pub fn report(&self) -> IndexReport<'_> {
        let o = &self.opts;
        let t = &self.totals;
        let x = &self.at_nr_open;
        let command = std::iter::once("luo-bench".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" ");
        let unix_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let per_insert = self
            .rows
            .iter()
            .map(|r| RowReport {
                size: r.size,
                kind: r.kind.name(),
                luo: r.luo,
                luo_kcmp_per_insert: Num(r.luo_kcmps),
                linear: r.linear,
                linear_over_luo: Num(r.ratio()),
            })
            .collect();
        let growth = self
            .growth()
            .into_iter()
            .map(|(kind, ratio)| {
                let eventfd = kind == Kind::Eventfd;
                GrowthReport {
                    kind: kind.name(),
                    from: o.sizes[0],
                    to: o.sizes[o.sizes.len() - 1],
                    ratio: Num(ratio),
                    target: eventfd.then_some(Num(GROWTH_TARGET)),
                    target_met: eventfd.then_some(ratio <= GROWTH_TARGET),
                }
            })
            .collect();
        IndexReport {
            benchmark: "index",
            command,
            unix_time,
            machine: self.machine.report(),
            window: o.window,
            reps: o.reps,
            statistic: "median of the window of inserts ending at N, pooled over reps",
            kcmp_ns_tight_loop: Num(self.kcmp_ns),
            kcmp_ns_in_scan: Num(self.scan_cmp_ns),
            eventfd_bucket_len: self.eventfd_bucket,
            per_insert,
            total: TotalReport {
                files: TOTAL_FILES,
                kind: "eventfd",
                luo_ms: Num(t.luo_ns / 1e6),
                luo_runs_ms: ms(&t.luo_runs),
                luo_target_ms: Num(TOTAL_TARGET_MS),
                luo_target_met: self.luo_total_met(),
                linear_ms: Num(t.linear_ns / 1e6),
                linear_measured: t.linear_measured,
                linear_over_luo: Num(t.linear_ns / t.luo_ns),
            },
            growth,
            at_nr_open: NrOpenReport {
                fds: NR_OPEN as u64,
                luo_eventfd_ns_fitted: x.luo_fitted_ns.map(Num),
                luo_eventfd_ns_model: Num(x.luo_model_ns),
                luo_eventfd_kcmp_per_insert: Num(x.luo_kcmps),
                linear_ns: Num(x.linear_ns),
            },
        }
    }
}

/// A [`Report`] as JSON.
#[derive(Debug, Serialize)]
pub struct IndexReport<'a> {
    benchmark: &'static str,
    command: String,
    unix_time: u64,
    machine: MachineReport<'a>,
    window: usize,
    reps: usize,
    statistic: &'static str,
    kcmp_ns_tight_loop: Num,
    kcmp_ns_in_scan: Num,
    eventfd_bucket_len: usize,
    per_insert: Vec<RowReport>,
    total: TotalReport,
    growth: Vec<GrowthReport>,
    at_nr_open: NrOpenReport,
}

/// A [`Row`] as JSON.
#[derive(Debug, Serialize)]
pub struct RowReport {
    size: usize,
    kind: &'static str,
    luo: Summary,
    luo_kcmp_per_insert: Num,
    linear: Summary,
    linear_over_luo: Num,
}

/// Indexing 10,000 eventfds both ways.
#[derive(Debug, Serialize)]
pub struct TotalReport {
    files: usize,
    kind: &'static str,
    luo_ms: Num,
    luo_runs_ms: Vec<Num>,
    luo_target_ms: Num,
    luo_target_met: bool,
    linear_ms: Num,
    linear_measured: bool,
    linear_over_luo: Num,
}

/// The growth of the per-insert cost from the smallest size to the largest.
#[derive(Debug, Serialize)]
pub struct GrowthReport {
    kind: &'static str,
    from: usize,
    to: usize,
    ratio: Num,
    target: Option<Num>,
    target_met: Option<bool>,
}

/// The per-insert costs extrapolated to the kernel's fd ceiling.
#[derive(Debug, Serialize)]
pub struct NrOpenReport {
    fds: u64,
    luo_eventfd_ns_fitted: Option<Num>,
    luo_eventfd_ns_model: Num,
    luo_eventfd_kcmp_per_insert: Num,
    linear_ns: Num,
}
