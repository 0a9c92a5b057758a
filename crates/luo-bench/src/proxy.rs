//! `luo-bench proxy`: a proxy holding N established TCP connections hands
//! them to its successor, through luod, through the floor agent (the least
//! any checking, mirroring agent does) and, as the baseline, directly over
//! `SCM_RIGHTS`. Three processes besides the agent: this one (the connections'
//! peer: it accepted them and answers on each), the old proxy and the new
//! one. The blackout runs from the old proxy's first preserve (or first
//! `sendmsg`) to the new one holding every connection; the new one then
//! checks that a few of them still talk to the peer and are the ones it
//! asked for.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use luo_sys::SCM_MAX_FD;
use serde::Serialize;

use crate::agent::{locate_luod, Agent};
use crate::cli::{positive, Failure, Keeper};
use crate::floor::{FloorAgent, FloorClient};
use crate::machine::Machine;
use crate::report::{write_json, Num};
use crate::requests::settle;
use crate::stats::{grouped, human, Summary};

/// `luo-bench proxy --help`'s description.
pub const ABOUT: &str = "\
A proxy holding N established TCP connections (loopback; this process holds
their other ends and answers on each) hands them to its successor, a new
process: through luod (create_session, preserve_batch, handover; the
successor retrieve_session, retrieve_batch, finish); through the floor agent,
the same calls to a minimal agent that only checks each file (F_GETFL,
fstat, the socket's kind) and, iff luod has a keeper, sends it to a mirror
process (what any agent that keeps luod's promises must do); and, as the
baseline, directly over SCM_RIGHTS (253 descriptors a message). The blackout
runs from the old proxy's first preserve (or sendmsg) to the new one holding
every connection; the new one then exchanges a byte on a few connections to
check they still work and are the ones it asked for. Target: luod at most 3x
the baseline; luod against the floor agent is reported too.";

/// luod's blackout may be at most this times the direct one.
const TARGET_RATIO: f64 = 3.0;
/// Connections the successor checks, spread over the range.
const CHECKS: usize = 16;

/// `luo-bench proxy`'s options.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Established connections handed over
    #[arg(long, value_name = "N", value_parser = positive, default_value_t = 16_000)]
    connections: usize,
    /// Handovers per way
    #[arg(long, value_name = "R", value_parser = positive, default_value_t = 5)]
    rounds: usize,
    /// luod's keeper (its crash-safety mirror), and the floor agent's mirror
    #[arg(long, value_name = "on|off", value_enum, default_value_t = Keeper::On)]
    keeper: Keeper,
    /// Also write the results as JSON
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// The luod binary (default: next to luo-bench, built if missing)
    #[arg(long, value_name = "PATH")]
    luod: Option<PathBuf>,
}

/// How the connections go from the old proxy to the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    Direct,
    Floor,
    Luod,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Direct => "direct",
            Way::Floor => "floor",
            Way::Luod => "luod",
        }
    }

    pub fn parse(s: &str) -> Result<Way, Failure> {
        match s {
            "direct" => Ok(Way::Direct),
            "floor" => Ok(Way::Floor),
            "luod" => Ok(Way::Luod),
            _ => Err(Failure::usage(format!("no way {s:?}"))),
        }
    }
}

/// The byte the peer answers on connection `i`: the successor checks it
/// got the connection it asked for, not merely a live one.
fn tag(i: usize) -> u8 {
    (i % 251) as u8
}

/// The indices the successor checks: the first, the last, and between.
fn checked(n: usize) -> Vec<usize> {
    let k = CHECKS.min(n);
    let mut v: Vec<usize> = (0..k).map(|j| j * (n - 1) / (k - 1).max(1)).collect();
    v.dedup();
    v
}

/// A control message: a tag byte and text.
fn say(sock: BorrowedFd<'_>, what: &str, fds: &[BorrowedFd<'_>]) -> Result<(), Failure> {
    luo_sys::send_with_fds(sock, what.as_bytes(), fds)?;
    Ok(())
}

fn hear(sock: BorrowedFd<'_>, max_fds: usize) -> Result<(String, Vec<OwnedFd>), Failure> {
    let mut buf = [0u8; 256];
    let got = luo_sys::recv_with_fds(sock, &mut buf, max_fds)?;
    if got.len == 0 {
        return Err(Failure::run("the other process hung up"));
    }
    Ok((
        String::from_utf8_lossy(&buf[..got.len]).into_owned(),
        got.fds,
    ))
}

