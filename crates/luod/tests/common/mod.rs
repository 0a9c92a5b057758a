//! The harness the agent's integration tests share: a real `luod` process
//! on a socket in a fresh directory, killed (and its directory removed) on
//! drop, and what the tests ask of it; a `luod` with its keeper, for
//! crashes; memfds with known contents; descriptor counts of a process.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const LUOD: &str = env!("CARGO_BIN_EXE_luod");
/// How long a reply or a settling fd count may take before a test fails.
pub mod run;
pub mod wire;

pub const PATIENCE: Duration = Duration::from_secs(10);

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A new, empty directory with mode `mode`, unique to this test.
pub fn fresh_dir_with_mode(mode: u32) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "luod-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

/// A new, empty directory (mode 0755), unique to this test.
pub fn fresh_dir() -> PathBuf {
    fresh_dir_with_mode(0o755)
}

/// The last 4,000 bytes of `s`, for failure messages.
pub fn tail(s: &str) -> &str {
    let cut = s.len().saturating_sub(4000);
    let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    &s[cut..]
}

/// How to start an agent.
pub struct Opts<'a> {
    /// More arguments for luod.
    pub args: &'a [&'a str],
    /// Run under `ulimit -n N` (soft and hard).
    pub nofile: Option<u32>,
    /// `LUOD_LOG`.
    pub log: &'a str,
    /// Mode of the agent's directory (0777 when processes of other uids
    /// write files there).
    pub dir_mode: u32,
    /// Run luod as this uid (and gid): a per-user agent. Needs root.
    pub uid: Option<u32>,
}

pub const DEFAULT: Opts<'static> = Opts {
    args: &[],
    nofile: None,
    log: "debug",
    dir_mode: 0o755,
    uid: None,
};

/// A `luod` process, killed (and its directory removed) on drop. Its log is
/// `dir/luod.log`.
pub struct Agent {
    pub child: Child,
    pub dir: PathBuf,
    pub sock: PathBuf,
}

impl Agent {
    pub fn start() -> Agent {
        Agent::start_with(DEFAULT)
    }

    pub fn start_with(o: Opts<'_>) -> Agent {
        let dir = fresh_dir_with_mode(o.dir_mode);
        let sock = dir.join("luod.sock");
        let log = File::create(dir.join("luod.log")).unwrap();
        let mut cmd = match o.nofile {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(LUOD);
                c
            }
            None => Command::new(LUOD),
        };
        cmd.arg("--socket").arg(&sock).args(o.args);
        // No keeper unless a test asks for one: a keeper outlives a killed
        // agent by design, and tests kill theirs.
        if !o.args.contains(&"--keeper") {
            cmd.args(["--keeper", "off"]);
        }
        if let Some(u) = o.uid {
            use std::os::unix::process::CommandExt;
            cmd.uid(u).gid(u);
        }
        cmd.env("LUOD_LOG", o.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().expect("spawning luod");
        let mut agent = Agent { child, dir, sock };
        agent.wait_ready();
        agent
    }

    pub fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if luo_sys::seqpacket_connect(&self.sock).is_ok() {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("luod exited with {st} before it was ready:\n{}", self.log());
            }
            assert!(
                start.elapsed() < PATIENCE,
                "luod not ready after {PATIENCE:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The socket path as a string, for command lines.
    pub fn sock_str(&self) -> &str {
        self.sock.to_str().expect("a UTF-8 socket path")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("luod.log")).unwrap_or_default()
    }

    /// A raw protocol connection.
    pub fn connect(&self) -> OwnedFd {
        luo_sys::seqpacket_connect(&self.sock).expect("connecting to luod")
    }

    /// A client library connection.
    pub fn client(&self) -> luo::Client {
        luo::Client::connect_to(&self.sock).expect("connecting to luod")
    }

