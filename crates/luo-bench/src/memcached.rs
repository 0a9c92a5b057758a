//! The memcached baseline: the same number and size of items as the demo,
//! restarted warm (`-e` on a tmpfs, stopped with SIGUSR1).
//!
//! memcached 1.6 records the wall-clock second of the stop in `FILE.meta`
//! (`stop_time`) and refuses a warm restart started within that same second:
//! it comes up empty. A restart is therefore started only once the clock has
//! passed that second; the wait is part of the blackout and is also reported
//! on its own. Every restart is checked to have kept the data (the item count
//! and a sample of values) before its time is taken.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::agent::which;
use crate::cli::Failure;

/// Bytes per value, as in the demo: record `i` is eight splitmix64 words.
pub const RECORD: u64 = 64;
/// Values checked after each restart.
const SAMPLE: u64 = 1_000;

fn word(j: u64) -> u64 {
    let mut z = j.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The demo's record `i`.
pub fn record(i: u64) -> [u8; RECORD as usize] {
    let mut r = [0u8; RECORD as usize];
    for (k, chunk) in r.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&word(i * 8 + k as u64).to_le_bytes());
    }
    r
}

/// Finds memcached; installs the Debian package when allowed to and able to
/// (root, apt-get), saying so first; otherwise says how to get it.
pub fn find(install: bool) -> Result<PathBuf, Failure> {
    if let Some(p) = which("memcached") {
        return Ok(p);
    }
    let how =
        "apt-get install memcached (Debian/Ubuntu), or pass --no-memcached to skip this baseline";
    if !install || luo_sys::geteuid() != 0 || which("apt-get").is_none() {
        return Err(Failure::run(format!("memcached is not installed: {how}")));
    }
    eprintln!("memcached is not installed; installing Debian's package: apt-get update && apt-get install -y memcached");
    for args in [&["update"][..], &["install", "-y", "memcached"][..]] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::from(std::io::stderr()))
            .status()?;
        if !status.success() {
            return Err(Failure::run(format!(
                "apt-get {} failed ({status}): {how}",
                args.join(" ")
            )));
        }
    }
    which("memcached").ok_or_else(|| Failure::run(format!("memcached is still missing: {how}")))
}

/// `memcached -V`.
pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[derive(Debug)]
pub struct Restart {
    /// From SIGUSR1 to the first correct value from the new process.
    pub blackout: Duration,
    /// Of which: from SIGUSR1 until the old process exited (memcached acts
    /// on the signal in its once-a-second clock event),
    pub stop: Duration,
    /// waiting for the wall clock to leave the stop's second,
    pub clock_wait: Duration,
    /// and from starting the new process to its first answer.
    pub start: Duration,
}

#[derive(Debug)]
pub struct Run {
    pub items: u64,
    /// Bytes in slabs after the fill (`stats`: `bytes`).
    pub bytes_stored: u64,
    pub fill: Duration,
    pub restarts: Vec<Restart>,
}

struct Server {
    bin: PathBuf,
    args: Vec<String>,
    addr: SocketAddr,
    file: PathBuf,
    child: Option<Child>,
}