/// The peer's side: accepts `n` connections (saying so on `accepted` once
/// it has all) and answers each byte on connection `i` with [`tag`]`(i)`,
/// until `stop`.
fn serve_peer(
    listener: TcpListener,
    n: usize,
    accepted: mpsc::Sender<Result<(), String>>,
    stop: Arc<AtomicBool>,
) {
    let run = || -> Result<(), String> {
        const LISTENING: u64 = u64::MAX;
        let epoll = luo_sys::Epoll::new().map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        epoll
            .add(listener.as_fd(), LISTENING, luo_sys::epoll::EPOLLIN)
            .map_err(|e| e.to_string())?;
        let mut conns: Vec<Option<TcpStream>> = Vec::with_capacity(n);
        let mut events = Vec::new();
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            match epoll.wait(&mut events, 256, 20) {
                Ok(()) | Err(luo_sys::Errno::EINTR) => {}
                Err(e) => return Err(e.to_string()),
            }
            for &(i, _) in &events {
                if i == LISTENING {
                    while conns.len() < n {
                        match listener.accept() {
                            Ok((s, _)) => {
                                // Accepted sockets do not inherit O_NONBLOCK.
                                epoll
                                    .add(s.as_fd(), conns.len() as u64, luo_sys::epoll::EPOLLIN)
                                    .map_err(|e| e.to_string())?;
                                conns.push(Some(s));
                                if conns.len() == n {
                                    let _ = accepted.send(Ok(()));
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(format!("accept: {e}")),
                        }
                    }
                    continue;
                }
                let i = i as usize;
                let Some(s) = conns[i].as_mut() else { continue };
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = epoll.delete(s.as_fd());
                        conns[i] = None;
                    }
                    Ok(k) => {
                        let _ = s.write_all(&vec![tag(i); k]);
                    }
                }
            }
        }
        Ok(())
    };
    if let Err(e) = run() {
        let _ = accepted.send(Err(e));
    }
}

/// One handover's figures.
#[derive(Debug, Clone, Copy)]
struct Handover {
    /// From the old proxy's first preserve (or send) to the new one
    /// holding every connection.
    blackout: Duration,
    /// The old proxy's part: preserve_batch and handover, or the sends.
    old: Duration,
    /// The new proxy's part, from hearing the old one is done (or its
    /// first message) to holding every connection.
    new: Duration,
}

fn spawn(role: &str, args: &[String]) -> Result<(Child, OwnedFd), Failure> {
    let (ours, theirs) = luo_sys::socketpair(luo_sys::sock::SOCK_SEQPACKET)?;
    let child = Command::new(std::env::current_exe()?)
        .arg(role)
        .args(args)
        .stdin(Stdio::from(theirs))
        .spawn()?;
    Ok((child, ours))
}

fn nanos(s: &str) -> Result<Duration, Failure> {
    s.trim()
        .parse()
        .map(Duration::from_nanos)
        .map_err(|_| Failure::run(format!("a proxy said {s:?}, not a time")))
}

/// One handover of `n` new connections from a new old proxy to a new
/// successor, `way`.
fn handover(way: Way, n: usize, socket: &Path, name: &str) -> Result<Handover, Failure> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    // std listens with a queue of 128: the old proxy's connections would
    // overflow it while the peer is not scheduled, and each dropped one
    // waits a second for its SYN to be sent again.
    luo_sys::set_backlog(listener.as_fd(), 4096)?;
    let port = listener.local_addr()?.port();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let peer = {
        let stop = stop.clone();
        std::thread::spawn(move || serve_peer(listener, n, tx, stop))
    };
    let args = |extra: Option<u16>| {
        let mut v = vec![
            way.name().to_string(),
            n.to_string(),
            socket.display().to_string(),
            name.to_string(),
        ];
        v.extend(extra.map(|p| p.to_string()));
        v
    };
    let result = spawn("__proxy-old", &args(Some(port))).and_then(|(mut old, old_ctl)| {
        let r = spawn("__proxy-new", &args(None)).and_then(|(mut new, new_ctl)| {
            let r = drive(old_ctl.as_fd(), new_ctl.as_fd(), &rx);
            // Hung up on: a proxy still waiting gives up.
            drop(new_ctl);
            let status = new.wait()?;
            let h = r?;
            if !status.success() {
                return Err(Failure::run(format!("the new proxy failed ({status})")));
            }
            Ok(h)
        });
        drop(old_ctl);
        let status = old.wait()?;
        let h = r?;
        if !status.success() {
            return Err(Failure::run(format!("the old proxy failed ({status})")));
        }
        Ok(h)
    });
    stop.store(true, Ordering::Relaxed);
    let _ = peer.join();
    result
}