    /// The agent's open descriptors, as `/proc/PID/fd` lists them.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("reading the agent's /proc/PID/fd")
            .count()
    }

    /// The descriptor count once the agent is idle: connections that closed
    /// a moment ago may not have been reaped yet.
    pub fn settled_fds(&self) -> usize {
        settle(|| self.fds())
    }

    pub fn fd_listing(&self) -> String {
        fd_listing(self.pid())
    }

    /// Waits until the agent holds exactly `want` descriptors.
    pub fn wait_fds(&self, want: usize) {
        let start = Instant::now();
        loop {
            let n = self.fds();
            if n == want {
                return;
            }
            if start.elapsed() > PATIENCE {
                panic!(
                    "the agent holds {n} descriptors, expected {want}:\n{}\nlog:\n{}",
                    self.fd_listing(),
                    tail(&self.log())
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The share of `window` in which the agent was runnable (on a CPU or
    /// waiting for one), sampled from its threads' states in
    /// `/proc/PID/task/*/stat`. Unlike CPU time this does not depend on the
    /// machine's load: a busy loop is runnable all the time however many
    /// other processes share the CPUs, and an agent that waits in
    /// `epoll_wait` is asleep.
    pub fn runnable_share(&self, window: Duration) -> f64 {
        runnable_share(self.pid(), window)
    }

    pub fn rss_kib(&self) -> u64 {
        let st = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        st.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn assert_alive(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("luod died ({st}):\n{}", tail(&self.log()));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ------------------------------------------------- descriptors of a process

/// The descriptors process `pid` has open (0 once it is gone).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// `count()` once it has stopped changing: descriptors of connections that
/// closed a moment ago may not have been reaped yet.
pub fn settle(count: impl Fn() -> usize) -> usize {
    let mut last = count();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = count();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// The settled descriptor count of process `pid`.
pub fn settled(pid: u32) -> usize {
    settle(|| fd_count(pid))
}

/// Process `pid`'s descriptors and what they are, for failure messages.
pub fn fd_listing(pid: u32) -> String {
    let mut out = String::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in rd.flatten() {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            out += &format!(
                "  {} -> {}\n",
                e.file_name().to_string_lossy(),
                target.display()
            );
        }
    }
    out
}

/// Whether some thread of process `pid` is runnable now (state `R`).
pub fn runnable(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('R'))
        })
    })
}

/// The share of samples, taken every millisecond or so for `window`, in
/// which process `pid` was runnable (see [`Agent::runnable_share`]).
pub fn runnable_share(pid: u32, window: Duration) -> f64 {
    let start = Instant::now();
    let (mut samples, mut hits) = (0u32, 0u32);
    while start.elapsed() < window || samples < 100 {
        samples += 1;
        hits += u32::from(runnable(pid));
        std::thread::sleep(Duration::from_millis(1));
    }
    f64::from(hits) / f64::from(samples)
}

/// Whether process `pid` has exited (gone, or a zombie nobody reaped).
pub fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

// ------------------------------------------------------------------ memfds

/// A memfd holding `data`, its offset at the start (so that whoever
/// retrieves it reads `data`).
pub fn memfd(data: &(impl AsRef<[u8]> + ?Sized)) -> OwnedFd {
    let f = File::from(luo_sys::memfd_create("luod-test", 0).unwrap());
    f.write_all_at(data.as_ref(), 0).unwrap();
    OwnedFd::from(f)
}

/// A memfd's (or any regular file's) whole contents, read through a new
/// open of the same inode, so the descriptor's offset does not matter.
pub fn read_memfd(fd: &impl AsFd) -> Vec<u8> {
    std::fs::read(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd())).unwrap()
}

/// [`read_memfd`] as text.
pub fn read_text(fd: impl AsFd) -> String {
    String::from_utf8(read_memfd(&fd)).expect("a memfd holding text")
}

/// The page size of the known pattern.
pub const PAGE: u64 = 4096;

/// The known pattern's word for page `page` of pattern `seed`: every 4 KiB
/// page repeats a hash of its number (and the seed), so a lost, zeroed,
/// misplaced or swapped page shows.
pub fn pattern_word(seed: u64, page: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0xd6e8_feb8_6659_fd93)
        .wrapping_add(page)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `len` bytes of pattern `seed` from offset `off`.
pub fn pattern(seed: u64, off: u64, len: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len as usize + 2 * PAGE as usize);
    let first = off / PAGE;
    for page in first..(off + len).div_ceil(PAGE) {
        v.extend_from_slice(
            &pattern_word(seed, page)
                .to_le_bytes()
                .repeat((PAGE / 8) as usize),
        );
    }
    let skip = (off - first * PAGE) as usize;
    v.drain(..skip);
    v.truncate(len as usize);
    v
}

/// A memfd of `len` bytes of pattern `seed`.
pub fn patterned_memfd(seed: u64, len: u64) -> OwnedFd {
    let f = File::from(luo_sys::memfd_create("luod-test-pattern", 0).unwrap());
    const STEP: u64 = 8 << 20;
    let mut off = 0;
    while off < len {
        let n = STEP.min(len - off);
        f.write_all_at(&pattern(seed, off, n), off).unwrap();
        off += n;
    }
    OwnedFd::from(f)
}

