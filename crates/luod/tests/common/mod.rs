//! The harness the agent's integration tests share: a real `luod` process
//! on a socket in a fresh directory, killed (and its directory removed) on
//! drop, and what the tests ask of it.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const LUOD: &str = env!("CARGO_BIN_EXE_luod");
/// How long a reply or a settling fd count may take before a test fails.
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
}

pub const DEFAULT: Opts<'static> = Opts {
    args: &[],
    nofile: None,
    log: "debug",
    dir_mode: 0o755,
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
        let mut last = self.fds();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.fds();
            if now == last {
                return now;
            }
            last = now;
        }
    }

    pub fn fd_listing(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) {
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

    /// `(user + system)` CPU clock ticks the agent has used.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the parenthesised command name; utime and stime are
        // fields 14 and 15 of the line.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
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