/// The coordinator's part of a handover: links the two proxies, waits
/// until they and the peer are ready, starts the clock with "G" to the old
/// proxy and stops it when the new one says it has every connection.
fn drive(
    old_ctl: BorrowedFd<'_>,
    new_ctl: BorrowedFd<'_>,
    peer_ready: &mpsc::Receiver<Result<(), String>>,
) -> Result<Handover, Failure> {
    // The old proxy's line to its successor.
    let (a, b) = luo_sys::socketpair(luo_sys::sock::SOCK_SEQPACKET)?;
    say(old_ctl, "L", &[a.as_fd()])?;
    say(new_ctl, "L", &[b.as_fd()])?;
    drop((a, b));
    for ctl in [old_ctl, new_ctl] {
        let (m, _) = hear(ctl, 0)?;
        if m != "R" {
            return Err(Failure::run(format!("a proxy is not ready: {m}")));
        }
    }
    peer_ready
        .recv()
        .map_err(|_| Failure::run("the peer thread stopped"))?
        .map_err(|e| Failure::run(format!("the peer: {e}")))?;
    let t = Instant::now();
    say(old_ctl, "G", &[])?;
    let (m, _) = hear(new_ctl, 0)?;
    let blackout = t.elapsed();
    let new = nanos(m.strip_prefix('A').ok_or_else(|| {
        Failure::run(format!("the new proxy did not get every connection: {m}"))
    })?)?;
    let (m, _) = hear(old_ctl, 0)?;
    let old = nanos(
        m.strip_prefix('D')
            .ok_or_else(|| Failure::run(format!("the old proxy failed: {m}")))?,
    )?;
    let (m, _) = hear(new_ctl, 0)?;
    if m != "C" {
        return Err(Failure::run(format!(
            "the new proxy's connections do not work: {m}"
        )));
    }
    Ok(Handover { blackout, old, new })
}

/// Reports a failure of a proxy process to the coordinator.
fn report(ctl: BorrowedFd<'_>, r: Result<(), Failure>) -> Result<(), Failure> {
    if let Err(e) = &r {
        let _ = say(ctl, &format!("F{e}"), &[]);
    }
    r
}

/// What a proxy hands over through, per [`Way`]: the old proxy's luod
/// session or the new one's luod client, the floor agent, or nothing.
enum Through<L> {
    Luod(L),
    Floor(FloorClient),
    Direct,
}

