//! The programs the suite runs (luod, the service-restart demo) and a luod
//! started on a private socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::Failure;

/// Where luod and the demo are.
#[derive(Debug, Clone)]
pub struct Programs {
    pub luod: PathBuf,
    pub demo: PathBuf,
}

impl Programs {
    /// `luod` and `examples/service-restart` next to this executable, where
    /// Cargo puts them; built with Cargo first when missing and this runs from
    /// a source tree. `luod`/`demo` override either.
    pub fn locate(luod: Option<PathBuf>, demo: Option<PathBuf>) -> Result<Programs, Failure> {
        let exe = std::env::current_exe()?;
        let dir = exe.parent().unwrap_or(Path::new(".")).to_path_buf();
        let p = Programs {
            luod: luod.unwrap_or_else(|| dir.join("luod")),
            demo: demo.unwrap_or_else(|| dir.join("examples/service-restart")),
        };
        if p.luod.is_file() && p.demo.is_file() {
            return Ok(p);
        }
        let release = dir.file_name().is_some_and(|n| n == "release");
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let mut args = vec![
            "build",
            "-p",
            "luod",
            "--bin",
            "luod",
            "--example",
            "service-restart",
        ];
        if release {
            args.insert(1, "--release");
        }
        let how = format!("cargo {}", args.join(" "));
        if !manifest.is_file() {
            return Err(Failure::run(format!(
                "{} or {} is missing: build them with `{how}` in luo's source tree, \
                 or pass --luod PATH and --demo PATH",
                p.luod.display(),
                p.demo.display()
            )));
        }
        eprintln!("luod or the demo is missing next to luo-bench; building them: {how}");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(&args).arg("--manifest-path").arg(&manifest);
        if let Some(target) = dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        let status = cmd
            .stdout(Stdio::from(std::io::stderr()))
            .status()
            .map_err(|e| Failure::run(format!("running `{how}`: {e}")))?;
        if !status.success() || !p.luod.is_file() || !p.demo.is_file() {
            return Err(Failure::run(format!("`{how}` failed ({status})")));
        }
        Ok(p)
    }
}

/// `luod` (`luod` overrides it) next to this executable, for the
/// benchmarks that need nothing else; built as [`Programs::locate`] builds
/// it when missing.
pub fn locate_luod(luod: Option<PathBuf>) -> Result<PathBuf, Failure> {
    let exe = std::env::current_exe()?;
    let path = luod.unwrap_or_else(|| exe.parent().unwrap_or(Path::new(".")).join("luod"));
    if path.is_file() {
        return Ok(path);
    }
    Programs::locate(Some(path), None).map(|p| p.luod)
}

/// A temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir, Failure> {
        let path = std::env::temp_dir().join(format!("luo-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .map_err(|e| Failure::run(format!("creating {}: {e}", path.display())))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

static NO_KEEPER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the luods the suite starts mirror their files to a keeper
/// (luod's default) or not (`--keeper off`).
pub fn set_keeper(on: bool) {
    NO_KEEPER.store(!on, std::sync::atomic::Ordering::Relaxed);
}

/// A luod of our own on a socket in a temporary directory; killed on drop.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    pub socket: PathBuf,
    log: PathBuf,
    /// From `spawn` to the first answered request.
    pub startup: Duration,
    luod: PathBuf,
    args: Vec<String>,
    dir: Option<TempDir>,
}

impl Agent {
    pub fn start(luod: &Path, tag: &str) -> Result<Agent, Failure> {
        Agent::start_args(luod, tag, &["--log-level", "warn"])
    }

    /// As [`Agent::start`], with `args` for luod.
    pub fn start_args(luod: &Path, tag: &str, args: &[&str]) -> Result<Agent, Failure> {
        let dir = TempDir::new(tag)?;
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Agent::start_in(luod, dir, args)
    }

    fn start_in(luod: &Path, dir: TempDir, mut args: Vec<String>) -> Result<Agent, Failure> {
        if NO_KEEPER.load(std::sync::atomic::Ordering::Relaxed)
            && !args.iter().any(|a| a == "--keeper")
        {
            args.extend(["--keeper".to_string(), "off".to_string()]);
        }
        let socket = dir.0.join("luod.sock");
        let log = dir.0.join("luod.log");
        let t = Instant::now();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = Command::new(luod)
            .arg("--socket")
            .arg(&socket)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .map_err(|e| Failure::run(format!("starting {}: {e}", luod.display())))?;
        let mut agent = Agent {
            child,
            socket,
            log,
            startup: Duration::ZERO,
            luod: luod.to_path_buf(),
            args,
            dir: Some(dir),
        };
        // Start-up ends when a request is answered, not when the socket exists.
        loop {
            if let Ok(c) = luo::Client::connect_to(&agent.socket) {
                if c.status().is_ok() {
                    break;
                }
            }
            if let Some(status) = agent.child.try_wait()? {
                return Err(Failure::run(format!(
                    "luod exited at start-up ({status}): {}",
                    agent.log_text()
                )));
            }
            if t.elapsed() > Duration::from_secs(10) {
                return Err(Failure::run("luod did not answer within 10 s of starting"));
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        agent.startup = t.elapsed();
        Ok(agent)
    }

    /// Stops luod (SIGTERM) and starts it again on the same socket; returns
    /// the time from the stop to the new agent's first answer.
    pub fn restart(mut self) -> Result<(Duration, Agent), Failure> {
        let t = Instant::now();
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let dir = self.dir.take().expect("a directory");
        let (luod, args) = (self.luod.clone(), std::mem::take(&mut self.args));
        // Stopped already: dropping must not kill the keeper.
        std::mem::forget(self);
        let next = Agent::start_in(&luod, dir, args)?;
        Ok((t.elapsed(), next))
    }

    pub fn client(&self) -> Result<luo::Client, Failure> {
        luo::Client::connect_to(&self.socket).map_err(|e| Failure::run(e.to_string()))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's resident set (`VmRSS`), in bytes.
    pub fn rss(&self) -> Result<u64, Failure> {
        rss_of(self.pid())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Agent {
    /// The keeper's pid, if luod started one (`luoctl status`'s store).
    pub fn keeper_pid(&self) -> Option<u32> {
        let store = self.client().ok()?.status().ok()?.store;
        store
            .strip_prefix("keeper (pid ")?
            .strip_suffix(')')?
            .parse()
            .ok()
    }
}

impl Drop for Agent {
    /// Kills luod, and its keeper: a killed luod's keeper would otherwise
    /// hold its files until someone takes them back.
    fn drop(&mut self) {
        let keeper = self.keeper_pid();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(pid) = keeper {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

/// `VmRSS` of `/proc/PID/status`, in bytes.
pub fn rss_of(pid: u32) -> Result<u64, Failure> {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).map_err(|e| Failure::run(format!("reading {path}: {e}")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| Failure::run(format!("no VmRSS in {path}")))
}

/// Whether `name` is an executable on `$PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
