//! `luoctl run`: a service supervisor in the foreground.
//!
//! The listeners are bound once and kept, with the service's fd store and
//! a manifest, in one persistent luod session per service name
//! ([`store`]). Every instance receives them as systemd passes sockets
//! (`sd_listen_fds(3)`, through the trampoline in [`instance`]) and talks
//! back over its own `NOTIFY_SOCKET` ([`notify`]). Restarts overlap (the
//! new instance is started and must become ready before the old one is
//! stopped) or stop and start; a failed restart is rolled back. The
//! supervisor answers `luoctl restart` and `luoctl services` on a control
//! socket ([`control`]).
//!
//! The loop is one thread over an epoll set: signals (a signalfd), the
//! control socket and its connections, each instance's notify socket and
//! the stored fds watched for hang-ups; process exits and timers are
//! checked every tick.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use luo_sys::signal::{SIGHUP, SIGINT, SIGKILL, SIGTERM};

pub mod control;
pub mod instance;
pub mod listen;
pub mod notify;
pub mod store;

use control::{ListenerInfo, Reply, Request, ServiceInfo, StoredInfo};
use instance::{Instance, Spawn, State};
use listen::ListenSpec;
use store::{Store, POLL_KEY};

/// How a restart replaces the running instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// Start the new instance, wait until it is ready, then stop the old.
    #[default]
    Overlap,
    /// Stop the old instance, then start the new.
    StopStart,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Overlap => "overlap",
            Mode::StopStart => "stop-start",
        }
    }
}

/// When an instance counts as ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// When it sends `READY=1`.
    Notify,
    /// When it is still running after this long (or sent `READY=1`).
    After(Duration),
}

/// What to do when the service fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RestartPolicy {
    /// Start it again, with back-off.
    #[default]
    OnFailure,
    /// Exit with the service's status.
    No,
}

/// Who may send notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum NotifyAccess {
    /// The main process only.
    #[default]
    Main,
    /// Any process of the service's process group.
    All,
}

/// Everything `luoctl run` was told.
#[derive(Debug, Clone)]
pub struct Options {
    /// The service's name.
    pub name: String,
    /// luod's socket.
    pub socket: PathBuf,
    /// The listeners.
    pub listen: Vec<ListenSpec>,
    /// Restart mode.
    pub mode: Mode,
    /// Readiness.
    pub ready: Ready,
    /// How long an instance may take to become ready.
    pub ready_timeout: Duration,
    /// The signal that asks an instance to stop.
    pub stop_signal: i32,
    /// How long after it SIGKILL follows.
    pub stop_timeout: Duration,
    /// What to do on failure.
    pub restart: RestartPolicy,
    /// Who may notify.
    pub notify_access: NotifyAccess,
    /// The watchdog interval.
    pub watchdog: Option<Duration>,
    /// Most fds in the store (0 disables it).
    pub fdstore_max: usize,
    /// The command.
    pub command: Vec<String>,
}

/// The first back-off after a failure.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Ready this long, and the back-off starts over.
const BACKOFF_RESET: Duration = Duration::from_secs(10);
/// How often the session is checked against the supervisor's copies.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// The loop's tick.
const TICK_MS: i32 = 50;

const KEY_SIGNALS: u64 = 1;
const KEY_CONTROL: u64 = 2;
const KEY_CONN: u64 = 1 << 32;
const KEY_NOTIFY: u64 = 1 << 40;

/// A restart in progress.
#[derive(Debug)]
struct Pending {
    /// The new instance, once started.
    inst: Option<Instance>,
    /// Its command.
    command: Vec<String>,
    /// Stop-start: the old command, started again on failure.
    old_command: Option<Vec<String>>,
    /// Who asked (replied to when it is over).
    waiters: Vec<OwnedFd>,
}

struct Supervisor {
    o: Options,
    store: Store,
    epoll: Arc<luo_sys::Epoll>,
    signals: luo_sys::SignalFd,
    control: OwnedFd,
    control_path: PathBuf,
    conns: HashMap<u64, OwnedFd>,
    next_conn: u64,
    command: Vec<String>,
    current: Option<Instance>,
    pending: Option<Pending>,
    stopping: Vec<Instance>,
    /// An instance left by an earlier supervisor: (pid, kill at).
    orphans: Vec<(i32, Option<Instant>)>,
    generation: u64,
    backoff: Duration,
    next_start: Option<Instant>,
    shutting_down: bool,
    exit: Option<u8>,
    last_check: Instant,
    /// An instance of this supervisor ran its command (it did not fail to
    /// exec): from then on a failed exec is retried like any failure.
    ran: bool,
    /// Why the supervisor exits, when it is not the service's own status.
    exit_error: Option<luo::Error>,
}