/// A proxy process: its descriptor limit raised, the bench's control line
/// on stdin, and first on it the line to the other proxy; `body`'s failure
/// is reported on the control line.
fn proxy_main(
    body: impl FnOnce(BorrowedFd<'_>, OwnedFd) -> Result<(), Failure>,
) -> Result<(), Failure> {
    luo_sys::raise_nofile_limit()?;
    let stdin = std::io::stdin();
    let ctl = stdin.as_fd();
    let run = || -> Result<(), Failure> {
        let (_, mut fds) = hear(ctl, 1)?;
        let link = fds
            .pop()
            .ok_or_else(|| Failure::run("no line to the other proxy"))?;
        body(ctl, link)
    };
    report(ctl, run())
}

/// The old proxy: connects `n` times to the peer, then on "G" hands the
/// connections over `way` and says "D" with the time its part took.
pub fn old_proxy(way: Way, n: usize, socket: &Path, name: &str, port: u16) -> Result<(), Failure> {
    proxy_main(|ctl, link| {
        let conns: Vec<OwnedFd> = (0..n)
            .map(|_| TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map(OwnedFd::from))
            .collect::<Result<_, _>>()?;
        let luo = |e: luo::Error| Failure::run(format!("luod: {e}"));
        let through = match way {
            Way::Luod => Through::Luod(
                luo::Client::connect_to(socket)
                    .and_then(|c| c.create_session(name))
                    .map_err(luo)?,
            ),
            Way::Floor => {
                let c = FloorClient::connect(socket)?;
                c.create_session()?;
                Through::Floor(c)
            }
            Way::Direct => Through::Direct,
        };
        let files: Vec<(u64, BorrowedFd<'_>)> = conns
            .iter()
            .enumerate()
            .map(|(i, f)| (i as u64, f.as_fd()))
            .collect();
        say(ctl, "R", &[])?;
        let (go, _) = hear(ctl, 0)?;
        if go != "G" {
            return Err(Failure::run(format!("expected G, heard {go}")));
        }
        let t = Instant::now();
        match &through {
            Through::Luod(s) => {
                s.preserve_batch(&files).map_err(luo)?;
                s.handover().map_err(luo)?;
                say(link.as_fd(), "H", &[])?;
            }
            Through::Floor(f) => {
                f.preserve_batch(&files)?;
                f.handover()?;
                say(link.as_fd(), "H", &[])?;
            }
            Through::Direct => {
                for chunk in files.chunks(SCM_MAX_FD) {
                    let fds: Vec<BorrowedFd<'_>> = chunk.iter().map(|&(_, f)| f).collect();
                    say(link.as_fd(), "F", &fds)?;
                }
                say(link.as_fd(), "E", &[])?;
            }
        }
        let took = t.elapsed();
        say(ctl, &format!("D{}", took.as_nanos()), &[])?;
        Ok(())
    })
}

/// The new proxy: takes the connections over `way`, says "A" with the
/// time its part took once it holds all, then checks some and says "C".
pub fn new_proxy(way: Way, n: usize, socket: &Path, name: &str) -> Result<(), Failure> {
    proxy_main(|ctl, link| {
        let luo = |e: luo::Error| Failure::run(format!("luod: {e}"));
        let through = match way {
            Way::Luod => Through::Luod(luo::Client::connect_to(socket).map_err(luo)?),
            Way::Floor => Through::Floor(FloorClient::connect(socket)?),
            Way::Direct => Through::Direct,
        };
        let tokens: Vec<u64> = (0..n as u64).collect();
        say(ctl, "R", &[])?;
        let mut session = None;
        let (conns, took) = match &through {
            Through::Luod(c) => {
                let (m, _) = hear(link.as_fd(), 0)?;
                if m != "H" {
                    return Err(Failure::run(format!("expected H, heard {m}")));
                }
                let t = Instant::now();
                let s = c.retrieve_session(name).map_err(luo)?;
                let conns = s.retrieve_batch(&tokens).map_err(luo)?;
                let took = t.elapsed();
                session = Some(s);
                (conns, took)
            }
            Through::Floor(f) => {
                let (m, _) = hear(link.as_fd(), 0)?;
                if m != "H" {
                    return Err(Failure::run(format!("expected H, heard {m}")));
                }
                let t = Instant::now();
                let conns = f.retrieve_batch(&tokens)?;
                (conns, t.elapsed())
            }
            Through::Direct => {
                let mut conns = Vec::with_capacity(n);
                let mut t = None;
                loop {
                    let (m, fds) = hear(link.as_fd(), SCM_MAX_FD)?;
                    t.get_or_insert_with(Instant::now);
                    conns.extend(fds);
                    if m == "E" {
                        break;
                    }
                }
                (conns, t.map_or(Duration::ZERO, |t| t.elapsed()))
            }
        };
        if conns.len() != n {
            return Err(Failure::run(format!(
                "{} connections arrived, not {n}",
                conns.len()
            )));
        }
        say(ctl, &format!("A{}", took.as_nanos()), &[])?;
        let mut conns: Vec<Option<OwnedFd>> = conns.into_iter().map(Some).collect();
        for i in checked(n) {
            let mut s = TcpStream::from(conns[i].take().expect("each once"));
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(b"?")?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b)?;
            if b[0] != tag(i) {
                return Err(Failure::run(format!(
                    "connection {i} answered as connection {}'s peer",
                    b[0]
                )));
            }
        }
        if let Some(s) = session {
            s.finish().map_err(luo)?;
        }
        if let Through::Floor(f) = &through {
            f.finish()?;
        }
        say(ctl, "C", &[])?;
        Ok(())
    })
}

#[derive(Serialize)]
struct WayReport {
    way: &'static str,
    blackout: Summary,
    old: Summary,
    new: Summary,
    per_connection_ns: Num,
    million_s: Num,
}

#[derive(Serialize)]
struct ProxyReport {
    machine: String,
    connections: usize,
    rounds: usize,
    keeper: bool,
    ways: Vec<WayReport>,
    /// luod's blackout over the direct one (the target's ratio).
    ratio: Num,
    /// The floor agent's over the direct one: the best any agent does.
    floor_over_direct: Num,
    /// luod's over the floor agent's.
    luod_over_floor: Num,
}

pub fn main(o: Options) -> Result<(), Failure> {
    let machine = Machine::setup()?;
    let n = o.connections;
    if n + 256 > machine.nofile.0 as usize {
        return Err(Failure::usage(format!(
            "{n} connections need {} descriptors in each process; RLIMIT_NOFILE is {}",
            n + 256,
            machine.nofile.0
        )));
    }
    eprintln!("machine: {}", machine.describe());
    let luod = locate_luod(o.luod.clone())?;
    let keeper = o.keeper.is_on();
    let agent = Agent::start_args(
        &luod,
        "proxy",
        &["--log-level", "warn", "--keeper", o.keeper.luod_arg()],
    )?;
    let keeper_pid = agent.keeper_pid();
    if keeper && keeper_pid.is_none() {
        return Err(Failure::run("luod started no keeper"));
    }
    settle(&agent, keeper_pid)?;
    let floor = FloorAgent::spawn(keeper, "proxy")?;
    let ways = [Way::Direct, Way::Floor, Way::Luod];
    let mut got: Vec<Vec<Handover>> = vec![Vec::new(); ways.len()];
    for round in 0..o.rounds {
        eprintln!(
            "{} established connections handed over, round {} of {}: direct, through the floor agent, through luod ...",
            grouped(n as u64),
            round + 1,
            o.rounds
        );
        for (i, &way) in ways.iter().enumerate() {
            let socket = match way {
                Way::Floor => floor.path(),
                _ => agent.socket.as_path(),
            };
            got[i].push(handover(way, n, socket, &format!("proxy-{round}"))?);
            settle(&agent, keeper_pid)?;
            floor.settle();
        }
    }
    let sum = |hs: &[Handover], f: fn(&Handover) -> Duration| {
        Summary::of(&hs.iter().map(f).collect::<Vec<_>>())
    };
    let reports: Vec<WayReport> = ways
        .iter()
        .zip(&got)
        .map(|(w, hs)| {
            let blackout = sum(hs, |h| h.blackout);
            let per = blackout.median_ns / n as f64;
            WayReport {
                way: w.name(),
                blackout,
                old: sum(hs, |h| h.old),
                new: sum(hs, |h| h.new),
                per_connection_ns: Num(per),
                million_s: Num(per * 1e6 / 1e9),
            }
        })
        .collect();
    let blackout = |w: Way| {
        reports
            .iter()
            .find(|r| r.way == w.name())
            .map_or(f64::NAN, |r| r.blackout.median_ns)
    };
    let ratio = blackout(Way::Luod) / blackout(Way::Direct);
    let floor_ratio = blackout(Way::Floor) / blackout(Way::Direct);
    let to_floor = blackout(Way::Luod) / blackout(Way::Floor);
    println!(
        "luo-bench proxy: {} established TCP connections handed to a successor",
        grouped(n as u64)
    );
    println!("machine: {}", machine.describe());
    println!(
        "medians over {} handovers each; luod's keeper {} (the floor agent's mirror likewise)",
        o.rounds,
        if keeper { "on" } else { "off" }
    );
    println!();
    println!(
        "{:>8}  {:>10}  {:>10}  {:>10}  {:>10}  {:>12}",
        "way", "blackout", "old part", "new part", "per conn", "at 1,000,000"
    );
    for r in &reports {
        println!(
            "{:>8}  {:>10}  {:>10}  {:>10}  {:>10}  {:>12}",
            r.way,
            human(r.blackout.median_ns),
            human(r.old.median_ns),
            human(r.new.median_ns),
            human(r.per_connection_ns.0),
            format!("{:.2} s", r.million_s.0)
        );
    }
    println!();
    println!(
        "through luod the blackout is {ratio:.2}x the direct handover's (target at most {TARGET_RATIO}x: {})",
        if ratio <= TARGET_RATIO { "met" } else { "MISSED" }
    );
    println!(
        "through the floor agent (checks each file{}, nothing else) it is {floor_ratio:.2}x the direct one: the best any agent does here; luod's is {to_floor:.2}x the floor agent's",
        if keeper { ", mirrors it" } else { "" }
    );
    if let Some(path) = &o.json {
        let v = ProxyReport {
            machine: machine.describe(),
            connections: n,
            rounds: o.rounds,
            keeper,
            ways: reports,
            ratio: Num(ratio),
            floor_over_direct: Num(floor_ratio),
            luod_over_floor: Num(to_floor),
        };
        write_json(path, &v)?;
    }
    Ok(())
}
