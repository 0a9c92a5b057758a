//! The main demo: a key-value service keeps its data in a memfd and serves it
//! over TCP; it is restarted twice through luo while a client keeps sending
//! requests. Nothing is copied and no request fails: the data stays in the
//! memfd, and connections that arrive during a restart wait in the listening
//! socket's queue until the next process accepts them.
//!
//! ```text
//! cargo run --release --example service-restart [-- --size 1G --restarts 2]
//! ```
//!
//! `--reload-from PATH` runs the baseline instead: the same service saves its
//! data to PATH when stopped and the next process reloads it from there and
//! binds the port anew (what a service does without luo). `--json PATH`
//! writes the measurements for `luo-bench`.
//!
//! One binary plays every part: run without arguments it is the orchestrator,
//! which starts an agent on the emulated backend in a temporary directory,
//! then the service, then the load client; the agent and every generation of
//! the service are separate processes (this binary again, with a role).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SESSION: &str = "kv-demo";
const TOKEN_DATA: u64 = 1;
const TOKEN_LISTENER: u64 = 2;
/// Bytes per value: record `i` lives at offset `i * RECORD`.
const RECORD: u64 = 64;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("__agent") => agent(&args[1..]),
        Some("__service") => service(&args[1..]),
        _ => orchestrate(&args),
    };
    if let Err(e) = r {
        eprintln!("service-restart: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------
// The data: record i is eight 64-bit words derived from i, so any reader can
// check any value without a copy of the data.

fn word(j: u64) -> u64 {
    // splitmix64
    let mut z = j.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn record(i: u64) -> [u8; RECORD as usize] {
    let mut r = [0u8; RECORD as usize];
    for (k, chunk) in r.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&word(i * 8 + k as u64).to_le_bytes());
    }
    r
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn parse_size(s: &str) -> Res<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let m = match s[i..].to_ascii_uppercase().trim_end_matches("IB") {
                "" | "B" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                other => return Err(format!("unknown size unit {other:?} in {s:?}").into()),
            };
            (&s[..i], m)
        }
        None => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad size {s:?}: use e.g. 256M or 1G"))?;
    Ok(n * mult)
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

// ---------------------------------------------------------------------------
// Role: the agent.

fn agent(args: &[String]) -> Res<()> {
    let socket = PathBuf::from(args.first().ok_or("__agent needs a socket path")?);
    luod::Agent::bind(luod::Config::new(socket))?.serve()?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Role: one generation of the key-value service.
//
// stdout carries one event per line for the orchestrator; stdin carries its
// commands ("restart" or "quit").

fn event(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn service(args: &[String]) -> Res<()> {
    let socket = args.first().ok_or("__service needs a socket path")?;
    let generation: u64 = args.get(1).ok_or("__service needs a generation")?.parse()?;
    let size: u64 = args.get(2).ok_or("__service needs a size")?.parse()?;
    // The baseline: a state file and the port to bind again.
    let reload = match (args.get(3), args.get(4)) {
        (Some(path), Some(port)) => Some((PathBuf::from(path), port.parse::<u16>()?)),
        _ => None,
    };
    let client = match reload {
        Some(_) => None,
        None => Some(luo::Client::connect_to(socket)?),
    };

    let (data, listener) = match (&client, &reload) {
        _ if generation == 1 => start_fresh(size)?,
        (Some(client), _) => take_over(client)?,
        (None, Some((path, port))) => reload_from(path, *port)?,
        (None, None) => unreachable!("no luo client only in the reload baseline"),
    };
    event(&format!(
        "READY {} {}",
        listener.local_addr()?.port(),
        data.metadata()?.len()
    ));

    // A thread turns stdin into a flag; the accept loop checks it between
    // requests, so no accepted connection is ever dropped.
    let command = Arc::new(Mutex::new(None::<String>));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (command, stop) = (command.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            *command.lock().unwrap_or_else(|e| e.into_inner()) = Some(line.trim().to_string());
            stop.store(true, Ordering::SeqCst);
        });
    }
    listener.set_nonblocking(true)?;
    let records = data.metadata()?.len() / RECORD;
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => serve_one(conn, &data, records, generation),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(100))
            }
            Err(e) => return Err(e.into()),
        }
    }
    let cmd = command.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if cmd.as_deref() != Some("restart") {
        return Ok(());
    }
    let Some(client) = client else {
        // The baseline: stop listening, save the data, exit.
        let (path, _) = reload.as_ref().ok_or("no state file")?;
        let t = Instant::now();
        drop(listener);
        save_to(&data, path)?;
        event(&format!("SAVED {}", t.elapsed().as_micros()));
        return Ok(());
    };
    // Restart: hand the data and the listening socket to the next process.
    let t = Instant::now();
    let session = client.create_session(SESSION)?;
    session.preserve(TOKEN_DATA, data.as_fd())?;
    session.preserve(TOKEN_LISTENER, listener.as_fd())?;
    // luod's own account of what it holds, taken while the handle is live.
    let held = session.info()?;
    session.handover()?;
    let took = t.elapsed();
    event(&format!("HANDED_OVER {}", took.as_micros()));
    report_preserved(&held);
    Ok(())
}

