//! `luo-bench soak`: clients of two uids preserve, hand over, retrieve,
//! finish and abort sessions without pause while luod is upgraded in place,
//! killed, its keeper killed, and the emulated update run under them; an
//! invariant checker stops the clients now and then and compares what luod
//! holds with what the clients know they handed over.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use luo::Errno;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::agent::TempDir;
use crate::cli::{positive, Failure};

/// `luo-bench soak --help`'s description.
pub const ABOUT: &str = "\
A soak test of luod. Client processes of two uids (65534 and 61000) each
loop over: create a session, preserve 1-3 memfds of a seeded byte pattern
(up to 64 KiB), then hand it over (or abort it); retrieve a handed-over
session, check every byte, and finish it (or close it unfinished). Under
them, in a seeded random schedule, luod is upgraded in place (same binary),
killed with SIGKILL and started again, its keeper killed with SIGKILL
(luod starts another; luod is not killed until it has), or the emulated
update run. After each such event the clients pause and the checker
compares: every session a client knows it handed over is listed with its
files and owner, nothing aborted or finished is, the keeper holds exactly
one descriptor per file and per session (plus its own), and luod's
descriptors beyond its files and connections stay the same. Retrieved bytes
are checked on every retrieve. Printed at the end: operations, crashes
survived, upgrades, updates, files lost (must be 0) and descriptor counts.
Runs as root (the clients switch uid). Exits 1 when an invariant breaks,
with the end of the operation log.";

/// `luo-bench soak`'s options.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// How long to run, in minutes (fractions too: 0.5)
    #[arg(long, value_name = "N", value_parser = minutes, default_value_t = 10.0)]
    minutes: f64,
    /// Seed of the schedule and of the clients' choices
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Client processes, split between the two uids
    #[arg(long, value_name = "N", value_parser = positive, default_value_t = 4)]
    clients: usize,
    /// Also write the summary as JSON
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// The luod binary (default: next to luo-bench, built if missing)
    #[arg(long, value_name = "PATH")]
    luod: Option<PathBuf>,
}

/// `luo-bench __soak-client`: one client process (run by `soak`).
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    #[arg(long)]
    socket: PathBuf,
    #[arg(long)]
    id: usize,
    #[arg(long)]
    seed: u64,
}

fn minutes(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(m) if m.is_finite() && m > 0.0 => Ok(m),
        _ => Err("a positive number of minutes (fractions allowed)".to_string()),
    }
}

/// The uids the clients run as.
const UIDS: [u32; 2] = [65534, 61000];

// ------------------------------------------------------------------ shared

/// splitmix64: small, seeded, and the same everywhere.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// The bytes of file `seed`: `len` bytes of a seeded stream.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// One preserved file: its token and the pattern it holds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Spec {
    token: u64,
    seed: u64,
    len: usize,
}

/// What a client reports when paused.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Report {
    uid: u32,
    /// Sessions it handed over and has not finished: name, files.
    handed: Vec<(String, u64)>,
    ops: u64,
    created: u64,
    handovers: u64,
    aborts: u64,
    retrieves: u64,
    finishes: u64,
    files_checked: u64,
    bytes_checked: u64,
    /// Operations whose answer was lost (luod killed, or an update made
    /// the handle stale), settled before the report.
    settled: u64,
    /// Files it handed over and found gone or changed (must be 0).
    lost: u64,
}

// ------------------------------------------------------------------ client

/// Errors after which the outcome of a request is not known: luod went
/// away (killed, or the connection died), or the session crossed in an
/// update meanwhile (`ESTALE`).
fn unknown_outcome(e: &luo::Error) -> bool {
    matches!(e.errno, Errno::ECONNRESET | Errno::EPIPE | Errno::ESTALE)
}

fn lost_connection(e: &luo::Error) -> bool {
    unknown_outcome(e) && e.errno != Errno::ESTALE
}

struct Client {
    socket: PathBuf,
    id: usize,
    rng: Rng,
    conn: Option<luo::Client>,
    next: u64,
    handed: BTreeMap<String, Vec<Spec>>,
    /// Sessions whose fate is not known: files preserved for sure, and the
    /// file whose preserve's answer was lost.
    unsure: BTreeMap<String, (Vec<Spec>, Option<Spec>)>,
    report: Report,
    log: VecDeque<String>,
}