impl Server {
    fn spawn(&mut self) -> Result<(), Failure> {
        let child = Command::new(&self.bin)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Failure::run(format!("starting {}: {e}", self.bin.display())))?;
        self.child = Some(child);
        Ok(())
    }

    fn connect(&mut self) -> Result<Option<TcpStream>, Failure> {
        match TcpStream::connect(self.addr) {
            Ok(c) => {
                c.set_read_timeout(Some(Duration::from_secs(60)))?;
                c.set_nodelay(true)?;
                Ok(Some(c))
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok())
                    .flatten()
                {
                    return Err(Failure::run(format!("memcached exited ({status})")));
                }
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Connects, retrying while nothing listens yet.
    fn wait_connect(&mut self, limit: Duration) -> Result<TcpStream, Failure> {
        let t = Instant::now();
        loop {
            if let Some(c) = self.connect()? {
                return Ok(c);
            }
            if t.elapsed() > limit {
                return Err(Failure::run("memcached did not listen in time"));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// SIGUSR1 (memcached's graceful stop for a warm restart), then reaps it.
    fn stop_warm(&mut self) -> Result<(), Failure> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| Failure::run("memcached is not running"))?;
        let status = Command::new("kill")
            .args(["-USR1", &child.id().to_string()])
            .status()?;
        if !status.success() {
            return Err(Failure::run(format!("kill -USR1 failed ({status})")));
        }
        let status = child.wait()?;
        if !status.success() {
            return Err(Failure::run(format!("memcached stopped with {status}")));
        }
        Ok(())
    }

    /// `stop_time` from the metadata file the stop wrote.
    fn stop_time(&self) -> Result<u64, Failure> {
        let meta = PathBuf::from(format!("{}.meta", self.file.display()));
        let text = std::fs::read_to_string(&meta)
            .map_err(|e| Failure::run(format!("reading {}: {e}", meta.display())))?;
        text.lines()
            .find_map(|l| l.strip_prefix("Kstop_time "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| Failure::run(format!("no stop_time in {}", meta.display())))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_file(format!("{}.meta", self.file.display()));
    }
}

fn stats(c: &mut TcpStream) -> Result<Vec<(String, String)>, Failure> {
    c.write_all(b"stats\r\n")?;
    let mut out = Vec::new();
    let mut r = BufReader::new(c);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(Failure::run("memcached closed the connection during stats"));
        }
        let line = line.trim_end();
        if line == "END" {
            return Ok(out);
        }
        let mut parts = line.splitn(3, ' ');
        if let (Some("STAT"), Some(k), Some(v)) = (parts.next(), parts.next(), parts.next()) {
            out.push((k.to_string(), v.to_string()));
        }
    }
}

fn stat(stats: &[(String, String)], key: &str) -> u64 {
    stats
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// One `get`: `Some(true)` the right value, `Some(false)` a miss.
fn get(c: &mut TcpStream, key: u64) -> Result<bool, Failure> {
    c.write_all(format!("get k{key}\r\n").as_bytes())?;
    let mut r = BufReader::new(c);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line.trim_end() == "END" {
        return Ok(false);
    }
    if !line.starts_with("VALUE ") {
        return Err(Failure::run(format!(
            "memcached answered {:?}",
            line.trim_end()
        )));
    }
    let mut value = vec![0u8; RECORD as usize + 2];
    r.read_exact(&mut value)?;
    let mut end = String::new();
    r.read_line(&mut end)?;
    if value[..RECORD as usize] != record(key) || end.trim_end() != "END" {
        return Err(Failure::run(format!(
            "memcached returned a wrong value for k{key}"
        )));
    }
    Ok(true)
}

/// Stores `items` records over two connections (memcached runs two worker
/// threads), pipelined with `noreply`; a `version` on each connection at the
/// end waits until everything was processed.
fn fill(addr: SocketAddr, items: u64) -> Result<(), Failure> {
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..2u64)
        .map(|w| {
            let done = done.clone();
            std::thread::spawn(move || -> Result<(), Failure> {
                let mut c = TcpStream::connect(addr)?;
                let mut buf = Vec::with_capacity(1 << 20);
                let (mut i, mut pending) = (w, 0);
                while i < items {
                    buf.extend_from_slice(format!("set k{i} 0 0 {RECORD} noreply\r\n").as_bytes());
                    buf.extend_from_slice(&record(i));
                    buf.extend_from_slice(b"\r\n");
                    i += 2;
                    pending += 1;
                    if buf.len() >= (1 << 20) - 128 {
                        c.write_all(&buf)?;
                        buf.clear();
                        done.fetch_add(pending, Ordering::Relaxed);
                        pending = 0;
                    }
                }
                buf.extend_from_slice(b"version\r\n");
                c.write_all(&buf)?;
                let mut line = String::new();
                BufReader::new(&c).read_line(&mut line)?;
                if !line.starts_with("VERSION") {
                    return Err(Failure::run(format!(
                        "memcached answered {:?} to version",
                        line.trim_end()
                    )));
                }
                Ok(())
            })
        })
        .collect();
    let t = Instant::now();
    let mut last = 0;
    while workers.iter().any(|w| !w.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        let secs = t.elapsed().as_secs();
        if secs != last {
            last = secs;
            let pct = (done.load(Ordering::Relaxed) * 100 / items.max(1)).min(100);
            eprint!("\r  memcached: storing {items} items: about {pct}%");
        }
    }
    eprintln!(
        "\r  memcached: storing {items} items: done in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    for w in workers {
        w.join()
            .map_err(|_| Failure::run("a fill thread panicked"))??;
    }
    Ok(())
}

/// Checks that memcached holds every item and a sample of right values.
fn check(c: &mut TcpStream, items: u64, salt: u64) -> Result<(), Failure> {
    let s = stats(c)?;
    let (curr, evicted) = (stat(&s, "curr_items"), stat(&s, "evictions"));
    if curr != items || evicted != 0 {
        return Err(Failure::run(format!(
            "memcached holds {curr} of {items} items ({evicted} evicted)"
        )));
    }
    for k in 0..SAMPLE {
        let key = word(salt * SAMPLE + k) % items;
        if !get(c, key)? {
            return Err(Failure::run(format!("memcached lost k{key}")));
        }
    }
    Ok(())
}

/// A free TCP port on the loopback (the kernel's choice, released at once).
fn free_port() -> Result<u16, Failure> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn unix_secs() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

pub fn run(bin: &Path, bytes: u64, restarts: usize, tmpfs: &Path) -> Result<Run, Failure> {
    let items = bytes / RECORD;
    // A 64-byte value with a key of up to 9 bytes takes a 152-byte chunk
    // (48-byte header, CAS, key, "\r\n"); leave room, and check for
    // evictions after the fill.
    let megabytes = (items * 176).div_ceil(1 << 20) + 64;
    // Large enough that the table never grows (it grows at 1.5 items per bucket).
    let hashpower = (64 - items.max(1).leading_zeros()).clamp(16, 32);
    let port = free_port()?;
    let file = tmpfs.join(format!("luo-bench-memcached-{}", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(format!("{}.meta", file.display()));
    let mut args: Vec<String> = ["-l", "127.0.0.1", "-U", "0", "-t", "2", "-c", "1024"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend([
        "-p".into(),
        port.to_string(),
        "-m".into(),
        megabytes.to_string(),
        "-e".into(),
        file.display().to_string(),
        "-o".into(),
        format!("hashpower={hashpower}"),
    ]);
    if luo_sys::geteuid() == 0 {
        // memcached refuses to run as root unless told which user to be.
        args.extend(["-u".into(), "root".into()]);
    }
    let mut server = Server {
        bin: bin.to_path_buf(),
        args,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        file,
        child: None,
    };
    eprintln!(
        "memcached: {items} items of {RECORD} bytes, -m {megabytes} -e {} -o hashpower={hashpower}",
        server.file.display()
    );
    server.spawn()?;
    drop(server.wait_connect(Duration::from_secs(10))?);
    let t = Instant::now();
    fill(server.addr, items)?;
    let fill_time = t.elapsed();
    let mut c = server.wait_connect(Duration::from_secs(10))?;
    check(&mut c, items, 0)?;
    let bytes_stored = stat(&stats(&mut c)?, "bytes");
    drop(c);

    let mut out = Vec::new();
    for r in 1..=restarts {
        let key = word(u64::MAX - r as u64) % items.max(1);
        let stop_at = Instant::now();
        server.stop_warm()?;
        let stop = stop_at.elapsed();
        let stop_time = server.stop_time()?;
        // A start within the stop's second comes up empty: wait it out.
        let wait_at = Instant::now();
        let next_second = Duration::from_secs(stop_time + 1);
        let now = unix_secs();
        if now < next_second {
            std::thread::sleep(next_second - now + Duration::from_millis(1));
        }
        let clock_wait = wait_at.elapsed();
        let start_at = Instant::now();
        server.spawn()?;
        let answered = loop {
            let Some(mut c) = server.connect()? else {
                std::thread::sleep(Duration::from_micros(100));
                if stop_at.elapsed() > Duration::from_secs(600) {
                    return Err(Failure::run("memcached did not come back within 600 s"));
                }
                continue;
            };
            if !get(&mut c, key)? {
                return Err(Failure::run(
                    "memcached came up empty after its warm restart (the data did not survive)",
                ));
            }
            break Instant::now();
        };
        let blackout = answered - stop_at;
        let mut c = server.wait_connect(Duration::from_secs(10))?;
        check(&mut c, items, r as u64)?;
        let start = answered - start_at;
        eprintln!(
            "  memcached restart {r}: blackout {:.1} ms: stop {:.1} ms, waiting for the next second \
             {:.1} ms, start to first answer {:.1} ms; all {items} items kept",
            blackout.as_secs_f64() * 1e3,
            stop.as_secs_f64() * 1e3,
            clock_wait.as_secs_f64() * 1e3,
            start.as_secs_f64() * 1e3,
        );
        out.push(Restart {
            blackout,
            stop,
            clock_wait,
            start,
        });
    }
    Ok(Run {
        items,
        bytes_stored,
        fill: fill_time,
        restarts: out,
    })
}
