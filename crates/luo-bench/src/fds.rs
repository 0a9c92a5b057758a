//! Bulk descriptor throughput through a real luod against raw SCM_RIGHTS
//! between two processes (the physical floor) and against the floor agent
//! (the least any checking, mirroring agent does), the agent's memory per
//! preserved descriptor, and its start-up time.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use luo_sys::SCM_MAX_FD;
use serde::Serialize;

use crate::agent::Agent;
use crate::cli::Failure;
use crate::floor::{FloorAgent, FloorClient};
use crate::report::{ms, Fields, Num};
use crate::stats::Summary;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memfd,
    Socket,
    Eventfd,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Memfd, Kind::Socket, Kind::Eventfd];

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Memfd => "memfd",
            Kind::Socket => "socket",
            Kind::Eventfd => "eventfd",
        }
    }

    /// The least fraction of raw SCM_RIGHTS luo's round trip must reach:
    /// memfds 0.25x, sockets 0.2x; none for eventfds, which are for
    /// information (they all share one inode, luo's slowest identity).
    pub fn target(self) -> Option<f64> {
        match self {
            Kind::Memfd => Some(0.25),
            Kind::Socket => Some(0.2),
            Kind::Eventfd => None,
        }
    }

    /// `n` new files: empty memfds, Unix stream socket pairs (both ends),
    /// eventfds.
    fn open(self, n: usize) -> Result<Vec<OwnedFd>, Failure> {
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            match self {
                Kind::Memfd => v.push(luo_sys::memfd_create("luo-bench", 0)?),
                Kind::Eventfd => v.push(luo_sys::eventfd(0)?),
                Kind::Socket => {
                    let (a, b) = luo_sys::socketpair(luo_sys::sock::SOCK_STREAM)?;
                    v.push(a);
                    if v.len() < n {
                        v.push(b);
                    }
                }
            }
        }
        Ok(v)
    }
}

/// CPU time a process has run (`/proc/PID/schedstat`, nanoseconds): how
/// much of a round trip the other side spent. Read while that process waits
/// for us, so the figure is current. (Our own thread's figure would be stale
/// by up to a scheduler tick, so it is not taken: wall minus the other side's
/// is ours and the transport's.)
fn cpu_ns(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One timed step: wall-clock time, and the CPU time the other side used.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phase {
    pub wall: Duration,
    /// The agent (luod), or the raw baseline's peer process.
    pub other_cpu: Duration,
}

impl Phase {
    fn time<T>(
        other_pid: u32,
        f: impl FnOnce() -> Result<T, Failure>,
    ) -> Result<(T, Phase), Failure> {
        let other = format!("/proc/{other_pid}/schedstat");
        let o0 = cpu_ns(&other);
        let t = Instant::now();
        let v = f()?;
        let wall = t.elapsed();
        let o1 = cpu_ns(&other);
        Ok((
            v,
            Phase {
                wall,
                other_cpu: Duration::from_nanos(o1.saturating_sub(o0)),
            },
        ))
    }
}

/// luo's steps, in order.
pub const LUO_PHASES: [&str; 5] = [
    "create_session",
    "preserve",
    "handover",
    "retrieve",
    "finish",
];
/// The raw baseline's: every batch sent (and the last acknowledged), every
/// batch back.
pub const RAW_PHASES: [&str; 2] = ["send", "back"];

/// One round trip of `n` descriptors, by phase.
#[derive(Debug, Clone, Default)]
pub struct Round {
    pub phases: Vec<Phase>,
}

impl Round {
    pub fn total(&self) -> Duration {
        self.phases.iter().map(|p| p.wall).sum()
    }
}

#[derive(Debug)]
pub struct Throughput {
    pub kind: Kind,
    pub n: usize,
    pub luo: Vec<Round>,
    pub raw: Vec<Round>,
    /// The floor agent's rounds (the same steps as luo's).
    pub floor: Vec<Round>,
    /// Whether the floor agent mirrored (iff luod had a keeper).
    pub floor_mirror: bool,
}

fn median(v: impl Iterator<Item = Duration>) -> f64 {
    Summary::of(&v.collect::<Vec<_>>()).median_ns
}

/// A phase's per-fd medians, or the whole round's.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum PhaseCost {
    /// `wall`, and the other side's CPU time.
    Split(Fields<Num>),
    Total(Num),
}

