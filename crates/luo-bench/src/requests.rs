//! `luo-bench requests`: what one request costs, and whether it grows with
//! the session, side by side with its floor: a bare `SOCK_SEQPACKET`
//! request and reply between two processes, with one descriptor attached
//! and a message of the same size, and (for luod's keeper) the same
//! exchange whose peer checks the file and sends it to a mirror before it
//! replies. The same 16,000 memfds are preserved one request at a time
//! through the native client (`Session::preserve`) and through
//! `libluo_preload.so` (`LIVEUPDATE_SESSION_PRESERVE_FD`, as a program
//! written for the kernel's uAPI does it), with luod's keeper on and off.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::agent::{locate_luod, Agent};
use crate::cli::{positive, sorted, Failure, Keeper};
use crate::fds::Peer;
use crate::machine::Machine;
use crate::report::{write_json, Num};
use crate::stats::{grouped, Summary};

/// `luo-bench requests --help`'s description.
pub const ABOUT: &str = "\
Preserves N memfds in one session, one request each, three ways in one run:
a bare SOCK_SEQPACKET request and reply between two processes with one
descriptor attached and a message of the same size (the floor: the peer
receives, closes the descriptor and replies); luod through the native client
(Session::preserve); and luod through libluo_preload.so, as a program written
for the kernel's uAPI does it (open(\"/dev/liveupdate\"), CREATE_SESSION, then
one PRESERVE_FD ioctl per memfd). luod runs with its keeper on and off.
Two more floors: the same exchange whose peer checks the file (F_GETFL,
fstat) and keeps it, as luod keeps its custody copy (the floor of any
agent; each luod way is also given to it), and, with the keeper on, one
whose peer also sends it to a mirror process before replying (the floor of
an agent that answers only once a crash could not lose the file: luod does
so for a persistent session; a plain open session, which no restarted
agent takes back, goes to the keeper in full messages of 253).
Each figure: the median of the W requests up to that size, over R rounds.
Targets: each way at most 1.5x the (bare) floor, and the last size's request
at most 1.2x the first's. The per-request cost is also extrapolated to
1,000,000 files.";

/// A request through luod may cost at most this times the floor.
const TARGET_FLOOR: f64 = 1.5;
/// The last size's request may cost at most this times the first's.
const TARGET_GROWTH: f64 = 1.2;
/// The size the per-request cost is extrapolated to.
const MILLION: f64 = 1_000_000.0;

/// `luo-bench requests`'s options.
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
        default_values_t = [1000, 4000, 16000]
    )]
    at: Vec<usize>,
    /// Requests per reported median
    #[arg(long, value_name = "W", value_parser = positive, default_value_t = 200)]
    window: usize,
    /// Rounds per way and keeper setting (each a new session)
    #[arg(long, value_name = "R", value_parser = positive, default_value_t = 3)]
    rounds: usize,
    /// luod's keeper settings to run
    #[arg(
        long,
        value_name = "on,off",
        value_delimiter = ',',
        value_enum,
        default_values_t = [Keeper::On, Keeper::Off]
    )]
    keeper: Vec<Keeper>,
    /// Also write the results as JSON
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// The luod binary (default: next to luo-bench, built if missing)
    #[arg(long, value_name = "PATH")]
    luod: Option<PathBuf>,
    /// libluo_preload.so (default: next to luo-bench; build it with
    /// `cargo build --release -p luo-preload`)
    #[arg(long, value_name = "PATH")]
    preload: Option<PathBuf>,
}

/// The request a native `preserve` of one file sends (its size is what the
/// floor's messages have).
fn preserve_request(token: u64) -> Vec<u8> {
    let p = luo_proto::ops::Preserve {
        tokens: vec![token],
    };
    luo_proto::encode_request(&p, 1).expect("one token fits")
}

fn preserve_reply() -> Vec<u8> {
    luo_proto::encode_reply(&luo_proto::ops::Preserved { preserved: 1 }, 0).expect("small")
}

/// What the floor's peer does with each file before it replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Floor {
    /// Closes it: the bare exchange.
    Bare,
    /// Checks it as an agent must (`F_GETFL`, `fstat`) and keeps it, as
    /// luod keeps its custody copy: the floor of any agent.
    Checked,
    /// Checks it, sends it to a mirror process and keeps it: the floor of
    /// an agent that answers only once a crash could not lose the file.
    Mirrored,
}

