//! One instance of the service: started through the trampoline (luoctl
//! re-executing itself as `luoctl exec-service`, which lays out the passed
//! descriptors and the environment of `sd_listen_fds(3)` in its own process
//! and then execs the command), its stderr forwarded and remembered, and
//! stopped by signalling its process group.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Lines of stderr kept per instance.
pub const TAIL_LINES: usize = 20;

/// The hidden luoctl command that is the trampoline.
pub const TRAMPOLINE: &str = "exec-service";

/// What an instance is doing, as `luoctl services` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Started, not ready yet.
    Starting,
    /// `READY=1` (or `--ready after:` elapsed).
    Ready,
    /// `RELOADING=1` until the next `READY=1`.
    Reloading,
    /// Told to stop, or said `STOPPING=1`.
    Stopping,
}

impl State {
    /// The word for people.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::Reloading => "reloading",
            State::Stopping => "stopping",
        }
    }
}

/// A running (or just exited) instance.
#[derive(Debug)]
pub struct Instance {
    /// Its number in this supervisor (1, 2, ...).
    pub generation: u64,
    /// The process started (the trampoline, then the command: same pid).
    pub child: Child,
    /// Its pid, which is also its process group.
    pub pid: i32,
    /// The main pid (`MAINPID=` may change it).
    pub main_pid: i32,
    /// Its command.
    pub command: Vec<String>,
    /// Its `NOTIFY_SOCKET`.
    pub notify: OwnedFd,
    /// The socket's path (removed when the instance goes).
    pub notify_path: PathBuf,
    /// What it is doing.
    pub state: State,
    /// The last `STATUS=`.
    pub status: Option<String>,
    /// The last `ERRNO=`.
    pub errno: Option<i32>,
    /// The trampoline could not exec the command (`X_LUO_EXEC_ERRNO`).
    pub exec_errno: Option<i32>,
    /// The last lines of its stderr.
    pub tail: Arc<Mutex<VecDeque<String>>>,
    /// The thread copying its stderr, until it has copied the last line.
    relay: Option<std::thread::JoinHandle<()>>,
    /// When it started.
    pub started: Instant,
    /// When it became ready.
    pub ready_since: Option<Instant>,
    /// Ready by then, or it failed (`EXTEND_TIMEOUT_USEC` moves it).
    pub ready_deadline: Instant,
    /// The watchdog interval and when the next keep-alive is due.
    pub watchdog: Option<(Duration, Instant)>,
    /// Killed (SIGKILL) at this time if it has not exited.
    pub kill_at: Option<Instant>,
    /// How it exited, once it has.
    pub exited: Option<ExitStatus>,
}

/// How to start an instance.
#[derive(Debug)]
pub struct Spawn<'a> {
    /// The service's name (the prefix of its stderr lines).
    pub name: &'a str,
    /// Its number.
    pub generation: u64,
    /// The command.
    pub command: &'a [String],
    /// The descriptors to pass, with their names, in order.
    pub passed: Vec<(&'a str, BorrowedFd<'a>)>,
    /// Where to bind its `NOTIFY_SOCKET`.
    pub notify_path: &'a Path,
    /// `WATCHDOG_USEC`.
    pub watchdog: Option<Duration>,
    /// `--ready-timeout`.
    pub ready_timeout: Duration,
}