/// Why a client stopped: an invariant broke.
struct Broke(String);

impl Client {
    fn note(&mut self, line: String) {
        if self.log.len() == 40 {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }

    fn conn(&mut self) -> Result<&luo::Client, Broke> {
        if self.conn.is_none() {
            let start = Instant::now();
            loop {
                match luo::Client::connect_to(&self.socket) {
                    Ok(c) => {
                        self.conn = Some(c);
                        break;
                    }
                    Err(e) if start.elapsed() > Duration::from_secs(60) => {
                        return Err(Broke(format!("no luod to connect to for 60 s: {e}")));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
        Ok(self.conn.as_ref().expect("connected"))
    }

    /// After an error: a lost connection is dropped (the next request
    /// connects again); any errno that is not about the outcome being
    /// unknown breaks the run.
    fn after(&mut self, what: &str, e: &luo::Error) -> Result<(), Broke> {
        self.note(format!("{what}: {e}"));
        if lost_connection(e) {
            self.conn = None;
        }
        if unknown_outcome(e) {
            Ok(())
        } else {
            Err(Broke(format!("{what}: unexpected {e}")))
        }
    }

    fn step(&mut self) -> Result<(), Broke> {
        self.report.ops += 1;
        let retrieve = !self.handed.is_empty() && (self.handed.len() > 24 || self.rng.chance(45));
        if retrieve {
            self.retrieve_one()
        } else {
            self.new_session()
        }
    }

    fn new_session(&mut self) -> Result<(), Broke> {
        let name = format!("c{}-{}", self.id, self.next);
        self.next += 1;
        let n = 1 + self.rng.below(3);
        let specs: Vec<Spec> = (1..=n)
            .map(|token| Spec {
                token,
                seed: self.rng.next(),
                len: 1 + self.rng.below(65536) as usize,
            })
            .collect();
        let abort = self.rng.chance(15);
        let s = match self.conn()?.create_session(&name) {
            Ok(s) => s,
            Err(e) => {
                self.after(&format!("create {name}"), &e)?;
                self.unsure.insert(name, (Vec::new(), None));
                return Ok(());
            }
        };
        self.report.created += 1;
        let mut sure = Vec::new();
        for spec in &specs {
            let fd = memfd(spec).map_err(|e| Broke(format!("memfd: {e}")))?;
            if let Err(e) = s.preserve(spec.token, fd.as_fd()) {
                self.after(&format!("preserve {name} {}", spec.token), &e)?;
                self.unsure.insert(name, (sure, Some(*spec)));
                return Ok(());
            }
            sure.push(*spec);
        }
        if abort {
            // By name, its handle still open (the handle then goes stale).
            let r = self.conn()?.abort(&name, None);
            drop(s);
            if let Err(e) = r {
                self.after(&format!("abort {name}"), &e)?;
                self.unsure.insert(name, (sure, None));
                return Ok(());
            }
            self.report.aborts += 1;
            self.note(format!("aborted {name}"));
            return Ok(());
        }
        match s.handover() {
            Ok(()) => {
                self.report.handovers += 1;
                self.note(format!("handed over {name} ({} files)", sure.len()));
                self.handed.insert(name, sure);
            }
            Err(e) => {
                self.after(&format!("handover {name}"), &e)?;
                self.unsure.insert(name, (sure, None));
            }
        }
        Ok(())
    }

    fn retrieve_one(&mut self) -> Result<(), Broke> {
        let i = self.rng.below(self.handed.len() as u64) as usize;
        let (name, specs) = self
            .handed
            .iter()
            .nth(i)
            .map(|(n, s)| (n.clone(), s.clone()))
            .expect("a handed-over session");
        let finish = self.rng.chance(80);
        let s = match self.conn()?.retrieve_session(&name) {
            Ok(s) => s,
            Err(e) if e.errno == Errno::ENOENT => {
                self.report.lost += specs.len() as u64;
                return Err(Broke(format!(
                    "LOST: {name} (handed over, {} files) is gone: {e}",
                    specs.len()
                )));
            }
            // Not retrieved, or retrieved by a connection that is gone:
            // still handed over either way.
            Err(e) => return self.after(&format!("retrieve {name}"), &e),
        };
        self.report.retrieves += 1;
        let tokens: Vec<u64> = specs.iter().map(|s| s.token).collect();
        let fds = match s.retrieve_batch(&tokens) {
            Ok(f) => f,
            Err(e) => return self.after(&format!("retrieve files of {name}"), &e),
        };
        for (spec, fd) in specs.iter().zip(&fds) {
            self.check(&name, spec, fd)?;
        }
        if !finish {
            // Closed unfinished: it waits again.
            self.note(format!("retrieved {name}, closed unfinished"));
            return Ok(());
        }
        match s.finish() {
            Ok(()) => {
                self.report.finishes += 1;
                self.note(format!("finished {name}"));
                self.handed.remove(&name);
            }
            Err(e) => {
                self.after(&format!("finish {name}"), &e)?;
                self.handed.remove(&name);
                self.unsure.insert(name, (specs, None));
            }
        }
        Ok(())
    }

    fn check(&mut self, name: &str, spec: &Spec, fd: &impl AsFd) -> Result<(), Broke> {
        let f = std::fs::File::from(
            fd.as_fd()
                .try_clone_to_owned()
                .map_err(|e| Broke(format!("dup: {e}")))?,
        );
        let size = f.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        let mut got = vec![0u8; spec.len];
        let ok = size == spec.len as u64
            && f.read_exact_at(&mut got, 0).is_ok()
            && got == pattern(spec.seed, spec.len);
        if !ok {
            self.report.lost += 1;
            return Err(Broke(format!(
                "CORRUPT: {name} token {}: {size} bytes, not the {} bytes preserved",
                spec.token, spec.len
            )));
        }
        self.report.files_checked += 1;
        self.report.bytes_checked += spec.len as u64;
        Ok(())
    }

    /// Settles every session whose fate is unknown: when it exists, the
    /// files surely preserved are in it with their bytes (the one whose
    /// answer was lost may be), and it is finished.
    fn settle(&mut self) -> Result<(), Broke> {
        let start = Instant::now();
        while let Some((name, (sure, maybe))) = self.unsure.pop_first() {
            if start.elapsed() > Duration::from_secs(60) {
                return Err(Broke("settling unknown outcomes took over 60 s".into()));
            }
            let s = match self.conn()?.retrieve_session(&name) {
                Ok(s) => s,
                Err(e) if e.errno == Errno::ENOENT => {
                    self.note(format!("settled {name}: gone"));
                    self.report.settled += 1;
                    continue;
                }
                Err(e) => {
                    self.after(&format!("settle: retrieve {name}"), &e)?;
                    self.unsure.insert(name, (sure, maybe));
                    continue;
                }
            };
            let mut again = false;
            for spec in &sure {
                match s.retrieve_fd(spec.token) {
                    Ok(fd) => self.check(&name, spec, &fd)?,
                    Err(e) if unknown_outcome(&e) => {
                        self.after(&format!("settle: retrieve {name}"), &e)?;
                        again = true;
                        break;
                    }
                    Err(e) => {
                        self.report.lost += 1;
                        return Err(Broke(format!(
                            "LOST: {name} came back without token {} it surely held: {e}",
                            spec.token
                        )));
                    }
                }
            }
            if let (Some(spec), false) = (maybe, again) {
                if let Ok(fd) = s.retrieve_fd(spec.token) {
                    self.check(&name, &spec, &fd)?;
                }
            }
            if !again {
                if let Err(e) = s.finish() {
                    self.after(&format!("settle: finish {name}"), &e)?;
                    again = true;
                }
            }
            if again {
                self.unsure.insert(name, (sure, maybe));
            } else {
                self.note(format!("settled {name}: was there, finished"));
                self.report.settled += 1;
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Report {
        Report {
            uid: luo_sys::geteuid(),
            handed: self
                .handed
                .iter()
                .map(|(n, s)| (n.clone(), s.len() as u64))
                .collect(),
            ..self.report.clone_counts()
        }
    }

    /// At the end: every session still handed over retrieved, checked and
    /// finished.
    fn drain(&mut self) -> Result<(), Broke> {
        let names: Vec<String> = self.handed.keys().cloned().collect();
        for name in names {
            let specs = self.handed.remove(&name).expect("listed");
            self.unsure.insert(name, (specs, None));
        }
        self.settle()
    }
}

impl Report {
    fn clone_counts(&self) -> Report {
        Report {
            uid: self.uid,
            handed: Vec::new(),
            ..*self
        }
    }
}

fn memfd(spec: &Spec) -> std::io::Result<std::os::fd::OwnedFd> {
    let f = std::fs::File::from(luo_sys::memfd_create("soak", 0)?);
    f.write_all_at(&pattern(spec.seed, spec.len), 0)?;
    Ok(f.into())
}

/// The client process: reads `run`, `pause` and `quit` on stdin; answers
/// `pause` and `quit` with `state JSON`, and stops with `broke MESSAGE`
/// (then its log, one `log` line each) when an invariant breaks.
pub fn client_main(a: ClientArgs) -> Result<(), Failure> {
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut c = Client {
        socket: a.socket,
        id: a.id,
        rng: Rng(a.seed),
        conn: None,
        next: 0,
        handed: BTreeMap::new(),
        unsure: BTreeMap::new(),
        report: Report::default(),
        log: VecDeque::new(),
    };
    let out = std::io::stdout();
    let say = |line: String| {
        let mut o = out.lock();
        let _ = writeln!(o, "{line}");
        let _ = o.flush();
    };
    let mut running = false;
    let result = loop {
        let cmd = if running {
            match rx.try_recv() {
                Ok(c) => Some(c),
                Err(std::sync::mpsc::TryRecvError::Empty) => None,
                Err(_) => return Ok(()),
            }
        } else {
            match rx.recv() {
                Ok(c) => Some(c),
                Err(_) => return Ok(()),
            }
        };
        match cmd.as_deref() {
            Some("run") => running = true,
            Some("pause") => {
                running = false;
                if let Err(b) = c.settle() {
                    break Err(b);
                }
                say(format!("state {}", json!(c.snapshot())));
            }
            Some("quit") => {
                if let Err(b) = c.drain() {
                    break Err(b);
                }
                say(format!("state {}", json!(c.snapshot())));
                break Ok(());
            }
            _ => {}
        }
        if running {
            if let Err(b) = c.step() {
                break Err(b);
            }
        }
    };
    if let Err(Broke(msg)) = result {
        say(format!(
            "broke client {} (uid {}): {msg}",
            c.id,
            luo_sys::geteuid()
        ));
        for l in &c.log {
            say(format!("log client {}: {l}", c.id));
        }
        say(format!("final {}", json!(c.snapshot())));
        return Err(Failure::run(msg));
    }
    Ok(())
}

// ------------------------------------------------------------ orchestrator

/// A client process and its pipes.
struct Proc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    fn send(&mut self, cmd: &str) -> Result<(), String> {
        writeln!(self.stdin, "{cmd}").map_err(|e| format!("telling a client {cmd}: {e}"))
    }

    /// The answer to `pause`/`quit`; else what broke (and the client's
    /// last counts, when it could say).
    fn state(&mut self) -> Result<Report, (Option<Box<Report>>, String)> {
        let mut broke = Vec::new();
        loop {
            let mut line = String::new();
            match self.stdout.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    if broke.is_empty() {
                        broke.push("a client exited".to_string());
                    }
                    return Err((None, broke.join("\n")));
                }
                Ok(_) => {}
            }
            let line = line.trim_end();
            if let Some(j) = line.strip_prefix("state ") {
                return serde_json::from_str(j)
                    .map_err(|e| (None, format!("a client's state: {e}")));
            }
            if let Some(j) = line.strip_prefix("final ") {
                return Err((serde_json::from_str(j).ok().map(Box::new), broke.join("\n")));
            }
            broke.push(line.to_string());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// luod on the soak's socket.
struct Luod {
    bin: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    child: Child,
}

impl Luod {
    fn start(bin: &Path, dir: &Path) -> Result<Luod, String> {
        let socket = dir.join("luod.sock");
        let log = dir.join("luod.log");
        let child = Luod::spawn(bin, &socket, &log)?;
        let l = Luod {
            bin: bin.to_path_buf(),
            socket,
            log,
            child,
        };
        l.wait_ready()?;
        Ok(l)
    }

    fn spawn(bin: &Path, socket: &Path, log: &Path) -> Result<Child, String> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        Command::new(bin)
            .arg("--socket")
            .arg(socket)
            .args(["--keeper", "auto", "--log-level", "warn"])
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))
    }

    fn wait_ready(&self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Ok(c) = luo::Client::connect_to(&self.socket) {
                if c.status().is_ok() {
                    return Ok(());
                }
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err("luod did not answer within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn client(&self) -> Result<luo::Client, String> {
        luo::Client::connect_to(&self.socket).map_err(|e| format!("connecting to luod: {e}"))
    }

    fn status(&self) -> Result<luo::Status, String> {
        self.client()?
            .status()
            .map_err(|e| format!("luod status: {e}"))
    }

    fn keeper(&self) -> Result<u32, String> {
        self.status()?
            .keeper
            .map(|k| k.pid)
            .ok_or_else(|| "luod has no keeper".to_string())
    }

    fn sigkill_and_restart(&mut self) -> Result<(), String> {
        let _ = luo_sys::service::kill(self.child.id() as i32, luo_sys::signal::SIGKILL);
        let _ = self.child.wait();
        self.child = Luod::spawn(&self.bin, &self.socket, &self.log)?;
        self.wait_ready()
    }
}

impl Drop for Luod {
    fn drop(&mut self) {
        let keeper = self.keeper().ok();
        let _ = luo_sys::service::kill(self.child.id() as i32, luo_sys::signal::SIGKILL);
        let _ = self.child.wait();
        if let Some(k) = keeper {
            let _ = luo_sys::service::kill(k as i32, luo_sys::signal::SIGKILL);
        }
    }
}

/// Gone, or a zombie nobody reaped yet.
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A descriptor count once it stops moving (the keeper may still be
/// reading what luod sent it).
fn settled_fds(pid: u32) -> usize {
    let mut last = fd_count(pid);
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(20));
        let now = fd_count(pid);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// The summary.
#[derive(Debug, Default, Serialize)]
struct Summary {
    seed: u64,
    minutes: f64,
    clients: usize,
    uids: Vec<u32>,
    operations: u64,
    sessions_created: u64,
    handovers: u64,
    aborts: u64,
    retrieves: u64,
    finishes: u64,
    files_checked: u64,
    bytes_checked: u64,
    unknown_outcomes_settled: u64,
    luod_killed: u64,
    keeper_killed: u64,
    crashes_survived: u64,
    upgrades: u64,
    updates: u64,
    checks: u64,
    files_lost: u64,
    most_sessions_held: u64,
    most_files_held: u64,
    luod_fds_start: usize,
    luod_fds_end: usize,
    luod_fds_beyond_files_and_connections: usize,
    keeper_fds_empty: usize,
    keeper_fds_end: usize,
    epoch_end: u64,
}

struct Soak {
    luod: Luod,
    clients: Vec<Proc>,
    log: VecDeque<String>,
    sum: Summary,
    /// luod's descriptors beyond its files and connections, first seen.
    luod_overhead: Option<usize>,
    started: Instant,
    /// Each client's counts at its last report.
    last: Vec<Option<Report>>,
}

impl Soak {
    fn note(&mut self, line: String) {
        if self.log.len() == 60 {
            self.log.pop_front();
        }
        let t = self.started.elapsed().as_secs_f64();
        self.log.push_back(format!("{t:9.3}s {line}"));
    }

    /// Tells every client `cmd`; one that broke already says so when its
    /// state is read.
    fn all(&mut self, cmd: &str) {
        for c in &mut self.clients {
            let _ = c.send(cmd);
        }
    }

    /// Every client's state (after `pause` or `quit`); what broke, with the
    /// files the clients found lost counted.
    fn states(&mut self) -> Result<Vec<Report>, String> {
        let mut reports = Vec::new();
        let mut broke = Vec::new();
        for (i, c) in self.clients.iter_mut().enumerate() {
            match c.state() {
                Ok(r) => {
                    self.last[i] = Some(r.clone_counts());
                    reports.push(r);
                }
                Err((r, msg)) => {
                    if let Some(r) = r {
                        self.last[i] = Some(r.clone_counts());
                    }
                    broke.push(msg);
                }
            }
        }
        if broke.is_empty() {
            Ok(reports)
        } else {
            Err(broke.join("\n"))
        }
    }

    /// Pauses the clients and checks every invariant.
    fn check(&mut self, why: &str) -> Result<(), String> {
        self.all("pause");
        let reports = self.states()?;
        self.compare(&reports, why)
    }

    fn compare(&mut self, reports: &[Report], why: &str) -> Result<(), String> {
        self.sum.checks += 1;
        let mut want: BTreeMap<(u32, String), u64> = BTreeMap::new();
        for r in reports {
            for (name, files) in &r.handed {
                want.insert((r.uid, name.clone()), *files);
            }
        }
        let c = self.luod.client()?;
        let listed = c.sessions().map_err(|e| format!("listing sessions: {e}"))?;
        let mut have: BTreeMap<(u32, String), (u64, luo::SessionState)> = BTreeMap::new();
        for s in &listed {
            have.insert(
                (s.owner, s.name_lossy().into_owned()),
                (s.file_count as u64, s.state),
            );
        }
        let mut problems = Vec::new();
        for (k, files) in &want {
            match have.get(k) {
                None => {
                    self.sum.files_lost += files;
                    problems.push(format!(
                        "LOST: session {:?} of uid {} ({files} files) was handed over and is gone",
                        k.1, k.0
                    ));
                }
                Some((n, _)) if n != files => {
                    self.sum.files_lost += files.saturating_sub(*n);
                    problems.push(format!(
                        "session {:?} of uid {} has {n} files, not {files}",
                        k.1, k.0
                    ));
                }
                Some((_, st)) if *st == luo::SessionState::Open => problems.push(format!(
                    "session {:?} of uid {} is open, not handed over",
                    k.1, k.0
                )),
                _ => {}
            }
        }
        for k in have.keys().filter(|k| !want.contains_key(*k)) {
            problems.push(format!(
                "session {:?} of uid {} should be gone (aborted or finished) and is listed",
                k.1, k.0
            ));
        }
        let files: u64 = want.values().sum();
        let sessions = want.len() as u64;
        self.sum.most_files_held = self.sum.most_files_held.max(files);
        self.sum.most_sessions_held = self.sum.most_sessions_held.max(sessions);
        // The keeper: one descriptor per file and per session record.
        let keeper = self.luod.keeper()?;
        let kfds = settled_fds(keeper);
        let kwant = self.sum.keeper_fds_empty + (files + sessions) as usize;
        if kfds != kwant {
            problems.push(format!(
                "the keeper (pid {keeper}) holds {kfds} descriptors, not {kwant} ({} of its own, {files} files, {sessions} session records)",
                self.sum.keeper_fds_empty
            ));
        }
        // luod: its files, its connections (the clients', this one), and
        // a constant rest.
        let st = c.status().map_err(|e| format!("luod status: {e}"))?;
        let lfds = settled_fds(self.luod.child.id());
        let rest = lfds
            .checked_sub((st.files + st.connections) as usize)
            .unwrap_or(usize::MAX);
        match self.luod_overhead {
            None => self.luod_overhead = Some(rest),
            Some(r) if r != rest => problems.push(format!(
                "luod holds {lfds} descriptors: {} beyond its {} files and {} connections, was {r}",
                rest, st.files, st.connections
            )),
            _ => {}
        }
        if st.files != files {
            problems.push(format!(
                "luod says it holds {} files, the clients handed over {files}",
                st.files
            ));
        }
        self.sum.luod_fds_end = lfds;
        self.sum.keeper_fds_end = kfds;
        self.sum.epoch_end = st.epoch;
        self.note(format!(
            "check after {why}: {sessions} sessions, {files} files; luod {lfds} fds, keeper {kfds} fds"
        ));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }

    /// One scheduled event, while the clients run.
    fn event(&mut self, rng: &mut Rng) -> Result<String, String> {
        let r = rng.below(100);
        if r < 25 {
            let c = self.luod.client()?;
            let up = c.upgrade_agent(None).map_err(|e| format!("upgrade: {e}"))?;
            self.sum.upgrades += 1;
            Ok(format!(
                "upgrade in place ({} -> {})",
                up.previous, up.agent
            ))
        } else if r < 50 {
            let pid = self.luod.child.id();
            self.luod.sigkill_and_restart()?;
            self.sum.luod_killed += 1;
            self.sum.crashes_survived += 1;
            Ok(format!(
                "SIGKILL luod (pid {pid}), started again (pid {})",
                self.luod.child.id()
            ))
        } else if r < 70 {
            // luod replaces it at its next change and gives it every file;
            // it is not killed before that (its files would be lost).
            let old = self.luod.keeper()?;
            let _ = luo_sys::service::kill(old as i32, luo_sys::signal::SIGKILL);
            let start = Instant::now();
            loop {
                let st = self.luod.status()?;
                let replaced = st.keeper.as_ref().is_some_and(|k| k.pid != old);
                if replaced && !st.store.contains("failed") {
                    break;
                }
                if start.elapsed() > Duration::from_secs(30) {
                    return Err(format!(
                        "the keeper (pid {old}) was killed and luod did not replace it within 30 s ({})",
                        st.store
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            self.sum.keeper_killed += 1;
            self.sum.crashes_survived += 1;
            Ok(format!(
                "SIGKILL keeper (pid {old}), replaced by pid {}",
                self.luod.keeper()?
            ))
        } else if r < 90 {
            let c = self.luod.client()?;
            let epoch = c.update().map_err(|e| format!("update: {e}"))?;
            self.sum.updates += 1;
            Ok(format!("emulated update, epoch {epoch}"))
        } else {
            Ok("nothing".to_string())
        }
    }
}

/// luod: `--luod`, else the one next to luo-bench (built with Cargo when
/// missing and this runs from a source tree, as the other benchmarks do).
fn luod_binary(given: Option<PathBuf>) -> Result<PathBuf, Failure> {
    match given {
        Some(p) if p.is_file() => Ok(p),
        Some(p) => Err(Failure::usage(format!(
            "--luod {}: no such file",
            p.display()
        ))),
        None => Ok(crate::agent::Programs::locate(None, None)?.luod),
    }
}

pub fn main(o: Options) -> Result<(), Failure> {
    if luo_sys::geteuid() != 0 {
        return Err(Failure::usage(
            "the soak runs as root: its clients switch to uids 65534 and 61000",
        ));
    }
    let bin = luod_binary(o.luod.clone())?;
    let dir = TempDir::new("soak")?;
    // Both uids must reach the socket and run the client.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755))?;
    let exe = dir.0.join("luo-bench");
    std::fs::copy(std::env::current_exe()?, &exe)?;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))?;
    let luod = Luod::start(&bin, &dir.0).map_err(Failure::run)?;
    let keeper = luod.keeper().map_err(Failure::run)?;
    let mut soak = Soak {
        sum: Summary {
            seed: o.seed,
            minutes: o.minutes,
            clients: o.clients,
            uids: UIDS.to_vec(),
            luod_fds_start: settled_fds(luod.child.id()),
            keeper_fds_empty: settled_fds(keeper),
            ..Summary::default()
        },
        luod,
        clients: Vec::new(),
        log: VecDeque::new(),
        luod_overhead: None,
        started: Instant::now(),
        last: (0..o.clients).map(|_| None).collect(),
    };
    let mut rng = Rng(o.seed);
    for id in 0..o.clients {
        let uid = UIDS[id % UIDS.len()];
        let mut child = Command::new(&exe)
            .arg("__soak-client")
            .arg("--socket")
            .arg(&soak.luod.socket)
            .args(["--id", &id.to_string(), "--seed", &rng.next().to_string()])
            .uid(uid)
            .gid(uid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| Failure::run(format!("starting a client as uid {uid}: {e}")))?;
        soak.clients.push(Proc {
            stdin: child.stdin.take().expect("piped"),
            stdout: BufReader::new(child.stdout.take().expect("piped")),
            child,
        });
    }
    let end = Instant::now() + Duration::from_secs_f64(o.minutes * 60.0);
    let result = run(&mut soak, &mut rng, end);
    let (ok, why) = match result {
        Ok(()) => (true, String::new()),
        Err(e) => (false, e),
    };
    for r in soak.last.iter().flatten() {
        let s = &mut soak.sum;
        s.operations += r.ops;
        s.sessions_created += r.created;
        s.handovers += r.handovers;
        s.aborts += r.aborts;
        s.retrieves += r.retrieves;
        s.finishes += r.finishes;
        s.files_checked += r.files_checked;
        s.bytes_checked += r.bytes_checked;
        s.unknown_outcomes_settled += r.settled;
        s.files_lost += r.lost;
    }
    soak.sum.luod_fds_beyond_files_and_connections = soak.luod_overhead.unwrap_or(0);
    print_summary(&soak.sum);
    if let Some(path) = &o.json {
        let v = json!({"benchmark": "soak", "ok": ok, "summary": &soak.sum});
        std::fs::write(path, format!("{v:#}\n"))
            .map_err(|e| Failure::run(format!("writing {}: {e}", path.display())))?;
    }
    if ok {
        return Ok(());
    }
    eprintln!("invariant broken: {why}");
    eprintln!("operation log (last {} events):", soak.log.len());
    for l in &soak.log {
        eprintln!("  {l}");
    }
    let log = std::fs::read_to_string(&soak.luod.log).unwrap_or_default();
    let _ = std::fs::copy(
        &soak.luod.log,
        std::env::temp_dir().join("luo-bench-soak-failed-luod.log"),
    );
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    eprintln!("luod's log (last {} lines):", tail.len());
    for l in tail.iter().rev() {
        eprintln!("  {l}");
    }
    Err(Failure::run("an invariant broke"))
}

fn run(soak: &mut Soak, rng: &mut Rng, end: Instant) -> Result<(), String> {
    soak.check("start")?;
    while Instant::now() < end {
        soak.all("run");
        std::thread::sleep(rng.millis(200, 1200));
        let what = soak.event(rng)?;
        soak.note(what.clone());
        std::thread::sleep(rng.millis(100, 600));
        soak.check(&what)?;
    }
    // The end: every client takes back and finishes what it handed over.
    soak.all("quit");
    soak.states()?;
    for c in &mut soak.clients {
        let _ = c.child.wait();
    }
    soak.check_empty()
}

impl Soak {
    /// After the clients finished everything: nothing listed, luod's
    /// descriptors back to its start, the keeper's to an empty keeper's.
    fn check_empty(&mut self) -> Result<(), String> {
        self.compare(&[], "the end")?;
        let lfds = settled_fds(self.luod.child.id());
        // Counted by a fresh connection (the checker's), as at the start.
        if lfds != self.sum.luod_fds_start {
            return Err(format!(
                "luod holds {lfds} descriptors with nothing in custody, {} at the start",
                self.sum.luod_fds_start
            ));
        }
        // Stopped with nothing to keep, luod lets its keeper go.
        let keeper = self.luod.keeper()?;
        let _ = luo_sys::service::kill(self.luod.child.id() as i32, luo_sys::signal::SIGTERM);
        let _ = self.luod.child.wait();
        let start = Instant::now();
        while !exited(keeper) {
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "the keeper (pid {keeper}) did not exit within 30 s of luod stopping with nothing to keep"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

fn print_summary(s: &Summary) {
    println!(
        "soak: {:.2} min, seed {}, {} clients (uids {:?})",
        s.minutes, s.seed, s.clients, s.uids
    );
    println!(
        "  operations        {} (sessions created {}, handed over {}, aborted {}, retrieved {}, finished {})",
        s.operations, s.sessions_created, s.handovers, s.aborts, s.retrieves, s.finishes
    );
    println!(
        "  bytes checked     {} files, {} bytes; {} unknown outcomes settled",
        s.files_checked, s.bytes_checked, s.unknown_outcomes_settled
    );
    println!(
        "  crashes survived  {} (luod SIGKILLed {}, keeper SIGKILLed {})",
        s.crashes_survived, s.luod_killed, s.keeper_killed
    );
    println!(
        "  upgrades          {}; emulated updates {} (epoch {})",
        s.upgrades, s.updates, s.epoch_end
    );
    println!(
        "  checks            {}; most held at a check: {} sessions, {} files",
        s.checks, s.most_sessions_held, s.most_files_held
    );
    println!("  files lost        {}", s.files_lost);
    println!(
        "  descriptors       luod {} at start, {} at end ({} beyond files and connections at every check); keeper {} empty, {} at end",
        s.luod_fds_start,
        s.luod_fds_end,
        s.luod_fds_beyond_files_and_connections,
        s.keeper_fds_empty,
        s.keeper_fds_end
    );
}