/// The other process of the floor: receives a request and its descriptor,
/// does with the file what `floor` says and replies, until the socket (its
/// stdin) closes.
pub fn peer(floor: Floor) -> Result<(), Failure> {
    let stdin = std::io::stdin();
    let sock = stdin.as_fd();
    let reply = preserve_reply();
    if floor != Floor::Bare {
        luo_sys::raise_nofile_limit()?;
    }
    let mirror = if floor == Floor::Mirrored {
        Some(Peer::spawn()?)
    } else {
        None
    };
    let mut held: Vec<OwnedFd> = Vec::new();
    let mut buf = vec![0u8; luo_proto::MAX_MESSAGE];
    loop {
        let got = luo_sys::recv_with_fds(sock, &mut buf, 1)?;
        if got.len == 0 {
            return Ok(());
        }
        if floor != Floor::Bare {
            for fd in got.fds {
                crate::floor::check(fd.as_fd()).map_err(Failure::run)?;
                if let Some(m) = &mirror {
                    let token = held.len() as u64;
                    let hold = crate::floor::message(crate::floor::MIRROR_HOLD, [token]);
                    luo_sys::send_with_fds(m.sock(), &hold, &[fd.as_fd()])?;
                }
                held.push(fd);
            }
        }
        luo_sys::send_with_fds(sock, &reply, &[])?;
    }
}

/// `n` request/reply exchanges with the peer, each with a new memfd
/// attached (made before the clock starts, as for luod); the peer does with
/// each file what `floor` says.
fn floor_round(n: usize, floor: Floor) -> Result<Vec<Duration>, Failure> {
    let (ours, theirs) = luo_sys::socketpair(luo_sys::sock::SOCK_SEQPACKET)?;
    let mode = clap::ValueEnum::to_possible_value(&floor).expect("not skipped");
    let mut child = Command::new(std::env::current_exe()?)
        .args(["__request-peer", "--floor", mode.get_name()])
        .stdin(Stdio::from(theirs))
        .spawn()?;
    let result = floor_exchanges(ours.as_fd(), n);
    drop(ours);
    let _ = child.wait();
    result
}

fn floor_exchanges(sock: BorrowedFd<'_>, n: usize) -> Result<Vec<Duration>, Failure> {
    let req = preserve_request(n as u64);
    let mut buf = vec![0u8; luo_proto::MAX_MESSAGE];
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let fd: OwnedFd = luo_sys::memfd_create("luo-bench", 0)?;
        let t = Instant::now();
        luo_sys::send_with_fds(sock, &req, &[fd.as_fd()])?;
        let got = luo_sys::recv_with_fds(sock, &mut buf, 1)?;
        times.push(t.elapsed());
        if got.len == 0 {
            return Err(Failure::run("the request peer hung up"));
        }
    }
    Ok(times)
}

/// `n` files preserved one `Session::preserve` at a time in a new session
/// `name`, which is aborted afterwards (luod and its keeper let go).
pub(crate) fn native_round(agent: &Agent, n: usize, name: &str) -> Result<Vec<Duration>, Failure> {
    let run = |e: luo::Error| Failure::run(format!("luod: {e}"));
    let client = agent.client()?;
    let session = client.create_session(name).map_err(run)?;
    let mut times = Vec::with_capacity(n);
    for token in 0..n as u64 {
        let fd: OwnedFd = luo_sys::memfd_create("luo-bench", 0)?;
        let t = Instant::now();
        session.preserve(token, &fd).map_err(run)?;
        times.push(t.elapsed());
    }
    let held = client.status().map_err(run)?.files;
    if held != n as u64 {
        return Err(Failure::run(format!("luod holds {held} files, not {n}")));
    }
    // Closing the session aborts it.
    drop(session);
    Ok(times)
}