/// What luod holds for this service, one line per file for the orchestrator.
fn report_preserved(s: &luo::SessionInfo) {
    for f in &s.files {
        let size = if f.kind == "memfd" {
            format!("{}, ", human(f.size))
        } else {
            String::new()
        };
        let safe = if f.kexec_safe {
            "kexec-safe"
        } else {
            "not kexec-safe"
        };
        event(&format!(
            "PRESERVED token {}: {} ({size}identity: {}, {safe})",
            f.token, f.kind, f.identity
        ));
    }
}

/// Generation 1: a new memfd, filled, and a new listening socket.
fn start_fresh(size: u64) -> Res<(File, TcpListener)> {
    let data = File::from(luo_sys::memfd_create("kv-data", luo_sys::mfd::CLOEXEC)?);
    let records = size / RECORD;
    data.set_len(records * RECORD)?;
    const CHUNK: u64 = 4 << 20;
    let mut buf = Vec::with_capacity(CHUNK as usize);
    let mut done = 0u64;
    let mut last_pct = u64::MAX;
    while done < records {
        let n = (CHUNK / RECORD).min(records - done);
        buf.clear();
        for i in done..done + n {
            buf.extend_from_slice(&record(i));
        }
        data.write_all_at(&buf, done * RECORD)?;
        done += n;
        let pct = done * 100 / records;
        if pct != last_pct {
            event(&format!("FILL {pct}"));
            last_pct = pct;
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok((data, listener))
}

/// Later generations: everything comes from the previous one, through luo.
fn take_over(client: &luo::Client) -> Res<(File, TcpListener)> {
    let t = Instant::now();
    let session = client.retrieve_session(SESSION)?;
    let data = File::from(session.retrieve_fd(TOKEN_DATA)?);
    let listener = TcpListener::from(session.retrieve_fd(TOKEN_LISTENER)?);
    session.finish()?;
    event(&format!("RETRIEVED {}", t.elapsed().as_micros()));
    Ok((data, listener))
}

/// The baseline's stop: the whole memfd into a file, by the kernel's fastest
/// copy (`std::io::copy` uses `copy_file_range` or `sendfile` where it can).
fn save_to(data: &File, path: &Path) -> Res<()> {
    let mut out = File::create(path)?;
    let mut src = data;
    // A reloaded memfd's offset is at its end.
    src.rewind()?;
    std::io::copy(&mut src, &mut out)?;
    Ok(())
}

/// The baseline's start: the file back into a new memfd, then the port.
fn reload_from(path: &Path, port: u16) -> Res<(File, TcpListener)> {
    let t = Instant::now();
    let mut data = File::from(luo_sys::memfd_create("kv-data", luo_sys::mfd::CLOEXEC)?);
    std::io::copy(&mut File::open(path)?, &mut data)?;
    // Rust sets SO_REUSEADDR, so the port the last process left is free again.
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    event(&format!("RELOADED {}", t.elapsed().as_micros()));
    Ok((data, listener))
}

/// One request per connection: `GET i\n` → `G <hex of record i>\n`, where G
/// is the generation that answered.
fn serve_one(conn: TcpStream, data: &File, records: u64, generation: u64) {
    let _ = conn.set_nonblocking(false);
    let mut reader = BufReader::new(&conn);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let reply = match line.trim().strip_prefix("GET ").map(str::parse::<u64>) {
        Some(Ok(i)) if i < records => {
            let mut v = [0u8; RECORD as usize];
            match data.read_exact_at(&mut v, i * RECORD) {
                Ok(()) => format!("{generation} {}\n", hex(&v)),
                Err(e) => format!("ERR {e}\n"),
            }
        }
        _ => "ERR bad request\n".to_string(),
    };
    let _ = (&conn).write_all(reply.as_bytes());
}

// ---------------------------------------------------------------------------
// Role: the orchestrator, and the load client it runs on a thread.

struct Options {
    size: u64,
    restarts: u32,
    /// The baseline: save to and reload from this file instead of luo.
    reload_from: Option<PathBuf>,
    json: Option<PathBuf>,
}

fn options(args: &[String]) -> Res<Options> {
    let mut o = Options {
        size: 1 << 30,
        restarts: 2,
        reload_from: None,
        json: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--size" => o.size = parse_size(value()?)?,
            "--restarts" => o.restarts = value()?.parse()?,
            "--reload-from" => o.reload_from = Some(PathBuf::from(value()?)),
            "--json" => o.json = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!(
                    "usage: service-restart [--size SIZE] [--restarts N] [--reload-from PATH] [--json PATH]\n\n\
                     Starts luod (emulated backend) in a temporary directory, a key-value\n\
                     service holding SIZE bytes (default 1G) in a memfd, and a client that\n\
                     keeps sending requests; restarts the service N times (default 2)\n\
                     through luo and reports each blackout and every failed request.\n\n\
                     --reload-from PATH  the baseline, without luo: on stop the service saves\n\
                     \x20                   its data to PATH (put it on a tmpfs) and the next\n\
                     \x20                   process reloads it and binds the port again; refused\n\
                     \x20                   connections meanwhile are counted, not failures\n\
                     --json PATH         also write the measurements as JSON to PATH"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    if o.size < RECORD {
        return Err(format!("--size must be at least {RECORD} bytes").into());
    }
    Ok(o)
}

/// A child process that is killed if the orchestrator leaves early.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Generation {
    proc: Proc,
    stdin: ChildStdin,
    events: Receiver<String>,
}

fn spawn_service(
    socket: &Path,
    generation: u64,
    size: u64,
    reload: Option<(&Path, u16)>,
) -> Res<Generation> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("__service")
        .arg(socket)
        .arg(generation.to_string())
        .arg(size.to_string());
    if let Some((path, port)) = reload {
        cmd.arg(path).arg(port.to_string());
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, events) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(Generation {
        proc: Proc(child),
        stdin,
        events,
    })
}

/// Waits for the next event of `kind`, showing fill progress on the way.
fn wait_for(g: &mut Generation, kind: &str) -> Res<Vec<String>> {
    loop {
        let line = match g.events.recv_timeout(Duration::from_secs(300)) {
            Ok(l) => l,
            Err(_) => {
                let status = g.proc.0.try_wait()?;
                return Err(format!("the service stopped before {kind} ({status:?})").into());
            }
        };
        let mut parts = line.split_whitespace().map(str::to_string);
        let head = parts.next().unwrap_or_default();
        if head == "FILL" {
            let pct = parts.next().unwrap_or_default();
            print!("\r  filling the memfd: {pct:>3}%");
            let _ = std::io::stdout().flush();
            if pct == "100" {
                println!();
            }
            continue;
        }
        if head == kind {
            return Ok(parts.collect());
        }
    }
}

/// Statistics the load client shares with the orchestrator.
#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Connections refused or reset while no process listened (the reload
    /// baseline only; under luo any such error is a failure).
    refused: AtomicU64,
    /// Generation that answered the latest successful request.
    generation: AtomicU64,
    /// When each generation answered its first request, taken as the reply
    /// arrives, so the orchestrator can wait without spinning on a core.
    first_answer: Mutex<Vec<(u64, Instant)>>,
    /// Failure messages, first few only.
    errors: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Load {
    fn first_answer(&self, generation: u64) -> Option<Instant> {
        let firsts = self.first_answer.lock().unwrap_or_else(|e| e.into_inner());
        firsts
            .iter()
            .find(|(g, _)| *g == generation)
            .map(|&(_, t)| t)
    }
}

/// Why a request failed.
enum Miss {
    /// No connection, or it was reset: nobody was serving.
    Transport(std::io::Error),
    /// An answer, but a wrong one: always a failure.
    Wrong(String),
}

fn load_client(addr: SocketAddr, records: u64, load: Arc<Load>, tolerate_refusals: bool) {
    let mut i = 0u64;
    while !load.stop.load(Ordering::SeqCst) {
        let key = word(i) % records;
        i += 1;
        let e = match request(addr, key) {
            Ok(generation) => {
                let at = Instant::now();
                load.ok.fetch_add(1, Ordering::SeqCst);
                if load.generation.swap(generation, Ordering::SeqCst) != generation {
                    let mut firsts = load.first_answer.lock().unwrap_or_else(|e| e.into_inner());
                    if !firsts.iter().any(|(g, _)| *g == generation) {
                        firsts.push((generation, at));
                    }
                }
                continue;
            }
            Err(Miss::Transport(_)) if tolerate_refusals => {
                load.refused.fetch_add(1, Ordering::SeqCst);
                // Leave the cores to the reload rather than spin on refusals.
                std::thread::sleep(Duration::from_micros(100));
                continue;
            }
            Err(Miss::Transport(e)) => e.to_string(),
            Err(Miss::Wrong(e)) => e,
        };
        load.failed.fetch_add(1, Ordering::SeqCst);
        let mut errs = load.errors.lock().unwrap_or_else(|e| e.into_inner());
        if errs.len() < 5 {
            errs.push(format!("GET {key}: {e}"));
        }
    }
}

fn request(addr: SocketAddr, key: u64) -> Result<u64, Miss> {
    let io = |r: std::io::Result<()>| r.map_err(Miss::Transport);
    let mut c =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(Miss::Transport)?;
    io(c.set_read_timeout(Some(Duration::from_secs(30))))?;
    io(c.write_all(format!("GET {key}\n").as_bytes()))?;
    let mut reply = String::new();
    io(c.read_to_string(&mut reply).map(drop))?;
    if reply.is_empty() {
        // Closed without an answer: the listener went away with us queued.
        return Err(Miss::Transport(std::io::ErrorKind::UnexpectedEof.into()));
    }
    let (generation, value) = reply
        .trim()
        .split_once(' ')
        .ok_or_else(|| Miss::Wrong(format!("bad reply {reply:?}")))?;
    if value != hex(&record(key)) {
        return Err(Miss::Wrong(format!("wrong value for key {key}: {value}")));
    }
    generation
        .parse()
        .map_err(|_| Miss::Wrong(format!("bad generation in {reply:?}")))
}

/// One restart's figures, in microseconds.
struct Restart {
    /// preserve + handover, or the save to the file.
    stop_us: u64,
    /// retrieve + finish, or the reload from the file.
    start_us: u64,
    blackout: Duration,
}

fn orchestrate(args: &[String]) -> Res<()> {
    let o = options(args)?;
    let dir = std::env::temp_dir().join(format!("luo-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveDir(dir.clone());
    let _state = o.reload_from.clone().map(RemoveFile);
    let socket = dir.join("luod.sock");
    let log = File::create(dir.join("luod.log"))?;

    match &o.reload_from {
        None => println!("luo demo: a key-value service restarted through luo under load"),
        Some(p) => println!(
            "luo demo, baseline: the key-value service saves to and reloads from {} under load",
            p.display()
        ),
    }
    let _agent = Proc(
        Command::new(std::env::current_exe()?)
            .arg("__agent")
            .arg(&socket)
            .stderr(log)
            .spawn()?,
    );
    let t = Instant::now();
    while luo::Client::connect_to(&socket).is_err() {
        if t.elapsed() > Duration::from_secs(10) {
            return Err("luod did not come up within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "  luod (emulated backend) listening on {}",
        socket.display()
    );

    let records = o.size / RECORD;
    println!(
        "  generation 1: {} of data in a memfd ({records} records of {RECORD} bytes)",
        human(records * RECORD)
    );
    // Generation 1 starts fresh on a new port (0: any) in both modes.
    let mut g = spawn_service(&socket, 1, o.size, o.reload_from.as_deref().map(|p| (p, 0)))?;
    let ready = wait_for(&mut g, "READY")?;
    let port: u16 = ready.first().ok_or("READY without port")?.parse()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    println!("  generation 1 serving on {addr}");
    let reload = o.reload_from.as_deref().map(|p| (p, port));

    let load = Arc::new(Load::default());
    let client = {
        let load = load.clone();
        let tolerate = reload.is_some();
        std::thread::spawn(move || load_client(addr, records, load, tolerate))
    };
    std::thread::sleep(Duration::from_millis(500));

    let agent = luo::Client::connect_to(&socket)?;
    let mut restarts = Vec::new();
    for n in 1..=o.restarts as u64 {
        let next = n + 1;
        let before = load.ok.load(Ordering::SeqCst);
        println!("\nrestart {n}: generation {n} -> {next} ({before} requests answered so far)");
        let stop_at = Instant::now();
        writeln!(g.stdin, "restart")?;
        let (stop_us, mut ng) = if reload.is_none() {
            let handed = wait_for(&mut g, "HANDED_OVER")?;
            // The next generation starts at once; the old one reports what luod
            // holds for it and exits meanwhile.
            let ng = spawn_service(&socket, next, o.size, None)?;
            while let Ok(line) = g.events.recv_timeout(Duration::from_secs(10)) {
                if let Some(p) = line.strip_prefix("PRESERVED ") {
                    println!("  preserved {p}");
                }
            }
            let _ = g.proc.0.wait();
            (first_us(&handed), ng)
        } else {
            // A service manager starts the next process once the old one exited.
            let saved = wait_for(&mut g, "SAVED")?;
            let _ = g.proc.0.wait();
            (
                first_us(&saved),
                spawn_service(&socket, next, o.size, reload)?,
            )
        };
        let started = wait_for(
            &mut ng,
            if reload.is_none() {
                "RETRIEVED"
            } else {
                "RELOADED"
            },
        )?;
        wait_for(&mut ng, "READY")?;
        // Blackout: from the stop request to the first answer by the new process.
        let answered = loop {
            if let Some(t) = load.first_answer(next) {
                break t;
            }
            if stop_at.elapsed() > Duration::from_secs(300) {
                return Err("no request was answered by the new generation within 300 s".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let r = Restart {
            stop_us,
            start_us: first_us(&started),
            blackout: answered.saturating_duration_since(stop_at),
        };
        let (stop, start) = if reload.is_none() {
            ("preserve + handover", "retrieve + finish")
        } else {
            ("save", "reload")
        };
        println!(
            "  {stop} {:.2} ms, {start} {:.2} ms, blackout {:.2} ms",
            r.stop_us as f64 / 1000.0,
            r.start_us as f64 / 1000.0,
            r.blackout.as_secs_f64() * 1000.0
        );
        restarts.push(r);
        g = ng;
        // Let the new generation serve for a while before the next restart.
        std::thread::sleep(Duration::from_millis(500));
    }
    load.stop.store(true, Ordering::SeqCst);
    let _ = client.join();
    let _ = writeln!(g.stdin, "quit");
    let _ = g.proc.0.wait();

    let ok = load.ok.load(Ordering::SeqCst);
    let failed = load.failed.load(Ordering::SeqCst);
    let refused = load.refused.load(Ordering::SeqCst);
    println!("\nsummary");
    match reload {
        None => println!(
            "  data kept across restarts: {} (nothing copied)",
            human(records * RECORD)
        ),
        Some(_) => println!(
            "  data kept across restarts: {} (saved and reloaded each time)",
            human(records * RECORD)
        ),
    }
    for (i, r) in restarts.iter().enumerate() {
        println!(
            "  restart {}: blackout {:.2} ms",
            i + 1,
            r.blackout.as_secs_f64() * 1000.0
        );
    }
    println!("  requests answered: {ok}, failed: {failed}");
    if reload.is_some() {
        println!("  connections refused or reset while nothing listened: {refused}");
    }
    for e in load.errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("    {e}");
    }
    let left = agent.sessions()?;
    println!("  sessions left in luod: {}", left.len());
    if let Some(path) = &o.json {
        let runs: Vec<String> = restarts
            .iter()
            .map(|r| {
                format!(
                    "{{\"blackout_us\": {}, \"stop_us\": {}, \"start_us\": {}}}",
                    r.blackout.as_micros(),
                    r.stop_us,
                    r.start_us
                )
            })
            .collect();
        let json = format!(
            "{{\"mode\": \"{}\", \"bytes\": {}, \"records\": {records}, \"record_bytes\": {RECORD}, \
             \"restarts\": [{}], \"answered\": {ok}, \"failed\": {failed}, \"refused\": {refused}}}\n",
            if reload.is_none() { "luo" } else { "reload" },
            records * RECORD,
            runs.join(", ")
        );
        std::fs::write(path, json).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if failed > 0 {
        return Err(format!("{failed} requests failed").into());
    }
    Ok(())
}

fn first_us(v: &[String]) -> u64 {
    v.first().and_then(|x| x.parse().ok()).unwrap_or(0)
}

struct RemoveFile(PathBuf);

impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