/// Per-fd medians of each phase: wall time and the other side's CPU time.
fn phases_report(
    rounds: &[Round],
    names: &[&'static str],
    n: usize,
    other: &'static str,
) -> Fields<PhaseCost> {
    let per_fd = |d: f64| Num(d / n as f64);
    let mut fields: Vec<(&'static str, PhaseCost)> = names
        .iter()
        .enumerate()
        .map(|(i, &name)| {
            let pick =
                |f: fn(&Phase) -> Duration| per_fd(median(rounds.iter().map(|r| f(&r.phases[i]))));
            (
                name,
                PhaseCost::Split(Fields(vec![
                    ("wall", pick(|p| p.wall)),
                    (other, pick(|p| p.other_cpu)),
                ])),
            )
        })
        .collect();
    fields.push((
        "total_wall",
        PhaseCost::Total(per_fd(median(rounds.iter().map(Round::total)))),
    ));
    Fields(fields)
}

/// A [`Throughput`] in the JSON report.
#[derive(Debug, Serialize)]
pub struct ThroughputReport {
    kind: &'static str,
    fds: usize,
    rounds: usize,
    luo_round_ms: Num,
    raw_round_ms: Num,
    luo_fds_per_s: Num,
    raw_fds_per_s: Num,
    luo_over_raw: Num,
    target: Option<Num>,
    target_met: Option<bool>,
    luo_ns_per_fd: Fields<PhaseCost>,
    raw_ns_per_fd: Fields<PhaseCost>,
    floor_mirror: bool,
    floor_round_ms: Num,
    floor_fds_per_s: Num,
    /// The best a checking, mirroring agent does here, against raw.
    floor_over_raw: Num,
    /// How close luod comes to that floor.
    luo_over_floor: Num,
    floor_ns_per_fd: Fields<PhaseCost>,
}

impl Throughput {
    /// Median nanoseconds of luo's whole round (create to finish).
    pub fn luo_ns(&self) -> f64 {
        median(self.luo.iter().map(Round::total))
    }
    pub fn raw_ns(&self) -> f64 {
        median(self.raw.iter().map(Round::total))
    }
    /// Descriptors per second, both ways counted once (a round trip).
    pub fn luo_rate(&self) -> f64 {
        self.n as f64 / (self.luo_ns() / 1e9)
    }
    pub fn raw_rate(&self) -> f64 {
        self.n as f64 / (self.raw_ns() / 1e9)
    }
    /// luo's throughput as a fraction of raw SCM_RIGHTS.
    pub fn ratio(&self) -> f64 {
        self.raw_ns() / self.luo_ns()
    }
    pub fn floor_ns(&self) -> f64 {
        median(self.floor.iter().map(Round::total))
    }
    pub fn floor_rate(&self) -> f64 {
        self.n as f64 / (self.floor_ns() / 1e9)
    }
    /// The floor agent's throughput as a fraction of raw SCM_RIGHTS.
    pub fn floor_ratio(&self) -> f64 {
        self.raw_ns() / self.floor_ns()
    }
    /// luo's throughput as a fraction of the floor agent's.
    pub fn luo_to_floor(&self) -> f64 {
        self.floor_ns() / self.luo_ns()
    }

    pub fn report(&self) -> ThroughputReport {
        let target = self.kind.target();
        ThroughputReport {
            kind: self.kind.name(),
            fds: self.n,
            rounds: self.luo.len(),
            luo_round_ms: Num(self.luo_ns() / 1e6),
            raw_round_ms: Num(self.raw_ns() / 1e6),
            luo_fds_per_s: Num(self.luo_rate()),
            raw_fds_per_s: Num(self.raw_rate()),
            luo_over_raw: Num(self.ratio()),
            target: target.map(Num),
            target_met: target.map(|t| self.ratio() >= t),
            luo_ns_per_fd: phases_report(&self.luo, &LUO_PHASES, self.n, "agent_cpu"),
            raw_ns_per_fd: phases_report(&self.raw, &RAW_PHASES, self.n, "peer_cpu"),
            floor_mirror: self.floor_mirror,
            floor_round_ms: Num(self.floor_ns() / 1e6),
            floor_fds_per_s: Num(self.floor_rate()),
            floor_over_raw: Num(self.floor_ratio()),
            luo_over_floor: Num(self.luo_to_floor()),
            floor_ns_per_fd: phases_report(&self.floor, &LUO_PHASES, self.n, "agent_cpu"),
        }
    }
}

/// Rounds are added until at least this many fds were timed per kind and count,
const MIN_FDS_TIMED: usize = 16_000;
/// up to this many rounds.
const MAX_ROUNDS: usize = 32;

/// Preserves `n` new files of `kind` in one session, hands it over,
/// retrieves and finishes it. The originals are closed after the preserve,
/// untimed, as a restarting service would: the client then holds `n` and
/// the agent `n`, not twice that.
fn luo_round(agent: &Agent, kind: Kind, n: usize, round: usize) -> Result<Round, Failure> {
    let client = agent.client()?;
    let fds = kind.open(n)?;
    let files: Vec<(u64, BorrowedFd<'_>)> =
        fds.iter().zip(1..).map(|(f, t)| (t, f.as_fd())).collect();
    let tokens: Vec<u64> = (1..=n as u64).collect();
    let name = format!("bench-{}-{n}-{round}", kind.name());
    let run = |e: luo::Error| Failure::run(format!("luod: {e}"));
    // Untimed, as every way's warm-up: luod takes the new connection and
    // its CPU wakes before the clock starts.
    client.status().map_err(run)?;
    let pid = agent.pid();
    let mut r = Round::default();

    let (session, p) = Phase::time(pid, || client.create_session(&name).map_err(run))?;
    r.phases.push(p);
    let ((), p) = Phase::time(pid, || session.preserve_batch(&files).map_err(run))?;
    r.phases.push(p);
    let ((), p) = Phase::time(pid, || session.handover().map_err(run))?;
    r.phases.push(p);
    drop(files);
    drop(fds);
    drop(session);

    let ((session, back), p) = Phase::time(pid, || {
        let session = client.retrieve_session(&name).map_err(run)?;
        let back = session.retrieve_batch(&tokens).map_err(run)?;
        Ok((session, back))
    })?;
    r.phases.push(p);
    let ((), p) = Phase::time(pid, || session.finish().map_err(run))?;
    r.phases.push(p);
    if back.len() != n {
        return Err(Failure::run(format!(
            "luod returned {} of {n} fds",
            back.len()
        )));
    }
    Ok(r)
}

/// `(st_dev, st_ino)` of each file: what a round trip must give back, in
/// order (eventfds share one inode, so for them only the kind is checked).
fn identities(fds: &[OwnedFd]) -> Result<Vec<(u64, u64)>, Failure> {
    fds.iter()
        .map(|f| Ok(luo_sys::fstat(f.as_fd()).map(|st| (st.dev, st.ino))?))
        .collect()
}

/// [`luo_round`] through the floor agent: the same steps, the same files,
/// and (untimed) a check that the files that came back are the ones sent,
/// so that a floor agent that lost them cannot look fast.
fn floor_round(floor: &FloorClient, pid: u32, kind: Kind, n: usize) -> Result<Round, Failure> {
    let fds = kind.open(n)?;
    let sent = identities(&fds)?;
    let files: Vec<(u64, BorrowedFd<'_>)> =
        fds.iter().zip(1..).map(|(f, t)| (t, f.as_fd())).collect();
    let tokens: Vec<u64> = (1..=n as u64).collect();
    let mut r = Round::default();
    floor.ping()?;

    let ((), p) = Phase::time(pid, || floor.create_session())?;
    r.phases.push(p);
    let ((), p) = Phase::time(pid, || floor.preserve_batch(&files))?;
    r.phases.push(p);
    let ((), p) = Phase::time(pid, || floor.handover())?;
    r.phases.push(p);
    drop(files);
    drop(fds);
    let (back, p) = Phase::time(pid, || floor.retrieve_batch(&tokens))?;
    r.phases.push(p);
    let ((), p) = Phase::time(pid, || floor.finish())?;
    r.phases.push(p);
    if identities(&back)? != sent {
        return Err(Failure::run(format!(
            "the floor agent returned other files than the {n} {}s sent",
            kind.name()
        )));
    }
    Ok(r)
}

/// The other process of the raw baseline: `luo-bench __scm-peer`, with a
/// `SOCK_SEQPACKET` socket as its stdin. Also the floor agent's mirror.
#[derive(Debug)]
pub(crate) struct Peer {
    child: Child,
    sock: OwnedFd,
}

impl Peer {
    pub(crate) fn spawn() -> Result<Peer, Failure> {
        let (ours, theirs) = luo_sys::socketpair(luo_sys::sock::SOCK_SEQPACKET)?;
        let child = Command::new(std::env::current_exe()?)
            .arg("__scm-peer")
            .stdin(Stdio::from(theirs))
            .spawn()?;
        Ok(Peer { child, sock: ours })
    }

    pub(crate) fn sock(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn recv(&self, buf: &mut [u8]) -> Result<(u8, Vec<OwnedFd>), Failure> {
        let got = luo_sys::recv_with_fds(self.sock.as_fd(), buf, SCM_MAX_FD)?;
        if got.len == 0 || got.ctrunc {
            return Err(Failure::run(
                "the SCM_RIGHTS peer hung up or lost descriptors",
            ));
        }
        Ok((buf[0], got.fds))
    }

    /// Sends `n` new files of `kind` to the peer in batches of 253, then
    /// takes them back the same way.
    fn round(&self, kind: Kind, n: usize) -> Result<Round, Failure> {
        let fds = kind.open(n)?;
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
        let mut buf = [0u8; 16];
        let pid = self.child.id();
        let mut r = Round::default();
        // The warm-up: an empty batch, acknowledged.
        luo_sys::send_with_fds(self.sock.as_fd(), b"E", &[])?;
        self.recv(&mut buf)?;

        let ((), p) = Phase::time(pid, || {
            for chunk in borrowed.chunks(SCM_MAX_FD) {
                luo_sys::send_with_fds(self.sock.as_fd(), b"F", chunk)?;
            }
            luo_sys::send_with_fds(self.sock.as_fd(), b"E", &[])?;
            match self.recv(&mut buf)? {
                (b'A', _) => Ok(()),
                _ => Err(Failure::run("the SCM_RIGHTS peer did not acknowledge")),
            }
        })?;
        r.phases.push(p);
        drop(borrowed);
        drop(fds);

        let (back, p) = Phase::time(pid, || {
            luo_sys::send_with_fds(self.sock.as_fd(), b"R", &[])?;
            let mut back = Vec::with_capacity(n);
            loop {
                let (tag, fds) = self.recv(&mut buf)?;
                back.extend(fds);
                if tag == b'E' {
                    return Ok(back);
                }
            }
        })?;
        r.phases.push(p);
        if back.len() != n {
            return Err(Failure::run(format!(
                "the peer returned {} of {n} fds",
                back.len()
            )));
        }
        Ok(r)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = luo_sys::send_with_fds(self.sock.as_fd(), b"Q", &[]);
        let _ = self.child.wait();
    }
}

/// `luo-bench __scm-peer`: holds what arrives on stdin ('F' batches, then
/// 'E', acknowledged with 'A'), sends it all back on 'R', closes it all on
/// 'X', exits on 'Q' or end of file. As the floor agent's mirror it keeps
/// the tokens that follow an 'F' with the files, as a crash-safety copy
/// must.
pub fn peer() -> Result<(), Failure> {
    luo_sys::raise_nofile_limit()?;
    let stdin = std::io::stdin();
    let sock = stdin.as_fd();
    let mut held: Vec<OwnedFd> = Vec::new();
    let mut tokens: Vec<u8> = Vec::new();
    let mut buf = [0u8; crate::floor::MESSAGE];
    loop {
        let got = luo_sys::recv_with_fds(sock, &mut buf, SCM_MAX_FD)?;
        if got.len == 0 {
            return Ok(());
        }
        held.extend(got.fds);
        match buf[0] {
            b'F' => tokens.extend_from_slice(&buf[1..got.len]),
            b'X' => {
                held.clear();
                tokens.clear();
            }
            b'E' => {
                luo_sys::send_with_fds(sock, b"A", &[])?;
            }
            b'R' => {
                tokens.clear();
                let out = std::mem::take(&mut held);
                let chunks: Vec<&[OwnedFd]> = out.chunks(SCM_MAX_FD).collect();
                for (i, chunk) in chunks.iter().enumerate() {
                    let tag: &[u8] = if i + 1 == chunks.len() { b"E" } else { b"F" };
                    let fds: Vec<BorrowedFd<'_>> = chunk.iter().map(|f| f.as_fd()).collect();
                    luo_sys::send_with_fds(sock, tag, &fds)?;
                }
                if chunks.is_empty() {
                    luo_sys::send_with_fds(sock, b"E", &[])?;
                }
            }
            _ => return Ok(()),
        }
    }
}

/// Every kind at every count, luo, the floor agent and raw alternating
/// round by round so that all see the same background load. The floor
/// agent mirrors iff luod has a keeper.
///
/// Each way's round starts with an untimed warm-up exchange (luo: `status`
/// on the round's connection; the floor agent: a ping; raw: an empty
/// batch), so that none of them pays for waking an idle CPU or taking a
/// new connection: on this VM that alone costs tens of microseconds, and
/// which way it fell on depended on the order of the rounds.
pub fn throughput(
    agent: &Agent,
    counts: &[usize],
    kinds: &[Kind],
    rounds: usize,
) -> Result<Vec<Throughput>, Failure> {
    let peer = Peer::spawn()?;
    let keeper = agent.keeper_pid();
    let floor_agent = FloorAgent::spawn(keeper.is_some(), "fds")?;
    let floor = floor_agent.connect()?;
    let floor_pid = floor_agent.pid();
    let mut out = Vec::new();
    for &n in counts {
        for &kind in kinds {
            eprintln!(
                "fd throughput: {n} {}s through luod, the floor agent (mirror {}) and raw SCM_RIGHTS ...",
                kind.name(),
                if floor_agent.has_mirror() { "on" } else { "off" }
            );
            let mut t = Throughput {
                kind,
                n,
                luo: Vec::new(),
                raw: Vec::new(),
                floor: Vec::new(),
                floor_mirror: floor_agent.has_mirror(),
            };
            // One untimed round of each first (cold caches, a peer not yet
            // scheduled), and more rounds for small counts, whose round
            // trips are short enough for one hiccup to skew a median of 3.
            // The keeper and the mirror drop a finished session's copies
            // after the finish is answered: each is let finish (untimed)
            // before the next way's round, which would otherwise pay for it.
            let settle = || {
                floor_agent.settle();
                if let Some(pid) = keeper {
                    crate::requests::wait_idle(pid);
                }
            };
            peer.round(kind, n)?;
            floor_round(&floor, floor_pid, kind, n)?;
            luo_round(agent, kind, n, 0)?;
            settle();
            let rounds = rounds.max(MIN_FDS_TIMED.div_ceil(n).min(MAX_ROUNDS));
            for round in 1..=rounds {
                t.raw.push(peer.round(kind, n)?);
                t.floor.push(floor_round(&floor, floor_pid, kind, n)?);
                settle();
                t.luo.push(luo_round(agent, kind, n, round)?);
                settle();
            }
            out.push(t);
        }
    }
    Ok(out)
}

/// The agent's memory per preserved descriptor: a fresh luod's `VmRSS`
/// before and after `n` files are preserved and handed over.
#[derive(Debug)]
pub struct Memory {
    pub kind: Kind,
    pub n: usize,
    pub before: u64,
    pub after: u64,
}

/// The agent's memory must stay within this many bytes per preserved fd.
pub const MEMORY_TARGET: f64 = 256.0;

impl Memory {
    pub fn per_fd(&self) -> f64 {
        (self.after as f64 - self.before as f64) / self.n as f64
    }

    pub fn report(&self) -> MemoryReport {
        MemoryReport {
            kind: self.kind.name(),
            fds: self.n,
            rss_before_bytes: self.before,
            rss_after_bytes: self.after,
            bytes_per_fd: Num(self.per_fd()),
            target: Num(MEMORY_TARGET),
            target_met: self.per_fd() <= MEMORY_TARGET,
        }
    }
}

/// A [`Memory`] in the JSON report.
#[derive(Debug, Serialize)]
pub struct MemoryReport {
    kind: &'static str,
    fds: usize,
    rss_before_bytes: u64,
    rss_after_bytes: u64,
    bytes_per_fd: Num,
    target: Num,
    target_met: bool,
}

pub fn memory(luod: &Path, kind: Kind, n: usize) -> Result<Memory, Failure> {
    eprintln!(
        "agent memory: a fresh luod, {n} {}s preserved ...",
        kind.name()
    );
    let agent = Agent::start(luod, "rss")?;
    let client = agent.client()?;
    // One session created and aborted first, so that the figure is the files'
    // and not the first session's one-off allocations.
    drop(
        client
            .create_session("warm-up")
            .map_err(|e| Failure::run(e.to_string()))?,
    );
    let _ = client.status();
    let before = agent.rss()?;
    let fds = kind.open(n)?;
    let files: Vec<(u64, BorrowedFd<'_>)> =
        fds.iter().zip(1..).map(|(f, t)| (t, f.as_fd())).collect();
    let session = client
        .create_session("rss")
        .map_err(|e| Failure::run(e.to_string()))?;
    session
        .preserve_batch(&files)
        .map_err(|e| Failure::run(e.to_string()))?;
    session
        .handover()
        .map_err(|e| Failure::run(e.to_string()))?;
    let after = agent.rss()?;
    Ok(Memory {
        kind,
        n,
        before,
        after,
    })
}

/// luod's start-up (spawn to the first answered request), against spawning
/// and reaping `/bin/true`: the floor of any process start.
#[derive(Debug)]
pub struct Startup {
    pub luod: Vec<Duration>,
    pub floor: Vec<Duration>,
}

impl Startup {
    pub fn luod_ns(&self) -> f64 {
        Summary::of(&self.luod).median_ns
    }
    pub fn floor_ns(&self) -> f64 {
        Summary::of(&self.floor).median_ns
    }
    pub fn report(&self) -> StartupReport {
        StartupReport {
            luod_ms: Num(self.luod_ns() / 1e6),
            luod_runs_ms: ms(&self.luod),
            exec_floor: "spawn and wait for /bin/true",
            exec_floor_ms: Num(self.floor_ns() / 1e6),
            exec_floor_runs_ms: ms(&self.floor),
        }
    }
}

/// A [`Startup`] in the JSON report.
#[derive(Debug, Serialize)]
pub struct StartupReport {
    luod_ms: Num,
    luod_runs_ms: Vec<Num>,
    exec_floor: &'static str,
    exec_floor_ms: Num,
    exec_floor_runs_ms: Vec<Num>,
}

pub fn startup(luod: &Path, runs: usize) -> Result<Startup, Failure> {
    eprintln!("agent start-up: {runs} starts of luod ...");
    let mut s = Startup {
        luod: Vec::new(),
        floor: Vec::new(),
    };
    for _ in 0..runs {
        s.luod.push(Agent::start(luod, "startup")?.startup);
        let t = Instant::now();
        Command::new("/bin/true").status()?;
        s.floor.push(t.elapsed());
    }
    Ok(s)
}

/// What the per-fd system calls of an agent cost on this machine, each in a
/// tight loop on one file (hot caches: a floor, not what a cold file costs).
pub fn syscall_costs() -> Result<Vec<(&'static str, f64)>, Failure> {
    fn per_call<T, E>(n: u32, mut f: impl FnMut() -> Result<T, E>) -> Result<f64, Failure>
    where
        Failure: From<E>,
    {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..n {
                std::hint::black_box(f()?);
            }
            best = best.min(t.elapsed().as_nanos() as f64 / f64::from(n));
        }
        Ok(best)
    }
    let m = luo_sys::memfd_create("luo-bench", 0)?;
    let (e1, e2) = (luo_sys::eventfd(0)?, luo_sys::eventfd(0)?);
    let (s1, _s2) = luo_sys::socketpair(luo_sys::sock::SOCK_STREAM)?;
    let n = 20_000;
    Ok(vec![
        ("fstat", per_call(n, || luo_sys::fstat(m.as_fd()))?),
        ("fstatfs", per_call(n, || luo_sys::fstatfs_type(m.as_fd()))?),
        (
            "fcntl_getfl",
            per_call(n, || luo_sys::fcntl_getfl(m.as_fd()))?,
        ),
        ("dup_and_close", per_call(n, || m.try_clone())?),
        (
            "kcmp_file",
            per_call(n, || luo_sys::kcmp_file(e1.as_fd(), e2.as_fd()))?,
        ),
        (
            "socket_kind_getsockopts",
            per_call(n, || luo_sys::socket_kind(s1.as_fd()))?,
        ),
        (
            "readlink_proc_fd",
            per_call(n / 4, || luo_sys::fd_target(e1.as_fd()))?,
        ),
    ])
}