/// Starts an instance.
pub fn spawn(s: Spawn<'_>) -> std::io::Result<Instance> {
    let abstract_name = s
        .notify_path
        .as_os_str()
        .as_encoded_bytes()
        .starts_with(b"@");
    if !abstract_name {
        let _ = std::fs::remove_file(s.notify_path);
    }
    let notify = luo_sys::service::notify_bind(s.notify_path).map_err(std::io::Error::from)?;
    // Senders are checked by their credentials, so a service that changes
    // its user may still reach the socket.
    use std::os::unix::fs::PermissionsExt;
    if !abstract_name {
        let _ = std::fs::set_permissions(s.notify_path, std::fs::Permissions::from_mode(0o777));
    }
    // Inheritable copies, closed here once the child has them.
    let copies: Vec<OwnedFd> = s
        .passed
        .iter()
        .map(|(_, fd)| luo_sys::service::dup_inheritable(*fd).map_err(std::io::Error::from))
        .collect::<Result<_, _>>()?;
    let nums: Vec<String> = copies.iter().map(|f| f.as_raw_fd().to_string()).collect();
    let names: Vec<&str> = s.passed.iter().map(|(n, _)| *n).collect();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("luoctl").arg(TRAMPOLINE);
    if !nums.is_empty() {
        cmd.arg("--fds")
            .arg(nums.join(","))
            .arg("--names")
            .arg(names.join(":"));
    }
    cmd.arg("--notify-socket").arg(s.notify_path);
    if let Some(w) = s.watchdog {
        cmd.arg("--watchdog-usec").arg(w.as_micros().to_string());
    }
    cmd.arg("--")
        .args(s.command)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let spawned = cmd.spawn();
    drop(copies);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(s.notify_path);
            return Err(e);
        }
    };
    let pid = child.id() as i32;
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let relay = child.stderr.take().map(|err| {
        let tail = tail.clone();
        let prefix = format!("{}[{pid}]: ", s.name);
        std::thread::spawn(move || forward(err, &prefix, &tail))
    });
    let now = Instant::now();
    Ok(Instance {
        generation: s.generation,
        child,
        pid,
        main_pid: pid,
        command: s.command.to_vec(),
        notify,
        notify_path: s.notify_path.to_path_buf(),
        state: State::Starting,
        status: None,
        errno: None,
        exec_errno: None,
        tail,
        relay,
        started: now,
        ready_since: None,
        ready_deadline: now + s.ready_timeout,
        watchdog: s.watchdog.map(|w| (w, now + w)),
        kill_at: None,
        exited: None,
    })
}

/// Copies the instance's stderr to ours, each line prefixed, keeping the
/// last [`TAIL_LINES`].
fn forward(err: impl std::io::Read, prefix: &str, tail: &Mutex<VecDeque<String>>) {
    let mut r = BufReader::new(err);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\n');
        let _ = writeln!(std::io::stderr().lock(), "{prefix}{text}");
        let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        t.push_back(text.to_string());
    }
}

impl Instance {
    /// Waits briefly for the last lines of its stderr, so that they are
    /// shown (and in the tail) before its exit is reported. Bounded: a
    /// process outside its group may still hold the pipe.
    fn drain_stderr(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(250);
        while self.relay.as_ref().is_some_and(|r| !r.is_finished()) {
            if Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Some(r) = self.relay.take() {
            let _ = r.join();
        }
    }

    /// Whether it has exited (reaping it if so). With `MAINPID=` naming
    /// another process, that one must be gone too.
    pub fn poll_exit(&mut self) -> bool {
        if self.exited.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exited = Some(st);
                // What is left of its group goes with it.
                let _ = luo_sys::service::kill_group(self.pid, luo_sys::signal::SIGKILL);
                self.drain_stderr();
            }
        }
        self.exited.is_some()
            && (self.main_pid == self.pid || !luo_sys::service::process_exists(self.main_pid))
    }

    /// Sends `signal` to its process group (and to its main pid, if that
    /// left the group), and SIGKILL after `timeout`.
    pub fn stop(&mut self, signal: i32, timeout: Duration) {
        self.state = State::Stopping;
        self.signal(signal);
        if self.kill_at.is_none() {
            self.kill_at = Some(Instant::now() + timeout);
        }
    }

    /// Sends `signal` to the process group (and the main pid).
    pub fn signal(&self, signal: i32) {
        let _ = luo_sys::service::kill_group(self.pid, signal);
        if self.main_pid != self.pid {
            let _ = luo_sys::service::kill(self.main_pid, signal);
        }
    }

    /// How it ended, in words: `exited with status 3`, `killed by signal
    /// KILL`, with the last `STATUS=`.
    pub fn describe_exit(&self) -> String {
        let mut s = match self.exited {
            Some(st) => exit_text(st),
            None => "still running".to_string(),
        };
        if let Some(st) = &self.status {
            s.push_str(&format!("; last STATUS={st}"));
        }
        if let Some(e) = self.errno {
            s.push_str(&format!("; ERRNO={e}"));
        }
        s
    }

    /// The last lines of its stderr.
    pub fn tail(&self) -> Vec<String> {
        self.tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.notify_path);
    }
}