/// Checks that `fd` holds exactly `len` bytes of pattern `seed`; the error
/// names the size or the first page that differs.
pub fn check_pattern(fd: impl AsFd, seed: u64, len: u64) -> Result<(), String> {
    let f = File::from(fd.as_fd().try_clone_to_owned().unwrap());
    let size = f.metadata().unwrap().len();
    if size != len {
        return Err(format!("{size} bytes, expected {len}"));
    }
    const STEP: u64 = 8 << 20;
    let mut off = 0;
    while off < len {
        let n = STEP.min(len - off);
        let mut buf = vec![0u8; n as usize];
        f.read_exact_at(&mut buf, off).unwrap();
        let want = pattern(seed, off, n);
        if buf != want {
            let at = buf.iter().zip(&want).position(|(a, b)| a != b).unwrap();
            return Err(format!(
                "the bytes differ from offset {} (page {})",
                off + at as u64,
                (off + at as u64) / PAGE
            ));
        }
        off += n;
    }
    Ok(())
}

/// Asserts [`check_pattern`], naming `what` on failure.
pub fn assert_pattern(fd: impl AsFd, seed: u64, len: u64, what: &str) {
    if let Err(e) = check_pattern(fd, seed, len) {
        panic!("{what}: {e}");
    }
}

// ------------------------------------------- a luod with its keeper, crashes

/// A child killed (and reaped) when dropped, so that a failing test leaves
/// no luod behind.
pub struct Proc(pub Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills a keeper when dropped (a test that fails must not leave one).
pub struct KeeperGuard(pub u32);

impl Drop for KeeperGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// Starts `luod` (this workspace's binary or another) on `sock` with a
/// keeper process and `args`; it logs to `dir/luod.log` (appended, so the
/// agents that follow each other on one socket share one log).
pub fn spawn_kept_with(luod: &Path, dir: &Path, sock: &Path, args: &[&str]) -> Proc {
    spawn_kept_env(luod, dir, sock, args, &[])
}

/// [`spawn_kept_with`] with more environment variables.
pub fn spawn_kept_env(
    luod: &Path,
    dir: &Path,
    sock: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("luod.log"))
        .unwrap();
    Command::new(luod)
        .arg("--socket")
        .arg(sock)
        .args(["--keeper", "auto"])
        .args(args)
        .env("LUOD_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Proc)
        .unwrap_or_else(|e| panic!("spawning {}: {e}", luod.display()))
}

/// This workspace's luod with its keeper, not waited for.
pub fn spawn_with_keeper(dir: &Path, sock: &Path) -> Proc {
    spawn_kept_with(Path::new(LUOD), dir, sock, &[])
}

/// `luod` with its keeper, answering.
pub fn start_kept_with(luod: &Path, dir: &Path, sock: &Path, args: &[&str]) -> Proc {
    let child = spawn_kept_with(luod, dir, sock, args);
    wait_ready(sock, dir);
    child
}

/// This workspace's luod with its keeper, answering.
pub fn start_kept(dir: &Path, sock: &Path) -> Proc {
    start_kept_with(Path::new(LUOD), dir, sock, &[])
}

/// Waits until an agent answers at `sock` (its log is `dir/luod.log`).
pub fn wait_ready(sock: &Path, dir: &Path) {
    let start = Instant::now();
    while luo_sys::seqpacket_connect(sock).is_err() {
        assert!(
            start.elapsed() < PATIENCE,
            "luod did not come back:\n{}",
            std::fs::read_to_string(dir.join("luod.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The pid of the keeper of the agent `c` is connected to.
pub fn keeper_pid(c: &luo::Client) -> u32 {
    let s = c.status().unwrap().store;
    s.strip_prefix("keeper (pid ")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no keeper: {s:?}"))
}

/// A client of the luod at `sock`, its keeper's pid, and a guard that kills
/// that keeper if the test fails.
pub fn client_and_keeper(sock: &Path) -> (luo::Client, u32, KeeperGuard) {
    let c = luo::Client::connect_to(sock).unwrap();
    let keeper = keeper_pid(&c);
    (c, keeper, KeeperGuard(keeper))
}

/// Fails the test, with the end of its log (`dir/luod.log`), when `luod`
/// has exited.
pub fn assert_alive(luod: &mut Child, dir: &Path) {
    if let Ok(Some(st)) = luod.try_wait() {
        let log = std::fs::read_to_string(dir.join("luod.log")).unwrap_or_default();
        panic!("luod died ({st}):\n{}", tail(&log));
    }
}

/// Sends SIGTERM to `pid`.
pub fn terminate(pid: u32) {
    Command::new("kill").arg(pid.to_string()).status().unwrap();
}

/// Waits until process `pid` has exited.
pub fn wait_exited(pid: u32, what: &str) {
    let start = Instant::now();
    while !exited(pid) {
        assert!(start.elapsed() < PATIENCE, "{what} did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}