/// The program of the preload way, run by `luo-bench` itself under
/// `LD_PRELOAD`: opens the device, creates session `name` and preserves
/// `n` memfds one `PRESERVE_FD` ioctl each; prints each ioctl's time in
/// nanoseconds, one a line.
pub fn preload_client(n: usize, name: &str) -> Result<(), Failure> {
    use std::io::Write;
    // std's open goes through libc's `open64`, which the library answers
    // for this path (luo_sys's own open is a raw system call).
    let dev: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(luo_sys::liveupdate::DEVICE)
        .map_err(|e| Failure::run(format!("opening {}: {e}", luo_sys::liveupdate::DEVICE)))?
        .into();
    let session = luo_sys::liveupdate::create_session(dev.as_fd(), name.as_bytes())
        .map_err(|e| Failure::run(format!("LIVEUPDATE_IOCTL_CREATE_SESSION: {e}")))?;
    let mut times = Vec::with_capacity(n);
    for token in 0..n as u64 {
        let fd: OwnedFd = luo_sys::memfd_create("luo-bench", 0)?;
        let t = Instant::now();
        luo_sys::liveupdate::preserve_fd(session.as_fd(), fd.as_fd(), token).map_err(|e| {
            Failure::run(format!(
                "LIVEUPDATE_SESSION_PRESERVE_FD of token {token}: {e}"
            ))
        })?;
        times.push(t.elapsed());
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for t in times {
        writeln!(out, "{}", t.as_nanos())?;
    }
    out.flush()?;
    Ok(())
}

/// Runs [`preload_client`] under `LD_PRELOAD=lib` against `agent`.
fn preload_round(
    agent: &Agent,
    lib: &Path,
    n: usize,
    name: &str,
) -> Result<Vec<Duration>, Failure> {
    let mut child: Child = Command::new(std::env::current_exe()?)
        .args(["__preload-client", &n.to_string(), name])
        .env("LD_PRELOAD", lib)
        .env("LUOD_SOCKET", &agent.socket)
        .env("LUO_PRELOAD_DEBUG", "1")
        .stdout(Stdio::piped())
        .spawn()?;
    let out = child.stdout.take().expect("piped");
    let mut times = Vec::with_capacity(n);
    for line in BufReader::new(out).lines() {
        let ns: u64 = line?
            .trim()
            .parse()
            .map_err(|_| Failure::run("the preload client printed something else"))?;
        times.push(Duration::from_nanos(ns));
    }
    let status = child.wait()?;
    if !status.success() || times.len() != n {
        return Err(Failure::run(format!(
            "the preload client failed ({status}) after {} of {n} requests",
            times.len()
        )));
    }
    Ok(times)
}

/// Waits until luod let go of the last round's files (an aborted session
/// closes them after the client's close) and its keeper, which drops its
/// copies after luod, is idle again, so that rounds do not overlap.
pub(crate) fn settle(agent: &Agent, keeper: Option<u32>) -> Result<(), Failure> {
    let client = agent.client()?;
    let t = Instant::now();
    loop {
        let files = client
            .status()
            .map_err(|e| Failure::run(format!("luod: {e}")))?
            .files;
        if files == 0 {
            break;
        }
        if t.elapsed() > Duration::from_secs(30) {
            return Err(Failure::run(format!(
                "luod still holds {files} files of an aborted session"
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Some(pid) = keeper {
        wait_idle(pid);
    }
    Ok(())
}

/// Waits (at most 30 s) until process `pid` is idle: no CPU time used over
/// 20 ms.
pub(crate) fn wait_idle(pid: u32) {
    let t = Instant::now();
    let cpu = || {
        std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
    };
    let mut last = cpu();
    while t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
        let now = cpu();
        if now == last {
            return;
        }
        last = now;
    }
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

/// One way of making the requests, and its figures at each size.
struct Row {
    way: &'static str,
    keeper: Option<bool>,
    at: Vec<(usize, Summary)>,
}

impl Row {
    fn median(&self, i: usize) -> f64 {
        self.at[i].1.median_ns
    }
    fn growth(&self) -> f64 {
        self.median(self.at.len() - 1) / self.median(0)
    }
    /// The per-request cost at 1,000,000 files, the line through the first
    /// and the last size continued (no growth: the last size's cost).
    fn at_million(&self) -> f64 {
        let (n0, n1) = (self.at[0].0 as f64, self.at[self.at.len() - 1].0 as f64);
        let (c0, c1) = (self.median(0), self.median(self.at.len() - 1));
        let slope = ((c1 - c0) / (n1 - n0)).max(0.0);
        c1 + slope * (MILLION - n1)
    }
    /// Seconds for 1,000,000 files preserved one request at a time, on
    /// that line.
    fn million_total_s(&self) -> f64 {
        let (n0, n1) = (self.at[0].0 as f64, self.at[self.at.len() - 1].0 as f64);
        let (c0, c1) = (self.median(0), self.median(self.at.len() - 1));
        let slope = ((c1 - c0) / (n1 - n0)).max(0.0);
        // The sum over k of c0 + slope (k - n0), k = 1..=1e6.
        (MILLION * c0 + slope * (MILLION * (MILLION + 1.0) / 2.0 - MILLION * n0)) / 1e9
    }
    fn label(&self) -> String {
        match self.keeper {
            None => self.way.to_string(),
            Some(k) => format!("{}, keeper {}", self.way, if k { "on" } else { "off" }),
        }
    }
}

#[derive(Serialize)]
struct AtReport {
    files: usize,
    request: Summary,
    #[serde(rename = "to_floor")]
    ratio: Num,
    /// A luod way: to the floor whose peer checks and keeps each file.
    #[serde(skip_serializing_if = "Option::is_none")]
    to_checked_floor: Option<Num>,
}

/// The floor whose peer checks and keeps each file.
const CHECKED: &str = "SOCK_SEQPACKET + checks";
/// The floor whose peer relays each file to a mirror before replying.
const MIRRORED: &str = "SOCK_SEQPACKET + mirror";

/// How many rounds each floor ran.
#[derive(Clone, Copy)]
struct Rounds {
    floor: usize,
    mirrored: usize,
}

#[derive(Serialize)]
struct RowReport {
    way: &'static str,
    keeper: Option<bool>,
    at: Vec<AtReport>,
    last_to_first: Num,
    request_at_million_ns: Num,
    million_one_at_a_time_s: Num,
}

#[derive(Serialize)]
struct RequestsReport {
    machine: String,
    files: usize,
    window: usize,
    rounds: usize,
    rows: Vec<RowReport>,
}

pub fn main(mut o: Options) -> Result<(), Failure> {
    let machine = crate::mirror::setup(&mut o.at, o.files)?;
    let exe = std::env::current_exe()?;
    let lib = o.preload.clone().unwrap_or_else(|| {
        exe.parent()
            .unwrap_or(Path::new("."))
            .join("libluo_preload.so")
    });
    if !lib.is_file() {
        return Err(Failure::run(format!(
            "{} is missing: build it with `cargo build --release -p luo-preload`, or pass --preload PATH",
            lib.display()
        )));
    }
    eprintln!("machine: {}", machine.describe());
    let luod = locate_luod(o.luod.clone())?;
    let keepers = sorted(o.keeper.clone());
    let (mut floor, mut checked, mut mirrored) = (Vec::new(), Vec::new(), Vec::new());
    let mut rows = Vec::new();
    for &setting in &keepers {
        let keeper = setting.is_on();
        let args = ["--log-level", "warn", "--keeper", setting.luod_arg()];
        let agent = Agent::start_args(&luod, "requests", &args)?;
        let keeper_pid = agent.keeper_pid();
        if keeper && keeper_pid.is_none() {
            return Err(Failure::run("luod started no keeper"));
        }
        settle(&agent, keeper_pid)?;
        let (mut native, mut preload) = (Vec::new(), Vec::new());
        for round in 0..o.rounds {
            eprintln!(
                "{} requests, keeper {}, round {} of {}: floor, checking floor{}, native, preload ...",
                grouped(o.files as u64),
                if keeper { "on" } else { "off" },
                round + 1,
                o.rounds,
                if keeper { ", floor with a mirror" } else { "" }
            );
            // The ways in turn, so that each sees the same load.
            floor.push(floor_round(o.files, Floor::Bare)?);
            checked.push(floor_round(o.files, Floor::Checked)?);
            if keeper {
                mirrored.push(floor_round(o.files, Floor::Mirrored)?);
            }
            native.push(native_round(
                &agent,
                o.files,
                &format!("native-{keeper}-{round}"),
            )?);
            settle(&agent, keeper_pid)?;
            preload.push(preload_round(
                &agent,
                &lib,
                o.files,
                &format!("preload-{keeper}-{round}"),
            )?);
            settle(&agent, keeper_pid)?;
        }
        let row = |way, times: &[Vec<Duration>]| Row {
            way,
            keeper: Some(keeper),
            at: o
                .at
                .iter()
                .map(|&n| (n, at_size(times, n, o.window)))
                .collect(),
        };
        rows.push(row("native client", &native));
        rows.push(row("libluo_preload.so", &preload));
    }
    let floor_row = |way, times: &[Vec<Duration>]| Row {
        way,
        keeper: None,
        at: o
            .at
            .iter()
            .map(|&n| (n, at_size(times, n, o.window)))
            .collect(),
    };
    let floors = 2 + usize::from(!mirrored.is_empty());
    if !mirrored.is_empty() {
        rows.insert(0, floor_row(MIRRORED, &mirrored));
    }
    rows.insert(0, floor_row(CHECKED, &checked));
    rows.insert(0, floor_row("bare SOCK_SEQPACKET", &floor));
    let rounds = Rounds {
        floor: floor.len(),
        mirrored: mirrored.len(),
    };
    print_table(&o, &machine, &rows, floors, rounds);
    if let Some(path) = &o.json {
        let base = &rows[0];
        let checked = rows.iter().find(|r| r.way == CHECKED).expect("always run");
        let v = RequestsReport {
            machine: machine.describe(),
            files: o.files,
            window: o.window,
            rounds: o.rounds,
            rows: rows
                .iter()
                .map(|r| RowReport {
                    way: r.way,
                    keeper: r.keeper,
                    at: r
                        .at
                        .iter()
                        .enumerate()
                        .map(|(i, &(files, request))| AtReport {
                            files,
                            request,
                            ratio: Num(request.median_ns / base.median(i)),
                            to_checked_floor: r
                                .keeper
                                .map(|_| Num(request.median_ns / checked.median(i))),
                        })
                        .collect(),
                    last_to_first: Num(r.growth()),
                    request_at_million_ns: Num(r.at_million()),
                    million_one_at_a_time_s: Num(r.million_total_s()),
                })
                .collect(),
        };
        write_json(path, &v)?;
    }
    Ok(())
}

fn print_table(o: &Options, machine: &Machine, rows: &[Row], floors: usize, rounds: Rounds) {
    let us = |ns: f64| format!("{:.1} us", ns / 1e3);
    let base = &rows[0];
    println!("luo-bench requests: one request at a time, against a bare SOCK_SEQPACKET exchange");
    println!("machine: {}", machine.describe());
    println!(
        "each figure: the median of the {} requests up to that size, over {} rounds ({} for the floors{}, measured between luod's rounds); (x): to the bare floor",
        o.window,
        o.rounds,
        rounds.floor,
        if rounds.mirrored > 0 {
            format!(", {} for the floor with a mirror", rounds.mirrored)
        } else {
            String::new()
        }
    );
    println!();
    let mut head = format!("{:>32}", "way");
    for &n in &o.at {
        head.push_str(&format!(
            "  {:>20}",
            format!("request {}", grouped(n as u64))
        ));
    }
    head.push_str(&format!("  {:>10}  {:>12}", "last/first", "at 1,000,000"));
    println!("{head}");
    for r in rows {
        let mut line = format!("{:>32}", r.label());
        for (i, (_, s)) in r.at.iter().enumerate() {
            let cell = format!("{} ({:.2}x)", us(s.median_ns), s.median_ns / base.median(i));
            line.push_str(&format!("  {cell:>20}"));
        }
        line.push_str(&format!(
            "  {:>9.2}x  {:>12}",
            r.growth(),
            us(r.at_million())
        ));
        println!("{line}");
    }
    println!();
    let last = o.at.len() - 1;
    let checked = rows.iter().find(|r| r.way == CHECKED).expect("always run");
    let worst = (0..checked.at.len())
        .map(|i| checked.median(i) / base.median(i))
        .fold(0.0, f64::max);
    println!(
        "{CHECKED}: at most {worst:.2}x the bare floor: what checking and keeping each file costs any agent"
    );
    if let Some(m) = rows.iter().find(|r| r.way == MIRRORED) {
        let worst = (0..m.at.len())
            .map(|i| m.median(i) / base.median(i))
            .fold(0.0, f64::max);
        println!(
            "{MIRRORED}: at most {worst:.2}x the bare floor: what answering only once a mirror has the file costs any agent (luod: for persistent sessions; a plain one is mirrored at its handover)"
        );
    }
    for r in &rows[floors..] {
        let worst = (0..r.at.len())
            .map(|i| r.median(i) / base.median(i))
            .fold(0.0, f64::max);
        let ok = |met: bool| if met { "met" } else { "MISSED" };
        println!(
            "{}: at most {worst:.2}x the floor (target {TARGET_FLOOR}x: {}); request {} costs {:.2}x request {} (target {TARGET_GROWTH}x: {}); 1,000,000 files one at a time: {:.0} s",
            r.label(),
            ok(worst <= TARGET_FLOOR),
            grouped(o.at[last] as u64),
            r.growth(),
            grouped(o.at[0] as u64),
            ok(r.growth() <= TARGET_GROWTH),
            r.million_total_s()
        );
        let to: Vec<String> = (0..r.at.len())
            .map(|i| format!("{:.2}x", r.median(i) / checked.median(i)))
            .collect();
        println!(
            "{}: {} the checking floor, at each size",
            r.label(),
            to.join(", ")
        );
    }
    println!(
        "floor: 1,000,000 exchanges: {:.0} s",
        base.million_total_s()
    );
}
