//! What the `luoctl run` tests share: the programs they supervise (gunicorn,
//! a C program linked against libsystemd, small Python services), a
//! supervisor process, `luoctl` calls, and an HTTP client that keeps
//! requesting and counts failures.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const LUOCTL: &str = env!("CARGO_BIN_EXE_luoctl");

/// How long a service may take to start, answer, or write its report.
pub const SLOW: Duration = Duration::from_secs(30);

/// This directory of test programs.
pub fn programs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/run")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Whether `what` (a dependency of this test, from Debian package `pkg`) is
/// here. When it is missing the test fails as root (`./scripts/test`
/// installs it there), and is skipped, with a message, otherwise.
pub fn have(present: bool, what: &str, pkg: &str) -> bool {
    if present {
        return true;
    }
    assert!(
        !is_root(),
        "this test needs {what}: apt-get install -y {pkg} (./scripts/test installs it as root)"
    );
    eprintln!("SKIPPED: this test needs {what} (apt-get install -y {pkg}, as root)");
    false
}

/// Debian's gunicorn, unmodified.
pub const GUNICORN: &str = "/usr/bin/gunicorn";

pub fn have_gunicorn() -> bool {
    have(Path::new(GUNICORN).exists(), GUNICORN, "gunicorn")
}

/// The Python the services run with: the system's (gunicorn's) when there.
pub fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

pub fn have_python() -> bool {
    let ok = Command::new(python())
        .args(["-c", "import socket; socket.send_fds"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    have(ok, "python3 (3.9 or later)", "python3")
}

/// The Python services' script.
pub fn svc_py() -> String {
    programs().join("svc.py").display().to_string()
}

/// Whether `cc` and libsystemd's development files (through pkg-config) are
/// here.
pub fn have_libsystemd() -> bool {
    let cc = Command::new("cc")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let pc = Command::new("pkg-config")
        .args(["--exists", "libsystemd"])
        .status()
        .is_ok_and(|s| s.success());
    have(
        cc && pc,
        "cc, pkg-config and libsystemd's headers",
        "libsystemd-dev pkg-config",
    )
}

/// `tests/run/fdstore.c` built against libsystemd into `dir/fdstore`.
pub fn build_fdstore(dir: &Path) -> PathBuf {
    let out = dir.join("fdstore");
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "libsystemd"])
        .output()
        .unwrap();
    let flags = String::from_utf8(flags.stdout).unwrap();
    let st = Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(programs().join("fdstore.c"))
        .args(flags.split_whitespace())
        .status()
        .unwrap();
    assert!(st.success(), "building fdstore.c failed");
    out
}

/// A free TCP port on the loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `luoctl ARGS` against the agent at `sock`.
pub fn luoctl(sock: &Path, args: &[&str]) -> Output {
    Command::new(LUOCTL)
        .env("LUOD_SOCKET", sock)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// [`luoctl`], which must succeed; its stdout.
pub fn luoctl_ok(sock: &Path, args: &[&str]) -> String {
    let out = luoctl(sock, args);
    assert!(
        out.status.success(),
        "luoctl {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Both outputs of a command, for messages and searches.
pub fn both(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A `luoctl run` supervisor in its own process group, its output in
/// `log`. Dropping it stops it as an operator would (SIGTERM: it stops the
/// service and exits), then kills whatever is left: the supervisor, its
/// instances' process groups, and the processes named in `also`.
pub struct Supervisor {
    pub child: Child,
    pub log: PathBuf,
    pub also: Vec<u32>,
}

/// The children of process `pid` (a supervisor's instances lead their own
/// process groups).
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn kill9(target: &str) {
    let _ = Command::new("kill")
        .args(["-9", "--", target])
        .stderr(Stdio::null())
        .status();
}

impl Supervisor {
    /// `luoctl run ARGS` (the name, options, `--`, the command).
    pub fn start(sock: &Path, log: &Path, args: &[&str]) -> Supervisor {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(LUOCTL)
            .env("LUOD_SOCKET", sock)
            .arg("run")
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("spawning luoctl run");
        Supervisor {
            child,
            log: log.to_path_buf(),
            also: Vec::new(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails with the supervisor's output when it has exited.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("luoctl run exited ({st}):\n{}", super::tail(&self.log()));
        }
    }

    /// SIGKILL for the supervisor alone; its service goes on.
    pub fn kill_supervisor(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let pid = self.child.id();
        let mut groups = children(pid);
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(15) {
                groups.extend(children(pid));
                if !matches!(self.child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        kill9(&format!("-{pid}"));
        for g in groups {
            kill9(&format!("-{g}"));
        }
        for p in &self.also {
            kill9(&p.to_string());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `file` has a line satisfying `f` (at least `count` of them);
/// `what` and `context` for the failure message.
pub fn wait_lines(
    file: &Path,
    count: usize,
    f: impl Fn(&str) -> bool,
    what: &str,
    context: &dyn Fn() -> String,
) -> Vec<String> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let lines: Vec<String> = text.lines().filter(|l| f(l)).map(str::to_string).collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            start.elapsed() < SLOW,
            "no {what} after {SLOW:?} in {}:\n{text}\n{}",
            file.display(),
            context()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.0 GET to the loopback `port`, with timeouts: the body, or
/// why it failed.
pub fn get(port: u16, timeout: Duration) -> Result<String, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    if !text.starts_with("HTTP/1.") || !text.contains(" 200 ") {
        return Err(format!("reply: {:?}", text.lines().next().unwrap_or("")));
    }
    Ok(text.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// Waits until `port` answers 200; the body.
pub fn wait_http(port: u16, context: &dyn Fn() -> String) -> String {
    let start = Instant::now();
    loop {
        match get(port, Duration::from_secs(2)) {
            Ok(b) => return b,
            Err(e) => assert!(
                start.elapsed() < SLOW,
                "port {port} does not answer after {SLOW:?} ({e}):\n{}",
                context()
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a [`Load`] saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub ok: u64,
    pub failed: u64,
    /// The first few failures.
    pub errors: Vec<String>,
    pub max_latency: Duration,
    /// Bodies seen, in order of first appearance.
    pub bodies: Vec<String>,
}

/// One client thread requesting `port` back to back (each request with a
/// timeout of `timeout`) until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    pub fn start(port: u16) -> Load {
        Load::start_with(port, Duration::from_secs(5))
    }

    pub fn start_with(port: u16, timeout: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (s, t) = (stop.clone(), tally.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: at most ten minutes of requests whatever happens.
            let end = Instant::now() + Duration::from_secs(600);
            while !s.load(Ordering::Relaxed) && Instant::now() < end {
                let t0 = Instant::now();
                let r = get(port, timeout);
                let took = t0.elapsed();
                let mut t = t.lock().unwrap();
                t.max_latency = t.max_latency.max(took);
                match r {
                    Ok(body) => {
                        t.ok += 1;
                        if !t.bodies.contains(&body) {
                            t.bodies.push(body);
                        }
                    }
                    Err(e) => {
                        t.failed += 1;
                        if t.errors.len() < 10 {
                            t.errors.push(e);
                        }
                        drop(t);
                        // A server that is down refuses at once: do not spin.
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        });
        Load {
            stop,
            tally,
            thread: Some(thread),
        }
    }

    /// What it saw so far.
    pub fn tally(&self) -> Tally {
        self.tally.lock().unwrap().clone()
    }

    /// Stops it; what it saw.
    pub fn stop(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.tally()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The value of `key` in process `pid`'s environment.
pub fn environ_of(pid: u32, key: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}