/// `exited with status N` or `killed by signal NAME`.
pub fn exit_text(st: ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("killed by signal {}", luo_sys::service::signal_name(s)),
        _ => "ended".to_string(),
    }
}

/// The exit code that stands for `st`: its status, or 128 + signal.
pub fn exit_code(st: ExitStatus) -> u8 {
    match (st.code(), st.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(s)) => (128 + s) as u8,
        _ => 1,
    }
}

/// The trampoline's arguments (`luoctl exec-service`).
#[derive(Debug, Clone, clap::Args)]
pub struct TrampolineArgs {
    /// Inherited descriptors to pass, in order
    #[arg(long, value_delimiter = ',')]
    pub fds: Vec<RawFd>,
    /// Their names, colon-separated
    #[arg(long, default_value = "")]
    pub names: String,
    /// `NOTIFY_SOCKET`
    #[arg(long)]
    pub notify_socket: PathBuf,
    /// `WATCHDOG_USEC`
    #[arg(long)]
    pub watchdog_usec: Option<u64>,
    /// The command
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// The trampoline: lays out the descriptors at 3.., sets `LISTEN_PID` to
/// this process's pid (the service's, since exec keeps it), `LISTEN_FDS`,
/// `LISTEN_FDNAMES`, `NOTIFY_SOCKET` and the watchdog variables, and execs
/// the command. Returns only on failure: the error and the exit status
/// (127 or 126, as a shell). A failed exec is also told to the supervisor
/// on the notify socket (`X_LUO_EXEC_ERRNO`), so that a command that never
/// ran is not restarted as if it had crashed.
pub fn trampoline(a: &TrampolineArgs) -> (luo::Error, u8) {
    let fail = |errno: luo::Errno, what: String| (luo::Error::new(errno, what), 127);
    if let Err(e) = luo_sys::unblock_all_signals() {
        return fail(e, "cannot unblock signals".into());
    }
    if let Err(e) = luo_sys::service::arrange_listen_fds(&a.fds) {
        return fail(e, "cannot lay out the passed descriptors".into());
    }
    let pid = std::process::id().to_string();
    let mut cmd = Command::new(&a.command[0]);
    cmd.args(&a.command[1..]);
    for k in [
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "LISTEN_PIDFDID",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
    ] {
        cmd.env_remove(k);
    }
    if !a.fds.is_empty() {
        cmd.env("LISTEN_PID", &pid)
            .env("LISTEN_FDS", a.fds.len().to_string())
            .env("LISTEN_FDNAMES", &a.names);
    }
    cmd.env("NOTIFY_SOCKET", &a.notify_socket);
    if let Some(w) = a.watchdog_usec {
        cmd.env("WATCHDOG_USEC", w.to_string())
            .env("WATCHDOG_PID", &pid);
    }
    let e = cmd.exec();
    let errno = e.raw_os_error().map_or(luo::Errno::ENOEXEC, luo::Errno);
    let what = format!("cannot run {}: {}", a.command[0], errno.description());
    let note = format!("X_LUO_EXEC_ERRNO={}\nSTATUS={what}", errno.0);
    let _ = luo_sys::dgram_send_to(&a.notify_socket, note.as_bytes(), &[]);
    let code = if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    (luo::Error::new(errno, what), code)
}