fn say(name: &str, msg: &str) {
    let _ = writeln!(std::io::stderr().lock(), "luoctl run {name}: {msg}");
}

/// Runs the supervisor until it is told to stop (exit 0) or, with
/// `--restart no`, the service exits (its status). `Err` when it cannot
/// start.
pub fn main(o: Options) -> Result<(u8, Option<luo::Error>), String> {
    let signals = luo_sys::SignalFd::new(&[SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| format!("cannot set up signals: {e}"))?;
    let epoll = Arc::new(luo_sys::Epoll::new().map_err(|e| e.to_string())?);
    let dir = control::run_dir(&o.socket);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
    }
    let control_path = control::socket_path(&o.socket, &o.name);
    if luo_sys::seqpacket_connect(&control_path).is_ok() {
        return Err(format!(
            "a supervisor for '{}' is already running ({})",
            o.name,
            control_path.display()
        ));
    }
    let _ = std::fs::remove_file(&control_path);
    let control = luo_sys::seqpacket_listen(&control_path, 16)
        .map_err(|e| format!("cannot listen on {}: {e}", control_path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&control_path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", control_path.display()))?;
    }
    let backing = store::LuodBacking::open(&o.socket, &o.name).map_err(|e| {
        format!(
            "cannot open the session '{}' in luod at {}: {e}",
            o.name,
            o.socket.display()
        )
    })?;
    let (store, log) = Store::open(
        Box::new(backing),
        &o.listen,
        o.fdstore_max,
        Some(epoll.clone()),
    )?;
    for l in log {
        say(&o.name, &l);
    }
    epoll
        .add(signals.as_fd(), KEY_SIGNALS, luo_sys::epoll::EPOLLIN)
        .map_err(|e| e.to_string())?;
    epoll
        .add(control.as_fd(), KEY_CONTROL, luo_sys::epoll::EPOLLIN)
        .map_err(|e| e.to_string())?;
    let mut s = Supervisor {
        command: o.command.clone(),
        o,
        store,
        epoll,
        signals,
        control,
        control_path,
        conns: HashMap::new(),
        next_conn: 0,
        current: None,
        pending: None,
        stopping: Vec::new(),
        orphans: Vec::new(),
        generation: 0,
        backoff: BACKOFF_MIN,
        next_start: None,
        shutting_down: false,
        exit: None,
        last_check: Instant::now(),
        ran: false,
        exit_error: None,
    };
    s.take_over();
    if let Err(e) = s.start_current() {
        s.cleanup();
        return Err(e);
    }
    let code = s.run();
    s.cleanup();
    Ok((code, s.exit_error.take()))
}

impl Supervisor {
    fn log(&self, msg: &str) {
        say(&self.o.name, msg);
    }

    /// An instance an earlier supervisor left running: stopped once ours
    /// is ready (overlap), or now (stop-start).
    fn take_over(&mut self) {
        for rec in self.store.instances.clone() {
            if luo_sys::service::process_start_time(rec.pid) != Some(rec.start_time) {
                continue;
            }
            self.log(&format!(
                "an instance from an earlier supervisor is running (pid {}); it is stopped {}",
                rec.pid,
                match self.o.mode {
                    Mode::Overlap => "once the new one is ready",
                    Mode::StopStart => "first",
                }
            ));
            self.orphans.push((rec.pid, None));
        }
        if self.o.mode == Mode::StopStart && !self.orphans.is_empty() {
            self.stop_orphans();
            while !self.orphans.is_empty() {
                std::thread::sleep(Duration::from_millis(TICK_MS as u64));
                self.tick_orphans();
            }
        }
    }

    fn stop_orphans(&mut self) {
        for (pid, kill_at) in &mut self.orphans {
            if kill_at.is_none() {
                let _ = luo_sys::service::kill_group(*pid, self.o.stop_signal);
                let _ = luo_sys::service::kill(*pid, self.o.stop_signal);
                *kill_at = Some(Instant::now() + self.o.stop_timeout);
            }
        }
    }

    fn tick_orphans(&mut self) {
        let now = Instant::now();
        self.orphans.retain_mut(|(pid, kill_at)| {
            if !luo_sys::service::process_exists(*pid) {
                return false;
            }
            if kill_at.is_some_and(|k| now >= k) {
                let _ = luo_sys::service::kill_group(*pid, SIGKILL);
                let _ = luo_sys::service::kill(*pid, SIGKILL);
            }
            true
        });
    }

    fn spawn(&mut self, command: &[String]) -> Result<Instance, String> {
        self.generation += 1;
        let g = self.generation;
        let mut notify_path =
            control::run_dir(&self.o.socket).join(format!("{}.{g}.notify", self.o.name));
        if notify_path.as_os_str().len() >= 108 {
            // Too long for sun_path: the abstract namespace.
            notify_path = format!("@luo-run/{}/{}.{g}", std::process::id(), self.o.name).into();
        }
        let ready_timeout = match self.o.ready {
            Ready::Notify => self.o.ready_timeout,
            Ready::After(d) => self.o.ready_timeout.max(d),
        };
        let inst = instance::spawn(Spawn {
            name: &self.o.name,
            generation: g,
            command,
            passed: self.store.passed(),
            notify_path: &notify_path,
            watchdog: self.o.watchdog,
            ready_timeout,
        })
        .map_err(|e| format!("cannot start {}: {e}", command[0]))?;
        self.epoll
            .add(inst.notify.as_fd(), KEY_NOTIFY | g, luo_sys::epoll::EPOLLIN)
            .map_err(|e| e.to_string())?;
        self.log(&format!(
            "started instance {g} (pid {}): {} with {} fd(s)",
            inst.pid,
            command.join(" "),
            self.store.passed().len()
        ));
        Ok(inst)
    }

    fn start_current(&mut self) -> Result<(), String> {
        let cmd = self.command.clone();
        let inst = self.spawn(&cmd)?;
        self.current = Some(inst);
        self.next_start = None;
        Ok(())
    }

    fn run(&mut self) -> u8 {
        let mut evs = Vec::new();
        loop {
            if let Some(code) = self.exit {
                return code;
            }
            match self.epoll.wait(&mut evs, 64, TICK_MS) {
                Ok(()) => {}
                Err(e) if e == luo::Errno::EINTR => continue,
                Err(e) => {
                    self.log(&format!("epoll: {e}"));
                    return 1;
                }
            }
            for &(key, _) in &evs.clone() {
                match key {
                    KEY_SIGNALS => self.on_signals(),
                    KEY_CONTROL => self.on_accept(),
                    k if k & POLL_KEY != 0 => {
                        if let Some(name) = self.store.hangup(k & !POLL_KEY) {
                            self.log(&format!(
                                "stored fd '{name}' hung up: removed from the store"
                            ));
                        }
                    }
                    k if k & KEY_NOTIFY != 0 => self.on_notify(k & !KEY_NOTIFY),
                    k if k & KEY_CONN != 0 => self.on_conn(k),
                    _ => {}
                }
            }
            self.tick();
        }
    }

    fn on_signals(&mut self) {
        while let Ok(Some(sig)) = self.signals.read() {
            if sig == SIGHUP {
                self.log("SIGHUP: restarting");
                self.request_restart(None, None);
            } else if self.shutting_down {
                self.log("asked again: killing the service");
                for i in self.all_instances() {
                    i.signal(9);
                }
            } else {
                self.log(&format!(
                    "SIG{}: stopping the service (the session keeps its listeners and store)",
                    luo_sys::service::signal_name(sig)
                ));
                self.shutdown();
            }
        }
    }

    fn all_instances(&mut self) -> Vec<&mut Instance> {
        let mut v: Vec<&mut Instance> = self.stopping.iter_mut().collect();
        v.extend(self.current.as_mut());
        if let Some(p) = self.pending.as_mut() {
            v.extend(p.inst.as_mut());
        }
        v
    }

    fn shutdown(&mut self) {
        self.shutting_down = true;
        self.next_start = None;
        if let Some(p) = self.pending.take() {
            self.reply_all(
                p.waiters,
                &Reply::Refused {
                    message: "the supervisor is stopping".into(),
                },
            );
            if let Some(mut i) = p.inst {
                self.store.rollback(i.generation);
                i.stop(self.o.stop_signal, self.o.stop_timeout);
                self.stopping.push(i);
            }
        }
        let (sig, t) = (self.o.stop_signal, self.o.stop_timeout);
        if let Some(mut c) = self.current.take() {
            c.stop(sig, t);
            self.stopping.push(c);
        }
        self.stop_orphans();
    }

    fn on_accept(&mut self) {
        while let Ok(c) = luo_sys::accept(self.control.as_fd()) {
            // The socket is mode 0600; the peer's uid is checked too (it
            // closes the window between bind and chmod).
            let me = luo_sys::geteuid();
            if !luo_sys::peer_cred(c.as_fd()).is_ok_and(|p| p.uid == me || p.uid == 0) {
                self.log("control connection from another user refused");
                continue;
            }
            self.next_conn += 1;
            let key = KEY_CONN | self.next_conn;
            if self
                .epoll
                .add(c.as_fd(), key, luo_sys::epoll::EPOLLIN)
                .is_ok()
            {
                self.conns.insert(key, c);
            }
        }
    }

    fn on_conn(&mut self, key: u64) {
        let Some(conn) = self.conns.get(&key) else {
            return;
        };
        let req = match control::recv::<Request>(conn) {
            Err(e) if e.errno == luo::Errno::EAGAIN => return,
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(None),
            Err(e) => Err(Some(e)),
        };
        let conn = self.conns.remove(&key).expect("present");
        let _ = self.epoll.delete(conn.as_fd());
        let _ = luo_sys::set_nonblocking(conn.as_fd(), false);
        match req {
            Err(None) => {}
            Err(Some(e)) => {
                let _ = control::send(
                    &conn,
                    &Reply::Refused {
                        message: e.to_string(),
                    },
                );
            }
            Ok(Request::Service { start }) => {
                let (service, next, print) =
                    control::page_service(&self.info(), start.unwrap_or(0));
                let _ = control::send(
                    &conn,
                    &Reply::Service {
                        service: Box::new(service),
                        next,
                        fingerprint: Some(print),
                    },
                );
            }
            Ok(Request::Restart { command }) => {
                let bad = match &command {
                    Some(c) if c.is_empty() => Some("empty command".to_string()),
                    Some(c) => control::check_command(c).err().map(|e| e.to_string()),
                    None => None,
                };
                if let Some(message) = bad {
                    let _ = control::send(&conn, &Reply::Refused { message });
                    return;
                }
                self.request_restart(command, Some(conn));
            }
        }
    }

    fn reply_all(&self, waiters: Vec<OwnedFd>, r: &Reply) {
        for w in waiters {
            let _ = control::send(&w, r);
        }
    }

    fn info(&self) -> ServiceInfo {
        let cur = self.current.as_ref();
        ServiceInfo {
            name: self.o.name.clone(),
            supervisor: std::process::id() as i32,
            command: self.command.clone(),
            pid: cur.map(|c| c.main_pid),
            state: cur.map_or("down", |c| c.state.as_str()).to_string(),
            status: cur.and_then(|c| c.status.clone()),
            mode: self.o.mode.as_str().to_string(),
            listeners: self
                .store
                .listeners
                .iter()
                .map(|l| ListenerInfo {
                    spec: l.spec.clone(),
                    token: l.token,
                })
                .collect(),
            stored: self
                .store
                .entries
                .iter()
                .map(|e| StoredInfo {
                    name: e.name.clone(),
                    kind: e.kind.clone(),
                    poll: e.poll,
                    token: e.token,
                    pending: e.change != store::Change::Committed,
                })
                .collect(),
            restarts: self.store.restarts,
            rollbacks: self.store.rollbacks,
            restarting: self
                .pending
                .as_ref()
                .and_then(|p| p.inst.as_ref())
                .map(|i| i.pid),
        }
    }

    fn request_restart(&mut self, command: Option<Vec<String>>, waiter: Option<OwnedFd>) {
        let refuse = |w: Option<OwnedFd>, m: &str| {
            if let Some(w) = w {
                let _ = control::send(&w, &Reply::Refused { message: m.into() });
            }
        };
        if self.shutting_down {
            return refuse(waiter, "the supervisor is stopping");
        }
        if let Some(p) = self.pending.as_mut() {
            // One restart at a time: a second request waits for the first.
            if command.is_none() || command.as_ref() == Some(&p.command) {
                p.waiters.extend(waiter);
                return;
            }
            return refuse(waiter, "a restart with another command is in progress");
        }
        let new = command.unwrap_or_else(|| self.command.clone());
        // A start waiting out its back-off is replaced by this restart.
        self.next_start = None;
        let mut p = Pending {
            inst: None,
            command: new.clone(),
            old_command: None,
            waiters: waiter.into_iter().collect(),
        };
        match (self.o.mode, self.current.take()) {
            (Mode::StopStart, Some(mut old)) => {
                self.log(&format!(
                    "restart: stopping instance {} (pid {}) first",
                    old.generation, old.pid
                ));
                old.stop(self.o.stop_signal, self.o.stop_timeout);
                p.old_command = Some(old.command.clone());
                self.stopping.push(old);
                // Started when the old one is gone (in tick).
                self.pending = Some(p);
            }
            (_, cur) => {
                self.current = cur;
                match self.spawn(&new) {
                    Ok(i) => {
                        p.inst = Some(i);
                        self.pending = Some(p);
                    }
                    Err(e) => {
                        self.store.rollbacks += 1;
                        self.store.save();
                        self.log(&format!("restart failed: {e}"));
                        self.reply_all(p.waiters, &Reply::RolledBack { message: e });
                    }
                }
            }
        }
    }

    fn on_notify(&mut self, g: u64) {
        let access = self.o.notify_access;
        let fdstore_max = self.o.fdstore_max;
        let name = self.o.name.clone();
        let ready_timeout = self.o.ready_timeout;
        let pending_gen = self
            .pending
            .as_ref()
            .and_then(|p| p.inst.as_ref())
            .map(|i| i.generation);
        let mut buf = vec![0u8; notify::MAX_MESSAGE + 1];
        let mut became_ready = false;
        let mut trigger = false;
        loop {
            let Some(inst) = self.instance_mut(g) else {
                return;
            };
            let n = match luo_sys::service::notify_recv(
                inst.notify.as_fd(),
                &mut buf,
                luo_sys::SCM_MAX_FD,
            ) {
                Ok(n) => n,
                Err(_) => break,
            };
            let who = n.cred.map_or(0, |c| c.pid);
            let (main_pid, pgid, gen) = (inst.main_pid, inst.pid, inst.generation);
            let allowed = who != 0
                && (who == main_pid
                    || (access == NotifyAccess::All
                        && luo_sys::service::getpgid(who).is_ok_and(|p| p == pgid)));
            if !allowed {
                self.log(&format!(
                    "instance {gen}: notification from pid {who} ignored (--notify-access {})",
                    match access {
                        NotifyAccess::Main => "main",
                        NotifyAccess::All => "all",
                    }
                ));
                continue;
            }
            if n.truncated || n.ctrunc {
                self.log(&format!(
                    "instance {gen}: notification truncated: ignored, its fds closed"
                ));
                continue;
            }
            let m = match notify::parse(&buf[..n.len], n.fds.len()) {
                Ok(m) => m,
                Err(e) => {
                    self.log(&format!(
                        "instance {gen}: malformed notification ignored: {e}"
                    ));
                    continue;
                }
            };
            let by = (pending_gen == Some(gen)).then_some(gen);
            let mut fds = n.fds;
            if m.fdstore && !fds.is_empty() {
                let name = m.fdname.clone().unwrap_or_else(|| "stored".into());
                if fdstore_max == 0 {
                    self.log(&format!("instance {gen}: FDSTORE=1 but the fd store is off (--fdstore-max 0): closed"));
                } else {
                    let got = std::mem::take(&mut fds);
                    for w in self.store.store(got, &name, m.fdpoll.unwrap_or(true), by) {
                        self.log(&format!("instance {gen}: {w}"));
                    }
                }
            }
            if m.fdstoreremove {
                let name = m.fdname.clone().unwrap_or_default();
                let k = self.store.remove(&name, by);
                self.log(&format!(
                    "instance {gen}: FDSTOREREMOVE '{name}': {k} fd(s) removed"
                ));
            }
            if !fds.is_empty() && !m.barrier {
                self.log(&format!(
                    "instance {gen}: {} fd(s) sent without FDSTORE=1: closed",
                    fds.len()
                ));
            }
            // BARRIER=1: its fd is closed now that everything before it is
            // processed.
            drop(fds);
            let now = Instant::now();
            let Some(inst) = self.instance_mut(g) else {
                return;
            };
            if let Some(p) = m.mainpid {
                if luo_sys::service::getpgid(p).is_ok_and(|x| x == inst.pid) {
                    inst.main_pid = p;
                } else {
                    say(&name, &format!("instance {gen}: MAINPID={p} is not in the service's process group: ignored"));
                }
            }
            if let Some(s) = m.status {
                inst.status = Some(s);
            }
            if let Some(e) = m.errno {
                inst.errno = Some(e);
            }
            if let Some(e) = m.exec_errno {
                inst.exec_errno = Some(e);
            }
            if let Some(u) = m.watchdog_usec {
                if let Some((_, _)) = inst.watchdog {
                    let d = Duration::from_micros(u);
                    inst.watchdog = Some((d, now + d));
                }
            }
            if m.watchdog {
                if let Some((d, _)) = inst.watchdog {
                    inst.watchdog = Some((d, now + d));
                }
            }
            trigger |= m.watchdog_trigger;
            if let Some(u) = m.extend_timeout_usec {
                let until = now + Duration::from_micros(u);
                match inst.state {
                    State::Starting | State::Reloading => {
                        inst.ready_deadline = inst.ready_deadline.max(until)
                    }
                    State::Stopping => {
                        if let Some(k) = inst.kill_at.as_mut() {
                            *k = (*k).max(until);
                        }
                    }
                    State::Ready => {}
                }
            }
            if m.reloading && inst.state != State::Stopping {
                inst.state = State::Reloading;
                inst.ready_deadline = now + ready_timeout;
            }
            if m.stopping {
                inst.state = State::Stopping;
            }
            if m.ready && matches!(inst.state, State::Starting | State::Reloading) {
                if inst.state == State::Starting {
                    became_ready = true;
                }
                inst.state = State::Ready;
                inst.ready_since.get_or_insert(now);
            }
        }
        if trigger {
            self.log(&format!("instance {g}: WATCHDOG=trigger"));
            self.fail_instance(g, "it asked for the watchdog action (WATCHDOG=trigger)");
        } else if became_ready {
            self.on_ready(g);
        }
    }

    fn instance_mut(&mut self, g: u64) -> Option<&mut Instance> {
        if let Some(c) = self.current.as_mut().filter(|c| c.generation == g) {
            return Some(c);
        }
        if let Some(i) = self
            .pending
            .as_mut()
            .and_then(|p| p.inst.as_mut())
            .filter(|i| i.generation == g)
        {
            return Some(i);
        }
        self.stopping.iter_mut().find(|i| i.generation == g)
    }

    /// Writes down the running instances (with the orphans still not
    /// gone), so that a supervisor that takes over can stop them.
    fn record(&mut self) {
        let pending = self.pending.as_ref().and_then(|p| p.inst.as_ref());
        let mut list: Vec<store::ServiceRecord> = self
            .current
            .iter()
            .chain(pending)
            .chain(self.stopping.iter())
            .filter(|i| i.exited.is_none())
            .filter_map(|i| {
                Some(store::ServiceRecord {
                    pid: i.pid,
                    start_time: luo_sys::service::process_start_time(i.pid)?,
                    command: i.command.clone(),
                })
            })
            .collect();
        let orphans: Vec<i32> = self.orphans.iter().map(|o| o.0).collect();
        list.extend(
            self.store
                .instances
                .iter()
                .filter(|r| orphans.contains(&r.pid))
                .cloned(),
        );
        if list != self.store.instances {
            self.store.instances = list;
            self.store.save();
        }
    }

    fn on_ready(&mut self, g: u64) {
        self.ran = true;
        if self.current.as_ref().is_some_and(|c| c.generation == g) {
            self.log(&format!("instance {g} is ready"));
            self.stop_orphans();
            self.record();
            return;
        }
        let is_pending = self
            .pending
            .as_ref()
            .and_then(|p| p.inst.as_ref())
            .is_some_and(|i| i.generation == g);
        if !is_pending {
            return;
        }
        let p = self.pending.take().expect("pending");
        let new = p.inst.expect("started");
        self.store.commit(g);
        self.store.restarts += 1;
        if let Some(mut old) = self.current.take() {
            self.log(&format!(
                "instance {g} (pid {}) is ready; stopping instance {} (pid {})",
                new.pid, old.generation, old.pid
            ));
            old.stop(self.o.stop_signal, self.o.stop_timeout);
            self.stopping.push(old);
        } else {
            self.log(&format!("instance {g} (pid {}) is ready", new.pid));
        }
        self.stop_orphans();
        let pid = new.main_pid;
        self.command = p.command;
        self.current = Some(new);
        self.backoff = BACKOFF_MIN;
        self.next_start = None;
        self.record();
        self.reply_all(p.waiters, &Reply::Restarted { pid });
    }

    /// Instance `g` failed (watchdog, not ready in time): stopped; what
    /// follows is decided when it has exited.
    fn fail_instance(&mut self, g: u64, why: &str) {
        let (sig, t) = (self.o.stop_signal, self.o.stop_timeout);
        let name = self.o.name.clone();
        if let Some(i) = self.instance_mut(g) {
            if i.state != State::Stopping {
                say(
                    &name,
                    &format!("instance {g} (pid {}) failed: {why}; stopping it", i.pid),
                );
                // SIGABRT on a watchdog, as systemd does; the stop signal
                // otherwise.
                let s = if why.contains("watchdog") { 6 } else { sig };
                i.stop(s, t);
            }
        }
        if let Some(p) = self.pending.as_mut() {
            if p.inst.as_ref().is_some_and(|i| i.generation == g) {
                let inst = p.inst.take().expect("pending instance");
                self.roll_back(inst, why.to_string());
            }
        }
    }

    /// The pending instance failed: stopped, the store as it was, the old
    /// instance (or, stop-start, the old command) serving.
    fn roll_back(&mut self, mut inst: Instance, why: String) {
        let p = self.pending.take().expect("pending");
        let dropped = self.store.rollback(inst.generation);
        self.store.rollbacks += 1;
        self.store.save();
        let mut msg = format!(
            "restart of '{}' rolled back: the new instance (pid {}, {}) {why}",
            self.o.name,
            inst.pid,
            p.command.join(" ")
        );
        if let Some(s) = &inst.status {
            msg.push_str(&format!("; its last STATUS={s}"));
        }
        if dropped > 0 {
            msg.push_str(&format!("; {dropped} fd(s) it stored were dropped"));
        }
        let tail = inst.tail();
        if !inst.poll_exit() {
            inst.stop(self.o.stop_signal, self.o.stop_timeout);
            self.stopping.push(inst);
        }
        if let Some(old) = p.old_command {
            msg.push_str("; the old command is started again");
            self.command = old;
            if let Err(e) = self.start_current() {
                msg.push_str(&format!(" but it failed: {e}"));
                self.schedule_restart();
            }
        } else if self.current.is_some() {
            msg.push_str("; the old instance keeps serving");
        } else {
            self.schedule_restart();
        }
        if !tail.is_empty() {
            msg.push_str("\nlast lines of its stderr:\n");
            msg.push_str(&tail.join("\n"));
        }
        self.log(&msg);
        self.reply_all(p.waiters, &Reply::RolledBack { message: msg });
    }

    fn schedule_restart(&mut self) {
        if self.shutting_down {
            return;
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.log(&format!("starting again in {} ms", wait.as_millis()));
        self.next_start = Some(Instant::now() + wait);
    }

    fn tick(&mut self) {
        let now = Instant::now();
        self.tick_orphans();
        // Instances being stopped.
        let mut gone = Vec::new();
        for (k, i) in self.stopping.iter_mut().enumerate() {
            if i.poll_exit() {
                gone.push(k);
            } else if i.kill_at.is_some_and(|t| now >= t) {
                i.signal(9);
                i.kill_at = Some(now + Duration::from_secs(3600));
            }
        }
        for k in gone.into_iter().rev() {
            let i = self.stopping.remove(k);
            let _ = self.epoll.delete(i.notify.as_fd());
            self.log(&format!(
                "instance {} (pid {}) {}",
                i.generation,
                i.pid,
                i.describe_exit()
            ));
        }
        // Stop-start: the old one is gone, start the new.
        if self.stopping.is_empty() && self.current.is_none() {
            if let Some(p) = self.pending.as_mut() {
                if p.inst.is_none() && !self.shutting_down {
                    let cmd = p.command.clone();
                    match self.spawn(&cmd) {
                        Ok(i) => {
                            if let Some(p) = self.pending.as_mut() {
                                p.inst = Some(i)
                            }
                        }
                        Err(e) => {
                            let p = self.pending.take().expect("pending");
                            self.store.rollbacks += 1;
                            self.log(&format!(
                                "restart failed: {e}; the old command is started again"
                            ));
                            if let Some(old) = p.old_command.clone() {
                                self.command = old;
                            }
                            if let Err(e2) = self.start_current() {
                                self.log(&e2);
                                self.schedule_restart();
                            }
                            self.reply_all(p.waiters, &Reply::RolledBack { message: e });
                        }
                    }
                }
            }
        }
        // The serving and the pending instance, when told to stop (not
        // ready in time, watchdog) but still running: SIGKILL on time.
        let pending = self.pending.as_mut().and_then(|p| p.inst.as_mut());
        for i in self.current.as_mut().into_iter().chain(pending) {
            if i.exited.is_none() && i.kill_at.is_some_and(|t| now >= t) {
                i.signal(9);
                i.kill_at = Some(now + Duration::from_secs(3600));
            }
        }
        // The pending instance.
        let ready_after = match self.o.ready {
            Ready::After(d) => Some(d),
            Ready::Notify => None,
        };
        if let Some(i) = self.pending.as_mut().and_then(|p| p.inst.as_mut()) {
            let g = i.generation;
            if i.poll_exit() {
                let why = i
                    .exited
                    .map_or_else(|| "ended".to_string(), instance::exit_text);
                let inst = self
                    .pending
                    .as_mut()
                    .and_then(|p| p.inst.take())
                    .expect("pending");
                let _ = self.epoll.delete(inst.notify.as_fd());
                self.roll_back(inst, why);
            } else if i.state == State::Starting
                && ready_after.is_some_and(|d| now >= i.started + d)
            {
                i.state = State::Ready;
                i.ready_since = Some(now);
                self.on_ready(g);
            } else if i.state == State::Starting && now >= i.ready_deadline {
                let t = self.o.ready_timeout;
                self.fail_instance(g, &format!("was not ready within {} ms", t.as_millis()));
            } else if i.watchdog.is_some_and(|(_, due)| now >= due) {
                self.fail_instance(g, "missed its watchdog keep-alive");
            }
        }
        // The serving instance.
        if let Some(c) = self.current.as_mut() {
            let g = c.generation;
            if c.poll_exit() {
                // What it said before it exited counts (X_LUO_EXEC_ERRNO
                // comes just before the trampoline's exit).
                self.on_notify(g);
                let Some(c) = self.current.take() else {
                    return;
                };
                let _ = self.epoll.delete(c.notify.as_fd());
                self.on_current_exit(c);
            } else if c.state == State::Starting
                && ready_after.is_some_and(|d| now >= c.started + d)
            {
                c.state = State::Ready;
                c.ready_since = Some(now);
                self.on_ready(g);
            } else if c.state == State::Starting && now >= c.ready_deadline {
                let t = self.o.ready_timeout;
                self.fail_instance(g, &format!("was not ready within {} ms", t.as_millis()));
            } else if c.state != State::Stopping && c.watchdog.is_some_and(|(_, due)| now >= due) {
                self.fail_instance(g, "missed its watchdog keep-alive");
            }
        }
        if self.next_start.is_some_and(|t| now >= t)
            && self.current.is_none()
            && self.pending.is_none()
        {
            self.next_start = None;
            if let Err(e) = self.start_current() {
                self.log(&e);
                self.schedule_restart();
            }
        }
        self.record();
        if self.shutting_down && self.stopping.is_empty() && self.orphans.is_empty() {
            self.exit = Some(0);
        }
        // luod: put back what a restarted or recreated session lacks.
        if self.store.dirty || now >= self.last_check + CHECK_EVERY {
            let due = !self.store.dirty || now >= self.last_check + Duration::from_secs(1);
            if due {
                self.last_check = now;
                match self.store.check() {
                    Ok(log) => {
                        for l in log {
                            self.log(&l);
                        }
                    }
                    Err(e) => self.log(&format!("luod: {e}; retrying")),
                }
            }
        }
    }

    fn on_current_exit(&mut self, c: Instance) {
        let how = c.describe_exit();
        let st = c.exited;
        self.log(&format!("instance {} (pid {}) {how}", c.generation, c.pid));
        if self.shutting_down {
            return;
        }
        if let Some(e) = c.exec_errno {
            if !self.ran {
                // Nothing to restart: the command never ran (a typo, a
                // missing binary), and trying again cannot help.
                let errno = luo::Errno(e);
                self.log(&format!(
                    "{}: {}; the command never ran, so it is not started again",
                    c.command[0],
                    errno.description()
                ));
                self.exit = Some(st.map_or(127, instance::exit_code));
                self.exit_error = Some(luo::Error::new(
                    errno,
                    format!(
                        "service '{}' did not start: cannot run {}",
                        self.o.name, c.command[0]
                    ),
                ));
                return;
            }
        } else {
            self.ran = true;
        }
        // Stopped by the supervisor (watchdog, not ready in time) counts as
        // a failure whatever the status.
        let failed = st.is_none_or(|s| !s.success()) || c.kill_at.is_some();
        if self.o.restart == RestartPolicy::No || (!failed && self.pending.is_none()) {
            if self.pending.is_some() {
                return;
            }
            self.exit = Some(st.map_or(1, instance::exit_code));
            return;
        }
        if c.ready_since.is_some_and(|t| t.elapsed() >= BACKOFF_RESET) {
            self.backoff = BACKOFF_MIN;
        }
        self.store.restarts += 1;
        self.store.save();
        if self.pending.is_none() {
            self.schedule_restart();
        }
    }

    fn cleanup(&mut self) {
        let _ = std::fs::remove_file(&self.control_path);
    }
}
